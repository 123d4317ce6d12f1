//! One batch of the daemon's loop: fetch, decide, consult the journal,
//! relay, record, file.
//!
//! [`Daemon::batch`] takes up to [`super::BATCH`] UIDs. Decisions and
//! journal sightings are recorded in one transaction; the relays run up
//! to `relay.connections` at once, one lane per sender so that a sender's
//! messages go out in UID order, with twice as many messages in flight as
//! connections so no connection waits for a journal write; each relay's
//! outcome is written to the
//! journal (on the blocking pool, so the fsync does not stall the other
//! relays) before anything moves; then the messages are moved, one MOVE
//! per destination folder, and one log line is written per message.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tracing::Instrument;

use super::threads::FollowUp;
use super::{Daemon, Trouble, CRASH_HOOK, TWIN_DELAY};
use crate::config::Config;
use crate::emit::{self, EmitOptions};
use crate::engine::{self, Action, Decision, Rule, ThreadLookup};
use crate::inbox::Inbox;
use crate::journal::{self, Journal, JournalError, RowId, Seen, Sighting, ThreadLink};
use crate::relay::{Delivery, Relay, RelayError};
use crate::storm;

impl Daemon {
    /// Fetches, decides, relays and files one batch.
    pub(super) async fn batch(
        &mut self,
        inbox: &mut Inbox,
        relay: &Relay,
        present: &[u32],
        due: &[u32],
    ) -> Result<(), Trouble> {
        self.record_unrecorded()?;
        let fetched_at = Instant::now();
        let messages = inbox.fetch(due).await?;
        for uid in due {
            if !messages.iter().any(|(u, _)| u == uid) {
                // Listed but not fetched: look again later rather than spin.
                self.retries.later(*uid, TWIN_DELAY);
            }
        }

        // Decide, consult the journal, and sort out what needs a relay.
        let fetched = messages.len();
        let fetch_ms = fetched_at.elapsed().as_millis() as u64;
        let config = Arc::clone(&self.config);
        let jobs = self.observe(inbox, &config, messages, present)?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut sends = Vec::new();
        for job in jobs {
            match self.plan(job, &config)? {
                Step::Done(outcome) => outcomes.push(outcome),
                Step::Send(send) => sends.push(*send),
            }
        }

        // Relay, up to `relay.connections` at once.
        let decide_ms = fetched_at.elapsed().as_millis() as u64 - fetch_ms;
        let relaying = sends.len();
        outcomes.extend(self.relay_all(sends, relay, &config).await?);
        let relay_ms = fetched_at.elapsed().as_millis() as u64 - fetch_ms - decide_ms;
        self.conclude(inbox, outcomes, fetched_at).await?;
        self.journal_failures = 0;
        tracing::debug!(
            fetched,
            relaying,
            fetch_ms,
            decide_ms,
            relay_ms,
            total_ms = fetched_at.elapsed().as_millis() as u64,
            "batch done"
        );
        Ok(())
    }

    /// Relays the batch's outgoing messages, `relay.connections` at once;
    /// after a shutdown request none starts.
    async fn relay_all(
        &self,
        sends: Vec<Outgoing>,
        relay: &Relay,
        config: &Config,
    ) -> Result<Vec<Outcome>, JournalError> {
        if sends.is_empty() || self.stopping() {
            let later = |s: Outgoing| Outcome::Later {
                uid: s.uid,
                delay: Duration::ZERO,
            };
            return Ok(sends.into_iter().map(later).collect());
        }
        // Twice as many messages in flight as connections, so a connection
        // never waits for a journal write; the relay caps the transactions.
        let width = 2 * config.relay.as_ref().map_or(1, |r| r.connections.max(1));
        let sent: Vec<Result<Vec<Outcome>, JournalError>> = futures::stream::iter(lanes(sends))
            .map(|lane| self.send_lane(lane, relay))
            .buffer_unordered(width)
            .collect()
            .await;
        let mut outcomes = Vec::new();
        for lane in sent {
            outcomes.extend(lane?);
        }
        Ok(outcomes)
    }

