//! `weightvault-testkit`: the project's test PKI and test attester, for tests and the demo.
//! Never for production: the CA key sits beside its certificate and the attester seed is public.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use weightvault::release::testkit::{attest, new_host_key, HostFacts, TestCa};

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
    },
}

fn main() -> std::process::ExitCode {
    let r = match Cli::parse().cmd {
        Cmd::Pki { dir, client } => (|| {
            let ca = TestCa::create(&dir, "weightvault test organisation CA")?;
            ca.issue_server("server")?;
            for c in client {
                let (stem, id) = c
                    .split_once('=')
                    .ok_or_else(|| format!("--client {c}: expected STEM=IDENTITY"))?;
                ca.issue_client(stem, id, None)?;
            }
            println!("{}", dir.display());
            Ok(())
        })(),
        Cmd::HostKey { file } => new_host_key(&file).map(|p| println!("{}", hex::encode(p))),
        Cmd::Attest {
            seed,
            id,
            host_id,
            country,
            region,
            ttl,
        } => (|| {
            let env = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
            let e = attest(
                &seed,
                &id,
                &HostFacts {
                    host_id,
                    country,
                    region,
                    ttl: time::Duration::seconds(ttl),
                },
                &env("WEIGHTVAULT_NONCE")?,
                &env("WEIGHTVAULT_HOST_PUBLIC_KEY")?,
            )?;
            println!("{}", serde_json::to_string(&e).expect("json"));
            Ok(())
        })(),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weightvault-testkit: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
