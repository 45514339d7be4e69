//! Write-once retention of a bucket: its S3 Object Lock default retention, read with
//! `aws-sdk-s3` (`object_store` has no call for a bucket's lock configuration). The ledger's
//! full tiles go to such a bucket; `serve --require-worm` refuses to start without it.

use super::bucket::BucketConfig;
use super::StoreError;
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockRetentionMode};

/// How strictly a locked object is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` may delete early (tests use it to clean up).
    Governance,
    /// Nobody, the account's root user included, can delete or overwrite before it expires.
    Compliance,
}

/// A bucket's default retention for new objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    /// The mode.
    pub mode: LockMode,
    /// How long, in days (a setting in years counts 365 days each).
    pub days: u32,
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = match self.mode {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        };
        write!(f, "{m}, {} days", self.days)
    }
}

/// The bucket's default retention: `None` when Object Lock is off or sets no default.
pub fn default_retention(cfg: &BucketConfig) -> Result<Option<Retention>, StoreError> {
    let (bucket, _) = super::bucket::split_url(&cfg.url)?;
    let cfg = cfg.clone();
    let bad =
        |e: String| StoreError::BadInput(format!("{}: Object Lock configuration: {e}", cfg.url));
    // A runtime of its own on a thread of its own: callable from anywhere, once at start.
    let got = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let client = client(&cfg).await;
                match client
                    .get_object_lock_configuration()
                    .bucket(&bucket)
                    .send()
                    .await
                {
                    Ok(r) => Ok(r.object_lock_configuration),
                    Err(e) => {
                        let code = e
                            .as_service_error()
                            .and_then(|s| aws_sdk_s3::error::ProvideErrorMetadata::code(s))
                            .map(str::to_string);
                        if code.as_deref() == Some("ObjectLockConfigurationNotFoundError") {
                            Ok(None)
                        } else {
                            Err(format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)))
                        }
                    }
                }
            })
        })
        .join()
        .map_err(|_| "the lookup panicked".to_string())?
    })
    .map_err(bad)?;
    let Some(c) = got else { return Ok(None) };
    if c.object_lock_enabled != Some(ObjectLockEnabled::Enabled) {
        return Ok(None);
    }
    let Some(d) = c.rule.and_then(|r| r.default_retention) else {
        return Ok(None);
    };
    let mode = match d.mode {
        Some(ObjectLockRetentionMode::Compliance) => LockMode::Compliance,
        Some(ObjectLockRetentionMode::Governance) => LockMode::Governance,
        other => return Err(bad(format!("unknown retention mode {other:?}"))),
    };
    let days = match (d.days, d.years) {
        (Some(n), _) if n > 0 => n as u32,
        (_, Some(y)) if y > 0 => y as u32 * 365,
        _ => return Err(bad("a default retention of no length".into())),
    };
    Ok(Some(Retention { mode, days }))
}

/// Checks that the bucket keeps new objects at least `days` days in at least `mode`; the
/// retention it has.
pub fn require(cfg: &BucketConfig, days: u32, mode: LockMode) -> Result<Retention, StoreError> {
    match default_retention(cfg)? {
        None => Err(StoreError::BadInput(format!(
            "{} has no Object Lock default retention; the ledger needs at least {} (Object Lock is enabled when a bucket is made)",
            cfg.url,
            Retention { mode, days }
        ))),
        Some(r) if r.mode < mode || r.days < days => Err(StoreError::BadInput(format!(
            "{} keeps new objects {r}; the ledger needs at least {}",
            cfg.url,
            Retention { mode, days }
        ))),
        Some(r) => Ok(r),
    }
}

async fn client(cfg: &BucketConfig) -> aws_sdk_s3::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = &cfg.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(e) = &cfg.endpoint {
        loader = loader.endpoint_url(e);
    }
    if let Some((id, secret)) = &cfg.credentials {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            id,
            secret,
            None,
            None,
            "weightvault",
        ));
    }
    let shared = loader.load().await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        // S3-compatible servers on a bare address take the bucket in the path.
        .force_path_style(cfg.endpoint.is_some())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}
