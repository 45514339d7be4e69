//! The command line: `init`, `seal`, `list`, `verify`, `open`. Thin: parses, calls the library,
//! prints. Every failure ends as one line a person can act on, and a non-zero exit.

pub mod operator;

use crate::store::sealed::Progress;
use crate::store::{RevisionRef, SealProgress, SealRequest, TrainingFacts, Vault};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

/// `print!` that ends the command quietly when standard output is a closed pipe
/// (`weightvault kek list | head`) instead of panicking, and fails plainly on other errors.
macro_rules! out {
    ($($t:tt)*) => {
        write_out(format_args!($($t)*))?
    };
}

/// `println!`, the same way.
macro_rules! outln {
    ($($t:tt)*) => {
        write_out(format_args!("{}\n", format_args!($($t)*)))?
    };
}

fn write_out(a: std::fmt::Arguments<'_>) -> std::result::Result<(), Exit> {
    use std::io::Write;
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

impl Exit {
    /// An exit whose output is already written.
    pub fn quiet(code: u8) -> Self {
        Exit {
            code,
            message: None,
        }
    }
}

/// An encrypted vault for AI model weights whose keys are released only under policy.
///
/// Checkpoints are sealed chunk by chunk with AES-256-GCM under per-file data keys that a
/// key-encryption key in an HSM (SoftHSM2 by default) wraps. No plaintext weights stay at rest.
///
/// Start with `weightvault init`, then `weightvault seal ./ckpt --model NAME --revision REV`.
#[derive(Debug, Parser)]
#[command(name = "weightvault", version, propagate_version = true)]
pub struct Cli {
    /// Vault directory [default: $WEIGHTVAULT_HOME, else ./vault]
    #[arg(long, global = true, value_name = "DIR")]
    pub vault: Option<PathBuf>,
    /// No progress bars
    #[arg(long, short, global = true)]
    pub quiet: bool,
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
    Seal {
        /// A .safetensors file or a checkpoint directory
        src: PathBuf,
        /// Model name (letters, digits, '.', '_', '-')
        #[arg(long)]
        model: String,
        /// Revision name (letters, digits, '.', '_', '-')
        #[arg(long)]
        revision: String,
        /// Export Control Classification Number, e.g. 4E091
        #[arg(long)]
        eccn: Option<String>,
        /// Training compute in operations, e.g. 1e26
        #[arg(long, value_name = "OPS")]
        training_ops: Option<f64>,
        /// The weights are published (open weights)
        #[arg(long)]
        open_weights: bool,
        /// Seal even though the facts contradict each other or the model inventory; the
        /// disagreement is recorded in the ledger with the seal
        #[arg(long)]
        force: bool,
        /// Policy directory whose models.toml inventory the facts are checked against
        /// [default: $WEIGHTVAULT_POLICIES, else ./policies; skipped when absent]
        #[arg(long, value_name = "DIR")]
        policies: Option<PathBuf>,
    },
    /// List sealed models and revisions (reads clear headers; `verify` authenticates)
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
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
    /// one tensor.
    Open {
        /// MODEL@REVISION (MODEL alone when it has one revision)
        revision: RevisionRef,
        /// Output directory (or file, with --tensor)
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Write only this tensor, as a single-tensor safetensors file
        #[arg(long, value_name = "NAME")]
        tensor: Option<String>,
    },
    /// Release policy: dry-run a decision, or validate the policy files
    #[command(subcommand)]
    Policy(PolicyCommand),
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
        /// One JSON object per line instead of text
        #[arg(long)]
        json: bool,
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
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Run the key-release service: mutual TLS, attested hosts, sealed streaming of shards
    ///
    /// Clients present a certificate from the organisation CA (--client-ca) naming a person
    /// (e-mail SAN) or a workload (URI SAN); that name is the requester in the policy. Every
    /// decision is in the ledger before anything is answered. Protocol: docs/PROTOCOL.md.
    ///
    /// Example: weightvault serve --listen 0.0.0.0:8443 --cert vault.pem --key vault.key --client-ca org-ca.pem --crl org.crl
    Serve {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// The service's certificate chain (PEM)
        #[arg(long, value_name = "PEM")]
        cert: PathBuf,
        /// The service's private key (PEM)
        #[arg(long, value_name = "PEM")]
        key: PathBuf,
        /// The organisation CA that issues client certificates (PEM)
        #[arg(long, value_name = "PEM")]
        client_ca: PathBuf,
        /// Certificate revocation list(s) of that CA (PEM); repeat for several
        #[arg(long, value_name = "PEM")]
        crl: Vec<PathBuf>,
        /// Policy directory [default: $WEIGHTVAULT_POLICIES, else ./policies]
        #[arg(long, value_name = "DIR")]
        policies: Option<PathBuf>,
        /// IP-geolocation database (MaxMind format; tools/fetch-geoip fetches one). Without
        /// it, requests from public addresses cannot be located and are refused
        #[arg(long, value_name = "MMDB", env = "WEIGHTVAULT_GEOIP")]
        geoip: Option<PathBuf>,
        /// How long a release id may be used, in seconds (at most a week)
        #[arg(long, default_value_t = 900, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..=604_800))]
        release_ttl: u64,
        /// How long a challenge nonce may be used, in seconds (at most an hour)
        #[arg(long, default_value_t = 120, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..=3_600))]
        nonce_ttl: u64,
        /// Sign a ledger checkpoint this often when there are new entries, in seconds (and
        /// once more on stopping); `audit checkpoint` cannot run while the service holds the ledger
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        checkpoint_every: u64,
        /// Write the bound address to this file once listening (for scripts using port 0)
        #[arg(long, value_name = "FILE")]
        addr_file: Option<PathBuf>,
        /// Stop when standard input closes (for supervisors, scripts and tests that must not
        /// leave a service behind)
        #[arg(long)]
        until_stdin_closes: bool,
        /// Release copies without a per-recipient watermark (for measuring its cost only: such
        /// copies cannot be traced)
        #[arg(long)]
        no_watermark: bool,
    },
    /// Fetch a released model as a serving node: the whole protocol, then a loadable directory
    ///
    /// Runs the attestation agent (--attest, a shell command that gets WEIGHTVAULT_NONCE and
    /// WEIGHTVAULT_HOST_PUBLIC_KEY in its environment and prints the evidence JSON), asks for
    /// the release, downloads the shards in parallel, checks every chunk and writes DIR only
    /// when every file is complete. Interrupted, it resumes where it stopped. A denial prints
    /// every check and exits 2.
    ///
    /// Example: weightvault fetch acme-7b@step-42000 --out /models/acme-7b --server https://vault:8443 --ca org-ca.pem --cert node.pem --key node.key --host-key host.x25519 --attest 'attest-agent --json'
    Fetch {
        /// MODEL or MODEL@REVISION
        model: RevisionRef,
        /// Output directory (must not exist, or be empty)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The vault's URL
        #[arg(long, env = "WEIGHTVAULT_SERVER", value_name = "URL")]
        server: Option<String>,
        /// The organisation CA (PEM) that issued the vault's certificate
        #[arg(long, env = "WEIGHTVAULT_CA", value_name = "PEM")]
        ca: Option<PathBuf>,
        /// This client's certificate (PEM)
        #[arg(long, env = "WEIGHTVAULT_CERT", value_name = "PEM")]
        cert: Option<PathBuf>,
        /// This client's private key (PEM)
        #[arg(long, env = "WEIGHTVAULT_KEY", value_name = "PEM")]
        key: Option<PathBuf>,
        /// This host's X25519 secret key file (64 hex digits)
        #[arg(long, env = "WEIGHTVAULT_HOST_KEY", value_name = "FILE")]
        host_key: Option<PathBuf>,
        /// Attestation agent: a command (see above), or an http(s):// URL that answers a POST
        /// of {"nonce", "host_public_key"} with the evidence JSON
        #[arg(long, env = "WEIGHTVAULT_ATTEST", value_name = "CMD")]
        attest: Option<String>,
        /// A TOML file with any of: server, ca, cert, key, host_key, attest, parallel (flags
        /// and environment variables take precedence; relative paths are relative to the file)
        #[arg(long, env = "WEIGHTVAULT_FETCH_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Shards downloaded at once [default: 4]
        #[arg(long, value_name = "N")]
        parallel: Option<usize>,
        /// Most bytes per second over all shards, e.g. 50M or 1G (K, M, G: powers of 1024)
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        limit_rate: Option<u64>,
        /// Keep what was received (ciphertext sealed to this host's key) beside OUT, so that a
        /// fetch stopped by anything, SIGKILL and power cuts included, resumes where it stopped.
        /// Every byte is then written twice on this host (measured about twice as slow)
        #[arg(long)]
        resumable: bool,
        /// Print the release and the decision as JSON on success
        #[arg(long)]
        json: bool,
    },
    /// The release ledger: verify it, sign checkpoints, show entries, prove inclusion
    #[command(subcommand)]
    Audit(AuditCommand),
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
    },
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
        /// Print JSON lines ({"index":N,"record":{...}})
        #[arg(long)]
        json: bool,
    },
    /// Print a consistency proof from an older tree size to the latest checkpoint (JSON), for a
    /// witness that saw the older checkpoint
    Consistency {
        /// The tree size of the checkpoint the witness holds
        #[arg(long, value_name = "SIZE")]
        from: u64,
    },
    /// Print an inclusion proof of entry INDEX against the latest checkpoint (JSON)
    Prove {
        /// Entry index
        index: u64,
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

/// `--since`: RFC 3339, or a date meaning its midnight UTC.
fn parse_since(s: &str) -> Result<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| {
            anyhow::anyhow!(
                "--since {s:?}: expected an RFC 3339 time (2026-11-22T10:00:00Z) or a date (2026-11-22)"
            )
        })
}

