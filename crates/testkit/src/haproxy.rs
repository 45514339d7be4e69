//! HAProxy (Debian's `haproxy`) in front of service replicas, as a lab runs them: TCP mode,
//! TLS passed through so mutual TLS stays end to end between fetcher and replica, each
//! replica health-checked with `GET /readyz` on its plain-HTTP operations port. Listens on a
//! free port of 127.0.0.1; stops when dropped or when the process that started it ends.

use crate::s3::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A replica behind the balancer: its service address and its operations address.
#[derive(Debug, Clone)]
pub struct Backend {
    /// `127.0.0.1:<port>` of the mutual-TLS service.
    pub service: String,
    /// `127.0.0.1:<port>` of its `/healthz`, `/readyz`, `/metrics` listener.
    pub ops: String,
}

/// A running HAProxy.
pub struct Haproxy {
    child: Option<Child>,
    /// `127.0.0.1:<port>` clients connect to.
    pub addr: String,
}

impl Haproxy {
    /// Starts HAProxy balancing `backends` round robin, with its configuration and log in
    /// `dir`.
    pub fn start(dir: &Path, backends: &[Backend]) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let mut cfg = format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 300s\n  timeout server 300s\n  \
             option redispatch\n  retries 3\n\
             frontend vault\n  bind 127.0.0.1:{port}\n  default_backend replicas\n\
             backend replicas\n  balance roundrobin\n  option httpchk GET /readyz\n  \
             default-server inter 200ms fall 1 rise 1 on-marked-down shutdown-sessions\n"
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
            "haproxy -db -f {} & pid=$!; cat >/dev/null; kill $pid 2>/dev/null; wait $pid",
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
        };
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
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
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }
}
