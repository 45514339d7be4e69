//! The command line: clap's types for every command and option, and [`run`], which hands each
//! command to its own file in `cmd/` (argument handling, a call to the library, printing); the
//! printing they share is in `ui`. What a command decides or records is in the library
//! ([`crate::actions`], [`crate::dry_run`], [`crate::store`], [`crate::ledger`]), where any other
//! front end can call it. Every failure ends as one line a person can act on, and a non-zero
//! exit; `main` decides the exit status.

pub mod operator;

use crate::store::{RevisionRef, Vault};
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// `print!` that ends the command quietly when standard output is a closed pipe
/// (`weightvault kek list | head`) instead of panicking, and fails plainly on other errors.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::write_out(format_args!($($t)*))?
    };
}

/// `println!`, the same way.
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($t)*)))?
    };
}

/// Set by `-q` (without `--json`): what commands write to standard output is dropped, so
/// that only errors (and warnings) are printed, on standard error.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes to standard output for `out!` and `outln!` (and for `audit show`, which streams);
/// nothing under `-q`.
fn write_out(a: std::fmt::Arguments<'_>) -> std::result::Result<(), Exit> {
    use std::io::Write;
    if QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let mut o = std::io::stdout().lock();
    match o.write_fmt(a).and_then(|()| o.flush()) {
        Ok(()) => Ok(()),
        // The reader went away (`| head`): stop quietly, as other tools do.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Exit::quiet(0)),
        Err(e) => Err(Exit {
            code: 1,
            message: Some(format!("writing to standard output: {e}")),
        }),
    }
}

/// A command's end with an exit status of its own: what it had to say is said (or is
/// `message`); `main` turns it into the process's exit status. Commands never exit the
/// process themselves.
#[derive(Debug, thiserror::Error)]
#[error("{}", message.as_deref().unwrap_or("exit status {code}"))]
pub struct Exit {
    /// The process's exit status.
    pub code: u8,
    /// An error to print, when the command has not printed it.
    pub message: Option<String>,
}

/// The exit statuses of every command, for scripts: [`EXIT_CODES`] lists them in `--help`
/// and the README.
pub mod status {
    /// It did what was asked.
    pub const OK: u8 = 0;
    /// It failed (the one line on standard error says why).
    pub const ERROR: u8 = 1;
    /// The policy refused a release (`fetch`): every check is printed.
    pub const DENIED: u8 = 2;
    /// The release is held for a compliance officer's review (`fetch`): nothing was
    /// released; the review's id is printed. Once approved, the same fetch goes through.
    pub const HELD: u8 = 3;
    /// The command line is not understood (sysexits' EX_USAGE).
    pub const USAGE: u8 = 64;
    // Stopped by a signal: 128 + its number (`interrupt::Signal::exit_code`).
}

/// The exit statuses, as `--help` prints them.
pub const EXIT_CODES: &str = "Exit status:
  0    success
  1    error (one line on standard error says why)
  2    a release denied by the policy (fetch; every check is printed)
  3    a release held for a compliance officer's review (fetch, policy check; review id printed)
  64   usage: the command line is not understood
  130  stopped by SIGINT (Ctrl-C); 143 by SIGTERM: no plaintext is left";

/// `--version`: the release, the container format it writes, and the commit it was built from.
fn long_version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        format!(
            "{}\ncontainer format: {}\ncommit: {}",
            env!("CARGO_PKG_VERSION"),
            crate::format::VERSION,
            env!("WEIGHTVAULT_COMMIT")
        )
    })
}

impl Exit {
    /// An exit whose output is already written.
    pub fn quiet(code: u8) -> Self {
        Exit {
            code,
            message: None,
        }
    }
}

// After the macros: the commands print with them.
mod cmd;
mod ui;

