//! The loop of `podrouter run`: drain the inbox, relay, file, wait.
//!
//! [`run`] loads the table, opens the journal and connects to the inbox
//! and the relay. It then drains the backlog in batches of [`BATCH`]
//! messages and waits for more with IDLE (renewed every
//! [`IDLE_REFRESH`]), or polls when the server has no IDLE. For
//! [`HOT_WINDOW`] after new mail it checks with NOOP every [`HOT_POLL`]
//! instead, since Dovecot holds its IDLE push back half a second. For each
//! message: fetch, decide ([`crate::engine::decide`]), consult the journal,
//! relay, record the outcome, then move the message to `done_folder` or
//! `hold_folder`. The order is what makes a crash harmless; see
//! [`crate::journal`].
//!
//! A temporary relay failure leaves the message in the inbox and retries
//! it with a backoff of its own (5 s doubling to 10 min) while the
//! messages behind it go on. A message refused for good is held.
//!
//! Reload requests (SIGHUP in [`run_with_signals`]) re-read the table with
//! [`config::load`] at a batch boundary or while waiting; a table that
//! fails validation is logged and the old one keeps routing. Changed
//! `[inbox]` or `[relay]` settings reconnect. A new `daemon.state_dir`
//! takes effect at the next start only.
//!
//! On shutdown no new relay starts; the message in flight finishes within
//! [`SHUTDOWN_GRACE`], relayed mail is filed, and the daemon logs out.
//!
//! When the journal cannot be written (a full disk, say), intake stops:
//! the session ends, the error is logged, and the daemon tries again after
//! a pause (5 s doubling to 60 s). A relay the server accepted but the
//! journal could not record is kept in memory and written before anything
//! else once the journal works, so it is not relayed again.
//!
//! Threads whose pod has `respond_within` are looked at on a timer (a
//! quarter of the shortest `respond_within`, 1 s to 60 s) and after every
//! wake-up; the ones past due are sent again once (the `threads`
//! submodule, which also keeps first responses and sends
//! acknowledgements).
//!
//! The daemon keeps its [`Metrics`] up to date (messages filed, relay
//! times, errors, wake-ups, reloads); with `[http]` enabled it serves them
//! on `/metrics`, `/healthz` and `/status` ([`crate::http`]). The relay is
//! checked every [`RELAY_CHECK`] when no message went through it in that
//! time, so `/healthz` knows whether it answers while the inbox is quiet.
//!
//! Everything runs in one task: the relays of a batch are concurrent
//! futures, not spawned tasks; only the HTTP endpoint and the relay check
//! run beside it. The batch itself is in the `batch`
//! submodule, the retry schedule in `retry`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::config::{self, Config};
use crate::inbox::{Inbox, InboxError, Wake};
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::relay::{Relay, RelayError};

use retry::Retries;

mod batch;
mod retry;
mod threads;

/// Messages fetched and handled together (one FETCH, one journal
/// transaction, one MOVE per destination).
pub const BATCH: usize = 100;

/// IDLE is renewed this often (servers may drop an IDLE after 30 min).
pub const IDLE_REFRESH: Duration = Duration::from_secs(9 * 60);

/// After new mail the inbox is checked every [`HOT_POLL`] for this long,
/// instead of waiting for the IDLE push (Dovecot holds that back half a
/// second to gather changes).
pub const HOT_WINDOW: Duration = Duration::from_secs(10);

/// How often the inbox is checked while mail is arriving.
pub const HOT_POLL: Duration = Duration::from_millis(100);

/// How long the message in flight may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The relay is checked (a session opened and closed) when nothing was
/// heard from it for this long.
pub const RELAY_CHECK: Duration = Duration::from_secs(60);

/// How much later than the IDLE refresh or poll interval a wake-up may
/// come before `/healthz` calls the inbox stale.
pub const WAKE_MARGIN: Duration = Duration::from_secs(60);

/// A copy waiting for its twin is looked at again after this long.
const TWIN_DELAY: Duration = Duration::from_secs(5);

/// First pause after the journal could not be written.
const JOURNAL_RETRY_FIRST: Duration = Duration::from_secs(5);

/// Reconnect delays after the inbox connection is lost.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(60);

/// Test hook: abort the process right after a relay is recorded, before
/// the message is moved, to exercise the journal's crash guard.
const CRASH_HOOK: &str = "PODROUTER_TEST_CRASH_AFTER_RELAY";

