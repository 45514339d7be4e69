//! `vault.toml`: the vault's configuration and its sections.

use super::*;

/// `[hsm]` in `vault.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmSection {
    /// PKCS#11 module path.
    pub module: PathBuf,
    /// Token label.
    pub token_label: String,
    /// KEK label prefix (versions are `<label>.v<N>`).
    pub kek_label: String,
    /// File holding the user PIN (relative paths are under the vault). `WEIGHTVAULT_HSM_PIN`
    /// overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<PathBuf>,
    /// SoftHSM2 configuration for an embedded token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub softhsm2_conf: Option<PathBuf>,
    /// Lock file serialising PKCS#11 use across processes.
    pub lock_file: PathBuf,
}

/// `[seal]` in `vault.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealSection {
    /// Chunk size in bytes (default 1 MiB).
    #[serde(default = "default_chunk_size")]
    pub chunk_size: u32,
    /// Worker threads (0 = one per core).
    #[serde(default)]
    pub threads: usize,
}

fn default_chunk_size() -> u32 {
    crate::format::DEFAULT_CHUNK_SIZE
}

impl Default for SealSection {
    fn default() -> Self {
        Self {
            chunk_size: default_chunk_size(),
            threads: 0,
        }
    }
}

/// `vault.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// HSM settings.
    pub hsm: HsmSection,
    /// Sealing settings.
    #[serde(default)]
    pub seal: SealSection,
    /// Ledger settings.
    #[serde(default)]
    pub ledger: LedgerSection,
    /// Where sealed revisions live (absent: the vault directory's `models/`).
    #[serde(default, skip_serializing_if = "StoreSection::is_local")]
    pub store: StoreSection,
    /// Release state and ledger shared by service replicas (absent: in-process state and the
    /// vault directory's ledger; `WEIGHTVAULT_DATABASE` sets it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<crate::database::DatabaseSection>,
}

/// `[store]` in `vault.toml`: object storage for sealed revisions. Without a `url` (and
/// without `WEIGHTVAULT_STORE`) they live in the vault directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `s3://bucket/prefix`; `WEIGHTVAULT_STORE` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Endpoint of an S3-compatible server (AWS when absent, or `AWS_ENDPOINT_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region (or `AWS_REGION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (test servers on loopback; or `AWS_ALLOW_HTTP=true`).
    #[serde(default)]
    pub allow_http: bool,
    /// Multipart part size in bytes (default 16 MiB, at least 5 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<u64>,
    /// Parts one writer uploads at once (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_parts: Option<usize>,
    /// 4 MiB blocks a reader of an object requests ahead (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_ahead: Option<usize>,
}

impl StoreSection {
    fn is_local(&self) -> bool {
        self.url.is_none() && self.endpoint.is_none() && self.region.is_none()
    }

    /// The bucket these settings name, with `WEIGHTVAULT_STORE` (`env`) over `url`; `None`
    /// for the local directory.
    pub fn bucket(&self, env: Option<String>) -> Option<super::bucket::BucketConfig> {
        let url = env.filter(|u| !u.is_empty()).or_else(|| self.url.clone())?;
        Some(super::bucket::BucketConfig {
            url,
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: self.allow_http,
            part_size: self.part_size.unwrap_or(super::bucket::DEFAULT_PART_SIZE),
            parallel_parts: self.parallel_parts.unwrap_or(4),
            read_ahead: self.read_ahead.unwrap_or(8),
            credentials: None,
        })
    }
}

/// `[ledger]` in `vault.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// Checkpoint origin line and signing key name.
    #[serde(default = "default_origin")]
    pub origin: String,
    /// Where the ledger is published as tlog-tiles (absent: not published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles: Option<TilesSection>,
}

/// `[ledger.tiles]` in `vault.toml`: the ledger published as C2SP tlog-tiles.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TilesSection {
    /// Full tiles and entry bundles, created once: a bucket with Object Lock
    /// (`s3://ledger-bucket/prefix`).
    pub url: String,
    /// The signed `checkpoint` and the partial tiles, replaced as the log grows: a bucket
    /// (or prefix) without retention.
    pub head_url: String,
    /// Endpoint of an S3-compatible server (default: `[store] endpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region (default: `[store] region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (test servers).
    #[serde(default)]
    pub allow_http: bool,
    /// `serve --require-worm` refuses to start unless the `url` bucket keeps new objects at
    /// least this many days (default 1826: five years)...
    #[serde(default = "default_worm_days")]
    pub worm_days: u32,
    /// ... in at least this mode: `compliance` (default) or `governance`.
    #[serde(default = "default_worm_mode")]
    pub worm_mode: String,
}

fn default_worm_days() -> u32 {
    1826
}

fn default_worm_mode() -> String {
    "compliance".into()
}

impl TilesSection {
    /// The write-once and the mutable bucket, with `store`'s endpoint and region where this
    /// section names none.
    pub fn buckets(
        &self,
        store: &StoreSection,
    ) -> (super::bucket::BucketConfig, super::bucket::BucketConfig) {
        let cfg = |url: &str| super::bucket::BucketConfig {
            url: url.into(),
            endpoint: self.endpoint.clone().or_else(|| store.endpoint.clone()),
            region: self.region.clone().or_else(|| store.region.clone()),
            allow_http: self.allow_http || store.allow_http,
            part_size: super::bucket::DEFAULT_PART_SIZE,
            parallel_parts: 4,
            read_ahead: 8,
            credentials: None,
        };
        (cfg(&self.url), cfg(&self.head_url))
    }

    /// The retention `--require-worm` asks of the write-once bucket.
    pub fn worm(&self) -> Result<(u32, super::worm::LockMode), String> {
        let mode = match self.worm_mode.to_ascii_lowercase().as_str() {
            "compliance" => super::worm::LockMode::Compliance,
            "governance" => super::worm::LockMode::Governance,
            m => {
                return Err(format!(
                    "ledger.tiles.worm_mode {m:?}: compliance or governance"
                ))
            }
        };
        Ok((self.worm_days, mode))
    }
}

fn default_origin() -> String {
    "weightvault.local/ledger".into()
}

impl Default for LedgerSection {
    fn default() -> Self {
        Self {
            origin: default_origin(),
            tiles: None,
        }
    }
}