    /// Decides every fetched message (the engine, then the storm limit)
    /// and records them in the journal, in one transaction.
    fn observe(
        &self,
        inbox: &Inbox,
        config: &Config,
        messages: Vec<(u32, Vec<u8>)>,
        present: &[u32],
    ) -> Result<Vec<Job>, JournalError> {
        let threads = |ids: &[String]| match self.journal.find_thread(ids) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look the thread up; routing by the table");
                None
            }
        };
        let decided: Vec<(u32, Vec<u8>, Decision, String)> = messages
            .into_iter()
            .map(|(uid, raw)| {
                let hash = journal::content_hash(&raw);
                let decision = decide(config, &raw, &threads);
                // A technician answering a lot is not an auto-responder.
                let member = decision.rule.as_ref().is_some_and(Rule::is_member_mail);
                let decision = if member {
                    decision
                } else {
                    storm::apply(config, &self.journal, &hash, decision)
                };
                (uid, raw, decision, hash)
            })
            .collect();
        let sightings: Vec<Sighting<'_>> = decided
            .iter()
            .map(|(uid, _, decision, hash)| Sighting {
                mailbox: inbox.label(),
                uidvalidity: inbox.uidvalidity(),
                uid: *uid,
                content_hash: hash,
                decision,
            })
            .collect();
        let seen = self
            .journal
            .observe_all(&sightings, |u| present.binary_search(&u).is_ok())?;
        Ok(decided
            .into_iter()
            .zip(seen)
            .map(|((uid, raw, decision, _), seen)| Job {
                uid,
                raw,
                decision,
                seen,
            })
            .collect())
    }

    /// Works out what one message needs: filing only, a wait, or a relay.
    fn plan(&self, job: Job, config: &Config) -> Result<Step, JournalError> {
        let folders = Folders::of(config);
        let summary = Summary::of(&job.decision);
        let span = message_span(job.uid, &summary.message_id);
        let _entered = span.enter();
        let file = |id, folder: &str, action| {
            Step::Done(Outcome::File {
                uid: job.uid,
                id,
                folder: folder.to_owned(),
                summary: Summary {
                    action,
                    ..summary.clone()
                },
            })
        };

        let (id, accepted, interrupted) = match job.seen {
            Seen::Relayed { id, duplicate_of } => {
                tracing::info!(?duplicate_of, "already relayed; filing only");
                let action = if duplicate_of.is_some() {
                    "skip"
                } else {
                    "relay"
                };
                return Ok(file(Some(id), &folders.done, action));
            }
            Seen::Twin { of } => {
                tracing::debug!(twin = of, "an identical copy is being handled first");
                return Ok(Step::Done(Outcome::Later {
                    uid: job.uid,
                    delay: TWIN_DELAY,
                }));
            }
            Seen::Open {
                id,
                accepted,
                interrupted,
            } => (id, accepted, interrupted),
        };
        self.note_response(&job.decision)?;
        match job.decision.action {
            Action::Skip => return Ok(file(Some(id), &folders.done, "skip")),
            Action::Hold => return Ok(file(Some(id), &folders.hold, "hold")),
            Action::Relay => {}
        }
        if job.decision.recipients.is_empty() {
            tracing::error!("relay decided without recipients; holding it");
            return Ok(file(Some(id), &folders.hold, "hold"));
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
            return Ok(file(Some(id), &folders.done, "relay"));
        }
        if interrupted {
            tracing::warn!(
                "an earlier attempt was cut off while sending; relaying again, \
                 so the pod may get it twice"
            );
        }
        Ok(Step::Send(Box::new(Outgoing {
            uid: job.uid,
            id,
            bytes: relay_bytes(config, &job.raw, &job.decision),
            accepted,
            remaining,
            summary,
            folders,
            follow: FollowUp::plan(config, &job.decision),
        })))
    }

    /// Relays one sender's messages of the batch one after the other, in
    /// UID order. A deferred message does not stop the ones behind it.
    async fn send_lane(
        &self,
        lane: Vec<Outgoing>,
        relay: &Relay,
    ) -> Result<Vec<Outcome>, JournalError> {
        let mut outcomes = Vec::with_capacity(lane.len());
        for send in lane {
            let span = message_span(send.uid, &send.summary.message_id);
            outcomes.push(self.send(send, relay).instrument(span).await?);
        }
        Ok(outcomes)
    }

    /// Relays one message and records the outcome.
    async fn send(&self, send: Outgoing, relay: &Relay) -> Result<Outcome, JournalError> {
        if self.stopping() {
            return Ok(Outcome::Later {
                uid: send.uid,
                delay: Duration::ZERO,
            });
        }
        let id = send.id;
        self.journal.begin_attempts(&[id])?;
        let started = Instant::now();
        let mut send = send;
        let delivery = relay
            .deliver(&send.bytes, &send.remaining, |rcpt, reply| {
                self.journal.record_accepted(id, rcpt, reply)
            })
            .await?;
        match &delivery {
            Delivery::Accepted { .. } => self.metrics.relayed(started.elapsed()),
            Delivery::Refused { .. } => self.metrics.relay_refused(),
            Delivery::Deferred { error } => self.metrics.smtp_error(error),
        }
        let bytes = std::mem::take(&mut send.bytes);
        let follow = std::mem::take(&mut send.follow);
        let (outcome, relayed) = self.settle(send, delivery, follow.link.clone()).await?;
        if let Some(thread) = relayed {
            // Relayed and recorded: only now the copy for escalation and
            // the acknowledgement; neither can undo the relay.
            self.follow_up(follow, thread, bytes, relay).await;
        }
        Ok(outcome)
    }

    /// Records a delivery's outcome and says where the message goes; with
    /// `Some(thread)` when the message was relayed (the thread it is in,
    /// when it has one).
    async fn settle(
        &self,
        send: Outgoing,
        delivery: Delivery,
        link: Option<ThreadLink>,
    ) -> Result<(Outcome, Option<Option<i64>>), JournalError> {
        let Outgoing {
            uid,
            id,
            mut accepted,
            summary,
            folders,
            ..
        } = send;
        let file = |folder: String, action| Outcome::File {
            uid,
            id: Some(id),
            folder,
            summary: Summary {
                action,
                ..summary.clone()
            },
        };
        let (new, refused, reply) = match delivery {
            Delivery::Deferred { error } => {
                let reply = error.reply();
                self.write(move |j| j.record_deferred(id, &reply)).await?;
                let setup = error.is_setup_problem();
                return Ok((Outcome::Retry { uid, error, setup }, None));
            }
            Delivery::Refused { refused, reply } if accepted.is_empty() => {
                tracing::error!(%reply, "relay refused the message for every recipient; held");
                let (r, t) = (refused.clone(), reply.clone());
                self.write(move |j| j.record_refused(id, &r, &t)).await?;
                return Ok((file(folders.hold, "hold"), None));
            }
            Delivery::Refused { refused, reply } => (Vec::new(), refused, reply),
            Delivery::Accepted {
                accepted,
                refused,
                reply,
            } => (accepted, refused, reply),
        };
        accepted.extend(new);
        let done = Unrecorded {
            id,
            message_id: summary.message_id.clone(),
            accepted: accepted.clone(),
            refused: refused.clone(),
            reply,
            link,
        };
        let record = done.clone();
        let thread = match self.write(move |j| record.write(j)).await {
            Ok(thread) => thread,
            Err(e) => {
                self.lock_unrecorded().push(done);
                return Err(e);
            }
        };
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
        Ok((file(folders.done, "relay"), Some(thread)))
    }

    /// Writes the relays the journal missed, before anything else happens.
    fn record_unrecorded(&self) -> Result<(), JournalError> {
        let mut pending = self.lock_unrecorded();
        while let Some(done) = pending.last() {
            done.write(&self.journal)?;
            tracing::info!(message_id = %done.message_id, "recorded a relay the journal had missed");
            pending.pop();
        }
        Ok(())
    }

    fn lock_unrecorded(&self) -> std::sync::MutexGuard<'_, Vec<Unrecorded>> {
        self.unrecorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At exit: relays that were never recorded may be relayed again by
    /// the next start; a person should know which.
    pub(super) fn report_unrecorded(&self) {
        for done in self.lock_unrecorded().iter() {
            tracing::error!(
                message_id = %done.message_id,
                "relayed but not recorded in the journal; the next start may relay it again"
            );
        }
    }

    /// Runs a journal write on the blocking pool, so the fsync does not
    /// stall the relays in flight.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let journal = Arc::clone(&self.journal);
        tokio::task::spawn_blocking(move || f(&journal))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Files a batch's messages folder by folder, records where they went,
    /// and schedules the rest for later.
    async fn conclude(
        &mut self,
        inbox: &mut Inbox,
        outcomes: Vec<Outcome>,
        fetched_at: Instant,
    ) -> Result<(), Trouble> {
        let mut by_folder: HashMap<String, Vec<Outcome>> = HashMap::new();
        for outcome in outcomes {
            match outcome {
                Outcome::Later { uid, delay } => self.retries.later(uid, delay),
                Outcome::Retry { uid, error, setup } => {
                    self.metrics.retried();
                    self.retries.failed(uid, &error, setup);
                }
                file @ Outcome::File { .. } => by_folder
                    .entry(file.folder().to_owned())
                    .or_default()
                    .push(file),
            }
        }
        for (folder, files) in by_folder {
            self.file(inbox, &folder, files, fetched_at).await?;
        }
        self.metrics.retry_waiting(self.retries.waiting());
        Ok(())
    }

    /// Moves filed messages, records them, and logs one line each.
    async fn file(
        &mut self,
        inbox: &mut Inbox,
        folder: &str,
        mut files: Vec<Outcome>,
        fetched_at: Instant,
    ) -> Result<(), Trouble> {
        files.sort_by_key(Outcome::uid);
        let uids: Vec<u32> = files.iter().map(Outcome::uid).collect();
        inbox.file(&uids, folder).await?;
        let ids: Vec<RowId> = files.iter().filter_map(Outcome::row).collect();
        self.journal.record_filed(&ids, folder)?;
        let elapsed = fetched_at.elapsed();
        let ms = elapsed.as_millis() as u64;
        for file in &files {
            self.retries.forget(file.uid());
            if let Outcome::File { uid, summary, .. } = file {
                let pod = (summary.pod != "-").then_some(summary.pod.as_str());
                self.metrics.message_filed(pod, summary.action, elapsed);
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
}

/// Groups the sends by sender, each group in UID order, the groups in the
/// order of their first message, so one sender's mail goes out in order.
fn lanes(sends: Vec<Outgoing>) -> Vec<Vec<Outgoing>> {
    let mut lanes: Vec<Vec<Outgoing>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for send in sends {
        // "-" is no sender at all: such messages have no order to keep.
        let known = send.summary.sender != "-";
        match index.get(&send.summary.sender) {
            Some(&i) if known => lanes[i].push(send),
            _ => {
                index.insert(send.summary.sender.clone(), lanes.len());
                lanes.push(vec![send]);
            }
        }
    }
    lanes
}

/// The span every log line about one message carries.
fn message_span(uid: u32, message_id: &str) -> tracing::Span {
    tracing::info_span!("message", uid, message_id)
}

/// The engine's decision; a panic in it holds the message instead of
/// taking the daemon down in a crash loop.
fn decide(config: &Config, raw: &[u8], threads: &dyn ThreadLookup) -> Decision {
    let decided = AssertUnwindSafe(|| engine::decide_with(config, raw, threads));
    match std::panic::catch_unwind(decided) {
        Ok(decision) => decision,
        Err(_) => {
            tracing::error!("the routing engine failed on a message; holding it");
            Decision::held("the routing engine failed on this message")
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

/// A relay the relay server accepted but the journal could not record.
#[derive(Clone, Debug)]
pub(super) struct Unrecorded {
    id: RowId,
    message_id: String,
    accepted: Vec<String>,
    refused: Vec<(String, String)>,
    reply: String,
    /// Its place in a thread, written in the same transaction.
    link: Option<ThreadLink>,
}

impl Unrecorded {
    fn write(&self, journal: &Journal) -> Result<Option<i64>, JournalError> {
        journal.record_relayed_linked(
            self.id,
            &self.accepted,
            &self.refused,
            &self.reply,
            self.link.as_ref(),
        )
    }
}

/// One fetched message and what is known about it.
struct Job {
    uid: u32,
    raw: Vec<u8>,
    decision: Decision,
    seen: Seen,
}

/// What [`Daemon::plan`] found a message needs.
enum Step {
    /// Nothing to send: file it, or look again later.
    Done(Outcome),
    /// A relay.
    Send(Box<Outgoing>),
}

/// A message ready to relay.
struct Outgoing {
    uid: u32,
    /// Its journal row.
    id: RowId,
    /// The bytes for the pod.
    bytes: Vec<u8>,
    /// Recipients that accepted it in an earlier attempt.
    accepted: Vec<String>,
    /// Recipients still to send to.
    remaining: Vec<String>,
    summary: Summary,
    /// Where it goes afterwards, from the table it was decided with.
    folders: Folders,
    /// Its thread, the copy kept for escalation, the acknowledgement.
    follow: FollowUp,
}

/// `done_folder` and `hold_folder` of a table.
struct Folders {
    done: String,
    hold: String,
}

impl Folders {
    fn of(config: &Config) -> Folders {
        let inbox = config.inbox.as_ref().expect("run requires [inbox]");
        Folders {
            done: inbox.done_folder.clone(),
            hold: inbox.hold_folder.clone(),
        }
    }
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
