//! What the release service and the fetcher say to each other over HTTP: request and reply
//! bodies, the stable error codes ([`ApiCode`], mapped to an HTTP status in one place) and the
//! error body. Both sides use these types; neither reads the other's JSON by string keys.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use weightvault_core::evidence::Evidence;
use weightvault_policy::ReleaseDecision;

/// Every error the service answers with. The JSON form (`snake_case`) is the stable code
/// clients match on; [`ApiCode::status`] is the only place a code meets an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ApiCode {
    /// The body or a path parameter does not parse.
    BadRequest,
    /// The host evidence does not open (malformed, unknown attester key, bad signature).
    BadEvidence,
    /// The request body is larger than the service accepts (`[serve] max_body`).
    PayloadTooLarge,
    /// The request body did not arrive within `[serve] body_timeout`.
    RequestTimeout,
    /// This client certificate asked too often; the `Retry-After` header says when to ask
    /// again.
    TooManyRequests,
    /// A `Range` header that cannot be satisfied.
    BadRange,
    /// The policy refused: the body carries the decision and its ledger entry.
    Denied,
    /// The request is held for a compliance officer: the body carries the decision, and its
    /// ledger entry is the review's id. Once approved, the same request goes through.
    HeldForReview,
    /// The service failed; the detail is in its log.
    Internal,
    /// The ledger cannot be written, so nothing is released.
    LedgerUnavailable,
    /// The HSM cannot unwrap the revision's data keys now (its token unavailable), so
    /// nothing is released.
    HsmUnavailable,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// No such route, model or revision.
    NotFound,
    /// The release id's time is up: ask again.
    ReleaseExpired,
    /// The release was withdrawn (a licence or clearance no longer holds).
    ReleaseRevoked,
    /// The revision was crypto-shredded.
    Shredded,
    /// No release with this id (expired long ago, or never issued, or another replica's).
    UnknownRelease,
    /// The revision has no such file.
    UnknownShard,
    /// The release belongs to another client certificate.
    WrongClient,
    /// A code this build does not know (a newer service).
    #[serde(other)]
    Unknown,
}

impl ApiCode {
    /// Every code this build answers with (all but [`ApiCode::Unknown`]), in the order of
    /// the table in docs/PROTOCOL.md and `docs/openapi.yaml`.
    pub const ALL: [ApiCode; 19] = {
        use ApiCode::*;
        [
            BadRequest,
            BadEvidence,
            PayloadTooLarge,
            RequestTimeout,
            TooManyRequests,
            BadRange,
            Denied,
            HeldForReview,
            Internal,
            LedgerUnavailable,
            HsmUnavailable,
            MethodNotAllowed,
            NotFound,
            ReleaseExpired,
            ReleaseRevoked,
            Shredded,
            UnknownRelease,
            UnknownShard,
            WrongClient,
        ]
    };

    /// The HTTP status that carries this code.
    pub fn status(self) -> StatusCode {
        use ApiCode::*;
        match self {
            BadRequest | BadEvidence => StatusCode::BAD_REQUEST,
            BadRange => StatusCode::RANGE_NOT_SATISFIABLE,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Denied | HeldForReview | ReleaseRevoked | WrongClient => StatusCode::FORBIDDEN,
            Internal | Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            LedgerUnavailable | HsmUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            NotFound | UnknownRelease | UnknownShard => StatusCode::NOT_FOUND,
            ReleaseExpired | Shredded => StatusCode::GONE,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        use ApiCode::*;
        match self {
            BadRequest => "bad_request",
            BadEvidence => "bad_evidence",
            PayloadTooLarge => "payload_too_large",
            RequestTimeout => "request_timeout",
            TooManyRequests => "too_many_requests",
            BadRange => "bad_range",
            Denied => "denied",
            HeldForReview => "held_for_review",
            Internal => "internal",
            LedgerUnavailable => "ledger_unavailable",
            HsmUnavailable => "hsm_unavailable",
            MethodNotAllowed => "method_not_allowed",
            NotFound => "not_found",
            ReleaseExpired => "release_expired",
            ReleaseRevoked => "release_revoked",
            Shredded => "shredded",
            UnknownRelease => "unknown_release",
            UnknownShard => "unknown_shard",
            WrongClient => "wrong_client",
            Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ApiCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub code: ApiCode,
    /// What went wrong, in words.
    pub message: String,
    /// The decision, for `denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<ReleaseDecision>,
    /// The ledger entry recording the decision, for `denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_index: Option<u64>,
}

/// The answer to `POST /v1/challenge`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChallengeReply {
    /// The nonce to put in the host evidence (hex).
    pub nonce: String,
    /// When it stops being accepted (RFC 3339).
    pub expires_at: String,
}

/// A release request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    /// Model.
    pub model: String,
    /// Revision (default: the newest sealed).
    #[serde(default)]
    pub revision: Option<String>,
    /// Paths of the files wanted (default: all).
    #[serde(default)]
    pub shards: Option<Vec<String>>,
    /// Host evidence.
    pub evidence: Evidence,
}

/// One shard of a release, as the client is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Index in `/v1/releases/{id}/shards/{index}`.
    pub index: u32,
    /// Path in the checkpoint directory.
    pub path: String,
    /// File size.
    pub size: u64,
    /// Sealed stream size.
    pub stream_len: u64,
}

