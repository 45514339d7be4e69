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
    /// The key-release service's limits (absent: the defaults).
    #[serde(default, skip_serializing_if = "ServeSection::is_default")]
    pub serve: ServeSection,
}

/// `[serve]` in `vault.toml`: what the key-release service allows one connection, one request
/// and one client certificate, against slow, large and repeated requests. Every key has a
/// safe default; [`SERVE_KEYS`] says what each bounds (`weightvault serve --help` lists
/// them). Times are in seconds, sizes in bytes, rates per client certificate and replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSection {
    /// Seconds for a TLS handshake.
    pub handshake_timeout: u64,
    /// Seconds for a request's head; also how long a kept-alive connection may sit idle.
    pub header_timeout: u64,
    /// Seconds for a whole request body.
    pub body_timeout: u64,
    /// Seconds a response may wait for the client to take more bytes.
    pub write_timeout: u64,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once with one client certificate.
    pub max_connections_per_client: usize,
    /// TLS handshakes in progress at once.
    pub max_handshakes: usize,
    /// Bytes of a request body (a release request with its evidence).
    pub max_body: usize,
    /// Bytes of a request's head (request line and headers).
    pub max_header_bytes: usize,
    /// Header fields of a request.
    pub max_headers: usize,
    /// Challenges per minute per client certificate.
    pub challenges_per_minute: u32,
    /// Challenges one client certificate may ask for at once before the rate applies.
    pub challenge_burst: u32,
    /// Release requests per minute per client certificate.
    pub releases_per_minute: u32,
    /// Release requests one client certificate may make at once before the rate applies.
    pub release_burst: u32,
}

impl Default for ServeSection {
    fn default() -> Self {
        Self {
            handshake_timeout: 10,
            header_timeout: 10,
            body_timeout: 30,
            write_timeout: 60,
            max_connections: 512,
            max_connections_per_client: 64,
            max_handshakes: 64,
            max_body: 1 << 20,
            max_header_bytes: 16 << 10,
            max_headers: 64,
            challenges_per_minute: 60,
            challenge_burst: 20,
            releases_per_minute: 30,
            release_burst: 10,
        }
    }
}

/// Each `[serve]` key and what it bounds, in the order `serve --help` lists them.
pub const SERVE_KEYS: &[(&str, &str)] = &[
    ("handshake_timeout", "seconds for a TLS handshake"),
    (
        "header_timeout",
        "seconds for a request's head, and a kept-alive connection's idle time (then closed)",
    ),
    ("body_timeout", "seconds for a whole request body (408)"),
    (
        "write_timeout",
        "seconds a response waits for the client to read (then the connection is closed)",
    ),
    (
        "max_connections",
        "connections open at once (more are closed at once)",
    ),
    (
        "max_connections_per_client",
        "connections open at once per client certificate (more are closed after the handshake)",
    ),
    (
        "max_handshakes",
        "TLS handshakes in progress at once (more wait their turn)",
    ),
    ("max_body", "bytes of a request body (413)"),
    ("max_header_bytes", "bytes of a request's head (431)"),
    ("max_headers", "header fields of a request (431)"),
    (
        "challenges_per_minute",
        "challenges per minute per client certificate (429 with Retry-After)",
    ),
    (
        "challenge_burst",
        "challenges at once per client certificate before that rate applies",
    ),
    (
        "releases_per_minute",
        "release requests per minute per client certificate (429 with Retry-After)",
    ),
    (
        "release_burst",
        "release requests at once per client certificate before that rate applies",
    ),
];

impl ServeSection {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Refuses a limit that would stop the service from serving anyone (a zero).
    pub fn check(&self) -> Result<(), String> {
        let t = toml::Value::try_from(self).map_err(|e| e.to_string())?;
        let zero = t
            .as_table()
            .into_iter()
            .flatten()
            .find(|(_, v)| v.as_integer() == Some(0));
        match zero {
            Some((k, _)) => Err(format!("[serve] {k} must be at least 1")),
            None => Ok(()),
        }
    }

    /// The `[serve]` keys with their defaults and meanings, for `serve --help`.
    pub fn help() -> String {
        let d = toml::Value::try_from(Self::default()).expect("serialisable");
        let mut s = String::from(
            "Limits, each a key of [serve] in the vault's vault.toml (default, then what it bounds):\n",
        );
        for (k, what) in SERVE_KEYS {
            let v = d.get(k).map(|v| v.to_string()).unwrap_or_default();
            s.push_str(&format!("  {k} = {v}\n      {what}\n"));
        }
        s
    }
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

