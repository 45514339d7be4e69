//! "Did you mean": the known name closest to one that is not known (a model, a revision, a
//! tensor), as clap does for commands (Jaro similarity above 0.7, via `strsim`).

/// ` (did you mean 'X'?)` for the candidate most like `want`, or `""` when none is close.
pub fn did_you_mean<'a>(want: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        // The same name in another case is the likeliest slip of all.
        let score = if c.eq_ignore_ascii_case(want) {
            1.0
        } else {
            strsim::jaro(want, c)
        };
        if score > 0.7 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!(" (did you mean '{c}'?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn the_closest_known_name_is_suggested_and_a_stranger_is_not() {
        let known = ["acme-frontier", "acme-small", "all-minilm-l6-v2"];
        assert_eq!(
            did_you_mean("acme-frontir", known),
            " (did you mean 'acme-frontier'?)"
        );
        assert_eq!(
            did_you_mean("ACME-SMALL", known),
            " (did you mean 'acme-small'?)"
        );
        assert_eq!(did_you_mean("zzz", known), "");
        assert_eq!(did_you_mean("x", []), "");
    }
}