/// An allowed release, as the client is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseInfo {
    /// Release id (hex).
    pub id: String,
    /// When the id stops working.
    pub expires_at: String,
    /// Model.
    pub model: String,
    /// Revision.
    pub revision: String,
    /// Shards.
    pub shards: Vec<ShardInfo>,
}

/// The answer to a release request (denials carry it too, under code `denied`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseReply {
    /// The decision with every check.
    pub decision: ReleaseDecision,
    /// The ledger entry that records it.
    pub ledger_index: u64,
    /// The release, when allowed.
    pub release: Option<ReleaseInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code with the status it has always had (the one change: an unknown shard named
    /// in a release request is 404 like an unknown shard index, where it was 400).
    const CODES: &[(ApiCode, &str, u16)] = &[
        (ApiCode::BadRequest, "bad_request", 400),
        (ApiCode::BadEvidence, "bad_evidence", 400),
        (ApiCode::PayloadTooLarge, "payload_too_large", 413),
        (ApiCode::RequestTimeout, "request_timeout", 408),
        (ApiCode::TooManyRequests, "too_many_requests", 429),
        (ApiCode::BadRange, "bad_range", 416),
        (ApiCode::Denied, "denied", 403),
        (ApiCode::HeldForReview, "held_for_review", 403),
        (ApiCode::Internal, "internal", 500),
        (ApiCode::LedgerUnavailable, "ledger_unavailable", 503),
        (ApiCode::HsmUnavailable, "hsm_unavailable", 503),
        (ApiCode::MethodNotAllowed, "method_not_allowed", 405),
        (ApiCode::NotFound, "not_found", 404),
        (ApiCode::ReleaseExpired, "release_expired", 410),
        (ApiCode::ReleaseRevoked, "release_revoked", 403),
        (ApiCode::Shredded, "shredded", 410),
        (ApiCode::UnknownRelease, "unknown_release", 404),
        (ApiCode::UnknownShard, "unknown_shard", 404),
        (ApiCode::WrongClient, "wrong_client", 403),
    ];

    #[test]
    fn codes_keep_their_wire_names_and_statuses() {
        assert_eq!(
            ApiCode::ALL.to_vec(),
            CODES.iter().map(|c| c.0).collect::<Vec<_>>()
        );
        for &(code, name, status) in CODES {
            assert_eq!(code.as_str(), name);
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<ApiCode>(&format!("\"{name}\"")).unwrap(),
                code
            );
            assert_eq!(code.status().as_u16(), status, "{name}");
        }
        assert_eq!(
            serde_json::from_str::<ApiCode>("\"from_a_newer_service\"").unwrap(),
            ApiCode::Unknown
        );
    }

    #[test]
    fn an_error_body_without_a_decision_has_no_decision_field() {
        let b = ErrorBody {
            code: ApiCode::NotFound,
            message: "no such route".into(),
            decision: None,
            ledger_index: None,
        };
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"code":"not_found","message":"no such route"}"#
        );
    }
}
