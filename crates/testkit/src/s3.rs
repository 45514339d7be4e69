//! S3 servers for tests and benchmarks, started on a free port of 127.0.0.1: `moto_server`
//! (PyPI `moto[server]`: enforces Object Lock, so a locked object's delete is refused) and
//! `s3s-fs` (crates.io: a file-backed server, for throughput), with buckets made through the
//! AWS CLI (PyPI `awscli`) as a lab would. `tools/s3-env` installs them under `target/`.
//!
//! A server stops when its [`S3Server`] is dropped, and also when the process that started
//! it ends however it ends: it runs under a shell that kills it once its standard input
//! closes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type Result<T> = std::io::Result<T>;

fn fail<T>(why: String) -> Result<T> {
    Err(std::io::Error::other(why))
}

/// Credentials every test server accepts.
pub const ACCESS_KEY: &str = "test";
/// See [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "testsecret";
/// Region the test buckets are made in.
pub const REGION: &str = "us-east-1";

/// A running S3 server.
pub struct S3Server {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The directory with `aws` (the AWS CLI).
    bin: PathBuf,
    /// Its log.
    pub log: PathBuf,
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl S3Server {
    /// Starts `moto_server` from `bin` (the `bin` directory `tools/s3-env` prints), logging
    /// to `log`.
    pub fn moto(bin: &Path, log: &Path) -> Result<Self> {
        let port = free_port()?;
        let cmd = format!(
            "exec {} -H 127.0.0.1 -p {port}",
            bin.join("moto_server").display()
        );
        Self::start(bin, log, port, &cmd)
    }

    /// Starts `s3s-fs` (the binary at `s3s_fs`) serving the directory `data`.
    pub fn s3s_fs(bin: &Path, s3s_fs: &Path, data: &Path, log: &Path) -> Result<Self> {
        std::fs::create_dir_all(data)?;
        let port = free_port()?;
        let cmd = format!(
            "exec {} --host 127.0.0.1 --port {port} --access-key {ACCESS_KEY} --secret-key {SECRET_KEY} {}",
            s3s_fs.display(),
            data.display()
        );
        Self::start(bin, log, port, &cmd)
    }

    fn start(bin: &Path, log: &Path, port: u16, cmd: &str) -> Result<Self> {
        let logf = std::fs::File::create(log)?;
        // The server runs in the background of a shell that waits for its stdin to close
        // (this process ending, or `Drop`), then kills it.
        let script = format!("{cmd} & pid=$!; cat >/dev/null; kill $pid 2>/dev/null; wait $pid");
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()?;
        let s = S3Server {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
            bin: bin.into(),
            log: log.into(),
        };
        let t = Instant::now();
        while !answers(port) {
            if t.elapsed() > Duration::from_secs(60) {
                return fail(format!(
                    "the S3 server on port {port} did not answer within 60 s; its log: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(s)
    }

    /// The environment a client of this server needs (credentials, region, endpoint, plain
    /// HTTP allowed).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Runs the AWS CLI against this server (`aws <args>`); its standard output.
    pub fn aws(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(self.bin.join("aws"))
            .args(["--endpoint-url", &self.endpoint, "--output", "json"])
            .args(args)
            .envs(self.env())
            .env("AWS_PAGER", "")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return fail(format!(
                "aws {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Makes a bucket, with Object Lock enabled when asked.
    pub fn create_bucket(&self, name: &str, object_lock: bool) -> Result<()> {
        let mut args = vec!["s3api", "create-bucket", "--bucket", name];
        if object_lock {
            args.push("--object-lock-enabled-for-bucket");
        }
        self.aws(&args).map(|_| ())
    }
}

/// Whether an HTTP server answers on 127.0.0.1:`port`.
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut b = [0u8; 12];
    s.read_exact(&mut b).is_ok() && b.starts_with(b"HTTP/1.")
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }
}