/// An encrypted vault for AI model weights whose keys are released only under policy.
///
/// Checkpoints are sealed chunk by chunk with AES-256-GCM under per-file data keys that a
/// key-encryption key in an HSM (SoftHSM2 by default) wraps. No plaintext weights stay at rest.
///
/// Start with `weightvault init`, then `weightvault seal ./ckpt --model NAME --revision REV`.
#[derive(Debug, Parser)]
#[command(
    name = "weightvault",
    version,
    long_version = long_version(),
    propagate_version = true,
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    /// Vault directory [default: $WEIGHTVAULT_HOME, else ./vault]
    #[arg(long, global = true, value_name = "DIR")]
    pub vault: Option<PathBuf>,
    /// Print nothing but errors (and warnings), on standard error: no progress, no report
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Print what the command reports as JSON (one document; `audit show` and `gc`: one per
    /// line; shapes in docs/CLI.md), and an error as {"error": ..., "status": N} on standard
    /// error
    #[arg(long, global = true)]
    pub json: bool,
    /// Worker threads for sealing, verifying and opening [default: [seal] threads in the
    /// vault config; 0 there means one per core]
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// The command
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The SoftHSM2 configuration this command needs as `SOFTHSM2_CONF`: its vault's (or, for
    /// `init` with no `--hsm-module`, the one it makes). `main` sets it before any thread
    /// starts; the library only checks it (see [`crate::hsm`]).
    pub fn softhsm2_conf(&self) -> Option<PathBuf> {
        let dir = self.vault.clone().unwrap_or_else(Vault::default_dir);
        let module = match &self.command {
            Command::Init { hsm_module } => hsm_module.as_deref(),
            _ => None,
        };
        Vault::softhsm2_conf_for(&dir, module)
    }
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a vault: directory, config, SoftHSM2 token and key-encryption key (keeps what exists)
    ///
    /// With no --hsm-module, an embedded SoftHSM2 token is made under DIR/hsm with a random
    /// user PIN in DIR/hsm/user.pin (mode 0600). With --hsm-module, the vault uses that PKCS#11
    /// module's token (label `weightvault`, PIN from WEIGHTVAULT_HSM_PIN) and creates the KEK
    /// there if it is missing.
    Init {
        /// PKCS#11 module of an existing HSM instead of the embedded SoftHSM2 token
        #[arg(long, value_name = "PATH")]
        hsm_module: Option<PathBuf>,
    },
    /// Seal a checkpoint (.safetensors file or directory) as MODEL@REVISION
    ///
    /// A directory is sealed whole: every safetensors shard, its model.safetensors.index.json,
    /// config and tokenizer files. Revisions are immutable: sealing an existing one fails.
    /// Nothing appears in the vault until every file is sealed and synced.
    ///
    /// Example: weightvault seal ./ckpt --model acme-7b --revision step-42000 --eccn 4E091 --training-ops 3e26
    Seal(SealArgs),
    /// List sealed models and revisions (reads clear headers; `verify` authenticates)
    List,
    /// List a revision's files and tensors (name, dtype, shape, bytes), without the HSM
    ///
    /// Read from the manifest and the shards' clear headers: nothing is decrypted and no key
    /// is needed, so what it shows is not authenticated (`verify` authenticates it).
    ///
    /// Example: weightvault inspect acme-7b@step-42000
    Inspect {
        /// MODEL@REVISION (MODEL alone when it has one revision)
        revision: RevisionRef,
    },
    /// Authenticate every chunk of a revision and its manifest, writing no plaintext
    Verify {
        /// MODEL@REVISION (MODEL alone when it has one revision)
        revision: RevisionRef,
    },
    /// Write a revision's original files back, byte for byte (operators on the vault host)
    ///
    /// OUT must not exist (or be an empty directory); files appear there only once all are
    /// written and authenticated. With --tensor, OUT is a new .safetensors file holding that
    /// one tensor. With --tensor or --file, `--out -` writes to standard output (a pipe or a
    /// file, never a terminal), each chunk authenticated before its bytes are written; a
    /// failure part way leaves what was already written on the stream.
    ///
    /// Example: weightvault open acme-7b@step-42000 --file config.json --out - | jq .
    /// Example: weightvault open acme-7b@step-42000 --tensor lm_head.weight --out - | python3 load.py
    Open {
        /// MODEL@REVISION (MODEL alone when it has one revision)
        revision: RevisionRef,
        /// Output directory (or file, with --tensor or --file; `-`: standard output)
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Write only this tensor, as a single-tensor safetensors file
        #[arg(long, value_name = "NAME", conflicts_with = "file")]
        tensor: Option<String>,
        /// Write only this file of the revision (its path in the checkpoint directory)
        #[arg(long, value_name = "PATH")]
        file: Option<String>,
        /// With --file: only bytes START up to (not including) END of it; either may be
        /// left out (`1024:`, `:8`)
        #[arg(long, value_name = "START:END", requires = "file", value_parser = parse_byte_range)]
        range: Option<(Option<u64>, Option<u64>)>,
    },
    /// Release policy: dry-run a decision, or validate the policy files
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Releases held for a compliance officer: list, show, approve, reject
    ///
    /// The policy holds a release for review (instead of allowing or denying it) when
    /// screening finds a close but not exact match or a party on the Unverified List, when a
    /// listed party owns a material share under the threshold (or the affiliates rule is
    /// suspended), or when a model's classification is uncertain. `fetch` then exits 3 with
    /// the review's id (the ledger entry of the held decision). An approval lets the same
    /// requester, model, host country and check results through for `[review]
    /// approval_hours` (policies/rules.toml), and nothing else; who decided, when and why go
    /// in the ledger.
    ///
    /// Example: weightvault review list && weightvault review approve 42 --reason "screened by hand: not the listed party (different date of birth)"
    #[command(subcommand)]
    Review(ReviewCommand),
    /// Key-encryption key versions on the HSM: list, rotate, retire
    #[command(subcommand)]
    Kek(KekCommand),
    /// Rewrap data keys under the newest KEK version, without touching ciphertext
    ///
    /// Every sealed file of MODEL[@REV] (all of the vault, and its watermark key, when none is
    /// named) gets its data key wrapped by the newest KEK version in its spare key slot; the
    /// header, the tag table and the ciphertext stay as they are. Safe to interrupt: each file
    /// keeps opening under its old slot until its new one is written and synced; run it again
    /// to finish. Typical rotation: `kek rotate`, `rewrap`, `kek retire OLD`.
    Rewrap {
        /// MODEL or MODEL@REV (default: the whole vault)
        what: Option<RevisionRef>,
    },
    /// Crypto-shred a revision: destroy its data keys for good, and say so in the ledger
    ///
    /// Records the shred in the ledger first (nothing is destroyed if that fails), then
    /// overwrites every key slot of the revision's files, makes a new KEK version, rewraps
    /// every other object to it and destroys the older versions, so that no copy of the old
    /// wrapped keys (backups included) can be opened by the HSM. Finally tries every secret key
    /// on the token against every wrapped key the revision had. Irreversible: needs --yes.
    Shred {
        /// MODEL@REV
        revision: RevisionRef,
        /// Confirm that the revision must never be opened again
        #[arg(long)]
        yes: bool,
    },
    /// Take a revision out of the vault, so that its name can be sealed again
    ///
    /// Records the removal in the ledger first (nothing is removed if that fails), then
    /// deletes the revision's sealed files. Unlike `shred`, the data keys are not destroyed:
    /// a backup of the sealed files still opens under the KEK. Use it for a revision sealed
    /// with wrong facts; use `shred` for one that must never be opened again.
    ///
    /// Example: weightvault remove acme-7b@step-42000 --yes && weightvault seal ./ckpt --model acme-7b --revision step-42000 ...
    Remove {
        /// MODEL@REV
        revision: RevisionRef,
        /// Confirm the removal
        #[arg(long)]
        yes: bool,
    },
    /// Remove what interrupted commands left behind: partial outputs, resume state, staging
    ///
    /// Looks in the vault (unfinished seals and removals), in every directory where this user's
    /// `open` and `fetch` made scratch directories (remembered in
    /// $XDG_STATE_HOME/weightvault/places), and in each DIR given. A scratch directory whose
    /// command is still running (its lock is held) is never touched. Also records, in the
    /// ledger, operator opens that a killed process left unfinished. `seal`, `open` and
    /// `fetch` sweep their own leftovers when they start.
    Gc {
        /// More directories to look in (not below them)
        dirs: Vec<PathBuf>,
        /// Report what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Name the recipients of a leaked copy from the watermark it carries
    ///
    /// SUSPECT is a safetensors file or a directory of them. Tensors are matched to the
    /// model's by name; a global scale is estimated; every release of MODEL@REV recorded in the
    /// ledger is scored. A release is accused only when the bound on an innocent recipient
    /// scoring as high, times the number of releases, is at most --epsilon.
    ///
    /// Example: weightvault trace ./leaked-model --model acme-7b@step-42000
    Trace {
        /// The leaked copy: a .safetensors file or a directory
        suspect: PathBuf,
        /// MODEL or MODEL@REVISION it is a copy of
        #[arg(long)]
        model: RevisionRef,
        /// Accepted chance of accusing anyone innocent, over all releases
        #[arg(long, default_value_t = crate::watermark::trace::DEFAULT_EPSILON)]
        epsilon: f64,
    },
    /// Run the key-release service: mutual TLS, attested hosts, sealed streaming of shards
    ///
    /// Clients present a certificate from the organisation CA (--client-ca) naming a person
    /// (e-mail SAN) or a workload (URI SAN); that name is the requester in the policy. Every
    /// decision is in the ledger before anything is answered. Protocol: docs/PROTOCOL.md.
    ///
    /// Example: weightvault serve --listen 0.0.0.0:8443 --cert vault.pem --key vault.key --client-ca org-ca.pem --crl org.crl
    #[command(after_long_help = crate::store::ServeSection::help())]
    Serve(ServeArgs),
    /// Fetch a released model as a serving node: the whole protocol, then a loadable directory
    ///
    /// Runs the attestation agent (--attest, a shell command that gets WEIGHTVAULT_NONCE and
    /// WEIGHTVAULT_HOST_PUBLIC_KEY in its environment and prints the evidence JSON), asks for
    /// the release, downloads the shards in parallel, checks every chunk and writes DIR only
    /// when every file is complete. Interrupted, it resumes where it stopped. A denial prints
    /// every check and exits 2.
    ///
    /// Example: weightvault fetch acme-7b@step-42000 --out /models/acme-7b --server https://vault:8443 --ca org-ca.pem --cert node.pem --key node.key --host-key host.x25519 --attest 'attest-agent --json'
    Fetch(FetchArgs),
    /// The release ledger: verify it, sign checkpoints, show entries, prove inclusion
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a shell completion script
    ///
    /// Example (bash): weightvault completions bash > /etc/bash_completion.d/weightvault
    /// Example (zsh): weightvault completions zsh > "${fpath[1]}/_weightvault"
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into a directory
    ///
    /// Example: weightvault man | man -l -
    /// Example: weightvault man --out /usr/local/share/man/man1
    Man {
        /// Write weightvault.1 and weightvault-COMMAND.1 (one per command) here instead
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// `weightvault seal ...`
#[derive(Debug, Args)]
pub struct SealArgs {
    /// A .safetensors file or a checkpoint directory
    pub src: PathBuf,
    /// Model name (letters, digits, '.', '_', '-')
    #[arg(long)]
    pub model: String,
    /// Revision name (letters, digits, '.', '_', '-')
    #[arg(long)]
    pub revision: String,
    /// Export Control Classification Number, e.g. 4E091
    #[arg(long)]
    pub eccn: Option<String>,
    /// Training compute in operations, e.g. 1e26
    #[arg(long, value_name = "OPS")]
    pub training_ops: Option<f64>,
    /// The weights are published (open weights)
    #[arg(long)]
    pub open_weights: bool,
    /// Seal even though the facts contradict each other or the model inventory; the
    /// disagreement is recorded in the ledger with the seal
    #[arg(long)]
    pub force: bool,
    /// Policy directory whose models.toml inventory the facts are checked against
    /// [default: $WEIGHTVAULT_POLICIES, else ./policies; skipped when absent]
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
}

/// `weightvault serve ...`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// The service's certificate chain (PEM)
    #[arg(long, value_name = "PEM")]
    pub cert: PathBuf,
    /// The service's private key (PEM)
    #[arg(long, value_name = "PEM")]
    pub key: PathBuf,
    /// The organisation CA that issues client certificates (PEM)
    #[arg(long, value_name = "PEM")]
    pub client_ca: PathBuf,
    /// Certificate revocation list(s) of that CA (PEM); repeat for several
    #[arg(long, value_name = "PEM")]
    pub crl: Vec<PathBuf>,
    /// Policy directory [default: $WEIGHTVAULT_POLICIES, else ./policies]
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// IP-geolocation database (MaxMind format; tools/fetch-geoip fetches one). Without
    /// it, requests from public addresses cannot be located and are refused
    #[arg(long, value_name = "MMDB", env = "WEIGHTVAULT_GEOIP")]
    pub geoip: Option<PathBuf>,
    /// How long a release id may be used, in seconds (at most a week)
    #[arg(long, default_value_t = 900, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub release_ttl: u64,
    /// How long a challenge nonce may be used, in seconds (at most an hour)
    #[arg(long, default_value_t = 120, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub nonce_ttl: u64,
    /// Sign a ledger checkpoint this often when there are new entries, in seconds (and
    /// once more on stopping); `audit checkpoint` cannot run while the service holds the ledger
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub checkpoint_every: u64,
    /// Write the bound address to this file once listening (for scripts using port 0); with
    /// --ops-listen, the operations address follows on a second line
    #[arg(long, value_name = "FILE")]
    pub addr_file: Option<PathBuf>,
    /// Also serve GET /healthz, /readyz and /metrics (Prometheus) in plain HTTP on this
    /// address, for a load balancer's health checks and a scraper; bind it to an internal
    /// address (it needs no client certificate and releases nothing)
    #[arg(long, value_name = "ADDR")]
    pub ops_listen: Option<std::net::SocketAddr>,
    /// Refuse to start unless the ledger's tiles ([ledger.tiles] in vault.toml) go to a bucket
    /// whose S3 Object Lock default retention is at least `worm_days` in `worm_mode`
    #[arg(long)]
    pub require_worm: bool,
    /// Stop when standard input closes (for supervisors, scripts and tests that must not
    /// leave a service behind)
    #[arg(long)]
    pub until_stdin_closes: bool,
    /// Release copies without a per-recipient watermark (for measuring its cost only: such
    /// copies cannot be traced)
    #[arg(long)]
    pub no_watermark: bool,
}

/// `weightvault fetch ...`
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// MODEL or MODEL@REVISION
    pub model: RevisionRef,
    /// Output directory (must not exist, or be empty)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The vault's URL
    #[arg(long, env = "WEIGHTVAULT_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The organisation CA (PEM) that issued the vault's certificate
    #[arg(long, env = "WEIGHTVAULT_CA", value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM)
    #[arg(long, env = "WEIGHTVAULT_CERT", value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// This client's private key (PEM)
    #[arg(long, env = "WEIGHTVAULT_KEY", value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// This host's X25519 secret key file (64 hex digits)
    #[arg(long, env = "WEIGHTVAULT_HOST_KEY", value_name = "FILE")]
    pub host_key: Option<PathBuf>,
    /// Attestation agent: a command (see above), or an http(s):// URL that answers a POST
    /// of {"nonce", "host_public_key"} with the evidence JSON
    #[arg(long, env = "WEIGHTVAULT_ATTEST", value_name = "CMD")]
    pub attest: Option<String>,
    /// A TOML file with any of: server, ca, cert, key, host_key, attest, parallel,
    /// resumable, retries (flags
    /// and environment variables take precedence; relative paths are relative to the file)
    #[arg(long, env = "WEIGHTVAULT_FETCH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Shards downloaded at once [default: 4]
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Most bytes per second over all shards, e.g. 50M or 1G (K, M, G: powers of 1024)
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub limit_rate: Option<u64>,
    /// Keep what was received (ciphertext sealed to this host's key) beside OUT, so that a
    /// fetch stopped by anything, SIGKILL and power cuts included, resumes where it stopped.
    /// Every byte is then written twice on this host (measured about twice as slow)
    #[arg(long)]
    pub resumable: bool,
    /// Try again this many times after a broken transfer or an unreachable vault (refused or
    /// reset connections, as while the service restarts), waiting 0.5 s, then twice as long
    /// each time up to 8 s [default: 5]
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
}

/// `weightvault review ...`
#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// List the releases held for review (pending ones; --all for decided ones too)
    List {
        /// Include reviews already approved or rejected
        #[arg(long)]
        all: bool,
    },
    /// Show one held release: who, what, where, and every reason it is held
    Show {
        /// The review's id (the ledger entry of the held decision)
        id: u64,
    },
    /// Approve a held release: the same request goes through for a bounded time
    Approve {
        /// The review's id
        id: u64,
        /// Why (recorded in the ledger with who approved and when)
        #[arg(long)]
        reason: String,
        /// Policy directory, for how long an approval lasts [default: $WEIGHTVAULT_POLICIES, else ./policies]
        #[arg(long, value_name = "DIR")]
        policies: Option<PathBuf>,
    },
    /// Reject a held release (recorded; the request stays refused)
    Reject {
        /// The review's id
        id: u64,
        /// Why (recorded in the ledger with who rejected and when)
        #[arg(long)]
        reason: String,
        /// Unused by a rejection; accepted for symmetry with approve
        #[arg(long, value_name = "DIR", hide = true)]
        policies: Option<PathBuf>,
    },
}