/// Test hook: shifts the clock escalations are judged by (e.g. `"5h"`),
/// so a test sees a thread come due without waiting for it.
const CLOCK_HOOK: &str = "PODROUTER_TEST_CLOCK_OFFSET";

/// Runs the daemon until `shutdown` resolves or a fatal error occurs.
///
/// `config_path` is the routing table; `state_dir` overrides
/// `daemon.state_dir` (the journal's folder). Each message on `reload`
/// re-reads the table. Returns an error when the table or journal cannot
/// be opened, or when the first connection fails for a reason a retry
/// cannot fix (certificate, STARTTLS missing, login refused). Later
/// failures, a journal that cannot be written included, are logged and
/// retried; nothing is relayed while the journal cannot record it.
pub async fn run(
    config_path: PathBuf,
    state_dir: Option<PathBuf>,
    reload: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = load_for_run(&config_path)?;
    let state_dir = state_dir.unwrap_or_else(|| config.daemon.state_dir.clone());
    let journal = Journal::open(&state_dir)?;
    tracing::info!(
        config = %config_path.display(),
        journal = %journal.path().display(),
        "starting"
    );
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new(Arc::clone(&config)));
    crate::oauth::report_to(Arc::clone(&metrics));
    let http = crate::http::bind(&config.http)
        .await?
        .map(|listener| crate::http::spawn(listener, Arc::clone(&metrics), state_dir.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let refreshers = spawn_refreshers(&config);
    let mut daemon = Daemon {
        config_path,
        config,
        metrics,
        journal: Arc::new(journal),
        retries: Retries::default(),
        reload,
        stop: stop_rx,
        ready: false,
        crash_after_relay: std::env::var_os(CRASH_HOOK).is_some(),
        last_mail: None,
        newest_uid: None,
        journal_failures: 0,
        unrecorded: std::sync::Mutex::new(Vec::new()),
        clock_offset: clock_offset(),
        escalation_checked: None,
        refreshers,
    };
    let result = serve_until(&mut daemon, shutdown, stop_tx).await;
    daemon.report_unrecorded();
    for task in daemon.refreshers.drain(..) {
        task.abort();
    }
    if let Some(http) = http {
        http.abort();
    }
    result
}

/// Starts a task per OAuth2 side that refreshes its access token ahead of
/// expiry, so a failing refresh shows in the log, `/metrics` and `/healthz`
/// before a sign-in needs the token.
fn spawn_refreshers(config: &Config) -> Vec<tokio::task::JoinHandle<()>> {
    let sides = [
        ("inbox", config.inbox.as_ref().map(|i| &i.server.auth)),
        ("relay", config.relay.as_ref().map(|r| &r.server.auth)),
    ];
    let mut tasks = Vec::new();
    for (side, auth) in sides {
        let Some(crate::config::Auth::OAuth2(oauth2)) = auth else {
            continue;
        };
        match crate::oauth::source(oauth2) {
            Ok(source) => tasks.push(tokio::spawn(crate::oauth::keep_fresh(source, side))),
            Err(e) => tracing::error!(side, error = %e, "cannot set up the oauth2 client"),
        }
    }
    tasks
}

/// Serves until `shutdown`, then gives the work in flight its grace.
async fn serve_until(
    daemon: &mut Daemon,
    shutdown: impl Future<Output = ()>,
    stop_tx: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let serve = daemon.serve();
    tokio::pin!(serve, shutdown);
    tokio::select! {
        result = &mut serve => return result,
        () = &mut shutdown => {}
    }

    tracing::info!("shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    match tokio::time::timeout(SHUTDOWN_GRACE, serve).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("the message in flight did not finish in time; it stays in the inbox");
            Ok(())
        }
    }
}

