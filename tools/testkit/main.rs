//! `weightvault-testkit`: the project's test PKI and test attester, for tests and the demo.
//! Never for production: the CA key sits beside its certificate and the attester seed is public.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use weightvault_testkit::{attest, new_host_key, HostFacts, TestCa};

/// Test PKI and test attester for weightvault (tests and demos only).
#[derive(Parser)]
#[command(name = "weightvault-testkit")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make a CA in DIR with a server certificate (server.pem/.key for localhost and
    /// 127.0.0.1), an empty CRL (crl.pem) and one client certificate per --client STEM=IDENTITY
    Pki {
        /// Directory
        dir: PathBuf,
        /// A client certificate: file stem and identity (an e-mail address or a URI)
        #[arg(long, value_name = "STEM=IDENTITY")]
        client: Vec<String>,
    },
    /// Make an X25519 host key (hex, mode 0600) and print its public key
    HostKey {
        /// Key file to write
        file: PathBuf,
    },
    /// Print evidence signed by the test attester for the host; the nonce and host public key
    /// come from WEIGHTVAULT_NONCE and WEIGHTVAULT_HOST_PUBLIC_KEY (as `weightvault fetch` sets them)
    Attest {
        /// The attester's Ed25519 seed (hex)
        #[arg(long, default_value = "tools/test-attester/seed.hex")]
        seed: PathBuf,
        /// Attester id
        #[arg(long, default_value = "weightvault-test-attester")]
        id: String,
        /// Host id
        #[arg(long)]
        host_id: String,
        /// Country (ISO 3166-1 alpha-2)
        #[arg(long)]
        country: String,
        /// Region
        #[arg(long, default_value = "region-1")]
        region: String,
        /// Seconds the evidence stays valid (negative: already expired)
        #[arg(long, default_value_t = 300, allow_hyphen_values = true)]
        ttl: i64,
        /// Facility the host sits in (a facility id of a VEU authorisation in veu.toml)
        #[arg(long)]
        facility: Option<String>,
    },
    /// Serve the test attester over HTTP on loopback: POST {"nonce", "host_public_key"} gets
    /// evidence for the host described by the flags (for `fetch --attest http://...`)
    AttestServer {
        /// The attester's Ed25519 seed (hex)
        #[arg(long, default_value = "tools/test-attester/seed.hex")]
        seed: PathBuf,
        /// Host id
        #[arg(long)]
        host_id: String,
        /// Country (ISO 3166-1 alpha-2)
        #[arg(long)]
        country: String,
        /// Write the bound address here
        #[arg(long)]
        addr_file: PathBuf,
    },
    /// Run a private PostgreSQL cluster under DIR on a free port of 127.0.0.1 (as an
    /// unprivileged user when root), with a database `vault`; write its URL to --url-file and
    /// remove the cluster when standard input closes
    Postgres {
        /// Directory for the cluster
        dir: PathBuf,
        /// Write the database URL here
        #[arg(long)]
        url_file: PathBuf,
    },
    /// Run HAProxy on a free port of 127.0.0.1 in front of replicas (TCP, TLS passed through,
    /// each checked with GET /readyz on its operations port); write its address to
    /// --addr-file and stop when standard input closes
    Haproxy {
        /// Directory for its configuration and log
        dir: PathBuf,
        /// A replica: SERVICE_ADDR,OPS_ADDR (repeat)
        #[arg(long, value_name = "SERVICE,OPS", required = true)]
        backend: Vec<String>,
        /// Write the address clients use here
        #[arg(long)]
        addr_file: PathBuf,
    },
}

/// Blocks until standard input closes.
fn until_stdin_closes() {
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
}

/// The HTTP test attester: answers until its standard input closes.
fn attest_server(seed: PathBuf, facts: HostFacts, addr_file: PathBuf) -> anyhow::Result<()> {
    use axum::{routing::post, Json, Router};
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        std::fs::write(&addr_file, l.local_addr()?.to_string())?;
        let app = Router::new().route(
            "/attest",
            post(move |Json(q): Json<serde_json::Value>| {
                let (seed, facts) = (seed.clone(), facts.clone());
                async move {
                    let r = attest(
                        &seed,
                        "weightvault-test-attester",
                        &facts,
                        q["nonce"].as_str().unwrap_or_default(),
                        q["host_public_key"].as_str().unwrap_or_default(),
                    );
                    match r {
                        Ok(e) => Ok(Json(e)),
                        Err(e) => Err((axum::http::StatusCode::BAD_REQUEST, e.to_string())),
                    }
                }
            }),
        );
        let stop = async {
            let _ = tokio::task::spawn_blocking(until_stdin_closes).await;
        };
        axum::serve(l, app).with_graceful_shutdown(stop).await?;
        Ok(())
    })
}

fn main() -> std::process::ExitCode {
    let r = match Cli::parse().cmd {
        Cmd::Pki { dir, client } => (|| -> anyhow::Result<()> {
            let ca = TestCa::create(&dir, "weightvault test organisation CA")?;
            ca.issue_server("server")?;
            for c in client {
                let (stem, id) = c
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--client {c}: expected STEM=IDENTITY"))?;
                ca.issue_client(stem, id, None)?;
            }
            println!("{}", dir.display());
            Ok(())
        })(),
        Cmd::HostKey { file } => new_host_key(&file)
            .map(|p| println!("{}", hex::encode(p)))
            .map_err(Into::into),
        Cmd::Attest {
            seed,
            id,
            host_id,
            country,
            region,
            ttl,
            facility,
        } => (|| -> anyhow::Result<()> {
            let env = |k: &str| std::env::var(k).map_err(|_| anyhow::anyhow!("{k} is not set"));
            let e = attest(
                &seed,
                &id,
                &HostFacts {
                    host_id,
                    country,
                    region,
                    ttl: time::Duration::seconds(ttl),
                    facility,
                },
                &env("WEIGHTVAULT_NONCE")?,
                &env("WEIGHTVAULT_HOST_PUBLIC_KEY")?,
            )?;
            println!("{}", serde_json::to_string(&e).expect("json"));
            Ok(())
        })(),
        Cmd::Postgres { dir, url_file } => (|| -> anyhow::Result<()> {
            let pg = weightvault_testkit::postgres::TestPostgres::start_in(&dir)?;
            let url = pg.create_database("vault")?;
            std::fs::write(&url_file, &url)?;
            until_stdin_closes();
            drop(pg);
            Ok(())
        })(),
        Cmd::Haproxy {
            dir,
            backend,
            addr_file,
        } => (|| -> anyhow::Result<()> {
            let backends = backend
                .iter()
                .map(|b| {
                    let (service, ops) = b.split_once(',').ok_or_else(|| {
                        anyhow::anyhow!("--backend {b}: expected SERVICE_ADDR,OPS_ADDR")
                    })?;
                    Ok(weightvault_testkit::haproxy::Backend {
                        service: service.into(),
                        ops: ops.into(),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let h = weightvault_testkit::haproxy::Haproxy::start(&dir, &backends)?;
            std::fs::write(&addr_file, &h.addr)?;
            until_stdin_closes();
            drop(h);
            Ok(())
        })(),
        Cmd::AttestServer {
            seed,
            host_id,
            country,
            addr_file,
        } => attest_server(
            seed,
            HostFacts {
                host_id,
                country,
                region: "region-1".into(),
                ttl: time::Duration::seconds(300),
                facility: None,
            },
            addr_file,
        ),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weightvault-testkit: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
