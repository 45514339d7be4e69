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
}

/// `[ledger]` in `vault.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// Checkpoint origin line and signing key name.
    #[serde(default = "default_origin")]
    pub origin: String,
}

fn default_origin() -> String {
    "weightvault.local/ledger".into()
}

impl Default for LedgerSection {
    fn default() -> Self {
        Self {
            origin: default_origin(),
        }
    }
}