fn parse_key(hex_key: &str) -> Result<[u8; 32]> {
    hex::decode(hex_key)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            anyhow::anyhow!("--public-key must be 64 hex digits (an Ed25519 public key)")
        })
}

/// Runs an `audit` command; `vault` opens the vault for the commands that need it
/// (`verify-proof` works offline without one).
fn run_audit(cmd: AuditCommand, vault: impl Fn() -> Result<Vault>) -> Result<()> {
    use crate::ledger::Ledger;
    if let AuditCommand::VerifyProof {
        file,
        public_key,
        key_name,
    } = &cmd
    {
        let p: crate::ledger::InclusionProof = serde_json::from_str(
            &std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?,
        )
        .with_context(|| format!("{}: not a proof from `audit prove`", file.display()))?;
        let cp = p.verify(key_name, &parse_key(public_key)?)?;
        outln!(
            "entry {} is in the ledger at checkpoint size {} (signed by {key_name})",
            p.index,
            cp.size
        );
        return Ok(());
    }
    let v = vault()?;
    let origin = v.config().ledger.origin.clone();
    match cmd {
        AuditCommand::VerifyProof { .. } => {}
        AuditCommand::Verify { public_key } => {
            let key = match public_key {
                Some(k) => parse_key(&k)?,
                None => v.key_wrap()?.ledger_public_key()?,
            };
            let r = Ledger::verify(&v.ledger_dir(), &origin, &key)?;
            outln!(
                "ledger verified: {} entries ({} closed segments), {} checkpoints (latest covers {}), {} entries not yet under a checkpoint",
                r.entries, r.closed_segments, r.checkpoints, r.latest_size, r.uncovered
            );
        }
        AuditCommand::Checkpoint => {
            let kw = v.key_wrap()?;
            let public = kw.ledger_public_key()?;
            let (l, rec) = v.ledger()?;
            if rec.discarded_bytes > 0 {
                eprintln!(
                    "ledger: discarded a torn final write of {} bytes",
                    rec.discarded_bytes
                );
            }
            let note = l.checkpoint(&origin, &public, &|m| Ok(kw.sign_ledger(m)?))?;
            out!("{note}");
        }
        AuditCommand::Show {
            since,
            model,
            requester,
            json,
        } => {
            let since = since.as_deref().map(parse_since).transpose()?;
            // A closed standard output ends the listing (and the command) quietly.
            let mut stopped: Option<Exit> = None;
            let listed = Ledger::entries(&v.ledger_dir(), &mut |i, e| {
                let r = crate::ledger::record::Record::parse(e)
                    .map_err(|w| format!("not a canonical record: {w}"))?;
                let at = time::OffsetDateTime::parse(
                    &r.time,
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|e| format!("bad time {:?}: {e}", r.time))?;
                if since.is_some_and(|s| at < s)
                    || model.as_ref().is_some_and(|m| *m != r.model)
                    || requester.as_ref().is_some_and(|q| *q != r.requester)
                {
                    return Ok(());
                }
                let written = if json {
                    write_out(format_args!(
                        "{{\"index\":{i},\"record\":{}}}\n",
                        String::from_utf8_lossy(e)
                    ))
                } else {
                    write_out(format_args!(
                        "{i:>6} {} {:<16} {:<32} {}@{} {} {}{}{}\n",
                        r.time,
                        r.kind,
                        r.requester,
                        r.model,
                        r.revision.as_deref().unwrap_or("-"),
                        r.outcome,
                        r.failed_checks.join(","),
                        r.follows
                            .map(|f| format!(" (follows {f})"))
                            .unwrap_or_default(),
                        r.reason
                            .as_deref()
                            .map(|w| format!(" — {w}"))
                            .unwrap_or_default()
                    ))
                };
                if let Err(x) = written {
                    stopped = Some(x);
                    return Err("standard output closed".into());
                }
                Ok(())
            });
            if let Some(x) = stopped {
                return Err(x.into());
            }
            listed?;
        }
        AuditCommand::Consistency { from } => {
            let p = Ledger::prove_consistency(&v.ledger_dir(), from)?;
            outln!("{}", serde_json::to_string_pretty(&p)?);
        }
        AuditCommand::Prove { index } => {
            let p = Ledger::prove(&v.ledger_dir(), index)?;
            outln!("{}", serde_json::to_string_pretty(&p)?);
        }
        AuditCommand::PublicKey => {
            outln!("{}", hex::encode(v.key_wrap()?.ledger_public_key()?));
        }
    }
    Ok(())
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
    /// allowed, 1 when denied.
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
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Validate every policy file; print what was loaded
    Lint {
        /// Policy directory [default: $WEIGHTVAULT_POLICIES, else ./policies]
        #[arg(long, value_name = "DIR")]
        policies: Option<PathBuf>,
    },
}

