//! `podrouter held` and `podrouter release`: the hold folder, read and
//! emptied by a person.
//!
//! The journal knows a held message by the UID it had in the watched
//! folder; the move to `hold_folder` gives it a new UID there, which the
//! journal does not learn. So [`list_held`] reads the hold folder itself
//! and finds each message's journal row by its content (SHA-256 of the raw
//! bytes, which a move keeps; else Message-ID and sender). [`Reader::held`]
//! is the offline view: what the journal last filed in `hold_folder`.
//!
//! [`release`] relays one held message to a pod a person chose, through
//! the journal's own steps, like the daemon: `observe` (as a copy in the
//! hold folder, so a message already relayed is never relayed again),
//! `begin_attempts`, the relay with each acceptance recorded, the outcome,
//! then `UID MOVE` to `done_folder` and `record_filed`. The message moves
//! only after the relay accepted it; after a temporary failure or a
//! refusal it stays in the hold folder. Should the move fail after the
//! relay, running the same `release` again only moves it.

use std::io::Write;
use std::path::Path;

use crate::config::{Config, InboxConfig};
use crate::emit::{self, EmitOptions};
use crate::engine::{self, Action, Decision, Rule};
use crate::inbox::{Inbox, InboxError};
use crate::journal::{self, Journal, JournalError, RowId, Seen, Sighting};
use crate::relay::{Delivery, Relay, RelayError};

use super::{
    clip, keep_owner, or_dash, printable, show_time, write_columns, Entry, OpsError, Reader,
};

/// Messages fetched from the hold folder at once.
const BATCH: usize = 50;

/// How wide the subject and reason columns may grow.
const SUBJECT_WIDTH: usize = 50;
const REASON_WIDTH: usize = 70;

