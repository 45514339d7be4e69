//! `weightvault serve`: starts the key-release service on the vault and runs it until it is
//! stopped (or, with --until-stdin-closes, until standard input closes).

use crate::actions::reload::ServePidFile;
use crate::cli::{policy_dir, Globals, ServeArgs};
use crate::release::service::{ServeConfig, Server};
use crate::store::Vault;
use anyhow::{Context, Result};
use std::time::Duration;

/// Runs `serve`.
pub(in crate::cli) fn run(g: &Globals, a: ServeArgs) -> Result<()> {
    let ServeArgs {
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
        ops_listen,
        require_worm,
        until_stdin_closes,
        no_watermark,
    } = a;
    let policies = policy_dir(policies);
    if geoip.is_none() {
        eprintln!("weightvault: warning: no --geoip database: requests from public addresses will be refused");
    }
    let server = Server::start(ServeConfig {
        vault: g.dir.clone(),
        policies,
        geoip,
        tls: crate::release::tls::ServerTls {
            cert,
            key,
            client_ca,
            crls: crl,
        },
        listen,
        release_ttl: Duration::from_secs(release_ttl),
        nonce_ttl: Duration::from_secs(nonce_ttl),
        checkpoint_every: Duration::from_secs(checkpoint_every.max(1)),
        watermark: !no_watermark,
        ops_listen,
        require_worm,
    })?;
    eprintln!(
        "weightvault: serving {} on https://{}",
        g.dir.display(),
        server.addr()
    );
    if let Some(a) = server.ops_addr() {
        eprintln!("weightvault: health, readiness and metrics on http://{a}");
    }
    if let Some(f) = addr_file {
        let mut text = server.addr().to_string();
        if let Some(a) = server.ops_addr() {
            text.push_str(&format!("\n{a}"));
        }
        std::fs::write(&f, text).with_context(|| format!("writing {}", f.display()))?;
    }
    // For `weightvault policy reload`; removed once the service has stopped.
    let pid_file = ServePidFile::write(&Vault::open(&g.dir)?)?;
    if until_stdin_closes {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        server.stop();
    } else {
        server.wait();
    }
    drop(pid_file);
    Ok(())
}