/// What is wrong with a seal's facts: contradictions between its flags, and disagreements
/// with the model's entry in the inventory of `policies` (when that directory exists).
fn seal_disagreements(
    model: &str,
    facts: &TrainingFacts,
    policies: Option<PathBuf>,
) -> Result<Vec<String>> {
    let mut why = crate::policy::classify::contradictions(facts);
    let dir = policy_dir(policies);
    if dir.is_dir() {
        let p = crate::local::PolicyDir::new(&dir).load().with_context(|| {
            format!(
                "reading the model inventory in {} (nothing was sealed; give --policies DIR)",
                dir.display()
            )
        })?;
        if let Some(m) = p.models.get(model) {
            why.extend(
                crate::policy::classify::inventory_disagreements(facts, m)
                    .into_iter()
                    .map(|d| format!("{d} ({})", dir.join("models.toml").display())),
            );
        }
    }
    Ok(why)
}

fn policy_dir(p: Option<PathBuf>) -> PathBuf {
    p.or_else(|| std::env::var_os("WEIGHTVAULT_POLICIES").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("policies"))
}

use crate::policy::NoGeo;

fn run_policy(cmd: PolicyCommand, vault_dir: &std::path::Path) -> Result<()> {
    match cmd {
        PolicyCommand::Reload { wait } => {
            let v = Vault::open(vault_dir)?;
            let pid_file = v.serve_pid_file();
            let pid: i32 = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no `weightvault serve` runs for {} (no {}): start one, or signal yours with kill -HUP",
                        vault_dir.display(),
                        pid_file.display()
                    )
                })?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            anyhow::ensure!(
                String::from_utf8_lossy(&cmdline).contains("serve")
                    && crate::ledger::Ledger::is_held(&v.ledger_dir()),
                "{} names process {pid}, which is not a running `weightvault serve` of this vault (a stale file from a service that was killed, or a copied vault?)",
                pid_file.display()
            );
            let reloads = || -> Result<Vec<crate::ledger::record::Record>> {
                let mut out = Vec::new();
                crate::ledger::Ledger::entries(&v.ledger_dir(), &mut |_, e| {
                    let r = crate::ledger::record::Record::parse(e)?;
                    if r.kind == "policy-reload" {
                        out.push(r);
                    }
                    Ok(())
                })?;
                Ok(out)
            };
            let before = reloads()?.len();
            let target = rustix::process::Pid::from_raw(pid).context("a pid")?;
            rustix::process::kill_process(target, rustix::process::Signal::HUP)
                .with_context(|| format!("signalling process {pid}"))?;
            let t = Instant::now();
            let r = loop {
                if let Some(r) = reloads()?.into_iter().nth(before) {
                    break r;
                }
                anyhow::ensure!(
                    t.elapsed() < std::time::Duration::from_secs(wait),
                    "process {pid} was signalled but recorded no reload within {wait} s"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            };
            anyhow::ensure!(
                r.outcome == "applied",
                "the service refused the new policy and keeps the old one in force: {}",
                r.failed_checks.join("; ")
            );
            let withdrawn: Vec<&str> = r
                .shards
                .iter()
                .filter_map(|s| s.strip_prefix("withdrawn:"))
                .collect();
            outln!(
                "policy reloaded; {} live release(s) withdrawn{}",
                withdrawn.len(),
                if withdrawn.is_empty() {
                    String::new()
                } else {
                    format!(" (decisions at ledger entries {})", withdrawn.join(", "))
                }
            );
        }
        PolicyCommand::Lint { policies } => {
            let dir = policy_dir(policies);
            let p = crate::local::PolicyDir::new(&dir).load()?;
            outln!(
                "{}: valid — {} tier changes, {} models, {} organisations, {} requesters, {} licences, {} restricted parties, {} attesters, {} Cedar policies",
                dir.display(),
                p.tiers.changes.len(),
                p.models.len(),
                p.organisations.len(),
                p.requesters.len(),
                p.licences.len(),
                p.restricted.len(),
                p.attesters.len(),
                p.org_rules.len()
            );
        }
        PolicyCommand::Check {
            policies,
            requester,
            host_country,
            host_region,
            host_id,
            model,
            date,
            source_ip,
            geoip,
            json,
        } => {
            let dir = policy_dir(policies);
            let p = crate::local::PolicyDir::new(&dir).load()?;
            let time = match date {
                Some(d) => {
                    let d = time::Date::parse(
                        &d,
                        time::macros::format_description!("[year]-[month]-[day]"),
                    )
                    .with_context(|| format!("--date {d}: expected YYYY-MM-DD"))?;
                    d.with_hms(12, 0, 0).expect("noon").assume_utc()
                }
                None => time::OffsetDateTime::now_utc(),
            };
            let geo: Box<dyn crate::policy::GeoLookup> = match (source_ip, geoip.or_else(|| std::env::var_os("WEIGHTVAULT_GEOIP").map(PathBuf::from))) {
                (None, _) => Box::new(NoGeo),
                (Some(_), None) => anyhow::bail!(
                    "--source-ip needs an IP-geolocation database: run tools/fetch-geoip and pass --geoip FILE (or set WEIGHTVAULT_GEOIP)"
                ),
                (Some(_), Some(f)) => {
                    let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                    Box::new(crate::policy::MaxMindGeo::from_bytes(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?)
                }
            };
            // When the model is sealed in the vault, its recorded training facts must agree
            // with the inventory (read from the newest revision's manifest header).
            let vault = Vault::open(vault_dir).ok();
            let sealed = vault.as_ref().and_then(|v| v.list().ok()).and_then(|revs| {
                revs.into_iter()
                    .filter(|r| r.manifest.model == model)
                    .max_by(|a, b| a.manifest.sealed_at.cmp(&b.manifest.sealed_at))
            });
            if let (Some(r), false) = (&sealed, json) {
                outln!(
                    "sealed facts from {}@{} in {}",
                    r.manifest.model,
                    r.manifest.revision,
                    vault_dir.display()
                );
            }
            // The release would cover every file of that revision; the licences' use so far
            // is what the vault's ledger counts, as the release service counts it.
            let size: u64 = sealed
                .as_ref()
                .map_or(0, |r| r.manifest.files.iter().map(|f| f.original_len).sum());
            let used = match vault.map(|v| v.ledger_dir()).filter(|l| l.exists()) {
                Some(l) => {
                    crate::ledger::Ledger::allocations(&l)
                        .map_err(|e| {
                            anyhow::anyhow!("counting licence use in {}: {e}", l.display())
                        })?
                        .used
                }
                None => Default::default(),
            };
            if !json {
                for (id, u) in &used {
                    outln!(
                        "licence {id}: {} releases and {} bytes counted in the vault's ledger",
                        u.releases,
                        u.bytes
                    );
                }
            }
            let req = crate::policy::ReleaseRequest {
                requester,
                model,
                sealed_facts: sealed.map(|r| r.manifest.training),
                host: crate::policy::HostClaims {
                    host_id,
                    country: host_country,
                    region: host_region,
                    attester: String::new(),
                    issued_at: time,
                    expires_at: time,
                    signature_valid: false,
                    nonce_fresh: false,
                },
                source_ip,
                time,
                used,
                size,
                dry_run: true,
            };
            let d = crate::policy::decide(&p, geo.as_ref(), &req);
            if json {
                outln!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                outln!("{:<20} {:<8} REASON", "CHECK", "VERDICT");
                for c in &d.checks {
                    let v = match c.verdict {
                        crate::policy::Verdict::Pass => "pass",
                        crate::policy::Verdict::Fail => "FAIL",
                        crate::policy::Verdict::NotApplicable => "n/a",
                    };
                    outln!("{:<20} {:<8} {}", c.check.name(), v, c.reason);
                }
                let relies = match &d.authority {
                    Some(crate::policy::Authority::NotControlled) => "not controlled".to_string(),
                    Some(crate::policy::Authority::LicenceException { name }) => name.clone(),
                    Some(crate::policy::Authority::Licence { id }) => format!("licence {id}"),
                    None => "-".into(),
                };
                outln!(
                    "\ndecision: {} on {} (dry run; relies on: {relies})",
                    if d.allowed { "ALLOW" } else { "DENY" },
                    time.date()
                );
                if !d.allowed {
                    let f: Vec<_> = d.failed().iter().map(|c| c.name()).collect();
                    outln!("failed checks: {}", f.join(", "));
                }
            }
            if !d.allowed {
                return Err(Exit::quiet(1).into());
            }
        }
    }
    Ok(())
}

