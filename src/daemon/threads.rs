//! What follows a relay in a thread: the first response, the copy kept
//! for escalation, the acknowledgement, and the escalation itself.
//!
//! - A pod member's reply in a known thread records the thread's first
//!   response when it is the first ([`Daemon::note_response`]).
//! - A client's message that opens a thread in a pod with
//!   `respond_within` leaves the relayed bytes in
//!   `<state_dir>/threads/<thread>.eml`, removed at the first response or
//!   the escalation, so memory stays flat and the disk holds only threads
//!   still waiting.
//! - A pod with `ack = true` answers the client once the relay was
//!   accepted and recorded, at most once per address within
//!   `ack_interval`. The journal claims the acknowledgement before it is
//!   sent: a failed send is logged at warn and not retried.
//! - On a timer ([`Daemon::escalate_due`]) the waiting threads past their
//!   `respond_within` are sent again to the pod (and `escalate_to`), once.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use super::Daemon;
use crate::ack;
use crate::config::{Config, Pod, Respond};
use crate::emit;
use crate::engine::{Decision, Rule};
use crate::escalation;
use crate::journal::{JournalError, ThreadLink, Waiting};
use crate::relay::{Delivery, Relay};

/// The quickest the waiting threads are looked at.
const TICK_MIN: Duration = Duration::from_secs(1);

/// The slowest the waiting threads are looked at.
const TICK_MAX: Duration = Duration::from_secs(60);

/// What to do once a message was relayed and recorded.
#[derive(Clone, Debug, Default)]
pub(super) struct FollowUp {
    /// Its place in a thread.
    pub(super) link: Option<ThreadLink>,
    /// Keep the relayed bytes for a later escalation.
    keep_copy: bool,
    /// The acknowledgement to send, when the pod wants one.
    ack: Option<AckPlan>,
}

/// An acknowledgement ready to go.
#[derive(Clone, Debug)]
struct AckPlan {
    to: String,
    pod: String,
    interval: Duration,
    bytes: Vec<u8>,
    message_id: String,
}

impl FollowUp {
    /// Works out the follow-up of a relay from its decision.
    pub(super) fn plan(config: &Config, d: &Decision) -> FollowUp {
        let Some(pod) = d.pod.as_deref().and_then(|p| config.pod(p)) else {
            return FollowUp::default();
        };
        let from_client = d
            .rule
            .as_ref()
            .is_some_and(|r| !r.is_member_mail() && !matches!(r, Rule::Release(_)));
        let link = d.message_id.as_ref().map(|message_id| ThreadLink {
            thread: d.personal.thread.as_ref().map(|t| t.id),
            message_id: message_id.clone(),
            references: d.personal.references.clone(),
            pod: pod.key.clone(),
            client: d.client.clone(),
            sender: d.sender.clone(),
            subject: d.subject.clone(),
            from_client,
        });
        let opens = from_client && d.personal.thread.is_none() && link.is_some();
        FollowUp {
            link,
            keep_copy: opens && pod.respond.is_some(),
            ack: from_client.then(|| ack_plan(config, pod, d)).flatten(),
        }
    }
}

