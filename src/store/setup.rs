//! Making and opening a vault directory: its configuration, its embedded SoftHSM2 token,
//! where its parts are.

use super::*;

impl Vault {
    /// The default vault directory: `$WEIGHTVAULT_HOME`, else `./vault`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("WEIGHTVAULT_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("vault"))
    }

    /// The SoftHSM2 configuration that a process working on the vault at `dir` must be started
    /// with, as `SOFTHSM2_CONF` (see [`crate::hsm`] for why it cannot be set later): the one
    /// its `vault.toml` names or, with no `vault.toml` yet, the one [`Vault::init`]`(dir,
    /// module)` makes. `None` when the vault uses another HSM, or when its config cannot be
    /// read (opening the vault then says why). Reads only `vault.toml`.
    pub fn softhsm2_conf_for(dir: &Path, module: Option<&Path>) -> Option<PathBuf> {
        match std::fs::read_to_string(dir.join("vault.toml")) {
            Ok(text) => toml::from_str::<VaultConfig>(&text)
                .ok()?
                .hsm
                .softhsm2_conf
                .map(|p| resolve_in(dir, &p)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                module.is_none().then(|| dir.join(EMBEDDED_SOFTHSM2_CONF))
            }
            Err(_) => None,
        }
    }

    /// Makes a vault at `dir` with an embedded SoftHSM2 token and KEK, keeping whatever is
    /// already there. Returns the vault and a line per thing created.
    pub fn init(dir: &Path, module: Option<&Path>) -> Result<(Self, Vec<String>), StoreError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let mut done = Vec::new();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("models"))
            .map_err(io("creating", dir))?;
        let cfg_path = dir.join("vault.toml");
        if !cfg_path.exists() {
            let config = VaultConfig {
                hsm: HsmSection {
                    module: module
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| PathBuf::from(crate::hsm::SOFTHSM2_MODULE)),
                    token_label: "weightvault".into(),
                    kek_label: "weightvault-kek".into(),
                    pin_file: Some("hsm/user.pin".into()),
                    softhsm2_conf: module.is_none().then(|| EMBEDDED_SOFTHSM2_CONF.into()),
                    lock_file: "hsm/token.lock".into(),
                },
                seal: SealSection::default(),
                ledger: LedgerSection::default(),
                store: StoreSection::default(),
                database: None,
                serve: Default::default(),
            };
            let text = format!(
                "# weightvault vault configuration (made by `weightvault init`).\n\
                 # Relative paths are under this directory. WEIGHTVAULT_HSM_PIN overrides pin_file.\n{}",
                toml::to_string_pretty(&config).expect("config serialises")
            );
            std::fs::write(&cfg_path, text).map_err(io("writing", &cfg_path))?;
            done.push(format!("wrote {}", cfg_path.display()));
        }
        let vault = Self::open(dir)?;
        let hsm_dir = dir.join("hsm");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&hsm_dir)
            .map_err(io("creating", &hsm_dir))?;
        let write_pin = |p: &Path, pin: &Pin| -> Result<(), StoreError> {
            use std::io::Write;
            let mut f = File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .map_err(io("writing", p))?;
            writeln!(f, "{}", pin.expose()).map_err(io("writing", p))
        };
        if vault.config.hsm.softhsm2_conf.is_some() {
            let user_pin_path = vault.resolve(
                vault
                    .config
                    .hsm
                    .pin_file
                    .as_deref()
                    .unwrap_or(Path::new("hsm/user.pin")),
            );
            let load_or_create = |path: &Path| -> Result<(Pin, bool), StoreError> {
                if path.exists() {
                    let pin = Pin::from_file(path).map_err(|e| StoreError::Hsm {
                        what: "init".into(),
                        source: e,
                    })?;
                    return Ok((pin, false));
                }
                let pin = Pin::random();
                write_pin(path, &pin)?;
                Ok((pin, true))
            };
            let (user_pin, created) = load_or_create(&user_pin_path)?;
            if created {
                done.push(format!(
                    "wrote the user PIN to {} (mode 0600)",
                    user_pin_path.display()
                ));
            }
            let (so_pin, _) = load_or_create(&hsm_dir.join("so.pin"))?;
            crate::hsm::init_softhsm2_token(
                &hsm_dir,
                &vault.config.hsm.module,
                &vault.config.hsm.token_label,
                &vault.config.hsm.kek_label,
                &so_pin,
                &user_pin,
                &vault.resolve(&vault.config.hsm.lock_file),
            )
            .map_err(|e| StoreError::Hsm {
                what: "init".into(),
                source: e,
            })?;
        } else {
            crate::hsm::ensure_kek(&vault.hsm_config()?).map_err(|e| StoreError::Hsm {
                what: "init".into(),
                source: e,
            })?;
        }
        // Prove the token, PIN and KEK work before saying so.
        let kw = vault.key_wrap()?;
        kw.ensure_ledger_key().map_err(|e| StoreError::Hsm {
            what: "init".into(),
            source: e,
        })?;
        done.push(format!(
            "token '{}' ready with KEK '{}' versions {:?} and ledger signing key '{}' (Ed25519)",
            vault.config.hsm.token_label,
            vault.config.hsm.kek_label,
            kw.kek_versions(),
            crate::hsm::LEDGER_KEY_LABEL
        ));
        Ok((vault, done))
    }

    /// Opens an existing vault.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let cfg_path = dir.join("vault.toml");
        if !cfg_path.is_file() {
            return Err(StoreError::NoVault(dir.into()));
        }
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| StoreError::io("reading", &cfg_path, e))?;
        let config: VaultConfig = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|sp| text[..sp.start.min(text.len())].lines().count().max(1))
                .unwrap_or(0);
            StoreError::Config {
                path: cfg_path.clone(),
                why: ConfigError::Parse {
                    line,
                    error: Box::new(e),
                },
            }
        })?;
        if !(crate::format::MIN_CHUNK_SIZE..=crate::format::MAX_CHUNK_SIZE)
            .contains(&config.seal.chunk_size)
        {
            return Err(StoreError::Config {
                path: cfg_path,
                why: ConfigError::ChunkSize(config.seal.chunk_size),
            });
        }
        let store: Box<dyn object::SealedStore> =
            match config.store.bucket(std::env::var("WEIGHTVAULT_STORE").ok()) {
                Some(b) => Box::new(bucket::Bucket::new(&b)?),
                None => Box::new(object::LocalDir::new(dir.join("models"))),
            };
        Ok(Self {
            dir: dir.into(),
            config,
            store,
        })
    }

    /// Keeps this vault's sealed revisions in `store` instead of where its configuration
    /// says (tools and tests that hold their own store).
    pub fn set_store(&mut self, store: Box<dyn object::SealedStore>) {
        self.store = store;
    }

    /// Where the vault's sealed revisions are read from.
    pub fn sealed_store(&self) -> &dyn object::SealedStore {
        self.store.as_ref()
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration.
    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// Overrides the number of worker threads (0 = one per core).
    pub fn set_threads(&mut self, n: usize) {
        self.config.seal.threads = n;
    }

    /// Overrides the chunk size (tests and benchmarks).
    pub fn set_chunk_size(&mut self, cs: u32) {
        self.config.seal.chunk_size = cs;
    }

    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        resolve_in(&self.dir, p)
    }

    /// The HSM settings, with the PIN from `WEIGHTVAULT_HSM_PIN` or the PIN file.
    pub fn hsm_config(&self) -> Result<HsmConfig, StoreError> {
        let h = &self.config.hsm;
        let hsm = |e| StoreError::Hsm {
            what: "HSM".into(),
            source: e,
        };
        let pin = match std::env::var("WEIGHTVAULT_HSM_PIN") {
            Ok(p) if !p.is_empty() => Pin::new(p),
            _ => match &h.pin_file {
                Some(f) => Pin::from_file(&self.resolve(f)).map_err(hsm)?,
                None => return Err(hsm(HsmError::NoPin)),
            },
        };
        Ok(HsmConfig {
            module: std::env::var_os("WEIGHTVAULT_HSM_MODULE")
                .map(PathBuf::from)
                .unwrap_or_else(|| h.module.clone()),
            token_label: std::env::var("WEIGHTVAULT_HSM_TOKEN")
                .unwrap_or_else(|_| h.token_label.clone()),
            kek_label: h.kek_label.clone(),
            pin,
            softhsm2_conf: h.softhsm2_conf.as_deref().map(|p| self.resolve(p)),
            lock_file: self.resolve(&h.lock_file),
        })
    }

    /// Where a running `weightvault serve` of this vault leaves its process id.
    pub fn serve_pid_file(&self) -> PathBuf {
        self.dir.join("serve.pid")
    }

    /// Where the ledger lives.
    pub fn ledger_dir(&self) -> PathBuf {
        self.dir.join("ledger")
    }

    /// Logs in to the HSM.
    pub fn key_wrap(&self) -> Result<Pkcs11KeyWrap, StoreError> {
        Pkcs11KeyWrap::open(self.hsm_config()?).map_err(|e| StoreError::Hsm {
            what: "HSM".into(),
            source: e,
        })
    }

    /// The vault's own directories where scratch is made (each model's directory).
    pub fn scratch_places(&self) -> Vec<PathBuf> {
        let models = self.dir.join("models");
        std::fs::read_dir(&models)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    }
}
