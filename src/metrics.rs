//! What `podrouter run` knows about itself while it runs: Prometheus
//! metrics, the health of its connections, and the table in force.
//!
//! One [`Metrics`] is made per daemon and shared through an `Arc` between
//! the daemon's loop, which updates it where messages are filed, relays
//! finish, errors happen, the inbox wakes up and the table is reloaded,
//! and [`crate::http`], which reads it for `/metrics`, `/healthz` and
//! `/status`. The updates are atomic counters, plus a short lock for the
//! health fields; nothing on the hot path allocates more than a label.
//!
//! Every metric carries the prefix `podrouter_`; the names follow
//! Prometheus' conventions (`_total` for counters, base units in the name)
//! and are encoded by the `prometheus-client` crate.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::config::Config;
use crate::inbox::InboxError;
use crate::oauth::OAuthError;
use crate::relay::RelayError;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of `podrouter_messages_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodAction {
    /// The pod's key; empty for mail with no pod (held, most skips).
    pod: String,
    /// `relay`, `skip` or `hold`.
    action: String,
}

/// A `kind` label: of an error, or of a table entry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// Labels of `podrouter_first_response_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodQuantile {
    pod: String,
    /// `0.5` (median) or `0.9`.
    quantile: &'static str,
}

/// A `pod` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabel {
    pod: String,
}

/// How far back `/metrics` looks for first responses: threads opened in
/// the last 28 days.
pub const RESPONSE_WINDOW: Duration = Duration::from_secs(28 * 86400);

/// A `result` label: `success` or `failure`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

/// A `side` label: `inbox` or `relay`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Side {
    side: &'static str,
}

/// The daemon's metrics and health, shared with the HTTP endpoint.
pub struct Metrics {
    /// Holds a handle of every metric below, for encoding.
    registry: Registry,
    /// Messages filed, by pod and action.
    messages: Family<PodAction, Counter>,
    /// One message's SMTP delivery, from the first command to the reply.
    relay_seconds: Histogram,
    /// From the fetch of a message's batch to the message being filed.
    filed_seconds: Histogram,
    /// IMAP failures by kind.
    imap_errors: Family<Kind, Counter>,
    /// SMTP failures and refusals by kind.
    smtp_errors: Family<Kind, Counter>,
    /// Relay attempts that failed for now and were scheduled again.
    retries: Counter,
    /// Messages in the inbox waiting for their retry.
    retry_waiting: Gauge,
    /// Messages the journal filed in the hold folder; set at each scrape.
    held: Gauge,
    /// First-response time per pod (median and 90th percentile) of the
    /// threads opened within [`RESPONSE_WINDOW`]; set at each scrape.
    first_response: Family<PodQuantile, Gauge<f64, AtomicU64>>,
    /// Threads waiting for a first reply, per pod; set at each scrape.
    threads_waiting: Family<PodLabel, Gauge>,
    /// Unix time of the last successful poll or IDLE wake-up.
    last_wake: Gauge<f64, AtomicU64>,
    /// Whether the inbox connection is up (1) or not (0).
    inbox_up: Gauge,
    /// Whether the relay answered its last check (1) or not (0).
    relay_up: Gauge,
    /// Reloads of the table, by result.
    reloads: Family<Outcome, Counter>,
    /// Unix time the table in force was loaded.
    config_loaded: Gauge<f64, AtomicU64>,
    /// Size of the table in force: clients, pods, domains, addresses, phones.
    table: Family<Kind, Gauge>,
    /// Unix time the side's OAuth2 access token expires.
    oauth_expiry: Family<Side, Gauge<f64, AtomicU64>>,
    /// Failed OAuth2 token refreshes, by side.
    oauth_failures: Family<Side, Counter>,
    /// What `/healthz` answers from.
    health: Mutex<Health>,
    /// The table in force and its story, for `/status`.
    table_state: RwLock<TableState>,
}

