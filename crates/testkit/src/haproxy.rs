//! HAProxy (Debian's `haproxy`) in front of service replicas, as a lab runs them: TCP mode,
//! TLS passed through so mutual TLS stays end to end between fetcher and replica, each
//! replica health-checked with `GET /readyz` on its plain-HTTP operations port. Listens on a
//! free port of 127.0.0.1, with its statistics (`show stat`) on another; stops when dropped or
//! when the process that started it ends.

use crate::s3::free_port;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's HAProxy; `haproxy` on the `PATH` when it is not there.
pub const HAPROXY: &str = "/usr/sbin/haproxy";

fn haproxy_bin() -> &'static str {
    if Path::new(HAPROXY).exists() {
        HAPROXY
    } else {
        "haproxy"
    }
}

/// A replica behind the balancer: its service address and its operations address.
#[derive(Debug, Clone)]
pub struct Backend {
    /// `127.0.0.1:<port>` of the mutual-TLS service.
    pub service: String,
    /// `127.0.0.1:<port>` of its `/healthz`, `/readyz`, `/metrics` listener.
    pub ops: String,
}

/// One server of the backend, as HAProxy's statistics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    /// `r<i>` for the `i`-th backend given to [`Haproxy::start`].
    pub name: String,
    /// `UP`, `DOWN`, ... (HAProxy's words).
    pub status: String,
    /// Client connections it has been given in all.
    pub sessions: u64,
    /// Bytes it sent to clients in all.
    pub bytes_out: u64,
}

/// A running HAProxy.
pub struct Haproxy {
    child: Option<Child>,
    /// `127.0.0.1:<port>` clients connect to.
    pub addr: String,
    /// `127.0.0.1:<port>` of its statistics socket.
    stats: String,
}

impl Haproxy {
    /// Starts HAProxy balancing `backends` round robin (server `r<i>` for `backends[i]`),
    /// with its configuration and log in `dir`, and waits until it listens. A replica is
    /// checked every 200 ms and marked down (its sessions shut) after two failed checks in a
    /// row; a check may take 2 s: under load `/readyz` can take longer than the 200 ms
    /// interval, which HAProxy otherwise takes as the check's timeout (100 requests at once
    /// on two cores marked both replicas down with `fall 1` and no `timeout check`).
    pub fn start(dir: &Path, backends: &[Backend]) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let stats = free_port()?;
        let mut cfg = format!(
            "global\n  maxconn 4096\n  stats socket ipv4@127.0.0.1:{stats} level admin\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 300s\n  timeout server 300s\n  \
             timeout check 2s\n  option redispatch\n  retries 3\n\
             frontend vault\n  bind 127.0.0.1:{port}\n  default_backend replicas\n\
             backend replicas\n  balance roundrobin\n  option httpchk GET /readyz\n  \
             default-server inter 200ms fall 2 rise 1 on-marked-down shutdown-sessions\n"
        );
        for (i, b) in backends.iter().enumerate() {
            let ops_port = b.ops.rsplit(':').next().unwrap_or_default();
            cfg.push_str(&format!(
                "  server r{i} {} check port {ops_port}\n",
                b.service
            ));
        }
        let conf = dir.join("haproxy.cfg");
        std::fs::write(&conf, cfg)?;
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        // Runs in the foreground (-db) under a shell that stops it once stdin closes.
        let script = format!(
            "{} -db -f {} & pid=$!; cat >/dev/null; kill $pid 2>/dev/null; wait $pid",
            haproxy_bin(),
            conf.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let h = Haproxy {
            child: Some(child),
            addr: format!("127.0.0.1:{port}"),
            stats: format!("127.0.0.1:{stats}"),
        };
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || h.servers().is_err() {
            if t.elapsed() > Duration::from_secs(20) {
                return Err(std::io::Error::other(format!(
                    "haproxy did not listen on {port}: {}",
                    std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(h)
    }

    /// The backend's servers, from `show stat` on the statistics socket.
    pub fn servers(&self) -> std::io::Result<Vec<ServerStat>> {
        let mut s = std::net::TcpStream::connect(&self.stats)?;
        s.write_all(b"show stat\n")?;
        let mut csv = String::new();
        s.read_to_string(&mut csv)?;
        let mut lines = csv.lines();
        let head: Vec<&str> = lines
            .next()
            .and_then(|l| l.strip_prefix("# "))
            .ok_or_else(|| std::io::Error::other(format!("not HAProxy statistics: {csv:?}")))?
            .split(',')
            .collect();
        let col = |name: &str| {
            head.iter()
                .position(|h| *h == name)
                .ok_or_else(|| std::io::Error::other(format!("no {name} in {head:?}")))
        };
        let (px, sv, status, stot, bout) = (
            col("pxname")?,
            col("svname")?,
            col("status")?,
            col("stot")?,
            col("bout")?,
        );
        Ok(lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| {
                f.len() == head.len()
                    && f[px] == "replicas"
                    && f[sv] != "BACKEND"
                    && f[sv] != "FRONTEND"
            })
            .map(|f| ServerStat {
                name: f[sv].to_string(),
                status: f[status].to_string(),
                sessions: f[stot].parse().unwrap_or(0),
                bytes_out: f[bout].parse().unwrap_or(0),
            })
            .collect())
    }

    /// Waits until server `name` has `status` (`UP`, `DOWN`) by its health checks.
    pub fn wait_status(&self, name: &str, status: &str, within: Duration) -> std::io::Result<()> {
        let t = Instant::now();
        loop {
            let now = self.servers()?;
            if now.iter().any(|s| s.name == name && s.status == status) {
                return Ok(());
            }
            if t.elapsed() > within {
                return Err(std::io::Error::other(format!(
                    "HAProxy's server {name} is not {status} after {within:?}: {now:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }
}