/// `weightvault audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every entry and the tree, check every checkpoint signature and the
    /// consistency between consecutive checkpoints; exit non-zero naming the first problem
    Verify {
        /// The checkpoint public key (64 hex digits) [default: read from the HSM]
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
        /// The published ledger to work on instead of the vault's own
        #[command(flatten)]
        tiles: TilesArgs,
    },
    /// Publish the ledger's entries not yet published as tlog-tiles ([ledger.tiles] in
    /// vault.toml), signed with the HSM key; `serve` does this with every checkpoint
    Publish,
    /// Sign a checkpoint of the current tree with the HSM key and print it (for witnesses)
    Checkpoint,
    /// Print the ledger's entries, oldest first, optionally filtered
    Show {
        /// Only entries at or after this time (RFC 3339, e.g. 2026-11-22T10:00:00Z, or a date)
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only entries for this model
        #[arg(long, value_name = "MODEL")]
        model: Option<String>,
        /// Only entries of this requester (certificate identity or operator)
        #[arg(long, value_name = "ID")]
        requester: Option<String>,
    },
    /// Print a consistency proof from an older tree size to the latest checkpoint (JSON), for a
    /// witness that saw the older checkpoint
    Consistency {
        /// The tree size of the checkpoint the witness holds
        #[arg(long, value_name = "SIZE")]
        from: u64,
        /// With --tiles: the checkpoint public key (64 hex digits) [default:
        /// WEIGHTVAULT_LEDGER_PUBLIC_KEY, else read from the HSM]
        #[arg(long, value_name = "HEX", requires = "tiles")]
        public_key: Option<String>,
        /// The published ledger to work on instead of the vault's own
        #[command(flatten)]
        tiles: TilesArgs,
    },
    /// Print an inclusion proof of entry INDEX against the latest checkpoint (JSON)
    Prove {
        /// Entry index
        index: u64,
        /// With --tiles: the checkpoint public key (64 hex digits) [default:
        /// WEIGHTVAULT_LEDGER_PUBLIC_KEY, else read from the HSM]
        #[arg(long, value_name = "HEX", requires = "tiles")]
        public_key: Option<String>,
        /// The published ledger to work on instead of the vault's own
        #[command(flatten)]
        tiles: TilesArgs,
    },
    /// Check a proof from `audit prove` offline, with the public key alone
    VerifyProof {
        /// The proof file
        file: PathBuf,
        /// The checkpoint public key (64 hex digits)
        #[arg(long, value_name = "HEX")]
        public_key: String,
        /// The checkpoint key name (the ledger origin)
        #[arg(long, default_value = "weightvault.local/ledger")]
        key_name: String,
    },
    /// Print the checkpoint public key (hex) for auditors
    PublicKey,
}

