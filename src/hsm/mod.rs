//! The HSM edge: wrapping and unwrapping per-file data keys with a key-encryption key (KEK)
//! that never leaves the token.
//!
//! [`KeyWrap`] is the small trait the rest of the vault sees; [`Pkcs11KeyWrap`] implements it
//! over any PKCS#11 module with `cryptoki` (SoftHSM2 by default). KEKs are AES-256 token
//! objects labelled `<kek_label>.v<N>`: sensitive, never extractable, wrap/unwrap only.
//! Wrapping is `CKM_AES_KEY_WRAP_PAD` (RFC 5649).
//!
//! This module must never print, log or store the PIN or a data key. SoftHSM2 breaks when
//! several processes log in to one token at once, so every PKCS#11 call here runs under an
//! exclusive lock on a file beside the token ([`TokenLock`]).
//!
//! ## `SOFTHSM2_CONF` is set by whoever starts the process, never here
//!
//! A vault with an embedded token has its own SoftHSM2 configuration,
//! `<vault>/hsm/softhsm2.conf`, and SoftHSM2 takes a configuration from one place only: its
//! `C_Initialize` reloads the file named by the environment variable `SOFTHSM2_CONF` (else
//! `~/.config/softhsm2/softhsm2.conf`, else `/etc/softhsm/softhsm2.conf`;
//! `SimpleConfigLoader::getConfigPath` in SoftHSMv2's `src/lib/common/SimpleConfigLoader.cpp`).
//! There is no other way in: `SoftHSM::C_Initialize` answers `CKR_ARGUMENTS_BAD` to a
//! non-null `pReserved` in `CK_C_INITIALIZE_ARGS`, the one field PKCS#11 leaves to a module,
//! and SoftHSM2 has no function or option that takes a path.
//!
//! Setting the variable from here would be unsound: `std::env::set_var` races every other
//! thread that reads the environment (C code calls `getenv` without Rust's lock: SoftHSM2
//! itself, the resolver, time zones), and by the time a vault opens its HSM the service's
//! runtime, sealing workers or the test harness's threads may be running. So this module only
//! reads it: [`check_softhsm2_conf`] refuses, with [`HsmError::SoftHsmConfEnv`] saying what to
//! set, unless `SOFTHSM2_CONF` names the vault's configuration. It is set before the process
//! has a second thread, by whoever starts it:
//!
//! - the `weightvault` command sets it in `main`, right after parsing its arguments, from the
//!   vault it is given ([`crate::cli::Cli::softhsm2_conf`],
//!   [`crate::store::Vault::softhsm2_conf_for`]);
//! - test processes get it from cargo (`[env]` in `.cargo/config.toml`), and the tests that
//!   open an HSM in their own process make their vault where it points (`tests/common`);
//! - another program using the library sets it in the environment it starts with, or at the
//!   start of its `main` as the command does.
//!
//! A process therefore works with one SoftHSM2 configuration, as it has to anyway: the loaded
//! module, and the configuration its first `C_Initialize` read, are shared by the whole
//! process. The root `clippy.toml` refuses `set_var` outside a binary's `main`.

use crate::keys::{DataKey, KEY_LEN};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use zeroize::Zeroizing;

/// The Debian path of SoftHSM2's PKCS#11 module.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The environment variable SoftHSM2 takes its configuration file from.
pub const SOFTHSM2_CONF_VAR: &str = "SOFTHSM2_CONF";