/// The health fields, updated by the daemon.
#[derive(Debug)]
struct Health {
    /// `Ok` while the inbox is connected, else why not.
    inbox: Result<(), String>,
    /// How long without a wake-up still counts as recent.
    wake_limit: Duration,
    /// The last successful poll or IDLE wake-up.
    last_wake: Option<Instant>,
    /// What the relay's last check or transaction said: `Ok` when it
    /// answered, else why not; `None` before the first.
    relay: Option<Result<(), String>>,
    /// When the relay was last heard of, answered or not.
    relay_at: Option<Instant>,
    /// Each OAuth2 side's last refresh: `Err` with why it failed.
    oauth: BTreeMap<&'static str, Result<(), String>>,
}

/// The table in force, for `/status`.
#[derive(Clone, Debug)]
pub struct TableState {
    /// The validated table.
    pub config: Arc<Config>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// The last reload that failed after it, with when and why.
    pub reload_error: Option<(SystemTime, String)>,
}

impl Metrics {
    /// Metrics for a daemon starting with `config`.
    pub fn new(config: Arc<Config>) -> Metrics {
        let mut registry = Registry::with_prefix("podrouter");
        let messages = Family::<PodAction, Counter>::default();
        registry.register(
            "messages",
            "Messages filed, by pod and action (relay, skip, hold)",
            messages.clone(),
        );
        let relay_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register_with_unit(
            "relay_duration",
            "Time to hand one message to the relay (SMTP transaction)",
            Unit::Seconds,
            relay_seconds.clone(),
        );
        let filed_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register_with_unit(
            "fetch_to_filed_duration",
            "Time from fetching a message to filing it",
            Unit::Seconds,
            filed_seconds.clone(),
        );
        let imap_errors = Family::<Kind, Counter>::default();
        registry.register("imap_errors", "IMAP failures by kind", imap_errors.clone());
        let smtp_errors = Family::<Kind, Counter>::default();
        registry.register(
            "smtp_errors",
            "SMTP failures and refusals by kind",
            smtp_errors.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "retries",
            "Relay attempts that failed for now and were scheduled again",
            retries.clone(),
        );
        let retry_waiting = Gauge::default();
        registry.register(
            "retry_waiting_messages",
            "Messages in the inbox waiting for a relay retry",
            retry_waiting.clone(),
        );
        let held = Gauge::default();
        registry.register(
            "held_messages",
            "Messages filed in the hold folder and not released since",
            held.clone(),
        );
        let first_response = Family::<PodQuantile, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "first_response",
            "First-response time of threads opened in the last 28 days, by pod and quantile",
            Unit::Seconds,
            first_response.clone(),
        );
        let threads_waiting = Family::<PodLabel, Gauge>::default();
        registry.register(
            "threads_waiting",
            "Threads waiting for a first reply from their pod",
            threads_waiting.clone(),
        );
        let last_wake = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_wake_timestamp_seconds",
            "Unix time of the last successful poll or IDLE wake-up",
            last_wake.clone(),
        );
        let inbox_up = Gauge::default();
        registry.register(
            "inbox_connected",
            "Whether the inbox is connected (1) or not (0)",
            inbox_up.clone(),
        );
        let relay_up = Gauge::default();
        registry.register(
            "relay_up",
            "Whether the relay answered its last check (1) or not (0)",
            relay_up.clone(),
        );
        let reloads = Family::<Outcome, Counter>::default();
        registry.register(
            "config_reloads",
            "Reloads of routing.toml, by result (success, failure)",
            reloads.clone(),
        );
        let config_loaded = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "config_loaded_timestamp_seconds",
            "Unix time the routing table in force was loaded",
            config_loaded.clone(),
        );
        let table = Family::<Kind, Gauge>::default();
        registry.register(
            "table_entries",
            "Entries of the routing table in force, by kind",
            table.clone(),
        );
        let oauth_expiry = Family::<Side, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "oauth_token_expiry",
            "Unix time the OAuth2 access token of a side (inbox, relay) expires",
            Unit::Seconds,
            oauth_expiry.clone(),
        );
        let oauth_failures = Family::<Side, Counter>::default();
        registry.register(
            "oauth_refresh_failures",
            "Failed OAuth2 access token refreshes, by side (inbox, relay)",
            oauth_failures.clone(),
        );
        let metrics = Metrics {
            registry,
            oauth_expiry,
            oauth_failures,
            messages,
            relay_seconds,
            filed_seconds,
            imap_errors,
            smtp_errors,
            retries,
            retry_waiting,
            held,
            first_response,
            threads_waiting,
            last_wake,
            inbox_up,
            relay_up,
            reloads,
            config_loaded,
            table,
            health: Mutex::new(Health {
                inbox: Err("not connected yet".to_owned()),
                wake_limit: Duration::MAX,
                last_wake: None,
                relay: None,
                relay_at: None,
                oauth: BTreeMap::new(),
            }),
            table_state: RwLock::new(TableState {
                config: Arc::clone(&config),
                loaded_at: SystemTime::now(),
                reload_error: None,
            }),
        };
        // Every label value known in advance starts at 0, so that a rate
        // over the first failure is not lost.
        for kind in IMAP_KINDS {
            let _ = metrics.imap_errors.get_or_create(&Kind { kind });
        }
        for kind in SMTP_KINDS {
            let _ = metrics.smtp_errors.get_or_create(&Kind { kind });
        }
        for result in ["success", "failure"] {
            let _ = metrics.reloads.get_or_create(&Outcome { result });
        }
        metrics.show_table(&config, SystemTime::now());
        metrics
    }

    /// The metrics in the text format (OpenMetrics, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ------------------------------------------------------------ messages

    /// A message was filed with `action`, `since_fetch` after its fetch.
    pub fn message_filed(&self, pod: Option<&str>, action: &str, since_fetch: Duration) {
        let labels = PodAction {
            pod: pod.unwrap_or_default().to_owned(),
            action: action.to_owned(),
        };
        self.messages.get_or_create(&labels).inc();
        self.filed_seconds.observe(since_fetch.as_secs_f64());
    }

    /// The relay took a message for at least one recipient in `elapsed`.
    pub fn relayed(&self, elapsed: Duration) {
        self.relay_seconds.observe(elapsed.as_secs_f64());
        self.relay_answered(Ok(()));
    }

    /// The relay refused a message for every recipient (it answered).
    pub fn relay_refused(&self) {
        self.smtp_errors
            .get_or_create(&Kind { kind: "refused" })
            .inc();
        self.relay_answered(Ok(()));
    }

    /// A relay attempt or check failed with `error`.
    pub fn smtp_error(&self, error: &RelayError) {
        self.smtp_errors
            .get_or_create(&Kind {
                kind: smtp_kind(error),
            })
            .inc();
        let answered = if relay_reachable(error) {
            Ok(())
        } else {
            Err(error.to_string())
        };
        self.relay_answered(answered);
    }

    /// A relay check (a session opened and closed) succeeded.
    pub fn relay_checked(&self) {
        self.relay_answered(Ok(()));
    }

    fn relay_answered(&self, answered: Result<(), String>) {
        self.relay_up.set(i64::from(answered.is_ok()));
        let mut health = self.health();
        health.relay = Some(answered);
        health.relay_at = Some(Instant::now());
    }

    /// Whether the relay was heard of (answered or not) within `within`.
    pub fn relay_heard_within(&self, within: Duration) -> bool {
        self.health()
            .relay_at
            .is_some_and(|at| at.elapsed() < within)
    }

    /// A relay failed for now and was scheduled again.
    pub fn retried(&self) {
        self.retries.inc();
    }

    /// How many messages wait for a relay retry.
    pub fn retry_waiting(&self, waiting: usize) {
        self.retry_waiting
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// How many messages wait in the hold folder (read from the journal).
    pub fn set_held(&self, held: usize) {
        self.held.set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// First-response times and waiting threads per pod (read from the
    /// journal). A pod with no answered thread has no quantiles.
    pub fn set_responses(&self, pods: &[crate::ops::stats::PodResponses]) {
        self.first_response.clear();
        self.threads_waiting.clear();
        for p in pods {
            let quantiles = [("0.5", p.median_ms), ("0.9", p.p90_ms)];
            for (quantile, ms) in quantiles {
                if let Some(ms) = ms {
                    let labels = PodQuantile {
                        pod: p.pod.clone(),
                        quantile,
                    };
                    self.first_response
                        .get_or_create(&labels)
                        .set(ms as f64 / 1000.0);
                }
            }
            self.threads_waiting
                .get_or_create(&PodLabel { pod: p.pod.clone() })
                .set(i64::try_from(p.waiting).unwrap_or(i64::MAX));
        }
    }

    // --------------------------------------------------------------- oauth2

    /// A side's OAuth2 access token was refreshed; it expires at `expires_at`.
    pub fn oauth_refreshed(&self, side: &'static str, expires_at: SystemTime) {
        self.oauth_expiry
            .get_or_create(&Side { side })
            .set(unix_seconds(expires_at));
        let _ = self.oauth_failures.get_or_create(&Side { side });
        self.health().oauth.insert(side, Ok(()));
    }

    /// A side's OAuth2 refresh failed; `/healthz` says so until one works.
    pub fn oauth_refresh_failed(&self, side: &'static str, error: &OAuthError) {
        self.oauth_failures.get_or_create(&Side { side }).inc();
        self.health().oauth.insert(side, Err(error.to_string()));
    }

    // --------------------------------------------------------------- inbox

    /// The inbox is connected; a wake-up older than `wake_limit` is stale.
    pub fn inbox_connected(&self, wake_limit: Duration) {
        self.inbox_up.set(1);
        {
            let mut health = self.health();
            health.inbox = Ok(());
            health.wake_limit = wake_limit;
        }
        self.woke();
    }

    /// The inbox is not connected any more, because of `reason`.
    pub fn inbox_lost(&self, reason: impl Into<String>) {
        self.inbox_up.set(0);
        self.health().inbox = Err(reason.into());
    }

    /// An IMAP operation failed; the connection is gone.
    pub fn imap_error(&self, error: &InboxError) {
        self.imap_errors
            .get_or_create(&Kind {
                kind: imap_kind(error),
            })
            .inc();
        self.inbox_lost(error.to_string());
    }

    /// The inbox was polled, or woke from IDLE, successfully.
    pub fn woke(&self) {
        self.last_wake.set(unix_seconds(SystemTime::now()));
        self.health().last_wake = Some(Instant::now());
    }

    // --------------------------------------------------------------- table

    /// A reload put `config` in force.
    pub fn reloaded(&self, config: &Arc<Config>) {
        self.reloads
            .get_or_create(&Outcome { result: "success" })
            .inc();
        let now = SystemTime::now();
        self.show_table(config, now);
        let mut state = self.table_state.write().unwrap_or_else(|e| e.into_inner());
        *state = TableState {
            config: Arc::clone(config),
            loaded_at: now,
            reload_error: None,
        };
    }

    /// A reload was refused for `reason`; the old table stays.
    pub fn reload_failed(&self, reason: impl Into<String>) {
        self.reloads
            .get_or_create(&Outcome { result: "failure" })
            .inc();
        let mut state = self.table_state.write().unwrap_or_else(|e| e.into_inner());
        state.reload_error = Some((SystemTime::now(), reason.into()));
    }

    /// The table in force, when it was loaded, and the last reload error.
    pub fn table_state(&self) -> TableState {
        self.table_state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn show_table(&self, config: &Config, loaded_at: SystemTime) {
        let count = |f: fn(&crate::config::Client) -> usize| -> usize {
            config.clients.values().map(f).sum()
        };
        let sizes = [
            ("clients", config.clients.len()),
            ("pods", config.pods.len()),
            ("domains", count(|c| c.domains.len())),
            ("addresses", count(|c| c.addresses.len())),
            ("phones", count(|c| c.phones.len())),
        ];
        for (kind, n) in sizes {
            self.table
                .get_or_create(&Kind { kind })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.config_loaded.set(unix_seconds(loaded_at));
    }

    // -------------------------------------------------------------- health

    /// `Ok` when the inbox is connected, the last wake-up is recent and
    /// the relay answered its last check; else the first reason why not.
    pub fn check_health(&self) -> Result<(), String> {
        let health = self.health();
        if let Some((side, Err(reason))) = health.oauth.iter().find(|(_, r)| r.is_err()) {
            return Err(format!("{side}: oauth2 token refresh failed: {reason}"));
        }
        if let Err(reason) = &health.inbox {
            return Err(format!("inbox not connected: {reason}"));
        }
        match health.last_wake {
            None => return Err("the inbox has not been polled yet".to_owned()),
            Some(at) if at.elapsed() > health.wake_limit => {
                return Err(format!(
                    "no poll or IDLE wake-up for {} s (limit {} s)",
                    at.elapsed().as_secs(),
                    health.wake_limit.as_secs()
                ));
            }
            Some(_) => {}
        }
        match &health.relay {
            None => Err("the relay has not been checked yet".to_owned()),
            Some(Err(reason)) => Err(format!("relay did not answer its last check: {reason}")),
            Some(Ok(())) => Ok(()),
        }
    }
}

/// Seconds since the Unix epoch, as a float.
fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Every `kind` of `podrouter_imap_errors_total`.
const IMAP_KINDS: [&str; 9] = [
    "oauth2", "connect", "timeout", "tls", "setup", "login", "folder", "protocol", "imap",
];

/// Every `kind` of `podrouter_smtp_errors_total`.
const SMTP_KINDS: [&str; 12] = [
    "oauth2",
    "connect",
    "unavailable",
    "timeout",
    "tls",
    "setup",
    "session",
    "address",
    "permanent",
    "transient",
    "connection",
    "refused",
];

/// The `kind` label of an IMAP failure.
fn imap_kind(error: &InboxError) -> &'static str {
    match error {
        InboxError::Connect { .. } => "connect",
        InboxError::Timeout { .. } => "timeout",
        InboxError::Tls(_) | InboxError::Handshake { .. } => "tls",
        InboxError::PlaintextNotLoopback { .. } | InboxError::NoStartTls { .. } => "setup",
        InboxError::Login { .. } => "login",
        InboxError::Folder { .. } => "folder",
        InboxError::Protocol(_) => "protocol",
        InboxError::Imap(_) => "imap",
        InboxError::OAuth(_) => "oauth2",
    }
}

/// The `kind` label of an SMTP failure.
fn smtp_kind(error: &RelayError) -> &'static str {
    match error {
        RelayError::Connect { .. } => "connect",
        RelayError::Down { .. } => "unavailable",
        RelayError::Timeout { .. } => "timeout",
        RelayError::Tls(_) | RelayError::Handshake { .. } => "tls",
        RelayError::PlaintextNotLoopback { .. } => "setup",
        RelayError::Session(_) => "session",
        RelayError::OAuth(_) => "oauth2",
        RelayError::Address { .. } => "address",
        RelayError::Smtp(_) if error.is_permanent() => "permanent",
        RelayError::Smtp(e) if e.status().is_some() => "transient",
        RelayError::Smtp(_) => "connection",
    }
}

/// Whether the relay answered, even if it said no: a reply to the
/// message's own transaction, or an address it never saw.
fn relay_reachable(error: &RelayError) -> bool {
    match error {
        RelayError::Smtp(e) => e.status().is_some(),
        RelayError::Address { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Arc<Config> {
        let text = r#"
[pods.east]
members = ["ana@vendor.example", "ben@vendor.example"]
[clients.acme]
pod = "east"
domains = ["acme.example", "acme.test"]
addresses = ["clerk@mail.example"]
"#;
        Arc::new(crate::config::from_str(text, std::path::Path::new("t.toml")).unwrap())
    }

    #[test]
    fn oauth_refresh_failures_show_in_metrics_and_health() {
        let m = Metrics::new(table());
        let at = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        m.oauth_refreshed("inbox", at);
        let text = m.encode();
        assert!(text.contains("podrouter_oauth_token_expiry_seconds{side=\"inbox\"} 2000000000"));
        assert!(text.contains("podrouter_oauth_refresh_failures_total{side=\"inbox\"} 0"));
        let e = OAuthError::Refused {
            url: "http://127.0.0.1:1/token".into(),
            reason: "invalid_grant".into(),
            revoked: true,
        };
        m.oauth_refresh_failed("inbox", &e);
        assert!(m
            .encode()
            .contains("podrouter_oauth_refresh_failures_total{side=\"inbox\"} 1"));
        let health = m.check_health().unwrap_err();
        assert!(health.contains("oauth2 token refresh failed"), "{health}");
        m.oauth_refreshed("inbox", at);
        assert!(!m.check_health().unwrap_err().contains("oauth2"));
    }

    #[test]
    fn counters_and_table_size_are_encoded_with_prometheus_names() {
        let m = Metrics::new(table());
        m.message_filed(Some("east"), "relay", Duration::from_millis(30));
        m.message_filed(Some("east"), "relay", Duration::from_millis(30));
        m.message_filed(None, "hold", Duration::from_millis(5));
        m.relayed(Duration::from_millis(12));
        m.retried();
        m.reload_failed("t.toml:1:1: broken");
        let text = m.encode();
        assert_eq!(text.matches("podrouter_imap_errors_total{").count(), 9);
        assert_eq!(text.matches("podrouter_smtp_errors_total{").count(), 12);
        for line in [
            "podrouter_messages_total{pod=\"east\",action=\"relay\"} 2",
            "podrouter_messages_total{pod=\"\",action=\"hold\"} 1",
            "podrouter_relay_duration_seconds_count 1",
            "podrouter_fetch_to_filed_duration_seconds_count 3",
            "podrouter_retries_total 1",
            "podrouter_config_reloads_total{result=\"failure\"} 1",
            "podrouter_table_entries{kind=\"domains\"} 2",
            "podrouter_table_entries{kind=\"addresses\"} 1",
            "podrouter_table_entries{kind=\"pods\"} 1",
            "# TYPE podrouter_relay_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(m.table_state().reload_error.is_some());
        m.reloaded(&table());
        assert!(m.table_state().reload_error.is_none());
    }

    #[test]
    fn health_names_the_first_thing_wrong() {
        let m = Metrics::new(table());
        assert!(m
            .check_health()
            .unwrap_err()
            .contains("inbox not connected"));
        m.inbox_connected(Duration::from_secs(60));
        assert!(m.check_health().unwrap_err().contains("relay"));
        m.relay_checked();
        assert_eq!(m.check_health(), Ok(()));
        m.inbox_connected(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        assert!(m.check_health().unwrap_err().contains("no poll"));
        m.inbox_connected(Duration::from_secs(60));
        m.smtp_error(&RelayError::Down {
            reason: "cannot connect to 127.0.0.1:1".into(),
        });
        let why = m.check_health().unwrap_err();
        assert!(why.contains("relay did not answer its last check"), "{why}");
        assert!(why.contains("127.0.0.1:1"), "{why}");
        assert!(m
            .encode()
            .contains("podrouter_smtp_errors_total{kind=\"unavailable\"} 1"));
        m.inbox_lost("journal cannot be written");
        assert!(m.check_health().unwrap_err().contains("journal"));
    }
}
