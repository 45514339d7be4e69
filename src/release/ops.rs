//! The service's operations port (`serve --ops-listen ADDR`, plain HTTP, meant for an internal
//! address): `GET /healthz` (the process answers), `GET /readyz` (store, release state, HSM and
//! ledger all reachable: what a load balancer routes by) and `GET /metrics` (Prometheus text).
//!
//! A port of its own because a load balancer's health checks and a Prometheus scraper carry no
//! client certificate, and the release port admits nothing without one; nothing here releases
//! or reveals a key, a model byte or a requester's name.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the service counts.
pub struct Metrics {
    registry: Registry,
    /// Release decisions by outcome (`allowed`, `denied`, ...).
    pub releases: IntCounterVec,
    /// Shard bytes handed to connections.
    pub bytes_streamed: IntCounter,
    /// Time to decide a release and make its record durable: policy evaluation under the
    /// licence state and the ledger append are one step (with a shared database, one
    /// transaction), so they are timed together.
    pub decision_seconds: Histogram,
    /// Time to make a record other than a decision durable in the ledger (stream ends, policy
    /// reloads): the appends that are not part of a decision.
    pub append_seconds: Histogram,
    /// Shard streams open now.
    pub open_streams: IntGauge,
    /// Connections and requests refused by a `[serve]` limit, by limit.
    pub refused: IntCounterVec,
}

impl Metrics {
    /// A fresh set, registered for `/metrics`.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("weightvault".into()), None).expect("registry");
        let buckets = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        ];
        let releases = IntCounterVec::new(
            Opts::new("releases_total", "Release decisions, by outcome"),
            &["outcome"],
        )
        .expect("metric");
        let bytes_streamed =
            IntCounter::new("bytes_streamed_total", "Shard bytes handed to connections")
                .expect("metric");
        let decision_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "decision_seconds",
                "Time to decide a release request and make its ledger record durable",
            )
            .buckets(buckets.clone()),
        )
        .expect("metric");
        let append_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ledger_append_seconds",
                "Time to make a ledger record other than a decision durable (stream ends, policy reloads)",
            )
            .buckets(buckets),
        )
        .expect("metric");
        let open_streams = IntGauge::new("open_streams", "Shard streams open now").expect("metric");
        let refused = IntCounterVec::new(
            Opts::new(
                "refused_total",
                "Connections and requests refused by a [serve] limit, by limit",
            ),
            &["limit"],
        )
        .expect("metric");
        for c in [
            Box::new(releases.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(bytes_streamed.clone()),
            Box::new(decision_seconds.clone()),
            Box::new(append_seconds.clone()),
            Box::new(open_streams.clone()),
            Box::new(refused.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            releases,
            bytes_streamed,
            decision_seconds,
            append_seconds,
            open_streams,
            refused,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn text(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Each dependency's state: `None` when reachable, or why not.
pub type Checks = Vec<(&'static str, Option<String>)>;

/// Runs the readiness checks (they touch the store, the HSM and the ledger: blocking calls).
pub type CheckFn = Arc<dyn Fn() -> Checks + Send + Sync>;

/// Readiness answers are reused this long, so a balancer polling every few hundred
/// milliseconds does not turn into as many HSM and store round trips.
const READY_CACHE: Duration = Duration::from_millis(500);

struct Ops {
    metrics: Arc<Metrics>,
    check: CheckFn,
    last: Mutex<Option<(Instant, Arc<Checks>)>>,
}

/// The router of the operations port.
pub fn router(metrics: Arc<Metrics>, check: CheckFn) -> Router {
    let ops = Arc::new(Ops {
        metrics,
        check,
        last: Mutex::new(None),
    });
    let (m, r) = (ops.clone(), ops);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let r = r.clone();
                async move { ready(&r).await }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        m.metrics.text(),
                    )
                }
            }),
        )
}

async fn ready(ops: &Arc<Ops>) -> Response {
    let cached = ops
        .last
        .lock()
        .expect("readiness cache")
        .as_ref()
        .filter(|(t, _)| t.elapsed() < READY_CACHE)
        .map(|(_, c)| c.clone());
    let checks = match cached {
        Some(c) => c,
        None => {
            let f = ops.check.clone();
            let c = Arc::new(
                tokio::task::spawn_blocking(move || f())
                    .await
                    .unwrap_or_else(|_| vec![("service", Some("the check panicked".into()))]),
            );
            *ops.last.lock().expect("readiness cache") = Some((Instant::now(), c.clone()));
            c
        }
    };
    let body: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_string(),
                serde_json::Value::String(v.clone().unwrap_or_else(|| "ok".into())),
            )
        })
        .collect();
    let status = if checks.iter().all(|(_, v)| v.is_none()) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Serves the operations port until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await;
}