/// Why `held` or `release` failed.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// The table lacks what the command needs.
    #[error("{0}")]
    Setup(String),
    /// The hold folder has no such UID.
    #[error("there is no message with UID {uid} in {folder}; `podrouter held` lists them")]
    NotFound {
        /// The UID asked for.
        uid: u32,
        /// The hold folder.
        folder: String,
    },
    /// An identical copy in the hold folder is being released right now.
    #[error("an identical copy (journal entry #{of}) is being released; try again shortly")]
    Twin {
        /// That copy's row.
        of: RowId,
    },
    /// The relay failed for now; the message stays in the hold folder.
    #[error("the relay failed for now ({reply}); the message stays in {folder}; try again later")]
    Deferred {
        /// What went wrong.
        reply: String,
        /// The hold folder.
        folder: String,
    },
    /// The relay refused the message; it stays in the hold folder.
    #[error("the relay refused the message ({reply}); it stays in {folder}")]
    Refused {
        /// The relay's reply.
        reply: String,
        /// The hold folder.
        folder: String,
    },
    /// The inbox could not be read or written.
    #[error(transparent)]
    Inbox(#[from] InboxError),
    /// The relay could not be set up.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// The journal could not be written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The journal could not be read.
    #[error(transparent)]
    Ops(#[from] OpsError),
}

/// One message in the hold folder, with what the journal says of it.
#[derive(Clone, Debug)]
pub struct Held {
    /// Its UID in the hold folder.
    pub uid: u32,
    /// The sender, as the engine reads it now.
    pub sender: Option<String>,
    /// The subject.
    pub subject: Option<String>,
    /// The journal's newest row for it, when it has one.
    pub entry: Option<Entry>,
}

/// What was read of a held message before the journal is asked.
struct Peek {
    uid: u32,
    hash: String,
    decision: Decision,
}

/// `[inbox]` with `hold_folder` as the folder to select.
fn hold_view(config: &Config) -> Result<InboxConfig, HoldError> {
    let inbox = config.inbox.as_ref().ok_or_else(|| {
        HoldError::Setup(format!(
            "{} has no [inbox]: the hold folder is in the inbox",
            config.path.display()
        ))
    })?;
    Ok(InboxConfig {
        folder: inbox.hold_folder.clone(),
        ..inbox.clone()
    })
}

/// Lists the hold folder, newest first (highest UID), each message with
/// its journal row; `reader` is `None` when there is no journal yet.
pub async fn list_held(config: &Config, reader: Option<&Reader>) -> Result<Vec<Held>, HoldError> {
    let mut inbox = Inbox::connect(&hold_view(config)?).await?;
    let read = read_folder(&mut inbox, config).await;
    inbox.logout().await;
    let mut held = Vec::new();
    for s in read? {
        let d = &s.decision;
        let entry = match reader {
            Some(r) => r.latest_copy(&s.hash, d.message_id.as_deref(), d.sender.as_deref())?,
            None => None,
        };
        held.push(Held {
            uid: s.uid,
            sender: d.sender.clone(),
            subject: d.subject.clone(),
            entry,
        });
    }
    held.sort_by_key(|h| std::cmp::Reverse(h.uid));
    Ok(held)
}

/// Fetches the selected folder in batches, keeping only hash and decision.
async fn read_folder(inbox: &mut Inbox, config: &Config) -> Result<Vec<Peek>, HoldError> {
    let uids = inbox.uids().await?;
    let mut out = Vec::with_capacity(uids.len());
    for chunk in uids.chunks(BATCH) {
        for (uid, raw) in inbox.fetch(chunk).await? {
            out.push(Peek {
                uid,
                hash: journal::content_hash(&raw),
                decision: engine::decide(config, &raw),
            });
        }
    }
    Ok(out)
}

/// Writes the hold folder's messages as a table.
pub fn write_held(out: &mut impl Write, held: &[Held]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = held
        .iter()
        .map(|h| {
            let e = h.entry.as_ref();
            vec![
                h.uid.to_string(),
                e.map_or("-".to_owned(), |e| show_time(&e.first_seen)),
                or_dash(h.sender.as_deref()),
                clip(&or_dash(h.subject.as_deref()), SUBJECT_WIDTH),
                clip(&held_reason(e), REASON_WIDTH),
            ]
        })
        .collect();
    write_columns(
        out,
        &["UID", "TIME (UTC)", "SENDER", "SUBJECT", "REASON"],
        &rows,
    )
}

/// Why a message sits in the hold folder, from its newest journal row.
fn held_reason(entry: Option<&Entry>) -> String {
    match entry {
        None => "not in the journal (filed here by hand?)".to_owned(),
        Some(e) if e.relayed_at.is_some() => format!(
            "relayed already as entry #{} ({}); release only moves it",
            e.duplicate_of.unwrap_or(e.id),
            printable(&e.reason)
        ),
        Some(e) => printable(&e.reason),
    }
}

impl Reader {
    /// What the journal last filed in `hold_folder` (and has not seen
    /// again since, e.g. released), newest first.
    pub fn held(&self, hold_folder: &str, limit: usize) -> Result<Vec<Entry>, OpsError> {
        self.entries(
            "folder = ?1 AND NOT EXISTS (SELECT 1 FROM messages later \
             WHERE later.content_hash = messages.content_hash AND later.id > messages.id)",
            "first_seen DESC, id DESC",
            limit,
            &[&hold_folder],
        )
    }
}

/// Writes the offline view: journal entries instead of UIDs.
pub fn write_held_offline(out: &mut impl Write, entries: &[Entry]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                format!("#{}", e.id),
                show_time(&e.first_seen),
                or_dash(e.sender.as_deref()),
                clip(&or_dash(e.subject.as_deref()), SUBJECT_WIDTH),
                clip(&printable(&e.reason), REASON_WIDTH),
            ]
        })
        .collect();
    write_columns(
        out,
        &["ENTRY", "TIME (UTC)", "SENDER", "SUBJECT", "REASON"],
        &rows,
    )
}

