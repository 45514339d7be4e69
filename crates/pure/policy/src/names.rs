//! Name normalisation for restricted-party screening: "Ａcme Électronique, S.A." and
//! "ACME ELECTRONIQUE" compare equal.

use unicode_normalization::UnicodeNormalization;

/// Legal-form words dropped from the end of a name (after case folding and punctuation removal).
const LEGAL_SUFFIXES: &[&str] = &[
    "ltd",
    "limited",
    "llc",
    "llp",
    "lp",
    "inc",
    "incorporated",
    "corp",
    "corporation",
    "co",
    "company",
    "plc",
    "gmbh",
    "ag",
    "sa",
    "sas",
    "sarl",
    "srl",
    "spa",
    "bv",
    "nv",
    "oy",
    "oyj",
    "ab",
    "as",
    "asa",
    "kk",
    "pte",
    "pty",
    "jsc",
    "pjsc",
    "ojsc",
    "ooo",
    "zao",
    "oao",
    "sdn",
    "bhd",
    "kg",
    "mbh",
    "se",
    "group",
    "holding",
    "holdings",
    "ltda",
    "pvt",
    "private",
    "fz",
    "fze",
    "fzco",
    "sl",
    "sro",
    "kft",
    "doo",
    "tbk",
];

/// Legal-form words dropped from the start of a name: Russian, Ukrainian and Indonesian
/// companies put theirs first ("OOO Tekhnopark", "PT Sinar Jaya").
const LEGAL_PREFIXES: &[&str] = &[
    "ooo", "oao", "zao", "pao", "ao", "jsc", "ojsc", "cjsc", "pjsc", "tov", "pt",
];

/// Whether a normalised word is a legal form (Ltd, GmbH, OOO, ...): it says nothing of who a
/// party is, wherever it stands in a name.
pub fn is_legal_form(word: &str) -> bool {
    LEGAL_SUFFIXES.contains(&word) || LEGAL_PREFIXES.contains(&word)
}

/// Whether a normalised word that no listed name has is a mistyped legal form ("limted",
/// "copmany", "gruop"): one edit from one of five letters or more, two from one of eight or
/// more. Shorter forms ("llc", "inc") are left alone: too many real words are near them.
pub fn is_mistyped_legal_form(word: &str) -> bool {
    word.len() >= 4
        && LEGAL_SUFFIXES.iter().any(|f| {
            f.len() >= 5 && {
                let d = strsim::damerau_levenshtein(word, f);
                d <= 1 || (d == 2 && f.len() >= 8)
            }
        })
}

/// Case-folds, strips accents (NFKD, combining marks dropped), turns punctuation into spaces,
/// collapses spaces and drops trailing legal-form words (and leading ones such as OOO or PT).
/// Returns words joined by one space.
pub fn normalise(name: &str) -> String {
    let folded: String = name
        .nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let mut words: Vec<&str> = folded.split_whitespace().collect();
    // "S.A." became "s a": join runs of single letters first, so it reads "sa".
    let mut joined: Vec<String> = Vec::with_capacity(words.len());
    let mut run = String::new();
    for w in words.drain(..) {
        if w.chars().count() == 1 {
            run.push_str(w);
        } else {
            if !run.is_empty() {
                joined.push(std::mem::take(&mut run));
            }
            joined.push(w.to_string());
        }
    }
    if !run.is_empty() {
        joined.push(run);
    }
    while joined.len() > 1 && LEGAL_SUFFIXES.contains(&joined[joined.len() - 1].as_str()) {
        joined.pop();
    }
    let lead = joined
        .iter()
        .take(joined.len().saturating_sub(1))
        .take_while(|w| LEGAL_PREFIXES.contains(&w.as_str()))
        .count();
    joined.drain(..lead);
    joined.join(" ")
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn spellings_that_must_match() {
        let cases = [
            ("Huawei Technologies Co., Ltd.", "HUAWEI TECHNOLOGIES"),
            (
                "Huawei Technologies Co., Ltd.",
                "huawei technologies company limited",
            ),
            (
                "Société Générale d'Électronique S.A.",
                "SOCIETE GENERALE D ELECTRONIQUE",
            ),
            ("Ｆｕｌｌｗｉｄｔｈ Labs", "fullwidth labs inc"),
            ("Müller-Lüdenscheidt GmbH", "muller ludenscheidt"),
            ("Acme, Inc.", "ACME Incorporated"),
            ("OOO Tekhnopark Sever", "Tekhnopark Sever LLC"),
            ("PT Sinar Jaya Tbk", "PT. Sinar Jaya"),
            ("Umbrella Compute FZ-LLC", "Umbrella Compute"),
            (
                "Globex Analytics Private Limited",
                "Globex Analytics Pvt. Ltd.",
            ),
        ];
        for (a, b) in cases {
            assert_eq!(normalise(a), normalise(b), "{a} vs {b}");
        }
        assert_ne!(normalise("Acme Labs"), normalise("Acme Lab"));
        assert_eq!(
            normalise("Ltd"),
            "ltd",
            "a name that is only a suffix keeps it"
        );
        assert_eq!(normalise("  "), "");
        assert_eq!(
            normalise("OOO"),
            "ooo",
            "a name that is only a prefix keeps it"
        );
        assert_eq!(normalise("PT Sinar"), "sinar");
        for (w, typo) in [
            ("limted", true),
            ("copmany", true),
            ("gruop", true),
            ("corportaion", true),
            ("limits", false),
            ("compute", false),
            ("inca", false),
            ("groupon", false),
        ] {
            assert_eq!(super::is_mistyped_legal_form(w), typo, "{w}");
        }
    }
}