/// Where a published ledger is, for `audit verify`, `prove` and `consistency` from the
/// buckets alone (no vault needed; the S3 endpoint, region and credentials come from the
/// `AWS_*` variables; the ledger's public key from `verify --public-key`, else
/// `WEIGHTVAULT_LEDGER_PUBLIC_KEY`, else the vault's HSM).
#[derive(Debug, Args, Default)]
pub struct TilesArgs {
    /// Work on the ledger published as tlog-tiles here (its full tiles; s3://bucket/prefix)
    /// instead of the vault's own ledger
    #[arg(long, value_name = "URL", requires = "head")]
    pub tiles: Option<String>,
    /// Where that ledger's checkpoint and partial tiles are (s3://bucket/prefix)
    #[arg(long, value_name = "URL", requires = "tiles")]
    pub head: Option<String>,
    /// The ledger's key name (its origin) [default: the vault's, else weightvault.local/ledger]
    #[arg(long, value_name = "NAME", requires = "tiles")]
    pub key_name: Option<String>,
}

/// `weightvault policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Make the running `weightvault serve` of this vault read its policy directory again
    ///
    /// Sends it SIGHUP (its pid is in <vault>/serve.pid) and waits for the reload's ledger
    /// record. An invalid directory is refused and the old policy stays in force (exit 1, with
    /// the reason); otherwise every live release is decided again and those that now fail are
    /// withdrawn, their running streams cut at once.
    ///
    /// With a shared database ([database] in vault.toml, or WEIGHTVAULT_DATABASE) the service
    /// publishes its directory as the database's next policy version and every replica applies
    /// it (SIGHUP to any replica does the same); the answer is the first replica's record.
    ///
    /// Example: weightvault policy reload
    Reload {
        /// Seconds to wait for the service to record the reload
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Decide a what-if release and print every check with its reason
    ///
    /// Host evidence is not evaluated in a dry run (the service verifies it); the network
    /// origin is evaluated when --source-ip is given. When the model is sealed in the vault
    /// (--vault), the training facts recorded at seal time must agree with the inventory. Exits 0 when the release would be
    /// allowed, 1 when denied, 3 when held for a compliance officer's review.
    ///
    /// Example: weightvault policy check --requester raj@globex.example --host-country IN --model acme-frontier
    Check {
        /// Policy directory [default: $WEIGHTVAULT_POLICIES, else ./policies]
        #[arg(long, value_name = "DIR")]
        policies: Option<PathBuf>,
        /// Requester id (e-mail of a person, URI of a workload)
        #[arg(long)]
        requester: String,
        /// Country of the host (ISO 3166-1 alpha-2)
        #[arg(long, value_name = "CC")]
        host_country: String,
        /// Region of the host
        #[arg(long, default_value = "")]
        host_region: String,
        /// Host id
        #[arg(long, default_value = "dry-run-host")]
        host_id: String,
        /// Model name
        #[arg(long)]
        model: String,
        /// Decide as on this day (YYYY-MM-DD) [default: today]
        #[arg(long, value_name = "DATE")]
        date: Option<String>,
        /// Source address of the request, for the network-origin check
        #[arg(long, value_name = "IP")]
        source_ip: Option<std::net::IpAddr>,
        /// IP-geolocation database (MaxMind format; tools/fetch-geoip fetches it)
        /// [default: $WEIGHTVAULT_GEOIP]
        #[arg(long, value_name = "FILE")]
        geoip: Option<PathBuf>,
    },
    /// Import the US Consolidated Screening List into the policy directory
    ///
    /// FILE is the Consolidated Screening List (CSL) as trade.gov publishes it in JSON: the
    /// downloadable consolidated.json, or an answer of its search API (both are
    /// {"sources_used": [...], "results": [...]}). Every party is kept with its list (the
    /// full source and a code such as EL, DPL, MEU, UVL or SDN), its name, every alias, the
    /// countries of its addresses, its programmes, dates and ids, and written to
    /// DIR/screening-list.json, the form the policy loader reads (a new file is written beside
    /// it, synced and renamed over it: a crash leaves the old list or the new one, never half).
    ///
    /// Which lists deny on an exact match and which go to review, and how close a fuzzy match
    /// must be to be held for review, are in DIR/screening.toml; this command changes neither.
    /// The list's date is the newest date in the file's sources_used; a file without one needs
    /// --list-date. Nothing is in force until the service reloads: run `weightvault policy
    /// lint`, then `weightvault policy reload`.
    ///
    /// Example: weightvault policy import-csl consolidated.json --policies ./policies
    ///
    /// Example: weightvault policy import-csl search-answer.json --list-date 2026-11-30
    ImportCsl {
        /// The CSL in JSON
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Policy directory to write screening-list.json into [default: $WEIGHTVAULT_POLICIES,
        /// else ./policies]
        #[arg(long, value_name = "DIR")]
        policies: Option<PathBuf>,
        /// The day the list is as of (YYYY-MM-DD), when the file's sources_used gives none or
        /// to override it
        #[arg(long, value_name = "DATE")]
        list_date: Option<String>,
    },
    /// Validate every policy file; print what was loaded
    Lint {
        /// Policy directory [default: $WEIGHTVAULT_POLICIES, else ./policies]
        #[arg(long, value_name = "DIR")]
        policies: Option<PathBuf>,
    },
}

/// `weightvault kek ...`
#[derive(Debug, Subcommand)]
pub enum KekCommand {
    /// KEK versions on the token and how many objects each opens
    List,
    /// Create the next KEK version inside the HSM; new seals and rewraps use it
    Rotate,
    /// Destroy a KEK version on the HSM (refused while any object still opens only under it)
    Retire {
        /// The version to destroy
        #[arg(value_name = "VERSION")]
        kek_version: u32,
    },
}

/// `START:END`, either side optional: a half-open byte range.
fn parse_byte_range(s: &str) -> Result<(Option<u64>, Option<u64>), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not a range START:END (bytes; either may be left out)"))?;
    let num = |x: &str| -> Result<Option<u64>, String> {
        if x.is_empty() {
            Ok(None)
        } else {
            x.parse()
                .map(Some)
                .map_err(|_| format!("'{x}' in '{s}' is not a byte offset"))
        }
    };
    let (a, b) = (num(a)?, num(b)?);
    if let (Some(a), Some(b)) = (a, b) {
        if a > b {
            return Err(format!("'{s}': the range ends before it starts"));
        }
    }
    Ok((a, b))
}