/// What `release` is asked to do.
#[derive(Clone, Copy, Debug)]
pub struct ReleaseRequest<'a> {
    /// The validated table (needs `[inbox]`, `[relay]` and the pod).
    pub config: &'a Config,
    /// Where the journal lives.
    pub state_dir: &'a Path,
    /// The message's UID in the hold folder.
    pub uid: u32,
    /// The pod's key.
    pub pod: &'a str,
    /// Who releases it, for the journal and the trace header.
    pub by: &'a str,
}

/// What `release` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Released {
    /// Relayed to the pod and moved to `done_folder`.
    Relayed {
        /// The journal row of the release.
        id: RowId,
        /// Recipients that have it.
        accepted: Vec<String>,
        /// Recipients refused for good, with the reply.
        refused: Vec<(String, String)>,
        /// The relay's last reply.
        reply: String,
        /// `done_folder`.
        folder: String,
    },
    /// It had been relayed already (an earlier release whose move failed,
    /// or a copy of relayed mail): only moved to `done_folder`.
    AlreadyRelayed {
        /// The journal row of this copy.
        id: RowId,
        /// The row that was relayed, when it is another copy.
        duplicate_of: Option<RowId>,
        /// `done_folder`.
        folder: String,
    },
}

/// The decision a person makes: relay to `pod`, whatever the table said.
pub fn released_decision(config: &Config, raw: &[u8], pod: &str, by: &str) -> Decision {
    let table = engine::decide(config, raw);
    let recipients = config
        .pod(pod)
        .map(|p| p.members.iter().map(|m| m.address.clone()).collect())
        .unwrap_or_default();
    Decision {
        action: Action::Relay,
        pod: Some(pod.to_owned()),
        rule: Some(Rule::Release(by.to_owned())),
        reason: format!("released by {by} to pod {pod}"),
        recipients,
        ..table
    }
}

/// Relays one held message to a pod and moves it to `done_folder`.
pub async fn release(req: &ReleaseRequest<'_>) -> Result<Released, HoldError> {
    let config = req.config;
    let view = hold_view(config)?;
    let relay_cfg = config
        .relay
        .as_ref()
        .ok_or_else(|| HoldError::Setup(format!("{} has no [relay]", config.path.display())))?;
    check_pod(config, req.pod)?;
    if !req.state_dir.is_dir() {
        return Err(HoldError::Setup(format!(
            "state folder {} does not exist; is this where the daemon keeps its journal?",
            req.state_dir.display()
        )));
    }
    let journal = Journal::open(req.state_dir)?;
    keep_owner(req.state_dir);
    let relay = Relay::new(relay_cfg)?;
    let mut inbox = Inbox::connect(&view).await?;

    let result = release_in(req, &journal, &relay, &mut inbox).await;
    inbox.logout().await;
    relay.shutdown().await;
    drop(journal);
    keep_owner(req.state_dir);
    result
}

/// The pod must be in the table and have members.
fn check_pod(config: &Config, key: &str) -> Result<(), HoldError> {
    match config.pod(key) {
        Some(p) if !p.members.is_empty() => Ok(()),
        Some(_) => Err(HoldError::Setup(format!("pod {key:?} has no members"))),
        None => {
            let known: Vec<&str> = config.pods.keys().map(String::as_str).collect();
            Err(HoldError::Setup(format!(
                "there is no pod {key:?} in {}; pods: {}",
                config.path.display(),
                known.join(", ")
            )))
        }
    }
}