/// What went wrong talking to the HSM, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The PKCS#11 module file is missing or could not be loaded.
    #[error("cannot load PKCS#11 module {path}: {why} (install softhsm2, or set [hsm] module in the vault config)")]
    Module {
        /// Module path.
        path: PathBuf,
        /// Loader message.
        why: String,
    },
    /// The SoftHSM2 configuration is missing or points at a missing token directory.
    #[error("SoftHSM2 configuration {path}: {why}")]
    SoftHsmConf {
        /// Config path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The process was not started with `SOFTHSM2_CONF` naming the vault's SoftHSM2
    /// configuration, the only place SoftHSM2 takes it from.
    #[error(
        "this vault's SoftHSM2 configuration is {conf}, but {}: SoftHSM2 takes its configuration only from SOFTHSM2_CONF, which cannot be changed safely once a process runs threads; start the process with SOFTHSM2_CONF={conf}, as the weightvault command does",
        env_conf(.env)
    )]
    SoftHsmConfEnv {
        /// The vault's SoftHSM2 configuration.
        conf: PathBuf,
        /// `SOFTHSM2_CONF` in this process's environment.
        env: Option<PathBuf>,
    },
    /// No token with the configured label.
    #[error("no HSM token labelled '{0}' (run `weightvault init`, or check [hsm] token_label)")]
    TokenMissing(String),
    /// Login failed with this PIN.
    #[error("HSM login to token '{0}' failed: wrong PIN")]
    WrongPin(String),
    /// The PIN is locked after too many failures.
    #[error("HSM token '{0}': the user PIN is locked")]
    PinLocked(String),
    /// No PIN was configured.
    #[error("no HSM PIN: set WEIGHTVAULT_HSM_PIN or [hsm] pin_file in the vault config")]
    NoPin,
    /// A PIN file could not be read.
    #[error("cannot read HSM PIN file {0}: {1}")]
    PinFile(PathBuf, std::io::Error),
    /// The token has no KEK of that label/version.
    #[error(
        "KEK '{label}' version {version} is not on token '{token}' (retired, or a different token)"
    )]
    KekMissing {
        /// KEK label.
        label: String,
        /// KEK version.
        version: u32,
        /// Token label.
        token: String,
    },
    /// The token has no KEK at all.
    #[error("token '{token}' holds no KEK labelled '{label}.v<N>' (run `weightvault init`)")]
    NoKek {
        /// KEK label.
        label: String,
        /// Token label.
        token: String,
    },
    /// Unwrapping failed: the wrapped key was altered or made under another KEK.
    #[error("the HSM could not unwrap the data key with KEK '{label}' v{version}: wrapped key altered, or wrapped by a different KEK")]
    UnwrapFailed {
        /// KEK label.
        label: String,
        /// KEK version.
        version: u32,
    },
    /// The lock file beside the token could not be taken.
    #[error("cannot lock {0}: {1}")]
    Lock(PathBuf, std::io::Error),
    /// The newest KEK version cannot be retired.
    #[error("KEK '{label}' version {version} is the newest: run `weightvault kek rotate` first, then `rewrap`")]
    NewestKek {
        /// KEK label.
        label: String,
        /// KEK version.
        version: u32,
    },
    /// Any other PKCS#11 failure.
    #[error("HSM error during {during}: {source}")]
    Pkcs11 {
        /// What was being done.
        during: &'static str,
        /// The PKCS#11 error.
        #[source]
        source: CkError,
    },
}

/// What `SOFTHSM2_CONF` is, for [`HsmError::SoftHsmConfEnv`].
fn env_conf(env: &Option<PathBuf>) -> String {
    match env {
        Some(e) => format!("SOFTHSM2_CONF is {}", e.display()),
        None => "SOFTHSM2_CONF is not set".into(),
    }
}

fn ck(during: &'static str) -> impl FnOnce(CkError) -> HsmError {
    move |source| HsmError::Pkcs11 { during, source }
}

/// A PIN. Its `Debug` never shows it; it is zeroized on drop.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Wraps a PIN string.
    pub fn new(s: impl Into<String>) -> Self {
        Self(Zeroizing::new(s.into()))
    }
    /// Reads a PIN from a file (first line, trailing whitespace removed).
    pub fn from_file(path: &Path) -> Result<Self, HsmError> {
        let s = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| HsmError::PinFile(path.into(), e))?,
        );
        Ok(Self::new(s.lines().next().unwrap_or("").trim_end()))
    }
    /// A random 24-character PIN.
    pub fn random() -> Self {
        let mut b = Zeroizing::new([0u8; 18]);
        getrandom::fill(b.as_mut()).expect("OS randomness");
        Self::new(hex::encode(b.as_ref()))
    }
    fn auth(&self) -> AuthPin {
        AuthPin::from(self.0.as_str())
    }
    /// The PIN text, for writing to a PIN file at init. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// A data key wrapped by one KEK version: what a key slot stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// KEK label (without version suffix).
    pub kek_label: String,
    /// KEK version.
    pub kek_version: u32,
    /// Wrapped bytes.
    pub wrapped: Vec<u8>,
}

/// Wraps and unwraps data keys with a KEK held elsewhere.
pub trait KeyWrap: Send + Sync {
    /// Wraps `dek` under the newest KEK version.
    fn wrap(&self, dek: &DataKey) -> Result<WrappedKey, HsmError>;
    /// Unwraps a data key wrapped by KEK `label` version `version`.
    fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey, HsmError>;
}

/// Where the HSM is and how to log in.
#[derive(Debug, Clone)]
pub struct HsmConfig {
    /// PKCS#11 module path.
    pub module: PathBuf,
    /// Token label (tokens are found by label, never by slot number).
    pub token_label: String,
    /// KEK label prefix; versions are `<label>.v<N>`.
    pub kek_label: String,
    /// User PIN.
    pub pin: Pin,
    /// SoftHSM2 configuration file to use, if any: the process must have been started with
    /// `SOFTHSM2_CONF` naming it (see the module doc).
    pub softhsm2_conf: Option<PathBuf>,
    /// Lock file serialising PKCS#11 use across processes.
    pub lock_file: PathBuf,
}

/// An exclusive lock on the file beside the token, held while PKCS#11 calls run.
pub struct TokenLock(File);