    /// How this section's bucket is reached: its `endpoint`, `region` and `allow_http`.
    pub fn s3(&self) -> S3Endpoint {
        S3Endpoint {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: self.allow_http,
        }
    }

    /// The bucket these settings name, with `WEIGHTVAULT_STORE` (`env`) over `url`; `None`
    /// for the local directory.
    pub fn bucket(&self, env: Option<String>) -> Option<super::bucket::BucketConfig> {
        let url = env.filter(|u| !u.is_empty()).or_else(|| self.url.clone())?;
        Some(
            self.s3()
                .bucket(url, self.part_size, self.parallel_parts, self.read_ahead),
        )
    }
}

/// How a bucket's S3 server is reached: the `endpoint`, `region` and `allow_http` keys that
/// `[store]` and `[ledger.tiles]` both take. Each section declares the keys itself rather than
/// flattening this struct into it (`#[serde(flatten)]`): with `flatten`, a mistake in
/// `vault.toml` would be reported at the section's header instead of at the key, and an
/// unknown key without the list of the keys the section takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Endpoint {
    /// Endpoint of an S3-compatible server (AWS when absent, or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region (or `AWS_REGION`).
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (or `AWS_ALLOW_HTTP=true`).
    pub allow_http: bool,
}

impl S3Endpoint {
    /// These settings, with `base`'s endpoint and region where they name none; plain HTTP is
    /// allowed if either allows it.
    pub fn or(self, base: S3Endpoint) -> S3Endpoint {
        S3Endpoint {
            endpoint: self.endpoint.or(base.endpoint),
            region: self.region.or(base.region),
            allow_http: self.allow_http || base.allow_http,
        }
    }