/// The acknowledgement for a client's message, when the pod wants one and
/// the message may have one.
fn ack_plan(config: &Config, pod: &Pod, d: &Decision) -> Option<AckPlan> {
    if !pod.ack {
        return None;
    }
    let to = match d.personal.ack_to.clone()? {
        Ok(to) => to,
        Err(why) => {
            tracing::info!(%why, "no acknowledgement");
            return None;
        }
    };
    let relay_from = &config.relay.as_ref()?.from;
    if to == *relay_from || !config.member_pods(&to).is_empty() {
        tracing::info!(%to, "no acknowledgement: the reply would go to us or to a pod member");
        return None;
    }
    let client = d
        .client
        .as_deref()
        .and_then(|c| config.clients.get(c))
        .map_or(to.as_str(), |c| c.name.as_str());
    let original = ack::Original {
        message_id: d.message_id.as_deref(),
        references: &d.personal.references,
        subject: d.subject.as_deref(),
        to: &to,
        client,
    };
    match ack::build(pod, relay_from, &original) {
        Ok((bytes, message_id)) => Some(AckPlan {
            to,
            pod: pod.key.clone(),
            interval: pod.ack_interval,
            bytes,
            message_id,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the acknowledgement");
            None
        }
    }
}

impl Daemon {
    /// Where a waiting thread's relayed bytes are kept.
    fn copy_path(&self, thread: i64) -> PathBuf {
        let dir = self.journal.path().parent().map(PathBuf::from);
        dir.unwrap_or_default()
            .join("threads")
            .join(format!("{thread}.eml"))
    }

    /// A pod member's reply in a known thread: the thread's first response
    /// when it has none yet.
    pub(super) fn note_response(&self, d: &Decision) -> Result<(), JournalError> {
        let (Some(Rule::Reply), Some(thread), Some(author)) =
            (&d.rule, &d.personal.thread, &d.sender)
        else {
            return Ok(());
        };
        let first = self
            .journal
            .record_response(thread.id, author, d.message_id.as_deref())?;
        if let Some(waited) = first {
            tracing::info!(
                thread = %thread.root,
                pod = %thread.pod,
                responder = %author,
                first_response_s = waited.as_secs(),
                "first response in the thread"
            );
            let _ = std::fs::remove_file(self.copy_path(thread.id));
        }
        Ok(())
    }

    /// After a relay was recorded: keep the copy, send the acknowledgement.
    /// Failures are logged; none touches the relayed message.
    pub(super) async fn follow_up(
        &self,
        follow: FollowUp,
        thread: Option<i64>,
        bytes: Vec<u8>,
        relay: &Relay,
    ) {
        if let (true, Some(thread)) = (follow.keep_copy, thread) {
            let path = self.copy_path(thread);
            let written = match path.parent() {
                Some(dir) => match tokio::fs::create_dir_all(dir).await {
                    Ok(()) => tokio::fs::write(&path, &bytes).await,
                    Err(e) => Err(e),
                },
                None => Ok(()),
            };
            if let Err(e) = written {
                tracing::warn!(
                    error = %e,
                    path = %path.display(),
                    "cannot keep a copy for escalation; an escalation will send a notice instead"
                );
            }
        }
        drop(bytes);
        if let Some(plan) = follow.ack {
            self.acknowledge(plan, thread, relay).await;
        }
    }

    /// Sends one acknowledgement unless the address had one within the
    /// interval.
    async fn acknowledge(&self, plan: AckPlan, thread: Option<i64>, relay: &Relay) {
        // On the blocking pool, like the relays' records: the claim's fsync
        // must not stall the relays in flight.
        let (to, pod, id) = (plan.to.clone(), plan.pod.clone(), plan.message_id.clone());
        let interval = plan.interval;
        let claimed = self
            .write(move |j| j.claim_ack(&to, interval, &pod, &id))
            .await;
        match claimed {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(to = %plan.to, "acknowledged within ack_interval already");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the acknowledgement; not sending it");
                return;
            }
        }
        let to = [plan.to.clone()];
        let sent = relay
            .deliver(&plan.bytes, &to, |_, _| Ok::<(), Infallible>(()))
            .await;
        match sent {
            Ok(Delivery::Accepted { reply, .. }) => {
                tracing::info!(to = %plan.to, pod = %plan.pod, %reply, "acknowledgement sent");
                if let Some(thread) = thread {
                    let ids = [plan.message_id];
                    if let Err(e) = self.write(move |j| j.link_ids(thread, &ids)).await {
                        tracing::warn!(error = %e, "cannot link the acknowledgement to its thread");
                    }
                }
            }
            Ok(Delivery::Refused { reply, .. }) => {
                tracing::warn!(to = %plan.to, %reply, "acknowledgement refused; not retried");
            }
            Ok(Delivery::Deferred { error }) => {
                tracing::warn!(to = %plan.to, error = %error, "acknowledgement failed; not retried");
            }
            Err(never) => match never {},
        }
    }

    /// How often the waiting threads are looked at: a quarter of the
    /// shortest `respond_within`, within 1 s to 60 s; `None` when no pod
    /// escalates.
    pub(super) fn escalation_tick(&self) -> Option<Duration> {
        let shortest = self
            .config
            .pods
            .values()
            .filter_map(|p| p.respond.as_ref())
            .map(|r| r.within / 4)
            .min()?;
        Some(shortest.clamp(TICK_MIN, TICK_MAX))
    }

    /// Whether the waiting threads are due a look.
    pub(super) fn escalation_check_due(&self) -> bool {
        match (self.escalation_tick(), self.escalation_checked) {
            (None, _) => false,
            (Some(_), None) => true,
            // New mail since the last look counts as a wake-up too.
            (Some(tick), Some(at)) => {
                at.elapsed() >= tick || self.last_mail.is_some_and(|m| m > at)
            }
        }
    }

    /// The daemon's clock for escalations (shifted by
    /// `PODROUTER_TEST_CLOCK_OFFSET` in tests).
    fn clock(&self) -> SystemTime {
        SystemTime::now() + self.clock_offset
    }

    /// Escalates every waiting thread that is due.
    pub(super) async fn escalate_due(&mut self, relay: &Relay) -> Result<(), JournalError> {
        self.escalation_checked = Some(Instant::now());
        let now = self.clock();
        let config = std::sync::Arc::clone(&self.config);
        for thread in self.journal.waiting_threads()? {
            let Some(pod) = config.pod(&thread.pod) else {
                continue;
            };
            let Some(respond) = &pod.respond else {
                continue;
            };
            if escalation::is_due(thread.opened_at, respond, now) {
                self.escalate(&config, &thread, pod, respond, relay).await?;
            }
        }
        Ok(())
    }

    /// Sends one waiting thread again to its pod and `escalate_to`.
    async fn escalate(
        &self,
        config: &Config,
        thread: &Waiting,
        pod: &Pod,
        respond: &Respond,
        relay: &Relay,
    ) -> Result<(), JournalError> {
        let label = escalation::label(respond.within);
        let relay_from = config.relay.as_ref().map_or("", |r| r.from.as_str());
        let domain = relay_from.rsplit_once('@').map_or("localhost", |(_, d)| d);
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let new_id = format!("podrouter.escalated.{}.{unix}@{domain}", thread.id);
        let path = self.copy_path(thread.id);
        let bytes = match tokio::fs::read(&path).await {
            Ok(copy) => emit::escalation_bytes(&copy, &label, &new_id),
            Err(_) => match notice(thread, pod, relay_from, &label, &new_id) {
                Some(bytes) => bytes,
                None => return Ok(()),
            },
        };
        let mut recipients: Vec<String> = pod.members.iter().map(|m| m.address.clone()).collect();
        if let Some(extra) = &respond.escalate_to {
            if !recipients.contains(extra) {
                recipients.push(extra.clone());
            }
        }

        // Marked first, so a crash cannot send it twice.
        self.journal.mark_escalated(thread.id, true)?;
        let sent = relay
            .deliver(&bytes, &recipients, |_, _| Ok::<(), Infallible>(()))
            .await;
        match sent {
            Ok(Delivery::Accepted { .. }) => {
                tracing::warn!(
                    thread = %thread.root,
                    pod = %pod.key,
                    sender = thread.sender.as_deref().unwrap_or("-"),
                    escalate_to = respond.escalate_to.as_deref().unwrap_or("-"),
                    "{label}: sent again to the pod"
                );
                self.journal.link_ids(thread.id, &[new_id])?;
                let _ = tokio::fs::remove_file(&path).await;
            }
            Ok(Delivery::Refused { reply, .. }) => {
                tracing::error!(thread = %thread.root, %reply, "escalation refused by the relay");
            }
            Ok(Delivery::Deferred { error }) => {
                tracing::warn!(thread = %thread.root, %error, "escalation deferred; trying again");
                self.journal.mark_escalated(thread.id, false)?;
            }
            Err(never) => match never {},
        }
        Ok(())
    }
}

