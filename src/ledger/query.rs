//! Which ledger entries a reader asks for (`weightvault audit show`): by time, model and
//! requester, judged on each entry's record.

use super::record::Record;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The entries wanted: all of them when every field is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Only entries at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only entries for this model.
    pub model: Option<String>,
    /// Only entries of this requester (certificate identity or operator).
    pub requester: Option<String>,
}

/// A record whose time is not RFC 3339.
#[derive(Debug, thiserror::Error)]
#[error("bad time {time:?}: {error}")]
pub struct BadTime {
    /// The record's time.
    pub time: String,
    /// Why it does not parse.
    pub error: time::error::Parse,
}

impl EntryFilter {
    /// Whether `r` is wanted.
    pub fn matches(&self, r: &Record) -> Result<bool, BadTime> {
        let at = OffsetDateTime::parse(&r.time, &Rfc3339).map_err(|error| BadTime {
            time: r.time.clone(),
            error,
        })?;
        Ok(!(self.since.is_some_and(|s| at < s)
            || self.model.as_ref().is_some_and(|m| *m != r.model)
            || self.requester.as_ref().is_some_and(|q| *q != r.requester)))
    }
}

#[cfg(test)]
mod tests {
    use super::EntryFilter;
    use crate::ledger::record::Record;
    use time::macros::datetime;

    #[test]
    fn filters() {
        let r = Record::action(
            "2026-06-01T12:00:00Z",
            "seal",
            "alice",
            "m",
            Some("r1"),
            vec![],
            "sealed",
        );
        let f = |since, model: Option<&str>, requester: Option<&str>| EntryFilter {
            since,
            model: model.map(str::to_string),
            requester: requester.map(str::to_string),
        };
        let rows: &[(EntryFilter, bool)] = &[
            (EntryFilter::default(), true),
            (f(Some(datetime!(2026-06-01 12:00 UTC)), None, None), true),
            (
                f(Some(datetime!(2026-06-01 12:00:01 UTC)), None, None),
                false,
            ),
            (f(None, Some("m"), None), true),
            (f(None, Some("other"), None), false),
            (f(None, None, Some("alice")), true),
            (f(None, None, Some("bob")), false),
            (
                f(Some(datetime!(2000-01-01 0:00 UTC)), Some("m"), Some("bob")),
                false,
            ),
        ];
        for (filter, want) in rows {
            assert_eq!(filter.matches(&r).unwrap(), *want, "{filter:?}");
        }
        let bad = Record {
            time: "yesterday".into(),
            ..r
        };
        let e = EntryFilter::default().matches(&bad).unwrap_err();
        assert!(e.to_string().starts_with("bad time \"yesterday\": "), "{e}");
    }
}
