//! The database schema, created and migrated by the service itself: numbered SQL migrations
//! applied in order in one transaction with their rows in `wv_schema_version`, under an
//! advisory lock so that replicas starting together apply each once. A database whose version
//! is newer than this build knows is refused (an older replica must not write to it).
//!
//! Never edit a migration that has shipped: add the next one.

/// The advisory lock key migrations run under ("wvschema" in ASCII).
pub const MIGRATION_LOCK: i64 = 0x7776_7363_6865_6d61;

/// `(version, SQL)`, in order.
pub const MIGRATIONS: &[(i32, &str)] = &[(1, V1), (2, V2), (3, V3)];

/// Entries written before version 3 are counted by [`super::backfill_v3`] after its SQL, from
/// their records by the same rules as new ones (`usage::counts_of`, `review::concerns_reviews`).
pub const COUNTED_FROM_RECORDS: i32 = 3;

/// The version this build writes.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

const V1: &str = r#"
-- Challenge nonces: a row is a nonce not yet taken; taking it deletes it (single use across
-- replicas by the row's deletion).
CREATE TABLE wv_nonces (
    nonce      text        PRIMARY KEY,
    client     bytea       NOT NULL CHECK (length(client) = 32),
    expires_at timestamptz NOT NULL
);
CREATE INDEX wv_nonces_expiry ON wv_nonces (expires_at);

-- Live releases: the grant as JSON. It holds no secret: the stream key is derived from the
-- HSM-wrapped service key and the release id by whichever replica serves it.
CREATE TABLE wv_releases (
    id         bytea       PRIMARY KEY CHECK (length(id) = 16),
    expires_at timestamptz NOT NULL,
    withdrawn  jsonb,
    grant_json jsonb       NOT NULL
);
CREATE INDEX wv_releases_expiry ON wv_releases (expires_at);

-- Withdrawals in the order they were committed: `seq` comes from the counter row, updated in
-- the same transaction, so a reader polling `seq > last` never skips one that commits late.
CREATE TABLE wv_withdrawal_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq  bigint  NOT NULL
);
INSERT INTO wv_withdrawal_head VALUES (true, 0);
CREATE TABLE wv_withdrawals (
    seq    bigint      PRIMARY KEY,
    id     bytea       NOT NULL,
    failed jsonb       NOT NULL,
    at     timestamptz NOT NULL DEFAULT now()
);

-- The ledger's sequence: entries get gapless indices under the head row's lock, in the same
-- transaction that updates the licence counters they count towards.
CREATE TABLE wv_ledger_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    size bigint  NOT NULL CHECK (size >= 0)
);
INSERT INTO wv_ledger_head VALUES (true, 0);
CREATE TABLE wv_entries (
    idx              bigint PRIMARY KEY CHECK (idx >= 0),
    record           bytea  NOT NULL,
    leaf             bytea  NOT NULL CHECK (length(leaf) = 32),
    -- An allowed release decision under a licence: that licence and the bytes it lets out.
    alloc_licence    text,
    alloc_bytes      bigint,
    -- A stream end that follows such a decision: the decision's licence and bytes streamed.
    streamed_licence text,
    streamed_bytes   bigint
);
CREATE TABLE wv_licence_usage (
    licence  text   PRIMARY KEY,
    releases bigint NOT NULL CHECK (releases >= 0),
    bytes    bigint NOT NULL CHECK (bytes >= 0),
    streamed bigint NOT NULL CHECK (streamed >= 0)
);

-- Signed checkpoints of the tree.
CREATE TABLE wv_checkpoints (
    size bigint      NOT NULL,
    note text        NOT NULL,
    at   timestamptz NOT NULL DEFAULT now()
);
"#;

const V2: &str = r#"
-- The policy set every replica applies: each published version's files (name -> text) and
-- their digest (`PolicyVersion`). Versions are numbered under the head row's lock, so the
-- highest committed one is the one in force; replicas hear of a new one by NOTIFY on
-- `wv_withdrawals` (the channel they already listen on) and by polling the head.
CREATE TABLE wv_policy_head (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint  NOT NULL CHECK (version >= 0)
);
INSERT INTO wv_policy_head VALUES (true, 0);
CREATE TABLE wv_policies (
    version      bigint      PRIMARY KEY CHECK (version > 0),
    digest       bytea       NOT NULL CHECK (length(digest) = 32),
    files        jsonb       NOT NULL,
    published_by text        NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);
"#;

const V3: &str = r#"
-- Daily quotas (rules.toml [[quota]]): what the allowed release decisions of each UTC day
-- count towards each quota counter (`quota:requester:ID:DAY`, `quota:organisation:ID:DAY`),
-- updated in the transaction that appends them, as the licence counters are, and read by
-- key (day, counter). Entries written before are counted by the migration from their
-- records (`backfill_v3`, in Rust: the same rules as new entries).
CREATE TABLE wv_quota_usage (
    day      text   NOT NULL,
    counter  text   NOT NULL,
    releases bigint NOT NULL CHECK (releases >= 0),
    bytes    bigint NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (day, counter)
);
-- An allowed decision's quota counters; `alloc_bytes` is now set for every allowed decision
-- (with or without a licence), the bytes it counts everywhere.
ALTER TABLE wv_entries ADD COLUMN alloc_quotas text[];
-- Entries that open or decide a review (held decisions, `review` records): replicas read
-- the approvals from these alone.
ALTER TABLE wv_entries ADD COLUMN reviewing boolean NOT NULL DEFAULT false;
CREATE INDEX wv_entries_reviewing ON wv_entries (idx) WHERE reviewing;

-- A replica of an older version still running after this migration writes entries without
-- `reviewing` and without their quota counters: it is refused (NOT NULL without a default)
-- rather than let undercount. Every write of this version names the column.
ALTER TABLE wv_entries ALTER COLUMN reviewing DROP DEFAULT;
"#;
