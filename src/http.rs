//! The HTTP endpoint of `podrouter run` (`[http]` in routing.toml, on
//! `127.0.0.1:9187` unless told otherwise), served with axum:
//!
//! - `/metrics`: the daemon's [`Metrics`] in the Prometheus text format
//!   (OpenMetrics), plus the held messages, the first-response median and
//!   90th percentile per pod and the threads waiting, read from the
//!   journal;
//! - `/healthz`: `200 ok` when the inbox is connected, its last wake-up is
//!   recent and the relay answered its last check; else `503` and the
//!   reason, as plain text;
//! - `/status`: an HTML page for operations (see [`status`]).
//!
//! Nothing here ever shows a message body: the journal keeps none, and
//! the page shows senders, subjects and decisions only. The journal is read
//! through [`crate::ops::Reader`] (read-only) on the blocking pool.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::HttpConfig;
use crate::metrics::{self, Metrics};
use crate::ops::{OpsError, Reader};

pub mod status;

/// What the handlers share.
struct Shared {
    /// The daemon's metrics and health.
    metrics: Arc<Metrics>,
    /// The journal's folder.
    state_dir: PathBuf,
}

/// Binds `[http] listen`, or returns `None` when `[http]` is switched off.
/// A port that cannot be bound stops the start with a clear error.
pub async fn bind(config: &HttpConfig) -> anyhow::Result<Option<TcpListener>> {
    if !config.enabled {
        return Ok(None);
    }
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen for HTTP on {} (set [http] listen to a free address, \
             or enabled = false)",
            config.listen
        )
    })?;
    Ok(Some(listener))
}

/// Serves `/metrics`, `/healthz` and `/status` on `listener` until the
/// task is dropped or aborted. Logs the bound address first.
pub fn spawn(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    state_dir: PathBuf,
) -> tokio::task::JoinHandle<()> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a: SocketAddr| a.to_string());
    tracing::info!(%addr, "http listening");
    let app = router(Arc::new(Shared { metrics, state_dir }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http endpoint stopped");
        }
    })
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/status") }),
        )
        .with_state(shared)
}

/// `/metrics`: the registry, with the held count read from the journal.
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let hold_folder = hold_folder(&shared);
    let state_dir = shared.state_dir.clone();
    let held = read_journal(state_dir, move |r| Ok(r.held(&hold_folder, 0)?.len())).await;
    match held {
        Ok(n) => shared.metrics.set_held(n),
        Err(e) => tracing::warn!(error = %e, "cannot count held messages for /metrics"),
    }
    let pods: Vec<String> = shared
        .metrics
        .table_state()
        .config
        .pods
        .keys()
        .cloned()
        .collect();
    let since = std::time::SystemTime::now() - metrics::RESPONSE_WINDOW;
    let since = humantime::format_rfc3339_millis(since).to_string();
    let responses = read_journal(shared.state_dir.clone(), move |r| {
        let answered = r.first_responses(&since)?;
        let waiting = r.waiting_threads()?;
        Ok(crate::ops::stats::responses(&pods, &answered, &waiting))
    })
    .await;
    match responses {
        Ok(r) => shared.metrics.set_responses(&r),
        Err(e) => tracing::warn!(error = %e, "cannot read first responses for /metrics"),
    }
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        shared.metrics.encode(),
    )
        .into_response()
}

/// `/healthz`: 200 or 503, with a one-line plain-text reason.
async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    match shared.metrics.check_health() {
        Ok(()) => (StatusCode::OK, text, "ok\n".to_owned()).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            format!("{}\n", crate::ops::printable(&reason)),
        )
            .into_response(),
    }
}

/// `/status`: the operations page.
async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let table = shared.metrics.table_state();
    let hold_folder = hold_folder(&shared);
    let now = std::time::SystemTime::now();
    let journal = read_journal(shared.state_dir.clone(), move |r| {
        status::Journal::read(r, &hold_folder, now)
    })
    .await;
    let page = status::Page {
        now,
        table: &table,
        health: shared.metrics.check_health(),
        journal,
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page.render(),
    )
        .into_response()
}

/// The hold folder of the table in force (`Held` without `[inbox]`).
fn hold_folder(shared: &Shared) -> String {
    shared
        .metrics
        .table_state()
        .config
        .inbox
        .as_ref()
        .map_or_else(|| "Held".to_owned(), |i| i.hold_folder.clone())
}

/// Runs `f` on a read-only journal connection, on the blocking pool.
async fn read_journal<T: Send + 'static>(
    state_dir: PathBuf,
    f: impl FnOnce(&Reader) -> Result<T, OpsError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(move || f(&Reader::open(&state_dir)?)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("reading the journal failed".to_owned()),
    }
}
