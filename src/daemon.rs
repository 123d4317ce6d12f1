//! The loop of `podrouter run`: drain the inbox, relay, file, wait.
//!
//! [`run`] loads the table, opens the journal and connects to the inbox
//! and the relay. It then drains the backlog in batches of [`BATCH`]
//! messages and waits for more with IDLE (renewed every
//! [`IDLE_REFRESH`]), or polls when the server has no IDLE. For each
//! message: fetch, decide ([`engine::decide`]), consult the journal,
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
//! The journal is SQLite, called synchronously from the loop: its writes
//! are small, and every message passes through this one task anyway.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::config::{self, Config};
use crate::emit::{self, EmitOptions};
use crate::engine::{self, Action, Decision};
use crate::inbox::{Inbox, InboxError, Wake};
use crate::journal::{self, Journal, JournalError, RowId, Seen, Sighting};
use crate::relay::{Delivery, Relay, RelayError};

/// Messages fetched and handled together.
pub const BATCH: usize = 50;

/// IDLE is renewed this often (servers may drop an IDLE after 30 min).
pub const IDLE_REFRESH: Duration = Duration::from_secs(9 * 60);

/// How long the message in flight may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// First retry delay after a temporary relay failure.
const RETRY_FIRST: Duration = Duration::from_secs(5);

/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(600);

/// A copy waiting for its twin is looked at again after this long.
const TWIN_DELAY: Duration = Duration::from_secs(5);

/// Reconnect delays after the inbox connection is lost.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(60);

/// After this many failed attempts a retry is logged as an error.
const ATTEMPTS_BEFORE_ERROR: u32 = 10;

/// Test hook: abort the process right after a relay is recorded, before
/// the message is moved, to exercise the journal's crash guard.
const CRASH_HOOK: &str = "PODROUTER_TEST_CRASH_AFTER_RELAY";

