//! A raw client of the release API over mutual TLS, for the protocol steps the fetcher never
//! does wrong on purpose (and for requests at one chosen replica).

use std::path::Path;

/// A client of `server` with one client certificate.
pub struct Api {
    /// The HTTP client (its TLS configured with the certificate).
    pub client: reqwest::Client,
    /// The runtime its requests run on.
    pub rt: tokio::runtime::Runtime,
    /// `https://host:port`.
    pub server: String,
}

impl Api {
    /// A client of `server` trusting `ca`, presenting `cert` and `key`.
    pub fn new(ca: &Path, cert: &Path, key: &Path, server: &str) -> Self {
        let tls = weightvault::release::tls::client_config(ca, cert, key).unwrap();
        Api {
            client: reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .build()
                .unwrap(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            server: server.to_string(),
        }
    }

    /// A client as `who` of the test PKI in `pki` (`<who>.pem`, `<who>.key`, `ca.pem`).
    pub fn of_pki(pki: &Path, who: &str, server: &str) -> Self {
        Self::new(
            &pki.join("ca.pem"),
            &pki.join(format!("{who}.pem")),
            &pki.join(format!("{who}.key")),
            server,
        )
    }

    /// POSTs JSON; the status and the JSON answer.
    pub fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.rt.block_on(async {
            let r = self
                .client
                .post(format!("{}{path}", self.server))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        })
    }

    /// POSTs `body` as it is; the status, the headers and the JSON answer.
    pub fn post_body(
        &self,
        path: &str,
        body: reqwest::Body,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        self.rt.block_on(async {
            let r = self
                .client
                .post(format!("{}{path}", self.server))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let (s, h) = (r.status().as_u16(), r.headers().clone());
            (s, h, r.json().await.unwrap())
        })
    }

    /// GETs; the status and the body.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        self.rt.block_on(async {
            let r = self
                .client
                .get(format!("{}{path}", self.server))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        })
    }

    /// A challenge nonce.
    pub fn nonce(&self) -> String {
        let (s, v) = self.post("/v1/challenge", serde_json::json!({}));
        assert_eq!(s, 200, "{v}");
        v["nonce"].as_str().unwrap().to_string()
    }
}

/// A TLS connection spoken to by hand.
pub type RawTls = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// A raw TLS connection to `server` as `who` of the test PKI in `pki`, offering `alpn` (none:
/// no ALPN at all); reads time out after 2 s.
pub fn raw_tls(pki: &Path, who: &str, server: &str, alpn: &[&[u8]]) -> RawTls {
    let mut cfg = weightvault::release::tls::client_config(
        &pki.join("ca.pem"),
        &pki.join(format!("{who}.pem")),
        &pki.join(format!("{who}.key")),
    )
    .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let addr = server.trim_start_matches("https://");
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads what the service sends until it closes the connection (`None` if it is still open
/// after `bound`).
pub fn read_until_closed(s: &mut RawTls, bound: std::time::Duration) -> Option<Vec<u8>> {
    use std::io::{ErrorKind, Read};
    let t = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while t.elapsed() < bound {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(got), // reset or TLS close: closed
        }
    }
    None
}