impl TokenLock {
    /// Blocks until the lock is ours.
    pub fn acquire(path: &Path) -> Result<Self, HsmError> {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| HsmError::Lock(path.into(), e))?;
        f.lock().map_err(|e| HsmError::Lock(path.into(), e))?;
        Ok(Self(f))
    }
}

impl Drop for TokenLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Checks a SoftHSM2 configuration and that this process was started with `SOFTHSM2_CONF`
/// naming it (the module doc says why it is not set here). SoftHSM2 reports a bad config only
/// as `CKR_GENERAL_ERROR` at initialise, so the file and its token directory are checked first.
pub fn check_softhsm2_conf(conf: &Path) -> Result<(), HsmError> {
    let bad = |why: String| HsmError::SoftHsmConf {
        path: conf.into(),
        why,
    };
    let text = std::fs::read_to_string(conf).map_err(|e| bad(format!("cannot read: {e}")))?;
    let dir = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "directories.tokendir")
        .map(|(_, v)| PathBuf::from(v.trim()))
        .ok_or_else(|| bad("no directories.tokendir line".into()))?;
    if !dir.is_dir() {
        return Err(bad(format!(
            "token directory {} does not exist",
            dir.display()
        )));
    }
    // Only read: SoftHSM2 reads it again in C_Initialize, and nothing changes it after the
    // process starts.
    let env = std::env::var_os(SOFTHSM2_CONF_VAR).map(PathBuf::from);
    let same = |e: &Path| match (e.canonicalize(), conf.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => e == conf,
    };
    if !env.as_deref().is_some_and(same) {
        return Err(HsmError::SoftHsmConfEnv {
            conf: conf.into(),
            env,
        });
    }
    Ok(())
}

fn load_module(cfg: &HsmConfig) -> Result<Pkcs11, HsmError> {
    if let Some(conf) = &cfg.softhsm2_conf {
        check_softhsm2_conf(conf)?;
    }
    if !cfg.module.exists() {
        return Err(HsmError::Module {
            path: cfg.module.clone(),
            why: "file not found".into(),
        });
    }
    let p = Pkcs11::new(&cfg.module).map_err(|e| HsmError::Module {
        path: cfg.module.clone(),
        why: e.to_string(),
    })?;
    initialize(&p)?;
    Ok(p)
}

fn initialize(p: &Pkcs11) -> Result<(), HsmError> {
    match p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(HsmError::Pkcs11 {
            during: "C_Initialize (check SOFTHSM2_CONF and the token directory)",
            source: e,
        }),
    }
}

fn find_token(p: &Pkcs11, label: &str) -> Result<Option<Slot>, HsmError> {
    for slot in p
        .get_slots_with_initialized_token()
        .map_err(ck("listing slots"))?
    {
        let info = p.get_token_info(slot).map_err(ck("reading token info"))?;
        if info.label().trim_end() == label {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

fn login(session: &Session, user: UserType, pin: &Pin, token: &str) -> Result<(), HsmError> {
    match session.login(user, Some(&pin.auth())) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(HsmError::WrongPin(token.into())),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(HsmError::PinLocked(token.into())),
        Err(e) => Err(HsmError::Pkcs11 {
            during: "login",
            source: e,
        }),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum TokenFiles {
    /// After a good login: keep a copy of each token's `token.object`.
    Keep,
    /// The token cannot be found: put back the copies of torn (shorter) token files. Returns
    /// whether any was.
    Restore,
}

/// SoftHSM2 (file backend) rewrites each token's `token.object` in place at every `C_Login`;
/// a process killed in that window leaves it empty or torn and the token unreadable — with
/// every key on it. weightvault keeps `token.object.good`, copied after each good login, and
/// puts it back (atomically) when the token cannot be found. Only for the vault's own
/// SoftHSM2 configuration; other modules are left alone. Found by the rewrap SIGKILL test.
fn softhsm_token_files(cfg: &HsmConfig, what: TokenFiles) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(conf) = &cfg.softhsm2_conf else {
        return false;
    };
    let Some(dir) = std::fs::read_to_string(conf).ok().and_then(|t| {
        t.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "directories.tokendir").then(|| PathBuf::from(v.trim()))
        })
    }) else {
        return false;
    };
    let mut restored = false;
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let (cur, good) = (
            e.path().join("token.object"),
            e.path().join("token.object.good"),
        );
        let (Ok(c), g) = (std::fs::read(&cur), std::fs::read(&good)) else {
            continue;
        };
        let (to, bytes) = match (what, g) {
            (TokenFiles::Keep, Ok(g)) if g == c => continue,
            (TokenFiles::Keep, _) if c.is_empty() => continue,
            (TokenFiles::Keep, _) => (&good, c),
            // Torn: shorter than the last good copy (a kill between truncating and writing).
            (TokenFiles::Restore, Ok(g)) if c.len() < g.len() => (&cur, g),
            (TokenFiles::Restore, _) => continue,
        };
        let tmp = e.path().join("token.object.tmp");
        let ok = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &bytes)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, to))
            .and_then(|()| std::fs::File::open(e.path())?.sync_all());
        match ok {
            Ok(()) => restored |= what == TokenFiles::Restore,
            Err(err) => tracing::warn!("keeping a copy of {}: {err}", cur.display()),
        }
    }
    restored
}