/// A byte rate: a number with an optional K, M or G suffix (powers of 1024).
fn parse_rate(s: &str) -> Result<u64, String> {
    let (n, m) = match s.trim().chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: f64 = n
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a rate like 500K, 50M or 1G"))?;
    if !(n > 0.0 && n.is_finite()) {
        return Err(format!("'{s}': the rate must be positive"));
    }
    Ok((n * m as f64) as u64)
}

/// A policy directory: the one given, else `$WEIGHTVAULT_POLICIES`, else `./policies`.
fn policy_dir(p: Option<PathBuf>) -> PathBuf {
    p.or_else(|| std::env::var_os("WEIGHTVAULT_POLICIES").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("policies"))
}

/// What every command takes from the global options.
struct Globals {
    /// The vault directory.
    dir: PathBuf,
    /// No progress bars, no report.
    quiet: bool,
    /// Reports as JSON.
    json: bool,
    /// Worker threads, if given.
    threads: Option<usize>,
}

impl Globals {
    /// Says what the command did: `json` under `--json`, else the text (nothing under `-q`).
    fn report(
        &self,
        json: serde_json::Value,
        text: impl FnOnce() -> String,
    ) -> std::result::Result<(), Exit> {
        if self.json {
            write_out(format_args!("{json}\n"))
        } else {
            write_out(format_args!("{}\n", text()))
        }
    }