    /// The bucket at `url` reached this way, with `part_size` (default 16 MiB),
    /// `parallel_parts` (default 4) and `read_ahead` (default 8) where given, and the
    /// credentials of the usual sources.
    pub fn bucket(
        &self,
        url: String,
        part_size: Option<u64>,
        parallel_parts: Option<usize>,
        read_ahead: Option<usize>,
    ) -> super::bucket::BucketConfig {
        super::bucket::BucketConfig {
            url,
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: self.allow_http,
            part_size: part_size.unwrap_or(super::bucket::DEFAULT_PART_SIZE),
            parallel_parts: parallel_parts.unwrap_or(4),
            read_ahead: read_ahead.unwrap_or(8),
            credentials: None,
        }
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
    /// Allow a plain-HTTP endpoint (test servers; allowed too where `[store] allow_http` is).
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
    /// How both buckets are reached: this section's `endpoint`, `region` and `allow_http`,
    /// with `store`'s where it names none.
    pub fn s3(&self, store: &StoreSection) -> S3Endpoint {
        S3Endpoint {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: self.allow_http,
        }
        .or(store.s3())
    }

    /// The write-once and the mutable bucket, with `store`'s endpoint and region where this
    /// section names none.
    pub fn buckets(
        &self,
        store: &StoreSection,
    ) -> (super::bucket::BucketConfig, super::bucket::BucketConfig) {
        let s3 = self.s3(store);
        let cfg = |url: &str| s3.bucket(url.into(), None, None, None);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `vault.toml` with an `[hsm]` section and `tail`.
    fn parse(tail: &str) -> Result<VaultConfig, toml::de::Error> {
        let hsm =
            "[hsm]\nmodule = \"m\"\ntoken_label = \"t\"\nkek_label = \"k\"\nlock_file = \"l\"\n";
        toml::from_str(&format!("{hsm}{tail}"))
    }

    fn config(tail: &str) -> VaultConfig {
        parse(tail).unwrap()
    }

    #[test]
    fn serve_limits_have_defaults_and_each_is_listed_once() {
        let d = toml::Value::try_from(ServeSection::default()).unwrap();
        let fields: Vec<&str> = d.as_table().unwrap().keys().map(String::as_str).collect();
        let mut listed: Vec<&str> = SERVE_KEYS.iter().map(|(k, _)| *k).collect();
        listed.sort();
        let mut fields_sorted = fields.clone();
        fields_sorted.sort();
        assert_eq!(listed, fields_sorted);
        let help = ServeSection::help();
        for k in fields {
            assert!(help.contains(&format!("  {k} = {}", d[k])), "{k} in {help}");
        }
        assert_eq!(config("").serve, ServeSection::default());
        ServeSection::default().check().unwrap();
    }

    #[test]
    fn serve_limits_are_read_and_bad_ones_refused() {
        let c = config("[serve]\nmax_body = 4096\nchallenge_burst = 3\n");
        assert_eq!(c.serve.max_body, 4096);
        assert_eq!(c.serve.challenge_burst, 3);
        assert_eq!(
            c.serve.header_timeout,
            ServeSection::default().header_timeout
        );
        let e = parse("[serve]\nmax_bodies = 1\n").unwrap_err().to_string();
        assert!(e.contains("max_bodies"), "{e}");
        let e = config("[serve]\nreleases_per_minute = 0\n")
            .serve
            .check()
            .unwrap_err();
        assert_eq!(e, "[serve] releases_per_minute must be at least 1");
    }

    #[test]
    fn the_tiles_buckets_are_reached_as_the_store_where_the_tiles_name_nothing() {
        let c = config(
            "[store]\nurl = \"s3://w/p\"\nendpoint = \"http://s3.lab:9000\"\nregion = \"eu-west-1\"\nallow_http = true\npart_size = 8388608\n\
             [ledger.tiles]\nurl = \"s3://l/log\"\nhead_url = \"s3://h/log\"\n",
        );
        let store = c.store.bucket(None).unwrap();
        assert_eq!(
            (
                store.url.as_str(),
                store.endpoint.as_deref(),
                store.region.as_deref()
            ),
            ("s3://w/p", Some("http://s3.lab:9000"), Some("eu-west-1"))
        );
        assert!(store.allow_http);
        assert_eq!(
            (store.part_size, store.parallel_parts, store.read_ahead),
            (8 << 20, 4, 8)
        );
        let (worm, head) = c.ledger.tiles.as_ref().unwrap().buckets(&c.store);
        for (b, url) in [(&worm, "s3://l/log"), (&head, "s3://h/log")] {
            assert_eq!(
                (b.url.as_str(), b.endpoint.as_deref(), b.region.as_deref()),
                (url, Some("http://s3.lab:9000"), Some("eu-west-1"))
            );
            assert!(b.allow_http);
            assert_eq!(
                (b.part_size, b.parallel_parts, b.read_ahead),
                (crate::store::bucket::DEFAULT_PART_SIZE, 4, 8)
            );
        }
        assert_eq!(
            c.store.bucket(Some("s3://other".into())).map(|b| b.url),
            Some("s3://other".into())
        );
    }

    #[test]
    fn the_tiles_own_endpoint_and_region_win_over_the_stores() {
        let c = config(
            "[store]\nendpoint = \"http://a\"\nregion = \"ra\"\n\
             [ledger.tiles]\nurl = \"s3://l\"\nhead_url = \"s3://h\"\nendpoint = \"http://b\"\nregion = \"rb\"\n",
        );
        assert_eq!(c.store.bucket(None).map(|b| b.url), None, "no url: local");
        let (worm, _) = c.ledger.tiles.as_ref().unwrap().buckets(&c.store);
        assert_eq!(
            (
                worm.endpoint.as_deref(),
                worm.region.as_deref(),
                worm.allow_http
            ),
            (Some("http://b"), Some("rb"), false)
        );
        let bare =
            config("[ledger.tiles]\nurl = \"s3://l\"\nhead_url = \"s3://h\"\nallow_http = true\n");
        let (worm, _) = bare.ledger.tiles.as_ref().unwrap().buckets(&bare.store);
        assert_eq!(
            (worm.endpoint, worm.region, worm.allow_http),
            (None, None, true)
        );
    }

    #[test]
    fn unknown_keys_are_refused_in_both_sections() {
        for tail in [
            "[store]\nurl = \"s3://w\"\nendpont = \"http://a\"\n",
            "[ledger.tiles]\nurl = \"s3://l\"\nhead_url = \"s3://h\"\nendpont = \"http://a\"\n",
        ] {
            let e = parse(tail).unwrap_err();
            assert!(
                e.to_string().contains("unknown field `endpont`, expected"),
                "{e}"
            );
        }
    }
}