/// The attributes every KEK gets, set explicitly because token defaults are permissive.
pub fn kek_template(label: &str, version: u32) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen((KEY_LEN as u64).into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Destroyable(true),
        Attribute::Label(kek_object_label(label, version).into_bytes()),
        Attribute::Id(version.to_be_bytes().to_vec()),
    ]
}

/// The token object label of a KEK version.
pub fn kek_object_label(label: &str, version: u32) -> String {
    format!("{label}.v{version}")
}

fn kek_versions(session: &Session, label: &str) -> Result<BTreeMap<u32, ObjectHandle>, HsmError> {
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
        ])
        .map_err(ck("finding KEKs"))?;
    let prefix = format!("{label}.v");
    let mut out = BTreeMap::new();
    for h in handles {
        let attrs = session
            .get_attributes(h, &[AttributeType::Label])
            .map_err(ck("reading KEK label"))?;
        for a in attrs {
            if let Attribute::Label(l) = a {
                if let Some(v) = std::str::from_utf8(&l)
                    .ok()
                    .and_then(|s| s.strip_prefix(&prefix))
                    .and_then(|v| v.parse::<u32>().ok())
                {
                    out.insert(v, h);
                }
            }
        }
    }
    Ok(out)
}

/// Makes a fresh SoftHSM2 token: writes `softhsm2.conf` and the token directory under `dir`,
/// initialises a token labelled `token_label` with the SO and user PINs, and creates KEK
/// version 1. Idempotence is the caller's business (it checks whether the token exists).
pub fn init_softhsm2_token(
    dir: &Path,
    module: &Path,
    token_label: &str,
    kek_label: &str,
    so_pin: &Pin,
    user_pin: &Pin,
    lock_file: &Path,
) -> Result<PathBuf, HsmError> {
    use std::os::unix::fs::DirBuilderExt;
    let tokens = dir.join("tokens");
    let io = |e: std::io::Error| HsmError::SoftHsmConf {
        path: dir.into(),
        why: e.to_string(),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&tokens)
        .map_err(io)?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "# SoftHSM2 configuration of this vault (made by weightvault init)\n\
             directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.canonicalize().map_err(io)?.display()
        ),
    )
    .map_err(io)?;
    let _lock = TokenLock::acquire(lock_file)?;
    check_softhsm2_conf(&conf)?;
    let cfg = HsmConfig {
        module: module.into(),
        token_label: token_label.into(),
        kek_label: kek_label.into(),
        pin: user_pin.clone(),
        softhsm2_conf: Some(conf.clone()),
        lock_file: lock_file.into(),
    };
    let p = load_module(&cfg)?;
    if find_token(&p, token_label)?.is_none() {
        let mut free = None;
        for slot in p.get_all_slots().map_err(ck("listing slots"))? {
            if let Ok(info) = p.get_token_info(slot) {
                if !info.token_initialized() {
                    free = Some(slot);
                    break;
                }
            }
        }
        let slot =
            free.ok_or_else(|| HsmError::TokenMissing(format!("{token_label} (no free slot)")))?;
        p.init_token(slot, &so_pin.auth(), token_label)
            .map_err(ck("C_InitToken"))?;
        // SoftHSM2 renumbers slots after C_InitToken: find the token again by label.
        let slot = find_token(&p, token_label)?
            .ok_or_else(|| HsmError::TokenMissing(token_label.into()))?;
        let s = p.open_rw_session(slot).map_err(ck("opening session"))?;
        login(&s, UserType::So, so_pin, token_label)?;
        s.init_pin(&user_pin.auth()).map_err(ck("C_InitPIN"))?;
        s.logout().map_err(ck("logout"))?;
    }
    let slot =
        find_token(&p, token_label)?.ok_or_else(|| HsmError::TokenMissing(token_label.into()))?;
    let s = p.open_rw_session(slot).map_err(ck("opening session"))?;
    login(&s, UserType::User, user_pin, token_label)?;
    if kek_versions(&s, kek_label)?.is_empty() {
        s.generate_key(&Mechanism::AesKeyGen, &kek_template(kek_label, 1))
            .map_err(ck("generating the KEK"))?;
    }
    drop(s);
    p.finalize().map_err(ck("C_Finalize"))?;
    Ok(conf)
}