    /// Opens the vault, with `--threads` applied.
    fn open_vault(&self) -> Result<Vault> {
        let mut v = Vault::open(&self.dir)?;
        if let Some(t) = self.threads {
            v.set_threads(t);
        }
        Ok(v)
    }
}

/// Runs the command line.
pub fn run(cli: Cli) -> Result<()> {
    let g = Globals {
        dir: cli.vault.unwrap_or_else(Vault::default_dir),
        quiet: cli.quiet || cli.json,
        json: cli.json,
        threads: cli.threads,
    };
    QUIET.store(cli.quiet && !cli.json, std::sync::atomic::Ordering::Relaxed);
    match cli.command {
        Command::Init { hsm_module } => cmd::init::run(&g, hsm_module),
        Command::Seal(a) => cmd::seal::run(&g, a),
        Command::List => cmd::list::run(&g),
        Command::Inspect { revision } => cmd::inspect::run(&g, &revision),
        Command::Verify { revision } => cmd::verify::run(&g, &revision),
        Command::Open {
            revision,
            out,
            tensor,
            file,
            range,
        } => cmd::open::run(
            &g,
            &revision,
            &out,
            cmd::open::Part {
                tensor: tensor.as_deref(),
                file: file.as_deref(),
                range,
            },
        ),
        Command::Policy(c) => cmd::policy::run(&g, c),
        Command::Review(c) => cmd::review::run(&g, c),
        Command::Kek(c) => cmd::kek::run(&g, c),
        Command::Rewrap { what } => cmd::kek::rewrap(&g, what.as_ref()),
        Command::Shred { revision, yes } => cmd::shred::run(&g, &revision, yes),
        Command::Remove { revision, yes } => cmd::remove::run(&g, &revision, yes),
        Command::Gc { dirs, dry_run } => cmd::gc::run(&g, dirs, dry_run),
        Command::Trace {
            suspect,
            model,
            epsilon,
        } => cmd::trace::run(&g, &suspect, &model, epsilon),
        Command::Serve(a) => cmd::serve::run(&g, a),
        Command::Fetch(a) => cmd::fetch::run(&g, a),
        Command::Audit(c) => cmd::audit::run(&g, c),
        Command::Completions { shell } => cmd::docs::completions(shell),
        Command::Man { out } => cmd::docs::man(&g, out.as_deref()),
    }
}

/// An error and its causes on one line, outermost first (as `main` prints them).
pub fn one_line(e: &anyhow::Error) -> String {
    crate::actions::error_line(e.as_ref())
}
