//! The command line: `init`, `seal`, `list`, `verify`, `open`. Thin: parses, calls the library,
//! prints. Every failure ends as one line a person can act on, and a non-zero exit.

use crate::store::sealed::Progress;
use crate::store::{RevisionRef, SealProgress, SealRequest, TrainingFacts, Vault};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

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
}

/// `weightvault policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
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

fn policy_dir(p: Option<PathBuf>) -> PathBuf {
    p.or_else(|| std::env::var_os("WEIGHTVAULT_POLICIES").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("policies"))
}

/// A geolocation source that knows nothing (used when no source address is checked).
struct NoGeo;
impl crate::policy::GeoLookup for NoGeo {
    fn country(&self, _: std::net::IpAddr) -> Option<String> {
        None
    }
}

fn run_policy(cmd: PolicyCommand, vault_dir: &std::path::Path) -> Result<()> {
    use crate::policy::data::PolicyData;
    match cmd {
        PolicyCommand::Lint { policies } => {
            let dir = policy_dir(policies);
            let p = PolicyData::load_dir(&dir)?;
            println!(
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
            let p = PolicyData::load_dir(&dir)?;
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
            let sealed = Vault::open(vault_dir)
                .ok()
                .and_then(|v| v.list().ok())
                .and_then(|revs| {
                    revs.into_iter()
                        .filter(|r| r.manifest.model == model)
                        .max_by(|a, b| a.manifest.sealed_at.cmp(&b.manifest.sealed_at))
                });
            if let (Some(r), false) = (&sealed, json) {
                println!(
                    "sealed facts from {}@{} in {}",
                    r.manifest.model,
                    r.manifest.revision,
                    vault_dir.display()
                );
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
                dry_run: true,
            };
            let d = crate::policy::decide(&p, geo.as_ref(), &req);
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                println!("{:<20} {:<8} REASON", "CHECK", "VERDICT");
                for c in &d.checks {
                    let v = match c.verdict {
                        crate::policy::Verdict::Pass => "pass",
                        crate::policy::Verdict::Fail => "FAIL",
                        crate::policy::Verdict::NotApplicable => "n/a",
                    };
                    println!("{:<20} {:<8} {}", c.check.name(), v, c.reason);
                }
                let relies = match &d.authority {
                    Some(crate::policy::Authority::NotControlled) => "not controlled".to_string(),
                    Some(crate::policy::Authority::LicenceException { name }) => name.clone(),
                    Some(crate::policy::Authority::Licence { id }) => format!("licence {id}"),
                    None => "-".into(),
                };
                println!(
                    "\ndecision: {} on {} (dry run; relies on: {relies})",
                    if d.allowed { "ALLOW" } else { "DENY" },
                    time.date()
                );
                if !d.allowed {
                    let f: Vec<_> = d.failed().iter().map(|c| c.name()).collect();
                    println!("failed checks: {}", f.join(", "));
                }
            }
            if !d.allowed {
                std::process::exit(1);
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
        Command::Init { hsm_module } => {
            let (v, done) = Vault::init(&dir, hsm_module.as_deref())?;
            for d in done {
                println!("{d}");
            }
            println!("vault ready at {}", v.dir().display());
        }
        Command::Seal {
            src,
            model,
            revision,
            eccn,
            training_ops,
            open_weights,
        } => {
            let v = open_vault(&dir)?;
            if let Some(ops) = training_ops {
                anyhow::ensure!(
                    ops.is_finite() && ops >= 0.0,
                    "--training-ops must be a non-negative number"
                );
            }
            let kw = v.key_wrap()?;
            let bars = Bars::new(cli.quiet);
            let t = Instant::now();
            let r = v.seal(
                &src,
                &SealRequest {
                    model,
                    revision,
                    training: TrainingFacts {
                        eccn,
                        training_ops,
                        open_weights,
                    },
                },
                &kw,
                &bars,
            )?;
            let shards = r
                .manifest
                .files
                .iter()
                .filter(|f| f.shard_count > 0)
                .count();
            println!(
                "sealed {}@{}: {} files ({} safetensors shards), {} in {:.2}s ({}) -> {}",
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
                println!("{}", serde_json::to_string_pretty(&ms)?);
            } else if revs.is_empty() {
                println!("no sealed models in {}", v.dir().display());
            } else {
                println!(
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
                    println!(
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
            println!(
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
            let v = open_vault(&dir)?;
            let kw = v.key_wrap()?;
            let rev = v.open_revision(&revision, &kw)?;
            match tensor {
                Some(name) => {
                    rev.open_tensor_to(&name, &out)
                        .with_context(|| format!("writing tensor {name}"))?;
                    println!("{}: wrote tensor {name} to {}", rev.label, out.display());
                }
                None => {
                    let bars = Bars::new(cli.quiet);
                    bars.bar.set_length(rev.total_bytes());
                    bars.bar.set_message(format!("opening {}", rev.label));
                    let t = Instant::now();
                    rev.open_to(
                        &out,
                        crate::store::threads(v.config().seal.threads),
                        &bars.bar,
                    )?;
                    bars.bar.finish_and_clear();
                    println!(
                        "{}: wrote {} files ({}) to {} in {:.2}s",
                        rev.label,
                        rev.files.len(),
                        human(rev.total_bytes()),
                        out.display(),
                        t.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }
    Ok(())
}