/// A logged-in session on the token and the KEK versions it found. `session` is `None`
/// after the token went away and could not be reached again; the next use tries again.
struct Inner {
    // Declared before `ctx`, so the session closes before the module is let go.
    session: Option<Session>,
    keks: BTreeMap<u32, ObjectHandle>,
    ctx: Pkcs11,
}

/// Finds the token by label, opens a session, logs in and lists the KEK versions.
fn open_session(
    ctx: &Pkcs11,
    cfg: &HsmConfig,
) -> Result<(Session, BTreeMap<u32, ObjectHandle>), HsmError> {
    let slot = find_token(ctx, &cfg.token_label)?
        .ok_or_else(|| HsmError::TokenMissing(cfg.token_label.clone()))?;
    let session = ctx.open_rw_session(slot).map_err(ck("opening session"))?;
    login(&session, UserType::User, &cfg.pin, &cfg.token_label)?;
    let keks = kek_versions(&session, &cfg.kek_label)?;
    if keks.is_empty() {
        return Err(HsmError::NoKek {
            label: cfg.kek_label.clone(),
            token: cfg.token_label.clone(),
        });
    }
    Ok((session, keks))
}

impl Inner {
    /// Opens a new session. When the module cannot reach the token (its slot list or
    /// token info fail, or the token is not there), the module is finalised and
    /// initialised again first: SoftHSM2 reads its token directory only in
    /// `C_Initialize` and, once the directory went away, answers `CKR_GENERAL_ERROR`
    /// for the token until then, even after the directory is back.
    fn connect(&mut self, cfg: &HsmConfig) -> Result<(), HsmError> {
        self.session = None;
        let (session, keks) = match open_session(&self.ctx, cfg) {
            Err(HsmError::Pkcs11 { .. } | HsmError::TokenMissing(_)) => {
                // Every session of this process on the module ends here; this process has
                // one (this one), already dropped.
                if let Err(e) = self.ctx.clone().finalize() {
                    tracing::debug!("C_Finalize before initialising the module again: {e}");
                }
                initialize(&self.ctx)?;
                open_session(&self.ctx, cfg)?
            }
            r => r?,
        };
        self.session = Some(session);
        self.keks = keks;
        Ok(())
    }

    /// The session, connecting first when there is none.
    fn session(&mut self, cfg: &HsmConfig) -> Result<&Session, HsmError> {
        if self.session.is_none() {
            self.connect(cfg)?;
        }
        Ok(self.session.as_ref().expect("connected"))
    }
}