/// [`release`] once everything is open.
async fn release_in(
    req: &ReleaseRequest<'_>,
    journal: &Journal,
    relay: &Relay,
    inbox: &mut Inbox,
) -> Result<Released, HoldError> {
    let inbox_cfg = inbox.config().clone();
    let (hold, done) = (inbox_cfg.folder, inbox_cfg.done_folder);
    let present = inbox.uids().await?;
    let fetched = if present.contains(&req.uid) {
        inbox.fetch(&[req.uid]).await?
    } else {
        Vec::new()
    };
    let Some((uid, raw)) = fetched.into_iter().next() else {
        return Err(HoldError::NotFound {
            uid: req.uid,
            folder: hold,
        });
    };

    // Record the person's decision, as the daemon records the table's.
    let decision = released_decision(req.config, &raw, req.pod, req.by);
    let hash = journal::content_hash(&raw);
    let sighting = Sighting {
        mailbox: inbox.label(),
        uidvalidity: inbox.uidvalidity(),
        uid,
        content_hash: &hash,
        decision: &decision,
    };
    let seen = journal.observe(&sighting, |u| present.binary_search(&u).is_ok())?;
    let (id, mut accepted, interrupted) = match seen {
        Seen::Relayed { id, duplicate_of } => {
            tracing::info!(uid, ?duplicate_of, "already relayed; moving it only");
            inbox.file(&[uid], &done).await?;
            journal.record_filed(&[id], &done)?;
            return Ok(Released::AlreadyRelayed {
                id,
                duplicate_of,
                folder: done,
            });
        }
        Seen::Twin { of } => return Err(HoldError::Twin { of }),
        Seen::Open {
            id,
            accepted,
            interrupted,
        } => (id, accepted, interrupted),
    };
    if interrupted {
        tracing::warn!(
            uid,
            "an earlier release was cut off while sending; relaying again"
        );
    }

    // Relay to whoever has not accepted it yet.
    let remaining: Vec<String> = decision
        .recipients
        .iter()
        .filter(|r| !accepted.contains(r))
        .cloned()
        .collect();
    let (refused, reply) = if remaining.is_empty() {
        (Vec::new(), String::new())
    } else {
        let bytes = relay_bytes(req.config, &raw, &decision);
        journal.begin_attempts(&[id])?;
        let delivery = relay
            .deliver(&bytes, &remaining, |rcpt, reply| {
                journal.record_accepted(id, rcpt, reply)
            })
            .await?;
        match delivery {
            Delivery::Accepted {
                accepted: new,
                refused,
                reply,
            } => {
                accepted.extend(new);
                (refused, reply)
            }
            Delivery::Refused { refused, reply } if !accepted.is_empty() => (refused, reply),
            Delivery::Refused { refused, reply } => {
                journal.record_refused(id, &refused, &reply)?;
                journal.record_filed(&[id], &hold)?;
                return Err(HoldError::Refused {
                    reply,
                    folder: hold,
                });
            }
            Delivery::Deferred { error } => {
                journal.record_deferred(id, &error.reply())?;
                return Err(HoldError::Deferred {
                    reply: error.reply(),
                    folder: hold,
                });
            }
        }
    };
    journal.record_relayed(id, &accepted, &refused, &reply)?;

    // Only now does it leave the hold folder.
    inbox.file(&[uid], &done).await?;
    journal.record_filed(&[id], &done)?;
    Ok(Released::Relayed {
        id,
        accepted,
        refused,
        reply,
        folder: done,
    })
}

/// The bytes sent to the pod, built as the daemon builds them.
fn relay_bytes(config: &Config, raw: &[u8], decision: &Decision) -> Vec<u8> {
    let relay = config.relay.as_ref().expect("checked by release");
    let pod_name = decision
        .pod
        .as_deref()
        .and_then(|k| config.pod(k))
        .map_or("", |p| p.name.as_str());
    let opts = EmitOptions {
        from_mode: relay.from_mode,
        relay_from: &relay.from,
        pod_name,
    };
    emit::relay_bytes(raw, decision, &opts)
}

/// Who is releasing: `$SUDO_USER`, else `$USER`, else `$LOGNAME`.
pub fn operator() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|v| printable(v.trim()))
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "an unknown user".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{journal, Row};

    const TABLE: &str = r#"
[pods.alberta]
name = "Alberta"
members = ["ana@vendor.example"]

[pods.coast]
name = "Coast"
members = ["Jonas <jonas@vendor.example>", "kiri@vendor.example"]