/// A short notice standing in for an escalated copy that was not kept.
fn notice(
    thread: &Waiting,
    pod: &Pod,
    relay_from: &str,
    label: &str,
    new_id: &str,
) -> Option<Vec<u8>> {
    use lettre::message::header::{ContentType, HeaderName, HeaderValue};
    let from: lettre::message::Mailbox = relay_from.parse().ok()?;
    let subject = thread.subject.as_deref().unwrap_or("");
    let opened = humantime::format_rfc3339_seconds(thread.opened_at);
    let body = format!(
        "The message <{}> from {} (\"{subject}\") reached pod {} at {opened} \
         and has had no reply from the pod since.\n",
        thread.root,
        thread.sender.as_deref().unwrap_or("an unknown sender"),
        pod.name,
    );
    let raw = |name: &'static str, value: String| {
        HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
    };
    lettre::Message::builder()
        .from(from.clone())
        .to(from)
        .subject(format!("[{label}] {subject}"))
        .message_id(Some(format!("<{new_id}>")))
        .in_reply_to(format!("<{}>", thread.root))
        .references(format!("<{}>", thread.root))
        .raw_header(raw(emit::ESCALATED_HEADER, label.to_owned()))
        .raw_header(raw(emit::LOOP_HEADER, relay_from.to_owned()))
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .ok()
        .map(|m| m.formatted())
}