/// [`KeyWrap`] over a PKCS#11 token.
pub struct Pkcs11KeyWrap {
    cfg: HsmConfig,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Pkcs11KeyWrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11KeyWrap")
            .field("module", &self.cfg.module)
            .field("token", &self.cfg.token_label)
            .field("kek", &self.cfg.kek_label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11KeyWrap {
    /// Loads the module, finds the token by label, logs in and finds the KEK versions.
    pub fn open(cfg: HsmConfig) -> Result<Self, HsmError> {
        let _lock = TokenLock::acquire(&cfg.lock_file)?;
        match Self::open_locked(cfg.clone()) {
            Ok(kw) => {
                softhsm_token_files(&cfg, TokenFiles::Keep);
                Ok(kw)
            }
            // A token file torn by a process killed while SoftHSM2 rewrote it: put back the
            // last good copy and try once more.
            Err(HsmError::TokenMissing(_)) if softhsm_token_files(&cfg, TokenFiles::Restore) => {
                tracing::warn!("SoftHSM2 token file was torn (a process killed during login): restored the last good copy");
                let kw = Self::open_locked(cfg.clone())?;
                softhsm_token_files(&cfg, TokenFiles::Keep);
                Ok(kw)
            }
            Err(e) => Err(e),
        }
    }

    fn open_locked(cfg: HsmConfig) -> Result<Self, HsmError> {
        let ctx = load_module(&cfg)?;
        let (session, keks) = open_session(&ctx, &cfg)?;
        Ok(Self {
            cfg,
            inner: Mutex::new(Inner {
                session: Some(session),
                keks,
                ctx,
            }),
        })
    }

    /// The KEK label (without version suffix).
    pub fn kek_label(&self) -> &str {
        &self.cfg.kek_label
    }

    /// KEK versions present on the token.
    pub fn kek_versions(&self) -> Vec<u32> {
        self.inner
            .lock()
            .expect("hsm mutex")
            .keks
            .keys()
            .copied()
            .collect()
    }

    /// Opens a new session on the token (found again by label), logs in and finds the KEK
    /// versions again: after the token went away and came back, the old session and its
    /// handles no longer work. Initialises the module again when it cannot see the token.
    pub fn reconnect(&self) -> Result<(), HsmError> {
        let mut inner = self.inner.lock().expect("hsm mutex");
        let _lock = TokenLock::acquire(&self.cfg.lock_file)?;
        inner.connect(&self.cfg)
    }

    /// Finds the KEK versions on the token again (another process may have rotated or
    /// retired one).
    pub fn refresh(&self) -> Result<Vec<u32>, HsmError> {
        let mut inner = self.inner.lock().expect("hsm mutex");
        let _lock = TokenLock::acquire(&self.cfg.lock_file)?;
        let keks = kek_versions(inner.session(&self.cfg)?, &self.cfg.kek_label)?;
        inner.keks = keks;
        Ok(inner.keks.keys().copied().collect())
    }

    /// Creates the next KEK version on the token (generated inside it, never extractable);
    /// new data keys and rewraps use it from now on. Returns the new version.
    pub fn rotate(&self) -> Result<u32, HsmError> {
        let mut inner = self.inner.lock().expect("hsm mutex");
        let _lock = TokenLock::acquire(&self.cfg.lock_file)?;
        let session = inner.session(&self.cfg)?;
        let keks = kek_versions(session, &self.cfg.kek_label)?;
        let next = keks.keys().next_back().map_or(1, |v| v + 1);
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &kek_template(&self.cfg.kek_label, next),
            )
            .map_err(ck("generating the new KEK version"))?;
        let keks = kek_versions(session, &self.cfg.kek_label)?;
        inner.keks = keks;
        Ok(next)
    }

    /// Destroys KEK `version` on the token. The newest version cannot be destroyed (rotate
    /// first); whether anything still depends on it is the caller's check.
    pub fn destroy_kek(&self, version: u32) -> Result<(), HsmError> {
        let mut inner = self.inner.lock().expect("hsm mutex");
        let _lock = TokenLock::acquire(&self.cfg.lock_file)?;
        let session = inner.session(&self.cfg)?;
        let keks = kek_versions(session, &self.cfg.kek_label)?;
        let missing = || HsmError::KekMissing {
            label: self.cfg.kek_label.clone(),
            version,
            token: self.cfg.token_label.clone(),
        };
        let h = *keks.get(&version).ok_or_else(missing)?;
        if keks.keys().next_back() == Some(&version) {
            return Err(HsmError::NewestKek {
                label: self.cfg.kek_label.clone(),
                version,
            });
        }
        session
            .destroy_object(h)
            .map_err(ck("destroying the KEK"))?;
        let keks = kek_versions(session, &self.cfg.kek_label)?;
        inner.keks = keks;
        Ok(())
    }

    /// Tries every secret key on the token to unwrap `wrapped` (RFC 5649); returns the labels
    /// of those that do. Used to show that a shredded data key can no longer be recovered.
    pub fn keys_that_unwrap(&self, wrapped: &[u8]) -> Result<(usize, Vec<String>), HsmError> {
        self.with_session(|s, _| {
            let all = s
                .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
                .map_err(ck("listing secret keys"))?;
            let mut opened = Vec::new();
            for h in &all {
                if let Ok(obj) =
                    s.unwrap_key(&Mechanism::AesKeyWrapPad, *h, wrapped, &dek_template(None))
                {
                    let _ = s.destroy_object(obj);
                    let label = s
                        .get_attributes(*h, &[AttributeType::Label])
                        .ok()
                        .and_then(|a| {
                            a.into_iter().find_map(|a| match a {
                                Attribute::Label(l) => {
                                    Some(String::from_utf8_lossy(&l).into_owned())
                                }
                                _ => None,
                            })
                        })
                        .unwrap_or_else(|| "(no label)".into());
                    opened.push(label);
                }
            }
            Ok((all.len(), opened))
        })
    }

    /// Runs `f` with the session, under the cross-process token lock.
    pub fn with_session<T>(
        &self,
        f: impl FnOnce(&Session, &BTreeMap<u32, ObjectHandle>) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let mut inner = self.inner.lock().expect("hsm mutex");
        let _lock = TokenLock::acquire(&self.cfg.lock_file)?;
        inner.session(&self.cfg)?;
        let r = f(inner.session.as_ref().expect("connected"), &inner.keks);
        if let Err(HsmError::Pkcs11 { .. }) = r {
            // The token may have gone away: the next use opens a new session.
            inner.session = None;
        }
        r
    }

    fn kek(
        &self,
        keks: &BTreeMap<u32, ObjectHandle>,
        label: &str,
        version: u32,
    ) -> Result<ObjectHandle, HsmError> {
        if label != self.cfg.kek_label {
            return Err(HsmError::KekMissing {
                label: label.into(),
                version,
                token: self.cfg.token_label.clone(),
            });
        }
        keks.get(&version)
            .copied()
            .ok_or_else(|| HsmError::KekMissing {
                label: label.into(),
                version,
                token: self.cfg.token_label.clone(),
            })
    }
}

/// Session-object template for a data key while it is on the token for wrapping.
fn dek_template(value: Option<&DataKey>) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ];
    if let Some(k) = value {
        t.push(Attribute::Value(k.expose().to_vec()));
    }
    t
}