[clients.sunnyvale]
pod = "alberta"
domains = ["sunnyvale.example"]
"#;

    fn config() -> Config {
        crate::config::from_str(TABLE, Path::new("routing.toml")).unwrap()
    }

    #[test]
    fn a_release_is_a_relay_by_a_person_to_the_chosen_pod() {
        let raw = b"From: Someone <someone@unknown.example>\r\nSubject: Hello\r\n\
                    Message-ID: <m1@unknown.example>\r\n\r\nbody\r\n";
        let c = config();
        assert_eq!(engine::decide(&c, raw).action, Action::Hold);
        let d = released_decision(&c, raw, "coast", "alice");
        assert_eq!(d.action, Action::Relay);
        assert_eq!(d.pod.as_deref(), Some("coast"));
        assert_eq!(d.rule, Some(Rule::Release("alice".into())));
        assert_eq!(d.reason, "released by alice to pod coast");
        assert_eq!(
            d.recipients,
            ["jonas@vendor.example", "kiri@vendor.example"]
        );
        assert_eq!(d.sender.as_deref(), Some("someone@unknown.example"));
        assert_eq!(d.message_id.as_deref(), Some("m1@unknown.example"));
        let bytes = relay_bytes_for_test(&d, raw);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("X-Podrouter-Rule: release by alice"),
            "{text}"
        );
        assert!(text.contains("X-Podrouter-Pod: coast"), "{text}");
    }

    fn relay_bytes_for_test(d: &Decision, raw: &[u8]) -> Vec<u8> {
        let opts = EmitOptions {
            from_mode: crate::config::FromMode::Keep,
            relay_from: "support@vendor.example",
            pod_name: "Coast",
        };
        emit::relay_bytes(raw, d, &opts)
    }

    #[test]
    fn unknown_or_empty_pods_are_refused_before_anything_connects() {
        let c = config();
        assert!(check_pod(&c, "coast").is_ok());
        let err = check_pod(&c, "mars").unwrap_err().to_string();
        assert!(err.contains("no pod \"mars\""), "{err}");
        assert!(err.contains("pods: alberta, coast"), "{err}");
        let mut emptied = c.clone();
        emptied.pods.get_mut("coast").unwrap().members.clear();
        assert!(check_pod(&emptied, "coast").is_err());
        assert!(hold_view(&c).is_err(), "no [inbox] in this table");
    }

    #[test]
    fn offline_view_lists_what_was_last_filed_in_the_hold_folder() {
        let dir = tempfile::tempdir().unwrap();
        let held = |hash, time, reason| Row {
            hash,
            sender: Some("someone@unknown.example"),
            action: "hold",
            reason,
            folder: Some("Held"),
            first_seen: time,
            ..Default::default()
        };
        journal(
            dir.path(),
            &[
                held("h1", "2026-12-01T08:00:00.000Z", "no client matches a"),
                held("h2", "2026-12-02T08:00:00.000Z", "no client matches b"),
                // h1 was released later.
                Row {
                    action: "relay",
                    folder: Some("Routed"),
                    ..held("h1", "2026-12-03T08:00:00.000Z", "released by alice")
                },
                Row {
                    folder: Some("Routed"),
                    action: "skip",
                    ..held("h3", "2026-12-03T08:00:00.000Z", "auto-reply")
                },
            ],
        );
        let r = Reader::open(dir.path()).unwrap();
        let rows = r.held("Held", 0).unwrap();
        let reasons: Vec<&str> = rows.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["no client matches b"]);
        let mut out = Vec::new();
        write_held_offline(&mut out, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("ENTRY  TIME (UTC)"), "{text}");
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("#2 "), "{text}");
        assert!(
            line.contains(" 2026-12-02 08:00:00  someone@unknown.example "),
            "{text}"
        );
    }

    #[test]
    fn the_operator_comes_from_the_environment() {
        assert!(!operator().is_empty());
    }
}
