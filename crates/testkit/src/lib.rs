//! A test PKI (rcgen), the test attester, a private PostgreSQL cluster ([`postgres`]) and a
//! made-up Consolidated Screening List with a labelled matching set ([`csl`]), for
//! tests, benchmarks and the demo: never for production. The organisation CA's key is written beside its certificate so that more
//! clients can be issued later; that alone disqualifies it from real use.

pub mod csl;
pub mod haproxy;
pub mod postgres;
pub mod s3;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};
use weightvault_core::evidence::{self, Evidence, Statement};

/// What can go wrong making test certificates, keys and evidence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// rcgen could not make a key, a certificate or a CRL.
    #[error(transparent)]
    Rcgen(#[from] rcgen::Error),
    /// A name that a certificate cannot carry as a subject alternative name.
    #[error("bad {kind} {name}")]
    BadName {
        /// "URI", "e-mail" or "DNS name".
        kind: &'static str,
        /// The name.
        name: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// An attester seed file that does not hold a seed.
    #[error("{}: not a 64-hex-digit Ed25519 seed", .0.display())]
    BadSeed(PathBuf),
}

/// The test kit's results.
pub type Result<T> = std::result::Result<T, Error>;

fn io<T>(p: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|source| Error::Io {
        path: p.into(),
        source,
    })
}

/// A subject alternative name of `kind` (for the error), as rcgen takes it.
fn ia5(kind: &'static str, name: &str) -> Result<rcgen::string::Ia5String> {
    name.try_into().map_err(|source| Error::BadName {
        kind,
        name: name.into(),
        source,
    })
}

fn write_private(p: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = io(
        p,
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(p),
    )?;
    io(p, f.write_all(text.as_bytes()))
}

fn serial() -> SerialNumber {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("OS randomness");
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

/// A certificate authority kept in a directory (`ca.pem`, `ca.key`, `crl.pem`).
pub struct TestCa {
    dir: PathBuf,
    params: CertificateParams,
    key: KeyPair,
    revoked: Vec<SerialNumber>,
}

/// A client or server certificate issued by a [`TestCa`].
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate (PEM file).
    pub cert: PathBuf,
    /// Private key (PEM file).
    pub key: PathBuf,
    /// Serial number (for revocation).
    pub serial: SerialNumber,
}

fn ca_params(name: &str) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    p.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
    p.serial_number = Some(serial());
    Ok(p)
}

impl TestCa {
    /// Creates a CA named `name` in `dir` (with an empty CRL).
    pub fn create(dir: &Path, name: &str) -> Result<Self> {
        io(dir, std::fs::create_dir_all(dir))?;
        let params = ca_params(name)?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        io(
            &dir.join("ca.pem"),
            std::fs::write(dir.join("ca.pem"), cert.pem()),
        )?;
        write_private(&dir.join("ca.key"), &key.serialize_pem())?;
        io(&dir.join("name"), std::fs::write(dir.join("name"), name))?;
        let ca = Self {
            dir: dir.into(),
            params,
            key,
            revoked: Vec::new(),
        };
        ca.write_crl()?;
        Ok(ca)
    }

    /// Loads a CA made by [`TestCa::create`] (its CRL starts empty again).
    pub fn load(dir: &Path) -> Result<Self> {
        let name = io(dir, std::fs::read_to_string(dir.join("name")))?;
        let key_pem = io(dir, std::fs::read_to_string(dir.join("ca.key")))?;
        let key = KeyPair::from_pem(&key_pem)?;
        // The issuer is identified by its name and key; the certificate itself is on disk.
        let mut params = ca_params(name.trim())?;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let ca = Self {
            dir: dir.into(),
            params,
            key,
            revoked: Vec::new(),
        };
        Ok(ca)
    }

    /// The CA certificate (PEM file).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CRL (PEM file).
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    fn issue(
        &self,
        stem: &str,
        sans: Vec<SanType>,
        cn: &str,
        valid: (OffsetDateTime, OffsetDateTime),
    ) -> Result<Issued> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = sans;
        p.not_before = valid.0;
        p.not_after = valid.1;
        let s = serial();
        p.serial_number = Some(s.clone());
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer)?;
        let (c, k) = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}.key")),
        );
        io(&c, std::fs::write(&c, cert.pem()))?;
        write_private(&k, &key.serialize_pem())?;
        Ok(Issued {
            cert: c,
            key: k,
            serial: s,
        })
    }

    /// Issues the server certificate for `localhost` and 127.0.0.1.
    pub fn issue_server(&self, stem: &str) -> Result<Issued> {
        let now = OffsetDateTime::now_utc();
        self.issue(
            stem,
            vec![
                SanType::DnsName(ia5("DNS name", "localhost")?),
                SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            ],
            "weightvault test server",
            (now - Duration::days(1), now + Duration::days(365)),
        )
    }

    /// Issues a client certificate naming `identity`: a URI (`spiffe://...`) for a workload,
    /// an e-mail address for a person. `valid` defaults to a year from yesterday.
    pub fn issue_client(
        &self,
        stem: &str,
        identity: &str,
        valid: Option<(OffsetDateTime, OffsetDateTime)>,
    ) -> Result<Issued> {
        let now = OffsetDateTime::now_utc();
        let san = if identity.contains("://") {
            SanType::URI(ia5("URI", identity)?)
        } else {
            SanType::Rfc822Name(ia5("e-mail", identity)?)
        };
        self.issue(
            stem,
            vec![san],
            identity,
            valid.unwrap_or((now - Duration::days(1), now + Duration::days(365))),
        )
    }

    /// Revokes a certificate (rewrites the CRL).
    pub fn revoke(&mut self, serial: &SerialNumber) -> Result<()> {
        self.revoked.push(serial.clone());
        self.write_crl()
    }

    fn write_crl(&self) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(30),
            crl_number: serial(),
            issuing_distribution_point: None,
            revoked_certs: self
                .revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: s.clone(),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        let crl = crl.signed_by(&issuer)?;
        let p = self.crl();
        io(&p, std::fs::write(&p, crl.pem()?))
    }
}

/// Writes a new X25519 host secret (hex) to `path` (mode 0600); returns the public key.
pub fn new_host_key(path: &Path) -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("OS randomness");
    write_private(path, &(hex::encode(b) + "\n"))?;
    Ok(x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(b)).to_bytes())
}

/// What the test attester is asked to state.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// Host id.
    pub host_id: String,
    /// Country (ISO alpha-2).
    pub country: String,
    /// Region.
    pub region: String,
    /// Validity from now.
    pub ttl: Duration,
    /// Facility (a VEU authorisation's facility id), if the attester states one.
    pub facility: Option<String>,
}

/// Signs evidence for a test host with the attester seed at `seed_file` (hex).
pub fn attest(
    seed_file: &Path,
    id: &str,
    facts: &HostFacts,
    nonce: &str,
    host_key: &str,
) -> Result<Evidence> {
    let seed = io(seed_file, std::fs::read_to_string(seed_file))?;
    let seed: [u8; 32] = hex::decode(seed.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Error::BadSeed(seed_file.into()))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 ns");
    Ok(evidence::sign(
        &Statement {
            attester: id.into(),
            host_id: facts.host_id.clone(),
            country: facts.country.clone(),
            region: facts.region.clone(),
            measurement: "sha256:test-host-image".into(),
            nonce: nonce.into(),
            issued_at: now,
            expires_at: now + facts.ttl,
            host_key: host_key.into(),
            facility: facts.facility.clone(),
        },
        &key,
    ))
}