impl KeyWrap for Pkcs11KeyWrap {
    fn wrap(&self, dek: &DataKey) -> Result<WrappedKey, HsmError> {
        // Always under the newest version, even one made by another process since opening.
        self.refresh()?;
        self.with_session(|s, keks| {
            let (&version, &kek) = keks.last_key_value().ok_or_else(|| HsmError::NoKek {
                label: self.cfg.kek_label.clone(),
                token: self.cfg.token_label.clone(),
            })?;
            let mut template = dek_template(Some(dek));
            let obj = s.create_object(&template);
            // The template held a copy of the key: clear it.
            for a in template.iter_mut() {
                if let Attribute::Value(v) = a {
                    zeroize::Zeroize::zeroize(v);
                }
            }
            let obj = obj.map_err(ck("importing the data key"))?;
            let wrapped = s.wrap_key(&Mechanism::AesKeyWrapPad, kek, obj);
            let destroyed = s.destroy_object(obj);
            let wrapped = wrapped.map_err(ck("wrapping the data key"))?;
            destroyed.map_err(ck("destroying the data key session object"))?;
            Ok(WrappedKey {
                kek_label: self.cfg.kek_label.clone(),
                kek_version: version,
                wrapped,
            })
        })
    }

    fn unwrap(&self, w: &WrappedKey) -> Result<DataKey, HsmError> {
        match self.unwrap_once(w) {
            // A version made by another process since this one opened the token: look again.
            Err(HsmError::KekMissing { .. }) if w.kek_label == self.cfg.kek_label => {
                self.refresh()?;
                self.unwrap_once(w)
            }
            // The token went away and may be back (a module restarted, a device reset, a
            // token directory restored): its session and handles are stale, so open a new
            // session and try once more. Still failing, the token is unavailable.
            Err(e @ HsmError::Pkcs11 { .. }) => {
                tracing::warn!("{e}; opening a new session on the token");
                if let Err(again) = self.reconnect() {
                    tracing::warn!("the token is still unavailable: {again}");
                    return Err(e);
                }
                self.unwrap_once(w)
            }
            r => r,
        }
    }
}

impl Pkcs11KeyWrap {
    fn unwrap_once(&self, w: &WrappedKey) -> Result<DataKey, HsmError> {
        self.with_session(|s, keks| {
            let kek = self.kek(keks, &w.kek_label, w.kek_version)?;
            let failed = || HsmError::UnwrapFailed {
                label: w.kek_label.clone(),
                version: w.kek_version,
            };
            let obj = match s.unwrap_key(
                &Mechanism::AesKeyWrapPad,
                kek,
                &w.wrapped,
                &dek_template(None),
            ) {
                Ok(o) => o,
                // SoftHSM2 reports a failed integrity check as CKR_GENERAL_ERROR.
                Err(CkError::Pkcs11(
                    RvError::GeneralError
                    | RvError::WrappedKeyInvalid
                    | RvError::WrappedKeyLenRange
                    | RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange,
                    _,
                )) => return Err(failed()),
                Err(e) => return Err(ck("unwrapping the data key")(e)),
            };
            let attrs = s.get_attributes(obj, &[AttributeType::Value]);
            let destroyed = s.destroy_object(obj);
            let attrs = attrs.map_err(ck("reading the unwrapped data key"))?;
            destroyed.map_err(ck("destroying the data key session object"))?;
            // get_attributes silently omits unreadable attributes: check presence and length.
            let mut key = None;
            for a in attrs {
                if let Attribute::Value(mut v) = a {
                    key = DataKey::from_slice(&v);
                    zeroize::Zeroize::zeroize(&mut v);
                }
            }
            key.ok_or_else(failed)
        })
    }
}

/// Logs in to an existing token (any PKCS#11 module) and creates KEK version 1 if the token
/// holds no KEK of the configured label yet.
pub fn ensure_kek(cfg: &HsmConfig) -> Result<(), HsmError> {
    let _lock = TokenLock::acquire(&cfg.lock_file)?;
    let p = load_module(cfg)?;
    let slot = find_token(&p, &cfg.token_label)?
        .ok_or_else(|| HsmError::TokenMissing(cfg.token_label.clone()))?;
    let s = p.open_rw_session(slot).map_err(ck("opening session"))?;
    login(&s, UserType::User, &cfg.pin, &cfg.token_label)?;
    if kek_versions(&s, &cfg.kek_label)?.is_empty() {
        s.generate_key(&Mechanism::AesKeyGen, &kek_template(&cfg.kek_label, 1))
            .map_err(ck("generating the KEK"))?;
    }
    Ok(())
}

/// Token label of the ledger's checkpoint signing key pair (Ed25519).
pub const LEDGER_KEY_LABEL: &str = "weightvault-ledger-signing";

