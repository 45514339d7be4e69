//! Value types shared by every layer: what a revision's seal recorded about its training, and
//! what a licence has been used for; and the one way times are written (RFC 3339).

use serde::{Deserialize, Serialize};

/// Training facts recorded at seal time (the model inventory's classification inputs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingFacts {
    /// Export Control Classification Number, e.g. `4E091`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eccn: Option<String>,
    /// Training compute in operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_ops: Option<f64>,
    /// Whether the weights are published (open).
    #[serde(default)]
    pub open_weights: bool,
}

/// What a licence has been used for, as the vault counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Releases allowed under it.
    pub releases: u64,
    /// Bytes those releases let out.
    pub bytes: u64,
}

/// A time as every record and file of the vault writes it: RFC 3339, UTC as given.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("an OffsetDateTime formats as RFC 3339")
}
