//! A private PostgreSQL cluster for a test: Debian's `initdb` and `pg_ctl` on a data directory
//! of its own, listening on a free port of 127.0.0.1 only (no Unix socket: its path would be
//! limited to 107 bytes, and a clone's directory can be deeper than that), with trust
//! authentication for the `postgres` role. Never for production: trust authentication lets
//! anyone on the machine connect as the superuser.
//!
//! PostgreSQL refuses to run as root, so when the test runs as root the cluster runs as a
//! system user (`wvpg`, created if missing with `useradd --system`); otherwise as the current
//! user. [`TestPostgres::stop`] and [`TestPostgres::start`] take the server down and up again
//! on the same port and data (for fail-closed tests); dropping it stops the server at once
//! (`-m immediate`) and removes its directory. A cluster held in a `static` is never dropped,
//! and `pg_ctl` detaches the server from the test process: a guardian shell, whose standard
//! input is a pipe only this process writes to, stops the server and removes the directory
//! when this process ends however it ends (the pipe closes), SIGKILL included.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The system user a cluster runs as when the test runs as root.
pub const CLUSTER_USER: &str = "wvpg";

/// What can go wrong setting a cluster up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// No `initdb`/`pg_ctl` under /usr/lib/postgresql/*/bin.
    #[error("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): run tools/setup")]
    NotInstalled,
    /// A file or directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A command could not run or failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command.
        what: String,
        /// Its exit status and output.
        detail: String,
    },
}

/// Where Debian's PostgreSQL binaries are: the highest version under /usr/lib/postgresql.
pub fn bin_dir() -> Result<PathBuf, PgError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| PgError::NotInstalled)?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).ok_or(PgError::NotInstalled)
}

/// The user and group a cluster runs as: `wvpg` when running as root, else nobody to switch to.
fn cluster_ids() -> Result<Option<(u32, u32)>, PgError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let lookup = || nix::unistd::User::from_name(CLUSTER_USER).ok().flatten();
    let user = match lookup() {
        Some(u) => u,
        None => {
            let made = run(
                Command::new("useradd")
                    .args([
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                    ])
                    .arg(CLUSTER_USER),
                "useradd",
            );
            // Another test binary may have created it meanwhile.
            match (lookup(), made) {
                (Some(u), _) => u,
                (None, Err(e)) => return Err(e),
                (None, Ok(_)) => {
                    return Err(PgError::Command {
                        what: "useradd".into(),
                        detail: format!("user {CLUSTER_USER} still missing"),
                    })
                }
            }
        }
    };
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

fn run(cmd: &mut Command, what: &str) -> Result<Output, PgError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| PgError::Command {
            what: what.into(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(PgError::Command {
            what: what.into(),
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(out)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PgError + '_ {
    move |source| PgError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn free_port() -> Result<u16, PgError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io(Path::new("127.0.0.1:0")))?;
    Ok(l.local_addr().map_err(io(Path::new("127.0.0.1:0")))?.port())
}

/// A running (or stopped) private cluster.
pub struct TestPostgres {
    bin: PathBuf,
    dir: PathBuf,
    ids: Option<(u32, u32)>,
    port: u16,
    running: bool,
    /// Its standard input closes when this process ends: then it cleans up.
    guardian: Option<Child>,
}

/// What the guardian runs (as the test's user: it may signal the server and remove the
/// directory): wait for end of input, then stop the server at once and remove `$1`.
const GUARDIAN: &str = r#"cat >/dev/null
p=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)
if [ -n "$p" ] && kill -QUIT "$p" 2>/dev/null; then
  while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
fi
rm -rf "$1""#;

impl TestPostgres {
    /// Makes a cluster in a new directory under `parent` and starts it.
    pub fn start_in(parent: &Path) -> Result<TestPostgres, PgError> {
        let bin = bin_dir()?;
        let ids = cluster_ids()?;
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let dir = parent.join(format!("pg-{}-{}", std::process::id(), random_suffix()));
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(io(&dir))?;
            // The cluster user must be able to reach its directory.
            let mut p = parent.to_path_buf();
            loop {
                if let Ok(m) = std::fs::metadata(&p) {
                    if m.permissions().mode() & 0o001 == 0 {
                        let mode = m.permissions().mode() | 0o001;
                        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                            .map_err(io(&p))?;
                    }
                }
                if !p.pop() {
                    break;
                }
            }
        }
        let guardian = Command::new("sh")
            .args(["-c", GUARDIAN, "guardian"])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| PgError::Command {
                what: "sh (the cluster's guardian)".into(),
                detail: e.to_string(),
            })?;
        let mut pg = TestPostgres {
            bin,
            dir,
            ids,
            port: 0,
            running: false,
            guardian: Some(guardian),
        };
        let data = pg.data();
        run(
            pg.command("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "--locale=C.UTF-8"])
                .args(["--encoding=UTF8", "--no-sync"]),
            "initdb",
        )?;
        // A free port can be taken by someone else between the probe and the bind: try again.
        let mut last = None;
        for _ in 0..5 {
            pg.port = free_port()?;
            match pg.start() {
                Ok(()) => return Ok(pg),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried"))
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin.join(name));
        if let Some((uid, gid)) = self.ids {
            c.uid(uid).gid(gid);
        }
        c.current_dir(&self.dir).env("LC_ALL", "C.UTF-8");
        c
    }

    /// Starts the server (again), on the same port and data.
    pub fn start(&mut self) -> Result<(), PgError> {
        if self.running {
            return Ok(());
        }
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k '' -c fsync=on -c max_connections=200",
            self.port
        );
        let log = self.dir.join("server.log");
        run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-w", "-t", "30", "-l"])
                .arg(&log)
                .args(["-o", &opts, "start"]),
            "pg_ctl start",
        )
        .map_err(|e| match e {
            PgError::Command { what, detail } => PgError::Command {
                what,
                detail: format!(
                    "{detail}\nserver log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            },
            e => e,
        })?;
        self.running = true;
        Ok(())
    }

    /// Stops the server (fast shutdown: sessions are ended, nothing more is accepted).
    pub fn stop(&mut self) -> Result<(), PgError> {
        self.stop_mode("fast")
    }

    fn stop_mode(&mut self, mode: &str) -> Result<(), PgError> {
        if !self.running {
            return Ok(());
        }
        run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-w", "-t", "30", "-m", mode, "stop"]),
            "pg_ctl stop",
        )?;
        self.running = false;
        Ok(())
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for the `postgres` database as the `postgres` role.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// A connection URL for database `db` as the `postgres` role.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` (a test's own schema, apart from other tests sharing the
    /// cluster) and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, PgError> {
        run(
            self.command("createdb")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", name]),
            "createdb",
        )?;
        Ok(self.url_for(name))
    }

    /// Runs one SQL command through `psql` (for a test's set-up or inspection).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, PgError> {
        let out = run(
            self.command("psql")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", "-d", db, "-X", "-q", "-A", "-t"])
                .args(["-v", "ON_ERROR_STOP=1", "-c", sql]),
            "psql",
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("OS randomness");
    hex::encode(b)
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self.stop_mode("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut g) = self.guardian.take() {
            drop(g.stdin.take());
            let _ = g.wait();
        }
    }
}