/// [`run`] driven by the process's signals: SIGHUP reloads, SIGTERM and
/// SIGINT shut down. Also pings systemd's watchdog when the unit asks for
/// it ([`crate::watchdog`]).
pub async fn run_with_signals(
    config_path: PathBuf,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    crate::watchdog::spawn();
    let (reload_tx, reload_rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = reload_tx.try_send(());
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    run(config_path, state_dir, reload_rx, shutdown).await
}

/// Loads the table and checks it has what `run` needs.
fn load_for_run(path: &std::path::Path) -> anyhow::Result<Config> {
    let config = config::load(path).map_err(|e| {
        anyhow::anyhow!("{e}").context(format!("{} is not a valid routing table", path.display()))
    })?;
    if config.inbox.is_none() || config.relay.is_none() {
        anyhow::bail!("{}: `run` needs both [inbox] and [relay]", path.display());
    }
    for warning in &config.warnings {
        tracing::warn!(%warning, "config");
    }
    Ok(config)
}

/// What stops a session: the inbox (reconnect) or the journal (pause
/// until it can be written again).
#[derive(Debug, thiserror::Error)]
enum Trouble {
    #[error(transparent)]
    Inbox(#[from] InboxError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// How a session ended without trouble.
enum SessionEnd {
    /// Shutdown was requested.
    Stop,
    /// The settings changed; connect again with the new ones.
    Reconnect,
}

/// What arrived from outside while waiting.
enum Signal {
    Reload,
    Stop,
}

/// The daemon's state between sessions.
struct Daemon {
    /// Where the table is re-read from on reload.
    config_path: PathBuf,
    /// The table in force; swapped whole on reload, between batches.
    config: Arc<Config>,
    /// What `/metrics`, `/healthz` and `/status` show; shared with them.
    metrics: Arc<Metrics>,
    /// The audit trail and double-relay guard.
    journal: Arc<Journal>,
    /// Messages waiting for a retry, so they do not block the rest.
    retries: Retries,
    /// Reload requests.
    reload: mpsc::Receiver<()>,
    /// Becomes true when shutdown starts.
    stop: watch::Receiver<bool>,
    /// Whether systemd was told we are ready (only once).
    ready: bool,
    /// The test hook [`CRASH_HOOK`] is set.
    crash_after_relay: bool,
    /// When new mail was last seen, for [`HOT_WINDOW`].
    last_mail: Option<Instant>,
    /// The highest UID seen in this session: a higher one is new mail.
    newest_uid: Option<u32>,
    /// Journal failures in a row, for the pause before the next try.
    journal_failures: u32,
    /// Relays the journal could not record: written before anything else
    /// once it works again, so they are not relayed a second time.
    unrecorded: std::sync::Mutex<Vec<batch::Unrecorded>>,
    /// [`CLOCK_HOOK`]: how far the escalation clock runs ahead.
    clock_offset: Duration,
    /// When the waiting threads were last looked at.
    escalation_checked: Option<Instant>,
    /// The tasks keeping OAuth2 access tokens fresh, one per side that
    /// signs in with OAuth2; started again when a reload changes a side.
    refreshers: Vec<tokio::task::JoinHandle<()>>,
}

/// The escalation clock's shift from [`CLOCK_HOOK`]; zero without it.
fn clock_offset() -> Duration {
    let Ok(text) = std::env::var(CLOCK_HOOK) else {
        return Duration::ZERO;
    };
    match humantime::parse_duration(text.trim()) {
        Ok(d) => {
            tracing::warn!(offset = %text, "{CLOCK_HOOK} is set: escalations run on a shifted clock");
            d
        }
        Err(e) => {
            tracing::warn!(error = %e, "{CLOCK_HOOK} is not a duration; ignored");
            Duration::ZERO
        }
    }
}

impl Daemon {
    /// Connects, serves, reconnects, until shutdown or a fatal error.
    async fn serve(&mut self) -> anyhow::Result<()> {
        let mut delay = RECONNECT_FIRST;
        loop {
            if self.stopping() {
                return Ok(());
            }
            match self.connect().await {
                Ok((inbox, relay)) => {
                    delay = RECONNECT_FIRST;
                    let relay = Arc::new(relay);
                    let checks =
                        tokio::spawn(check_relay(Arc::clone(&relay), Arc::clone(&self.metrics)));
                    let end = self.session(inbox, &relay).await;
                    checks.abort();
                    match end {
                        Ok(SessionEnd::Stop) => return Ok(()),
                        Ok(SessionEnd::Reconnect) => {
                            self.metrics.inbox_lost("reconnecting with new settings");
                            continue;
                        }
                        Err(Trouble::Journal(e)) => {
                            self.metrics
                                .inbox_lost(format!("the journal cannot be written: {e}"));
                            if let Some(Signal::Stop) = self.journal_pause(&e).await {
                                return Ok(());
                            }
                            continue;
                        }
                        Err(Trouble::Inbox(e)) => {
                            self.metrics.imap_error(&e);
                            tracing::warn!(error = %e, "inbox connection lost; reconnecting");
                        }
                    }
                }
                Err(e) if !self.ready && e.is_permanent() => {
                    self.count_connect_error(&e);
                    return Err(anyhow::anyhow!(e).context("cannot start"));
                }
                Err(e) if e.is_permanent() => {
                    self.count_connect_error(&e);
                    tracing::error!(error = %e, retry_in_s = delay.as_secs(), "cannot connect");
                }
                Err(e) => {
                    self.count_connect_error(&e);
                    tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "cannot connect");
                }
            }
            if let Some(Signal::Stop) = self.pause(delay).await {
                return Ok(());
            }
            delay = (delay * 2).min(RECONNECT_MAX);
        }
    }

    /// Counts a failed connect in the metrics.
    fn count_connect_error(&self, e: &ConnectError) {
        match e {
            ConnectError::Inbox(e) => self.metrics.imap_error(e),
            ConnectError::Relay(e) => self.metrics.smtp_error(e),
        }
    }

    /// After a journal failure (a full disk, say): nothing is relayed
    /// until the journal can be written, so wait, longer each time.
    async fn journal_pause(&mut self, e: &JournalError) -> Option<Signal> {
        self.journal_failures += 1;
        let factor = 1u32 << self.journal_failures.saturating_sub(1).min(6);
        let wait = (JOURNAL_RETRY_FIRST * factor).min(RECONNECT_MAX);
        tracing::error!(
            error = %e,
            retry_in_s = wait.as_secs(),
            "journal write failed; nothing is relayed until it works again"
        );
        self.pause(wait).await
    }

    /// Sleeps, but wakes for a shutdown, and applies a reload on the way.
    async fn pause(&mut self, delay: Duration) -> Option<Signal> {
        let signal = tokio::select! {
            () = tokio::time::sleep(delay) => None,
            s = next_signal(&mut self.stop, &mut self.reload) => Some(s),
        };
        if let Some(Signal::Reload) = signal {
            self.reload_config();
        }
        signal
    }

    /// Whether new mail arrived within the last [`HOT_WINDOW`].
    fn hot(&self) -> bool {
        self.last_mail.is_some_and(|at| at.elapsed() < HOT_WINDOW)
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Opens the relay transport and the inbox with the current settings.
    async fn connect(&self) -> Result<(Inbox, Relay), ConnectError> {
        let (Some(inbox_cfg), Some(relay_cfg)) = (&self.config.inbox, &self.config.relay) else {
            unreachable!("load_for_run and reload_config require [inbox] and [relay]");
        };
        let relay = Relay::new(relay_cfg)?;
        let inbox = Inbox::connect(inbox_cfg).await?;
        let wake_limit = if inbox.has_idle() {
            IDLE_REFRESH
        } else {
            inbox_cfg.poll_interval
        };
        self.metrics.inbox_connected(wake_limit + WAKE_MARGIN);
        tracing::info!(
            inbox = inbox.label(),
            uidvalidity = inbox.uidvalidity(),
            idle = inbox.has_idle(),
            relay = %relay_cfg.server.host,
            "connected"
        );
        Ok((inbox, relay))
    }

    /// Serves one connection: drain, wait, repeat.
    async fn session(&mut self, mut inbox: Inbox, relay: &Relay) -> Result<SessionEnd, Trouble> {
        self.retries.reset_for(inbox.uidvalidity());
        self.newest_uid = None;
        if !self.ready {
            self.ready = true;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            tracing::info!("ready; draining the backlog");
        }
        let end = self.session_loop(&mut inbox, relay).await;
        if !matches!(end, Err(Trouble::Inbox(_))) {
            inbox.logout().await;
        }
        relay.shutdown().await;
        end
    }

    async fn session_loop(
        &mut self,
        inbox: &mut Inbox,
        relay: &Relay,
    ) -> Result<SessionEnd, Trouble> {
        loop {
            if let Some(end) = self.drain(inbox, relay).await? {
                return Ok(end);
            }
            if self.escalation_check_due() && !self.stopping() {
                self.escalate_due(relay).await?;
            }
            let mut max = self.retries.next_due().map_or(IDLE_REFRESH, |due| {
                due.saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(200), IDLE_REFRESH)
            });
            if let Some(tick) = self.escalation_tick() {
                max = max.min(tick);
            }
            let mut signal = None;
            let wake = if self.hot() {
                // Mail came a moment ago and more is likely: look again
                // soon with NOOP rather than wait for the IDLE push.
                let wake = tokio::select! {
                    () = tokio::time::sleep(max.min(HOT_POLL)) => Wake::Timeout,
                    s = next_signal(&mut self.stop, &mut self.reload) => {
                        signal = Some(s);
                        Wake::Interrupted
                    }
                };
                if signal.is_none() {
                    inbox.check().await?;
                }
                wake
            } else {
                inbox
                    .wait(max, async {
                        signal = Some(next_signal(&mut self.stop, &mut self.reload).await);
                    })
                    .await?
            };
            self.metrics.woke();
            tracing::debug!(?wake, "woke up");
            match signal {
                Some(Signal::Stop) => return Ok(SessionEnd::Stop),
                Some(Signal::Reload) if self.reload_config() => return Ok(SessionEnd::Reconnect),
                _ => {}
            }
            debug_assert!(wake != Wake::Interrupted || signal.is_some());
        }
    }

    /// Handles every message that is due, batch by batch. Returns when the
    /// inbox has nothing due, or early for a shutdown or reconnect.
    async fn drain(
        &mut self,
        inbox: &mut Inbox,
        relay: &Relay,
    ) -> Result<Option<SessionEnd>, Trouble> {
        loop {
            if self.stopping() {
                return Ok(Some(SessionEnd::Stop));
            }
            if self.reload.try_recv().is_ok() && self.reload_config() {
                return Ok(Some(SessionEnd::Reconnect));
            }
            let uids = inbox.uids().await?;
            self.metrics.woke();
            self.retries.keep_only(&uids);
            self.metrics.retry_waiting(self.retries.waiting());
            let now = Instant::now();
            let due: Vec<u32> = uids
                .iter()
                .copied()
                .filter(|uid| self.retries.is_due(*uid, now))
                .take(BATCH)
                .collect();
            if due.is_empty() {
                return Ok(None);
            }
            if uids.last().copied() > self.newest_uid {
                self.newest_uid = uids.last().copied();
                self.last_mail = Some(now);
            }
            self.batch(inbox, relay, &uids, &due).await?;
        }
    }

    /// Re-reads the table; returns whether the connections must be renewed.
    fn reload_config(&mut self) -> bool {
        let new = match config::load(&self.config_path) {
            Ok(new) => new,
            Err(e) => {
                for problem in &e.problems {
                    tracing::error!(%problem, "reload refused; the old table keeps routing");
                }
                self.metrics.reload_failed(e.to_string());
                return false;
            }
        };
        if new.inbox.is_none() || new.relay.is_none() {
            tracing::error!(
                "reload refused: [inbox] and [relay] are required; the old table keeps routing"
            );
            self.metrics.reload_failed(format!(
                "{}: [inbox] and [relay] are required",
                self.config_path.display()
            ));
            return false;
        }
        for warning in &new.warnings {
            tracing::warn!(%warning, "config");
        }
        if new.daemon.state_dir != self.config.daemon.state_dir {
            tracing::warn!("daemon.state_dir changed; it takes effect at the next start");
        }
        if new.http != self.config.http {
            tracing::warn!("[http] changed; it takes effect at the next start");
        }
        let reconnect = new.inbox != self.config.inbox || new.relay != self.config.relay;
        tracing::info!(
            pods = new.pods.len(),
            clients = new.clients.len(),
            reconnect,
            "reloaded the routing table"
        );
        self.config = Arc::new(new);
        self.metrics.reloaded(&self.config);
        if reconnect {
            for task in self.refreshers.drain(..) {
                task.abort();
            }
            self.refreshers = spawn_refreshers(&self.config);
        }
        reconnect
    }
}

/// Checks the relay whenever nothing was heard from it for
/// [`RELAY_CHECK`], at once for a new session; runs until aborted.
async fn check_relay(relay: Arc<Relay>, metrics: Arc<Metrics>) {
    let mut ticks = tokio::time::interval(RELAY_CHECK / 4);
    let mut first = true;
    loop {
        ticks.tick().await;
        if !first && metrics.relay_heard_within(RELAY_CHECK) {
            continue;
        }
        first = false;
        match relay.check().await {
            Ok(()) => metrics.relay_checked(),
            Err(e) => {
                tracing::debug!(error = %e, "relay check failed");
                metrics.smtp_error(&e);
            }
        }
    }
}

/// Waits for shutdown or a reload request. A closed reload channel just
/// never fires.
async fn next_signal(stop: &mut watch::Receiver<bool>, reload: &mut mpsc::Receiver<()>) -> Signal {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => Signal::Stop,
        Some(()) = reload.recv() => Signal::Reload,
    }
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    Inbox(#[from] InboxError),
    #[error(transparent)]
    Relay(#[from] RelayError),
}

impl ConnectError {
    fn is_permanent(&self) -> bool {
        match self {
            ConnectError::Inbox(e) => e.is_permanent(),
            ConnectError::Relay(e) => e.is_setup_problem(),
        }
    }
}