struct Bars {
    bar: ProgressBar,
}

impl Bars {
    fn new(quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(0),
            if quiet {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        Self { bar }
    }
}

impl SealProgress for Bars {
    fn start(&self, total: u64, _files: usize) {
        self.bar.set_length(total);
    }
    fn file(&self, rel: &str) {
        self.bar.set_message(rel.to_string());
    }
    fn bytes(&self) -> &dyn Progress {
        &self.bar
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn gib_per_s(bytes: u64, t: Instant) -> String {
    let s = t.elapsed().as_secs_f64().max(1e-9);
    format!("{:.2} GiB/s", bytes as f64 / s / (1u64 << 30) as f64)
}

fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
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

/// `weightvault kek ...`
#[derive(Debug, Subcommand)]
pub enum KekCommand {
    /// KEK versions on the token and how many objects each opens
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Create the next KEK version inside the HSM; new seals and rewraps use it
    Rotate,
    /// Destroy a KEK version on the HSM (refused while any object still opens only under it)
    Retire {
        /// The version to destroy
        #[arg(value_name = "VERSION")]
        kek_version: u32,
    },
}

/// Runs the command line.
pub fn run(cli: Cli) -> Result<()> {
    let dir = cli.vault.clone().unwrap_or_else(Vault::default_dir);
    let open_vault = |dir: &std::path::Path| -> Result<Vault> {
        let mut v = Vault::open(dir)?;
        if let Some(t) = cli.threads {
            v.set_threads(t);
        }
        Ok(v)
    };
    match cli.command {
        Command::Policy(cmd) => run_policy(cmd, &dir)?,
        Command::Kek(cmd) => {
            let v = open_vault(&dir)?;
            let kw = v.key_wrap()?;
            match cmd {
                KekCommand::List { json } => {
                    let u = v.kek_use(&kw)?;
                    if json {
                        outln!("{}", serde_json::to_string_pretty(&u)?);
                    } else {
                        for ver in &u.on_token {
                            let n = u.by_version.get(ver).map_or(0, Vec::len);
                            outln!(
                                "{}.v{ver}: opens {n} object(s){}",
                                kw.kek_label(),
                                if Some(ver) == u.on_token.last() {
                                    " (newest: new seals and rewraps use it)"
                                } else {
                                    ""
                                }
                            );
                        }
                        for (ver, objs) in &u.by_version {
                            if !u.on_token.contains(ver) {
                                outln!(
                                    "v{ver} (not on the token!): {} object(s) cannot be opened",
                                    objs.len()
                                );
                            }
                        }
                    }
                }
                KekCommand::Rotate => {
                    let n = kw.rotate().map_err(|e| anyhow::anyhow!("{e}"))?;
                    let at = record_key_event(
                        &v,
                        "kek-rotate",
                        "",
                        None,
                        vec![format!("kek:{}.v{n}", kw.kek_label())],
                        "created",
                    )
                    .with_context(|| {
                        format!("KEK {}.v{n} was created but not recorded", kw.kek_label())
                    })?;
                    outln!(
                        "created KEK {}.v{n} in the HSM ({at}); run `weightvault rewrap` to move every data key to it",
                        kw.kek_label()
                    );
                }
                KekCommand::Retire { kek_version } => {
                    let mut at = None;
                    v.retire_kek(&kw, kek_version, || {
                        let r = record_key_event(
                            &v,
                            "kek-retire",
                            "",
                            None,
                            vec![format!("kek:{}.v{kek_version}", kw.kek_label())],
                            "destroyed",
                        );
                        at = Some(r.map_err(|e| format!("{e:#} (nothing was destroyed)"))?);
                        Ok(())
                    })?;
                    outln!(
                        "KEK {}.v{kek_version} destroyed in the HSM ({})",
                        kw.kek_label(),
                        at.expect("recorded")
                    );
                }
            }
        }
        Command::Remove { revision, yes } => {
            anyhow::ensure!(
                yes,
                "removing {}@{} deletes its sealed files: run again with --yes to confirm",
                revision.model,
                revision.revision.as_deref().unwrap_or("REV")
            );
            crate::interrupt::install()?;
            let v = open_vault(&dir)?;
            let rep = v.remove(&revision, |label, files| {
                let (model, rev) = label.split_once('@').expect("MODEL@REV");
                let r = crate::ledger::record::Record::action(
                    &crate::store::now_rfc3339(),
                    "remove",
                    &operator::identity(),
                    model,
                    Some(rev),
                    files.to_vec(),
                    "removed",
                );
                let at = v
                    .record(&r)
                    .context("recording the removal in the ledger (nothing was removed)")?;
                Ok(at.to_string())
            })?;
            outln!(
                "{}: removed ({} sealed files, {}; {}). Its name can be sealed again.",
                rep.label,
                rep.files,
                human(rep.bytes),
                rep.recorded
            );
        }
        Command::Gc {
            dirs,
            dry_run,
            json,
        } => {
            let mut places: Vec<PathBuf> = Vec::new();
            let vault = Vault::open(&dir).ok();
            if let Some(v) = &vault {
                places.extend(v.scratch_places());
            }
            places.extend(crate::store::output::remembered_places());
            places.extend(dirs);
            let mut seen = std::collections::BTreeSet::new();
            let mut found = Vec::new();
            for p in places {
                let key = std::fs::canonicalize(&p).unwrap_or(p.clone());
                if !seen.insert(key) {
                    continue;
                }
                found.extend(
                    crate::store::output::sweep(&p, "", dry_run)
                        .with_context(|| format!("looking for leftovers in {}", p.display()))?,
                );
            }
            // Unfinished opens: whoever takes the ledger records them (not while a service
            // holds it: it recorded them when it started).
            let settled = match (&vault, dry_run) {
                (Some(v), false) => v.settle_ledger()?,
                _ => None,
            };
            for l in &found {
                if json {
                    outln!("{}", serde_json::to_string(l)?);
                } else {
                    outln!(
                        "{} {} ({:?}, {})",
                        if l.removed { "removed" } else { "would remove" },
                        l.path.display(),
                        l.kind,
                        human(l.bytes)
                    );
                }
            }
            if let Some(n) = settled.filter(|n| *n > 0) {
                if json {
                    outln!("{}", serde_json::json!({"recorded_interrupted_opens": n}));
                } else {
                    outln!("recorded {n} unfinished open(s) in the ledger as interrupted");
                }
            }
            if !json && found.is_empty() {
                outln!("nothing left behind");
            }
        }
        Command::Shred { revision, yes } => {
            anyhow::ensure!(
                yes,
                "shredding destroys {}@{} for good: run again with --yes to confirm",
                revision.model,
                revision.revision.as_deref().unwrap_or("REV")
            );
            let v = open_vault(&dir)?;
            let kw = v.key_wrap()?;
            let rep = v.shred(&kw, &revision, |label, files| {
                let (ledger, _) = v
                    .ledger()
                    .context("opening the ledger (nothing was destroyed)")?;
                let (model, rev) = label.split_once('@').expect("MODEL@REV");
                ledger
                    .append(&crate::ledger::record::Record::action(
                        &crate::store::now_rfc3339(),
                        "shred",
                        &operator::identity(),
                        model,
                        Some(rev),
                        files.to_vec(),
                        "shredded",
                    ))
                    .context("recording the shred in the ledger (nothing was destroyed)")?;
                Ok(())
            })?;
            outln!(
                "{}: SHREDDED. The key slots of its {} sealed files are overwritten; every other object was rewrapped to KEK v{} ({} objects) and KEK versions {} destroyed, so copies made earlier cannot be opened either.",
                rep.label,
                rep.files,
                rep.rotated_to,
                rep.rewrapped,
                if rep.retired.is_empty() {
                    "(none older)".to_string()
                } else {
                    rep.retired.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join(", ")
                }
            );
            anyhow::ensure!(
                rep.still_open.is_empty(),
                "some keys on the HSM still unwrap a data key of {}: {}",
                rep.label,
                rep.still_open.join(", ")
            );
            outln!(
                "Checked: none of the {} secret keys on the HSM unwraps any of its former data keys. Its ciphertext can never be opened again.",
                rep.keys_tried
            );
        }
        Command::Rewrap { what } => {
            let v = open_vault(&dir)?;
            let kw = v.key_wrap()?;
            let bar = if cli.quiet {
                indicatif::ProgressBar::hidden()
            } else {
                indicatif::ProgressBar::new(0)
            };
            let rep = v.rewrap(&kw, what.as_ref(), &|done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
            bar.finish_and_clear();
            let mut shards = vec![format!("kek:{}.v{}", kw.kek_label(), rep.newest)];
            shards.extend(
                rep.rewrapped_from
                    .iter()
                    .map(|(v, n)| format!("from:v{v}:{n}")),
            );
            let (model, rev) = match &what {
                Some(w) => (w.model.as_str(), w.revision.as_deref()),
                None => ("", None),
            };
            let at = record_key_event(&v, "rewrap", model, rev, shards, "rewrapped")
                .context("the data keys were rewrapped but the rewrap was not recorded")?;
            let moved: u64 = rep.rewrapped_from.values().sum();
            let from: Vec<String> = rep
                .rewrapped_from
                .iter()
                .map(|(v, n)| format!("{n} from v{v}"))
                .collect();
            outln!(
                "rewrapped {moved} object(s) to KEK {}.v{}{}; {} already current; no ciphertext changed ({at})",
                kw.kek_label(),
                rep.newest,
                if from.is_empty() { String::new() } else { format!(" ({})", from.join(", ")) },
                rep.current
            );
        }
        Command::Trace {
            suspect,
            model,
            epsilon,
            json,
        } => {
            use crate::watermark::trace::{trace, Candidate};
            let v = open_vault(&dir)?;
            if !v.dir().join("watermark.key").exists() {
                anyhow::bail!(
                    "this vault has no watermark key: it never released a watermarked copy"
                );
            }
            let kw = v.key_wrap()?;
            let rev = v.open_revision(&model, &kw)?;
            let wm = v.watermark_key(&kw)?;
            let mut candidates = Vec::new();
            crate::ledger::Ledger::entries(&v.ledger_dir(), &mut |i, e| {
                let r = crate::ledger::record::Record::parse(e)
                    .map_err(|w| format!("not a canonical record: {w}"))?;
                if r.kind == "release-decision"
                    && r.outcome == "allowed"
                    && r.model == rev.manifest.model
                    && r.revision.as_deref() == Some(rev.manifest.revision.as_str())
                {
                    if let Some(c) = &r.codeword {
                        candidates.push(Candidate {
                            ledger_index: i,
                            codeword: c.clone(),
                            record: serde_json::from_slice(e).expect("record JSON"),
                        });
                    }
                }
                Ok(())
            })?;
            let rep =
                trace(&wm, &rev, &suspect, candidates, epsilon).map_err(|e| anyhow::anyhow!(e))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                outln!(
                    "suspect {}: {} tensors matched ({} weights), scale {:.4}, {} of {} segments read",
                    suspect.display(),
                    rep.matched_tensors,
                    rep.weights,
                    rep.scale,
                    rep.segments_read,
                    rep.segments
                );
                for r in &rep.renamed {
                    outln!(
                        "  {} matched to {} by shape and correlation ({:.3})",
                        r.suspect,
                        r.original,
                        r.correlation
                    );
                }
                if rep.threshold.is_finite() {
                    outln!(
                        "{} releases of {} in the ledger; an innocent reaches score {:.1} with probability <= {:.0e} / {}",
                        rep.releases, rev.label, rep.threshold, rep.epsilon, rep.releases
                    );
                } else {
                    outln!(
                        "{} releases of {} in the ledger; the suspect carries no readable watermark",
                        rep.releases, rev.label
                    );
                }
                if rep.accused.is_empty() {
                    outln!("no release accused");
                }
                for a in &rep.accused {
                    let r = &a.release.record;
                    let bound = if a.bound > 0.0 {
                        format!("{:.1e}", a.bound)
                    } else {
                        "< 1e-300".to_string()
                    };
                    outln!(
                        "ACCUSED ledger entry {}: {} ({}) on host {} in {}, at {}, codeword {}: score {:.1}, innocent bound {bound}",
                        a.release.ledger_index,
                        r["requester"].as_str().unwrap_or("?"),
                        r["organisation"].as_str().unwrap_or("-"),
                        r["host_id"].as_str().unwrap_or("?"),
                        r["host_country"].as_str().unwrap_or("?"),
                        r["time"].as_str().unwrap_or("?"),
                        a.release.codeword,
                        a.score,
                    );
                    outln!("  {}", a.release.record);
                }
            }
        }
        Command::Serve {
            listen,
            cert,
            key,
            client_ca,
            crl,
            policies,
            geoip,
            release_ttl,
            nonce_ttl,
            checkpoint_every,
            addr_file,
            until_stdin_closes,
            no_watermark,
        } => {
            use crate::release::service::{ServeConfig, Server};
            let policies = policy_dir(policies);
            if geoip.is_none() {
                eprintln!("weightvault: warning: no --geoip database: requests from public addresses will be refused");
            }
            let server = Server::start(ServeConfig {
                vault: dir.clone(),
                policies,
                geoip,
                tls: crate::release::tls::ServerTls {
                    cert,
                    key,
                    client_ca,
                    crls: crl,
                },
                listen,
                release_ttl: std::time::Duration::from_secs(release_ttl),
                nonce_ttl: std::time::Duration::from_secs(nonce_ttl),
                checkpoint_every: std::time::Duration::from_secs(checkpoint_every.max(1)),
                watermark: !no_watermark,
            })?;
            eprintln!(
                "weightvault: serving {} on https://{}",
                dir.display(),
                server.addr()
            );
            if let Some(f) = addr_file {
                std::fs::write(&f, server.addr().to_string())
                    .with_context(|| format!("writing {}", f.display()))?;
            }
            // For `weightvault policy reload`.
            let pid_file = Vault::open(&dir)?.serve_pid_file();
            std::fs::write(&pid_file, format!("{}\n", std::process::id()))
                .with_context(|| format!("writing {}", pid_file.display()))?;
            if until_stdin_closes {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                server.stop();
            } else {
                server.wait();
            }
            let _ = std::fs::remove_file(&pid_file);
        }
        Command::Fetch {
            model,
            out,
            server,
            ca,
            cert,
            key,
            host_key,
            attest,
            config,
            parallel,
            limit_rate,
            resumable,
            json,
        } => {
            use crate::release::fetch::{fetch, FetchConfig, FetchError, FetchFile};
            crate::interrupt::install()?;
            let file = match &config {
                Some(p) => FetchFile::load(p)?,
                None => FetchFile::default(),
            };
            fn need<T>(v: Option<T>, f: Option<T>, flag: &str) -> Result<T> {
                v.or(f).ok_or_else(|| {
                    anyhow::anyhow!(
                        "fetch needs --{flag} (or `{}` in --config)",
                        flag.replace('-', "_")
                    )
                })
            }
            let cfg = FetchConfig {
                server: need(server, file.server, "server")?,
                ca: need(ca, file.ca, "ca")?,
                cert: need(cert, file.cert, "cert")?,
                key: need(key, file.key, "key")?,
                host_key: need(host_key, file.host_key, "host-key")?,
                attest: need(attest, file.attest, "attest")?,
                parallel: parallel.or(file.parallel).unwrap_or(4),
                progress: !cli.quiet,
                limit_rate,
                resumable: resumable || file.resumable.unwrap_or(false),
            };
            let t = Instant::now();
            match fetch(&cfg, &model, &out) {
                Ok(r) => {
                    if json {
                        outln!(
                            "{}",
                            serde_json::json!({
                                "release": r.release,
                                "ledger_index": r.ledger_index,
                                "resumed": r.resumed,
                                "downloaded": r.downloaded,
                                "bytes": r.bytes,
                                "seconds": t.elapsed().as_secs_f64(),
                                "attest_ms": r.attest_time.as_secs_f64() * 1e3,
                                "first_byte_ms": r.first_byte.map(|d| d.as_secs_f64() * 1e3),
                            })
                        );
                    } else {
                        outln!(
                            "fetched {}@{} into {}: {} files, {} bytes in {:.1}s (release {}{}{})",
                            r.release.model,
                            r.release.revision,
                            out.display(),
                            r.release.shards.len(),
                            r.bytes,
                            t.elapsed().as_secs_f64(),
                            r.release.id,
                            r.ledger_index
                                .map(|i| format!(", ledger entry {i}"))
                                .unwrap_or_default(),
                            if r.resumed {
                                format!(", resumed: {} bytes downloaded this time", r.downloaded)
                            } else {
                                String::new()
                            }
                        );
                    }
                }
                Err(FetchError::Denied {
                    message,
                    decision,
                    ledger_index,
                }) => {
                    eprintln!("weightvault: {message} (ledger entry {ledger_index})");
                    for c in &decision.checks {
                        eprintln!(
                            "  {:<5} {:<19} {}",
                            match c.verdict {
                                crate::policy::Verdict::Pass => "pass",
                                crate::policy::Verdict::Fail => "FAIL",
                                crate::policy::Verdict::NotApplicable => "n/a",
                            },
                            c.check.name(),
                            c.reason
                        );
                    }
                    return Err(Exit::quiet(2).into());
                }
                Err(e @ FetchError::Revoked(_)) => {
                    eprintln!("weightvault: {e}");
                    return Err(Exit::quiet(2).into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Command::Audit(cmd) => run_audit(cmd, || open_vault(&dir))?,
        Command::Init { hsm_module } => {
            let (v, done) = Vault::init(&dir, hsm_module.as_deref())?;
            for d in done {
                outln!("{d}");
            }
            outln!("vault ready at {}", v.dir().display());
        }
        Command::Seal {
            src,
            model,
            revision,
            eccn,
            training_ops,
            open_weights,
            force,
            policies,
        } => {
            crate::interrupt::install()?;
            let v = open_vault(&dir)?;
            if let Some(ops) = training_ops {
                anyhow::ensure!(
                    ops.is_finite() && ops >= 0.0,
                    "--training-ops must be a non-negative number"
                );
            }
            if let Some(e) = &eccn {
                crate::policy::classify::check_eccn(e)
                    .map_err(|w| anyhow::anyhow!("{w}; nothing was sealed"))?;
            }
            let training = TrainingFacts {
                eccn,
                training_ops,
                open_weights,
            };
            let disagreements = seal_disagreements(&model, &training, policies)?;
            anyhow::ensure!(
                force || disagreements.is_empty(),
                "{model}@{revision} was not sealed, nothing was written: {}. Correct the flags (or the inventory), or give --force to seal anyway with the disagreement recorded in the ledger",
                disagreements.join("; ")
            );
            let kw = v.key_wrap()?;
            let bars = Bars::new(cli.quiet);
            let t = Instant::now();
            let r = v.seal(
                &src,
                &SealRequest {
                    model,
                    revision,
                    training,
                },
                &kw,
                &bars,
            )?;
            // The seal in the ledger, with any disagreement it was forced through; a seal that
            // cannot be recorded is taken out again.
            let mut rec = crate::ledger::record::Record::action(
                &crate::store::now_rfc3339(),
                "seal",
                &operator::identity(),
                &r.manifest.model,
                Some(&r.manifest.revision),
                r.manifest.files.iter().map(|f| f.path.clone()).collect(),
                "sealed",
            );
            rec.bytes = Some(r.bytes);
            if !disagreements.is_empty() {
                rec.failed_checks = vec!["classification".into()];
                rec.reason = Some(format!("forced: {}", disagreements.join("; ")));
            }
            let rref = RevisionRef {
                model: r.manifest.model.clone(),
                revision: Some(r.manifest.revision.clone()),
            };
            let at = match v.record(&rec) {
                Ok(at) => at,
                Err(e) => {
                    let undone = v.remove(&rref, |_, _| Ok(String::new()));
                    anyhow::bail!(
                        "{}@{} could not be recorded in the ledger ({e}); {}",
                        rref.model,
                        r.manifest.revision,
                        match undone {
                            Ok(_) => "it was taken out of the vault again".to_string(),
                            Err(u) => format!("taking it out again failed too: {u}"),
                        }
                    );
                }
            };
            for d in &disagreements {
                eprintln!("weightvault: warning: sealed with --force although {d}");
            }
            let shards = r
                .manifest
                .files
                .iter()
                .filter(|f| f.shard_count > 0)
                .count();
            outln!(
                "sealed {}@{}: {} files ({} safetensors shards), {} in {:.2}s ({}) -> {} ({at})",
                r.manifest.model,
                r.manifest.revision,
                r.manifest.files.len(),
                shards,
                human(r.bytes),
                t.elapsed().as_secs_f64(),
                gib_per_s(r.bytes, t),
                r.dir.display()
            );
        }
        Command::List { json } => {
            let v = open_vault(&dir)?;
            let revs = v.list()?;
            if json {
                let ms: Vec<_> = revs.iter().map(|r| &r.manifest).collect();
                outln!("{}", serde_json::to_string_pretty(&ms)?);
            } else if revs.is_empty() {
                outln!("no sealed models in {}", v.dir().display());
            } else {
                outln!(
                    "{:<24} {:<16} {:>6} {:>7} {:>8} {:>10} {:>10}  {:<8} {:<10} sealed at",
                    "MODEL",
                    "REVISION",
                    "FILES",
                    "SHARDS",
                    "TENSORS",
                    "SIZE",
                    "SEALED",
                    "ECCN",
                    "OPS"
                );
                for r in revs {
                    let m = &r.manifest;
                    let size: u64 = m.files.iter().map(|f| f.original_len).sum();
                    let eccn = match (&m.training.eccn, m.training.open_weights) {
                        (_, true) => "open".to_string(),
                        (Some(e), _) => e.clone(),
                        (None, _) => "-".into(),
                    };
                    outln!(
                        "{:<24} {:<16} {:>6} {:>7} {:>8} {:>10} {:>10}  {:<8} {:<10} {}",
                        m.model,
                        m.revision,
                        m.files.len(),
                        m.files.iter().filter(|f| f.shard_count > 0).count(),
                        m.files.iter().map(|f| f.tensors).sum::<usize>(),
                        human(size),
                        human(r.sealed_bytes),
                        eccn,
                        m.training
                            .training_ops
                            .map(|o| format!("{o:e}"))
                            .unwrap_or("-".into()),
                        m.sealed_at
                    );
                    if let Some(t) = &r.shredded {
                        outln!("{:<24} {:<16} SHREDDED{t}: can never be opened", "", "");
                    }
                }
            }
        }
        Command::Verify { revision } => {
            let v = open_vault(&dir)?;
            let kw = v.key_wrap()?;
            let rev = v.open_revision(&revision, &kw)?;
            let bars = Bars::new(cli.quiet);
            bars.bar.set_length(rev.total_bytes());
            bars.bar.set_message(format!("verifying {}", rev.label));
            let t = Instant::now();
            rev.verify(crate::store::threads(v.config().seal.threads), &bars.bar)?;
            bars.bar.finish_and_clear();
            outln!(
                "{}: manifest and {} files authentic, {} checked in {:.2}s ({})",
                rev.label,
                rev.files.len(),
                human(rev.total_bytes()),
                t.elapsed().as_secs_f64(),
                gib_per_s(rev.total_bytes(), t)
            );
        }
        Command::Open {
            revision,
            out,
            tensor,
        } => {
            crate::interrupt::install()?;
            let v = open_vault(&dir)?;
            let kw = v.key_wrap()?;
            let rev = v.open_revision(&revision, &kw)?;
            crate::store::check_output(&out, tensor.is_some())?;
            // Operator decryption is recorded before any plaintext is written (if the ledger
            // cannot be written, nothing is opened: fail closed), and its end after: completed,
            // failed or interrupted. The ledger stays held meanwhile, so an open that dies
            // unrecorded is found and recorded by the next holder.
            let (ledger, _) = v
                .ledger()
                .context("opening the ledger (nothing was opened)")?;
            let shards: Vec<String> = match &tensor {
                Some(t) => vec![format!("tensor:{t}")],
                None => rev.manifest.files.iter().map(|f| f.path.clone()).collect(),
            };
            let start = crate::ledger::record::Record::action(
                &crate::store::now_rfc3339(),
                "operator-open",
                &operator::identity(),
                &rev.manifest.model,
                Some(&rev.manifest.revision),
                shards,
                "started",
            );
            let index = ledger
                .append(&start)
                .context("recording the open in the ledger (nothing was opened)")?;
            let t = Instant::now();
            let bars = Bars::new(cli.quiet || tensor.is_some());
            let result = match &tensor {
                Some(name) => rev
                    .open_tensor_to(name, &out)
                    .with_context(|| format!("writing tensor {name}")),
                None => {
                    bars.bar.set_length(rev.total_bytes());
                    bars.bar.set_message(format!("opening {}", rev.label));
                    rev.open_to(
                        &out,
                        crate::store::threads(v.config().seal.threads),
                        &bars.bar,
                    )
                    .map_err(anyhow::Error::from)
                }
            };
            bars.bar.finish_and_clear();
            use crate::ledger::record::{OpenOutcome, Record};
            let (outcome, bytes, reason) = match &result {
                Ok(n) => (OpenOutcome::Completed, Some(*n), None),
                Err(_) if crate::interrupt::requested().is_some() => (
                    OpenOutcome::Interrupted,
                    None,
                    crate::interrupt::requested().map(|s| format!("{s}; nothing was kept")),
                ),
                Err(e) => (
                    OpenOutcome::Failed,
                    None,
                    Some(format!("{}; nothing was kept", one_line(e))),
                ),
            };
            let end = Record::open_end(
                index,
                &start,
                &crate::store::now_rfc3339(),
                outcome,
                bytes,
                reason,
            );
            let end_index = ledger.append(&end);
            let n = result?;
            let end_index = end_index.with_context(|| {
                format!(
                    "{} was written but the end of the open (ledger entry {index}) could not be recorded",
                    out.display()
                )
            })?;
            match tensor {
                Some(name) => outln!(
                    "{}: wrote tensor {name} ({}) to {} (ledger entries {index}, {end_index})",
                    rev.label,
                    human(n),
                    out.display()
                ),
                None => outln!(
                    "{}: wrote {} files ({}) to {} in {:.2}s (ledger entries {index}, {end_index})",
                    rev.label,
                    rev.files.len(),
                    human(n),
                    out.display(),
                    t.elapsed().as_secs_f64()
                ),
            }
        }
    }
    Ok(())
}

/// An error and its causes on one line, outermost first (as `main` prints them).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

/// Records a key lifecycle event as an operator record (`model` empty unless it concerns one):
/// appended to the ledger, or spooled for the running service that holds it.
fn record_key_event(
    v: &Vault,
    kind: &str,
    model: &str,
    revision: Option<&str>,
    shards: Vec<String>,
    outcome: &str,
) -> Result<crate::ledger::spool::Recorded> {
    let r = crate::ledger::record::Record::action(
        &crate::store::now_rfc3339(),
        kind,
        &operator::identity(),
        model,
        revision,
        shards,
        outcome,
    );
    Ok(v.record(&r)?)
}
