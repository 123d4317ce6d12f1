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
//! - `/status`: an HTML page for operations (see [`status`]);
//! - `/v1/route?caller=+14035550100`: which pod's hunt group a PBX should
//!   ring for a caller, as JSON (see [`crate::calls`]): 200 with a pod,
//!   404 when no client lists the caller and there is no default pod, 400
//!   when the caller is not a phone number. Callers must send `+` as
//!   `%2B`; a bare `+` decodes as a space, which [`crate::calls`] reads
//!   back as `+`.
//!
//! Nothing here ever shows a message body: the journal keeps none, and
//! the page shows senders, subjects and decisions only. The journal is read
//! through [`crate::ops::Reader`] (read-only) on the blocking pool.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::calls;
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
        .route("/v1/route", get(route_caller))
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
    let since = crate::journal::ago(std::time::SystemTime::now(), metrics::RESPONSE_WINDOW);
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

/// The query of `/v1/route`.
#[derive(Debug, serde::Deserialize)]
struct CallerQuery {
    /// Caller ID as the PBX has it, `+` sent as `%2B`.
    caller: Option<String>,
}

/// `/v1/route?caller=...`: the caller's client, pod and hunt group, as
/// JSON, from the table in force (a reload applies to the next call).
async fn route_caller(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<CallerQuery>, QueryRejection>,
) -> Response {
    // A query serde cannot read (`caller` twice, say) still answers JSON.
    let Ok(Query(query)) = query else {
        let body = serde_json::json!({ "error": "the query must have one caller parameter" });
        return json_response(StatusCode::BAD_REQUEST, &body);
    };
    let Some(caller) = query.caller else {
        let body = serde_json::json!({ "error": "missing the caller parameter" });
        return json_response(StatusCode::BAD_REQUEST, &body);
    };
    let config = shared.metrics.table_state().config;
    let lookup = calls::lookup(&config, &caller);
    tracing::debug!(
        caller = lookup.answer.caller.as_deref().unwrap_or("-"),
        pod = lookup.answer.pod.as_deref().unwrap_or("-"),
        status = lookup.outcome.http_status(),
        "caller lookup"
    );
    let status =
        StatusCode::from_u16(lookup.outcome.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, &lookup.answer)
}

/// A JSON body with its status; never cached.
fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!("{text}\n"),
    )
        .into_response()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    const TABLE: &str = r#"[routing]
default_region = "CA"
{default}
[pods.alberta]
members = ["ana@vendor.example"]
phone = "+1 403 555 0199"

[pods.triage]
members = ["tom@vendor.example"]
phone = "+1 403 555 0150"

[clients.sunnyvale]
pod = "alberta"
phones = ["+1 403 555 0100"]
"#;

    /// Serves the router for a table on a loopback port; returns the address.
    async fn serve(default_pod: bool) -> String {
        let default = if default_pod {
            "default_pod = \"triage\""
        } else {
            ""
        };
        let text = TABLE.replace("{default}", default);
        let config = crate::config::from_str(&text, Path::new("t.toml")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let metrics = Arc::new(Metrics::new(Arc::new(config)));
        spawn(listener, metrics, PathBuf::from("/nonexistent"));
        addr
    }

    /// GET with a real HTTP client: status, content type and JSON body.
    async fn get(addr: &str, path: &str) -> (u16, String, serde_json::Value) {
        let url = format!("http://{addr}{path}");
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            let mut response = agent.get(&url).call().unwrap();
            let status = response.status().as_u16();
            let kind = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = response.body_mut().read_to_string().unwrap();
            (status, kind, serde_json::from_str(&body).unwrap())
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_listed_caller_gets_its_pods_hunt_group() {
        let addr = serve(false).await;
        for caller in [
            "%2B14035550100",
            "+14035550100",
            "4035550100",
            "%2B1%20403%20555%200100",
        ] {
            let (status, kind, body) = get(&addr, &format!("/v1/route?caller={caller}")).await;
            assert_eq!(status, 200, "{caller}: {body}");
            assert_eq!(kind, "application/json");
            assert_eq!(
                body,
                serde_json::json!({
                    "client": "sunnyvale",
                    "pod": "alberta",
                    "phone": "+14035550199",
                    "rule": "phone",
                    "caller": "+14035550100",
                }),
                "{caller}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_callers_get_the_default_pod_or_404() {
        let addr = serve(true).await;
        let (status, _, body) = get(&addr, "/v1/route?caller=%2B14035550111").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["pod"], "triage");
        assert_eq!(body["phone"], "+14035550150");
        assert_eq!(body["rule"], "default");
        assert_eq!(body["client"], serde_json::Value::Null);

        let addr = serve(false).await;
        let (status, kind, body) = get(&addr, "/v1/route?caller=%2B14035550111").await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(kind, "application/json");
        assert_eq!(body["pod"], serde_json::Value::Null);
        assert_eq!(body["caller"], "+14035550111");
        assert!(body["error"].as_str().unwrap().starts_with("not found"));
    }

    #[tokio::test]
    async fn a_caller_that_is_not_a_number_is_400() {
        let addr = serve(true).await;
        for path in [
            "/v1/route?caller=hello",
            "/v1/route?caller=5550100",
            "/v1/route",
            "/v1/route?caller=1&caller=2",
        ] {
            let (status, kind, body) = get(&addr, path).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert_eq!(kind, "application/json");
            assert!(body["error"].is_string(), "{path}: {body}");
        }
    }
}