/// Runs the daemon until `shutdown` resolves or a fatal error occurs.
///
/// `config_path` is the routing table; `state_dir` overrides
/// `daemon.state_dir` (the journal's folder). Each message on `reload`
/// re-reads the table. Returns an error when the table or journal cannot
/// be opened, when the first connection fails for a reason a retry cannot
/// fix (certificate, STARTTLS missing, login refused), or when the
/// journal cannot be written.
pub async fn run(
    config_path: PathBuf,
    state_dir: Option<PathBuf>,
    reload: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = load_for_run(&config_path)?;
    let state_dir = state_dir.unwrap_or_else(|| config.daemon.state_dir.clone());
    let journal = Journal::open(&state_dir)?;
    tracing::info!(config = %config_path.display(), journal = %journal.path().display(), "starting");

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut daemon = Daemon {
        config_path,
        config: Arc::new(config),
        journal,
        retries: Retries::default(),
        reload,
        stop: stop_rx,
        ready: false,
        crash_after_relay: std::env::var_os(CRASH_HOOK).is_some(),
    };
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
/// SIGINT shut down.
pub async fn run_with_signals(
    config_path: PathBuf,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
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

/// What stops a session: the inbox (reconnect) or the journal (fatal).
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
    /// The audit trail and double-relay guard.
    journal: Journal,
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
                    match self.session(inbox, &relay).await {
                        Ok(SessionEnd::Stop) => return Ok(()),
                        Ok(SessionEnd::Reconnect) => continue,
                        Err(Trouble::Journal(e)) => return Err(e.into()),
                        Err(Trouble::Inbox(e)) => {
                            tracing::warn!(error = %e, "inbox connection lost; reconnecting");
                        }
                    }
                }
                Err(e) if !self.ready && e.is_permanent() => {
                    return Err(anyhow::anyhow!(e).context("cannot start"));
                }
                Err(e) if e.is_permanent() => {
                    tracing::error!(error = %e, retry_in_s = delay.as_secs(), "cannot connect");
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "cannot connect");
                }
            }
            if let Some(Signal::Stop) = self.pause(delay).await {
                return Ok(());
            }
            delay = (delay * 2).min(RECONNECT_MAX);
        }
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
            let max = self.retries.next_due().map_or(IDLE_REFRESH, |due| {
                due.saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(200), IDLE_REFRESH)
            });
            let mut signal = None;
            let wake = inbox
                .wait(max, async {
                    signal = Some(next_signal(&mut self.stop, &mut self.reload).await);
                })
                .await?;
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
            self.retries.keep_only(&uids);
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
            self.batch(inbox, relay, &uids, &due).await?;
        }
    }

    /// Fetches, decides, relays and files one batch.
    async fn batch(
        &mut self,
        inbox: &mut Inbox,
        relay: &Relay,
        present: &[u32],
        due: &[u32],
    ) -> Result<(), Trouble> {
        let fetched_at = Instant::now();
        let messages = inbox.fetch(due).await?;
        for uid in due {
            if !messages.iter().any(|(u, _)| u == uid) {
                // Listed but not fetched: look again later rather than spin.
                self.retries.later(*uid, TWIN_DELAY);
            }
        }

        // Decide and consult the journal, in UID order.
        let config = Arc::clone(&self.config);
        let mut jobs = Vec::with_capacity(messages.len());
        for (uid, raw) in messages {
            let decision = decide(&config, &raw);
            let hash = journal::content_hash(&raw);
            let sighting = Sighting {
                mailbox: inbox.label(),
                uidvalidity: inbox.uidvalidity(),
                uid,
                content_hash: &hash,
                decision: &decision,
            };
            let seen = self
                .journal
                .observe(&sighting, |u| present.binary_search(&u).is_ok())?;
            jobs.push(Job {
                uid,
                raw,
                decision,
                seen,
            });
        }

        // Relay, up to `relay.connections` at once.
        let width = config.relay.as_ref().map_or(1, |r| r.connections.max(1));
        let this = &*self;
        let outcomes: Vec<Result<Outcome, JournalError>> = futures::stream::iter(jobs)
            .map(|job| {
                let span = tracing::info_span!(
                    "message",
                    uid = job.uid,
                    message_id = job.decision.message_id.as_deref().unwrap_or("-")
                );
                this.handle(job, relay, &config).instrument(span)
            })
            .buffer_unordered(width)
            .collect()
            .await;

        // File, then record where each message went.
        let mut filed: HashMap<String, Vec<Outcome>> = HashMap::new();
        for outcome in outcomes {
            match outcome? {
                Outcome::Later { uid, delay } => self.retries.later(uid, delay),
                Outcome::Retry { uid, error, setup } => self.retries.failed(uid, &error, setup),
                file @ Outcome::File { .. } => filed
                    .entry(file.folder().to_owned())
                    .or_default()
                    .push(file),
            }
        }
        for (folder, files) in filed {
            self.file(inbox, &folder, files, fetched_at).await?;
        }
        Ok(())
    }

    /// Moves filed messages, records them, and logs one line each.
    async fn file(
        &mut self,
        inbox: &mut Inbox,
        folder: &str,
        files: Vec<Outcome>,
        fetched_at: Instant,
    ) -> Result<(), Trouble> {
        let uids: Vec<u32> = files.iter().map(Outcome::uid).collect();
        inbox.file(&uids, folder).await?;
        let ids: Vec<RowId> = files.iter().filter_map(Outcome::row).collect();
        self.journal.record_filed(&ids, folder)?;
        let ms = fetched_at.elapsed().as_millis() as u64;
        for file in &files {
            self.retries.forget(file.uid());
            if let Outcome::File { uid, summary, .. } = file {
                tracing::info!(
                    uid,
                    message_id = %summary.message_id,
                    sender = %summary.sender,
                    client = %summary.client,
                    pod = %summary.pod,
                    action = summary.action,
                    folder,
                    ms,
                    "message filed"
                );
            }
        }
        Ok(())
    }

    /// Decides what one message needs and does it, short of filing.
    async fn handle(
        &self,
        job: Job,
        relay: &Relay,
        config: &Config,
    ) -> Result<Outcome, JournalError> {
        let inbox_cfg = config.inbox.as_ref().expect("run requires [inbox]");
        let done = inbox_cfg.done_folder.as_str();
        let hold = inbox_cfg.hold_folder.as_str();
        let summary = Summary::of(&job.decision);
        let file = |id, folder: &str, action| Outcome::File {
            uid: job.uid,
            id,
            folder: folder.to_owned(),
            summary: Summary {
                action,
                ..summary.clone()
            },
        };

        let (id, accepted, interrupted) = match job.seen {
            Seen::Relayed { id, duplicate_of } => {
                tracing::info!(?duplicate_of, "already relayed; filing only");
                return Ok(file(Some(id), done, "skip"));
            }
            Seen::Twin { of } => {
                tracing::debug!(twin = of, "an identical copy is being handled first");
                return Ok(Outcome::Later {
                    uid: job.uid,
                    delay: TWIN_DELAY,
                });
            }
            Seen::Open {
                id,
                accepted,
                interrupted,
            } => (id, accepted, interrupted),
        };
        match job.decision.action {
            Action::Skip => return Ok(file(Some(id), done, "skip")),
            Action::Hold => return Ok(file(Some(id), hold, "hold")),
            Action::Relay => {}
        }
        if self.stopping() {
            return Ok(Outcome::Later {
                uid: job.uid,
                delay: Duration::ZERO,
            });
        }
        if interrupted {
            tracing::warn!("an earlier attempt was cut off while sending; relaying again, so the pod may get it twice");
        }

        if job.decision.recipients.is_empty() {
            tracing::error!("relay decided without recipients; holding it");
            return Ok(file(Some(id), hold, "hold"));
        }
        let remaining: Vec<String> = job
            .decision
            .recipients
            .iter()
            .filter(|r| !accepted.contains(r))
            .cloned()
            .collect();
        if remaining.is_empty() {
            // Every recipient accepted it before a crash cut the record short.
            self.journal.record_relayed(id, &accepted, &[], "")?;
            return Ok(file(Some(id), done, "relay"));
        }
        let bytes = relay_bytes(config, &job.raw, &job.decision);
        self.journal.begin_attempt(id)?;
        let delivery = relay
            .deliver(&bytes, &remaining, |rcpt, reply| {
                self.journal.record_accepted(id, rcpt, reply)
            })
            .await?;
        self.settle(
            id,
            job.uid,
            accepted,
            delivery,
            file(Some(id), done, "relay"),
            file(Some(id), hold, "hold"),
        )
    }

    /// Records a delivery's outcome and says where the message goes.
    fn settle(
        &self,
        id: RowId,
        uid: u32,
        mut accepted: Vec<String>,
        delivery: Delivery,
        to_done: Outcome,
        to_hold: Outcome,
    ) -> Result<Outcome, JournalError> {
        let (new, refused, reply) = match delivery {
            Delivery::Deferred { error } => {
                self.journal.record_deferred(id, &error.reply())?;
                let setup = error.is_setup_problem();
                return Ok(Outcome::Retry { uid, error, setup });
            }
            Delivery::Refused { refused, reply } if accepted.is_empty() => {
                tracing::error!(%reply, "relay refused the message for every recipient; holding it");
                self.journal.record_refused(id, &refused, &reply)?;
                return Ok(to_hold);
            }
            Delivery::Refused { refused, reply } => (Vec::new(), refused, reply),
            Delivery::Accepted {
                accepted,
                refused,
                reply,
            } => (accepted, refused, reply),
        };
        accepted.extend(new);
        self.journal
            .record_relayed(id, &accepted, &refused, &reply)?;
        if self.crash_after_relay {
            tracing::warn!("{CRASH_HOOK} is set: aborting after the relay, before the move");
            std::process::abort();
        }
        if !refused.is_empty() {
            let refused: Vec<&str> = refused.iter().map(|(r, _)| r.as_str()).collect();
            tracing::warn!(
                ?refused,
                accepted = accepted.len(),
                "relay refused some recipients; the others have it"
            );
        }
        Ok(to_done)
    }

    /// Re-reads the table; returns whether the connections must be renewed.
    fn reload_config(&mut self) -> bool {
        let new = match config::load(&self.config_path) {
            Ok(new) => new,
            Err(e) => {
                for problem in &e.problems {
                    tracing::error!(%problem, "reload refused; the old table keeps routing");
                }
                return false;
            }
        };
        if new.inbox.is_none() || new.relay.is_none() {
            tracing::error!(
                "reload refused: [inbox] and [relay] are required; the old table keeps routing"
            );
            return false;
        }
        for warning in &new.warnings {
            tracing::warn!(%warning, "config");
        }
        if new.daemon.state_dir != self.config.daemon.state_dir {
            tracing::warn!("daemon.state_dir changed; it takes effect at the next start");
        }
        let reconnect = new.inbox != self.config.inbox || new.relay != self.config.relay;
        tracing::info!(
            pods = new.pods.len(),
            clients = new.clients.len(),
            reconnect,
            "reloaded the routing table"
        );
        self.config = Arc::new(new);
        reconnect
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

/// The engine's decision; a panic in it holds the message instead of
/// taking the daemon down in a crash loop.
fn decide(config: &Config, raw: &[u8]) -> Decision {
    match std::panic::catch_unwind(AssertUnwindSafe(|| engine::decide(config, raw))) {
        Ok(decision) => decision,
        Err(_) => {
            tracing::error!("the routing engine failed on a message; holding it");
            Decision {
                action: Action::Hold,
                sender: None,
                sender_name: None,
                client: None,
                pod: None,
                rule: None,
                reason: "the routing engine failed on this message".to_owned(),
                recipients: Vec::new(),
                message_id: None,
                subject: None,
            }
        }
    }
}

/// The bytes sent to the pod.
fn relay_bytes(config: &Config, raw: &[u8], decision: &Decision) -> Vec<u8> {
    let relay = config.relay.as_ref().expect("run requires [relay]");
    let pod_name = decision
        .pod
        .as_deref()
        .and_then(|key| config.pod(key))
        .map_or("", |pod| pod.name.as_str());
    let opts = EmitOptions {
        from_mode: relay.from_mode,
        relay_from: &relay.from,
        pod_name,
    };
    emit::relay_bytes(raw, decision, &opts)
}

/// One fetched message and what is known about it.
struct Job {
    uid: u32,
    raw: Vec<u8>,
    decision: Decision,
    seen: Seen,
}

/// The fields of the per-message log line.
#[derive(Clone)]
struct Summary {
    message_id: String,
    sender: String,
    client: String,
    pod: String,
    action: &'static str,
}

impl Summary {
    fn of(d: &Decision) -> Summary {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        Summary {
            message_id: show(&d.message_id),
            sender: show(&d.sender),
            client: show(&d.client),
            pod: show(&d.pod),
            action: d.action.as_str(),
        }
    }
}

/// What became of one message in a batch.
enum Outcome {
    /// Move it to `folder`, then record that (row `id`).
    File {
        uid: u32,
        id: Option<RowId>,
        folder: String,
        summary: Summary,
    },
    /// A temporary relay failure: back off and retry.
    Retry {
        uid: u32,
        error: RelayError,
        setup: bool,
    },
    /// Not now (a twin in flight, or shutdown): look again after `delay`.
    Later { uid: u32, delay: Duration },
}

impl Outcome {
    fn uid(&self) -> u32 {
        match self {
            Outcome::File { uid, .. } | Outcome::Retry { uid, .. } | Outcome::Later { uid, .. } => {
                *uid
            }
        }
    }

    fn row(&self) -> Option<RowId> {
        match self {
            Outcome::File { id, .. } => *id,
            _ => None,
        }
    }

    fn folder(&self) -> &str {
        match self {
            Outcome::File { folder, .. } => folder,
            _ => "",
        }
    }
}

/// Per-message retry schedule, for the UIDs of one UIDVALIDITY.
#[derive(Debug, Default)]
struct Retries {
    /// The UIDVALIDITY the UIDs belong to.
    uidvalidity: u32,
    /// UID → (failed attempts, when it is due again).
    due: HashMap<u32, (u32, Instant)>,
}

impl Retries {
    /// Forgets the schedule when the folder's UIDs changed meaning.
    fn reset_for(&mut self, uidvalidity: u32) {
        if self.uidvalidity != uidvalidity {
            self.uidvalidity = uidvalidity;
            self.due.clear();
        }
    }

    fn is_due(&self, uid: u32, now: Instant) -> bool {
        self.due.get(&uid).is_none_or(|(_, at)| *at <= now)
    }

    fn next_due(&self) -> Option<Instant> {
        self.due.values().map(|(_, at)| *at).min()
    }

    /// Drops UIDs no longer in the inbox.
    fn keep_only(&mut self, present: &[u32]) {
        self.due.retain(|uid, _| present.binary_search(uid).is_ok());
    }

    fn forget(&mut self, uid: u32) {
        self.due.remove(&uid);
    }

    /// Looks at `uid` again after `delay`, without counting a failure.
    fn later(&mut self, uid: u32, delay: Duration) {
        let attempts = self.due.get(&uid).map_or(0, |(n, _)| *n);
        self.due.insert(uid, (attempts, Instant::now() + delay));
    }

    /// Counts a failed attempt and schedules the next with backoff.
    fn failed(&mut self, uid: u32, error: &RelayError, setup: bool) {
        let attempts = self.due.get(&uid).map_or(0, |(n, _)| *n) + 1;
        let delay = backoff(attempts);
        self.due.insert(uid, (attempts, Instant::now() + delay));
        let retry_in_s = delay.as_secs();
        let reply = error.reply();
        if setup || attempts >= ATTEMPTS_BEFORE_ERROR {
            tracing::error!(uid, attempts, retry_in_s, %reply, "relay failed; message stays in the inbox");
        } else {
            tracing::warn!(uid, attempts, retry_in_s, %reply, "relay failed for now; will retry");
        }
    }
}

/// The delay before attempt `attempts + 1`: 5 s doubling, at most 10 min.
fn backoff(attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    (RETRY_FIRST * factor).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        let secs: Vec<u64> = (1..=10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(backoff(1000), RETRY_MAX);
    }

    #[test]
    fn retries_skip_messages_until_due_and_forget_vanished_ones() {
        let mut r = Retries::default();
        r.reset_for(7);
        let now = Instant::now();
        r.later(3, Duration::from_secs(60));
        assert!(!r.is_due(3, now));
        assert!(r.is_due(4, now));
        assert!(r.next_due().is_some());
        r.keep_only(&[4, 5]);
        assert!(r.is_due(3, now));
        r.later(4, Duration::from_secs(60));
        r.reset_for(8);
        assert!(r.is_due(4, now));
    }
}