/// DER of the Ed25519 curve OID 1.3.101.112, for `CKA_EC_PARAMS`.
const ED25519_OID_DER: [u8; 5] = [0x06, 0x03, 0x2B, 0x65, 0x70];

fn find_one(
    session: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<Option<ObjectHandle>, HsmError> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(ck("finding the ledger signing key"))?;
    Ok(found.first().copied())
}

/// Creates the ledger's Ed25519 signing key pair on the token if it is missing (CKM_EDDSA;
/// the private key is sensitive, not extractable, sign only).
pub fn ensure_ledger_key(session: &Session) -> Result<(), HsmError> {
    if find_one(session, ObjectClass::PRIVATE_KEY, LEDGER_KEY_LABEL)?.is_some() {
        return Ok(());
    }
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
        Attribute::Modifiable(false),
        Attribute::EcParams(ED25519_OID_DER.to_vec()),
        Attribute::Label(LEDGER_KEY_LABEL.as_bytes().to_vec()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Label(LEDGER_KEY_LABEL.as_bytes().to_vec()),
    ];
    session
        .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private)
        .map_err(ck("generating the ledger signing key (Ed25519)"))?;
    Ok(())
}

impl Pkcs11KeyWrap {
    /// Creates the ledger signing key if missing.
    pub fn ensure_ledger_key(&self) -> Result<(), HsmError> {
        self.with_session(|s, _| ensure_ledger_key(s))
    }

    fn ledger_key(&self, s: &Session, class: ObjectClass) -> Result<ObjectHandle, HsmError> {
        find_one(s, class, LEDGER_KEY_LABEL)?.ok_or_else(|| {
            HsmError::TokenMissing(format!(
                "{} (no ledger signing key: run `weightvault init`)",
                self.cfg.token_label
            ))
        })
    }

    /// The ledger's Ed25519 public key.
    pub fn ledger_public_key(&self) -> Result<[u8; 32], HsmError> {
        self.with_session(|s, _| {
            let h = self.ledger_key(s, ObjectClass::PUBLIC_KEY)?;
            let attrs = s
                .get_attributes(h, &[AttributeType::EcPoint])
                .map_err(ck("reading the ledger public key"))?;
            for a in attrs {
                if let Attribute::EcPoint(p) = a {
                    // A DER OCTET STRING (04 20 || key) or the raw 32 bytes.
                    let raw = match p.as_slice() {
                        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
                        rest if rest.len() == 32 => rest,
                        _ => continue,
                    };
                    return Ok(raw.try_into().expect("32"));
                }
            }
            Err(HsmError::Pkcs11 {
                during: "reading the ledger public key",
                source: CkError::Pkcs11(
                    RvError::AttributeTypeInvalid,
                    cryptoki::context::Function::GetAttributeValue,
                ),
            })
        })
    }

    /// Signs `msg` with the ledger key (pure Ed25519, CKM_EDDSA).
    pub fn sign_ledger(&self, msg: &[u8]) -> Result<[u8; 64], HsmError> {
        self.with_session(|s, _| {
            let h = self.ledger_key(s, ObjectClass::PRIVATE_KEY)?;
            let sig = s
                .sign(
                    &Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
                        cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
                    )),
                    h,
                    msg,
                )
                .map_err(ck("signing a ledger checkpoint"))?;
            sig.try_into().map_err(|_| HsmError::Pkcs11 {
                during: "signing a ledger checkpoint (signature is not 64 bytes)",
                source: CkError::Pkcs11(RvError::GeneralError, cryptoki::context::Function::Sign),
            })
        })
    }
}

/// The HSM's ledger key signs checkpoints.
impl crate::ledger::LedgerSigner for Pkcs11KeyWrap {
    fn public_key(&self) -> Result<[u8; 32], crate::ledger::SignError> {
        Ok(self.ledger_public_key()?)
    }

    fn sign(&self, msg: &[u8]) -> Result<[u8; 64], crate::ledger::SignError> {
        Ok(self.sign_ledger(msg)?)
    }
}

#[cfg(test)]
mod tests {
    use super::{check_softhsm2_conf, HsmError};

    #[test]
    fn a_configuration_the_environment_does_not_name_is_refused_not_set() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("tokens")).unwrap();
        let conf = t.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\n",
                t.path().join("tokens").display()
            ),
        )
        .unwrap();
        // Whatever the test process was started with (cargo's, or none), it is not this file.
        let before = std::env::var_os("SOFTHSM2_CONF");
        let e = check_softhsm2_conf(&conf).unwrap_err();
        assert!(matches!(e, HsmError::SoftHsmConfEnv { .. }), "{e}");
        let m = e.to_string();
        assert!(
            m.contains(&format!(
                "start the process with SOFTHSM2_CONF={}",
                conf.display()
            )),
            "{m}"
        );
        assert_eq!(std::env::var_os("SOFTHSM2_CONF"), before);
    }
}
