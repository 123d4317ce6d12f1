//! The decision for one message: classify, find the sender, route.
//!
//! [`decide`] is pure: it reads the raw bytes and the table and returns a
//! [`Decision`]. Nothing here touches the network or the disk, so the
//! offline `route` command, the daemon and the tests share it.
//! [`decide_with`] also takes a [`ThreadLookup`]: which thread, if any,
//! the Message-IDs a message answers belong to. The daemon backs it with
//! the journal; `route` with nothing, or the journal given `--state-dir`.
//!
//! # Precedence
//!
//! 1. Bounces, auto-replies and our own mail are skipped.
//! 2. Mail from a pod member (a technician's reply-all with the support
//!    address in Cc) goes to the rest of the pod: the thread's pod when it
//!    answers a known thread (rule `reply`), else the member's own pod
//!    (rule `internal`). It never goes back to the client.
//! 3. An exact client address.
//! 4. A known thread (rule `thread`): it beats a domain, a phone and
//!    `default_pod`. When the table would send the sender elsewhere (the
//!    client moved), the thread still goes to the pod that has it, the
//!    relayed copy says so in `X-Podrouter-Moved`, and both pods are
//!    logged. When an exact address moves a thread, the copy names the
//!    pod that had it.
//! 5. The longest domain, then `default_pod`, else the message is held.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use mail_parser::{Message, MessageParser, PartType};
use serde::Serialize;

use crate::classify::{self, Class};
use crate::config::Config;
use crate::phone::CallerId;
use crate::sender::{self, Sender};
use crate::voicemail::{self, Voicemail};

/// What happens to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Relay to the pod's members, then file in `done_folder`.
    Relay,
    /// Do not relay (bounce, auto-reply, our own loop); file in `done_folder`.
    Skip,
    /// A person must look at it; file in `hold_folder`.
    Hold,
}

impl Action {
    /// The lowercase name used in logs, JSON and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Relay => "relay",
            Action::Skip => "skip",
            Action::Hold => "hold",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which routing rule matched a sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// An exact address listed under a client (normalised form).
    Address(String),
    /// A client domain that equals or covers the sender's domain.
    Domain(String),
    /// A phone number listed under a client (E.164).
    Phone(String),
    /// `routing.default_pod`: nothing else matched.
    Default,
    /// A person released held mail to a pod (`podrouter release`); holds
    /// who did.
    Release(String),
    /// The message answers a thread relayed before; holds the Message-ID
    /// that opened the thread.
    Thread(String),
    /// A pod member's reply in a known thread, relayed to the rest of the
    /// pod.
    Reply,
    /// A pod member's mail outside any known thread, relayed to the rest
    /// of the member's pod.
    Internal,
}

impl Rule {
    /// The short kind name: `address`, `domain`, `phone`, `default`,
    /// `release`, `thread`, `reply` or `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::Address(_) => "address",
            Rule::Domain(_) => "domain",
            Rule::Phone(_) => "phone",
            Rule::Default => "default",
            Rule::Release(_) => "release",
            Rule::Thread(_) => "thread",
            Rule::Reply => "reply",
            Rule::Internal => "internal",
        }
    }

    /// Whether the rule routes a pod member's own mail.
    pub fn is_member_mail(&self) -> bool {
        matches!(self, Rule::Reply | Rule::Internal)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Address(a) => write!(f, "address {a}"),
            Rule::Domain(d) => write!(f, "domain {d}"),
            Rule::Phone(p) => write!(f, "phone {p}"),
            Rule::Default => f.write_str("default_pod"),
            Rule::Release(by) => write!(f, "release by {by}"),
            Rule::Thread(root) => write!(f, "thread {root}"),
            Rule::Reply => f.write_str("reply"),
            Rule::Internal => f.write_str("internal"),
        }
    }
}

/// The routing decision for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Relay, skip or hold.
    pub action: Action,
    /// The sender's address, normalised (lowercase, A-label domain).
    pub sender: Option<String>,
    /// The sender's display name, decoded, as written in the message.
    pub sender_name: Option<String>,
    /// The client's key in the table (`[clients.KEY]`).
    pub client: Option<String>,
    /// The pod's key in the table (`[pods.KEY]`).
    pub pod: Option<String>,
    /// The rule that matched, when a route was found.
    pub rule: Option<Rule>,
    /// Why: the rule for a relay, the cause for a skip or hold.
    pub reason: String,
    /// Envelope recipients (RCPT TO) for a relay; empty otherwise.
    pub recipients: Vec<String>,
    /// The Message-ID without angle brackets, when the message has one.
    pub message_id: Option<String>,
    /// The decoded Subject, for logs and the journal.
    pub subject: Option<String>,
    /// Threads, replies and acknowledgements.
    pub personal: Personal,
}

/// What a decision knows about threads and acknowledgements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Personal {
    /// The Message-IDs the message answers: In-Reply-To, then References
    /// from the newest; without brackets, at most [`MAX_REFERENCES`].
    pub references: Vec<String>,
    /// The thread those Message-IDs belong to, when one is known.
    pub thread: Option<ThreadRef>,
    /// A note for `X-Podrouter-Moved` when the thread and the table
    /// disagree about the pod.
    pub moved: Option<String>,
    /// Who would get an acknowledgement (Reply-To, else the sender), or
    /// why none may be sent.
    pub ack_to: Option<Result<String, String>>,
}

/// How many Message-IDs of In-Reply-To and References are looked up.
pub const MAX_REFERENCES: usize = 50;

/// A thread podrouter relayed before, as the journal knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadRef {
    /// The thread's key in the journal.
    pub id: i64,
    /// The Message-ID of the message that opened it.
    pub root: String,
    /// The pod that has it.
    pub pod: String,
    /// The client it is with, when known.
    pub client: Option<String>,
}

/// Finds the thread a set of Message-IDs belongs to.
pub trait ThreadLookup {
    /// The thread one of `ids` belongs to (the first match wins; `ids`
    /// come newest first).
    fn find(&self, ids: &[String]) -> Option<ThreadRef>;
}

/// No journal: no message belongs to a known thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoThreads;

impl ThreadLookup for NoThreads {
    fn find(&self, _ids: &[String]) -> Option<ThreadRef> {
        None
    }
}

impl<F: Fn(&[String]) -> Option<ThreadRef>> ThreadLookup for F {
    fn find(&self, ids: &[String]) -> Option<ThreadRef> {
        self(ids)
    }
}

impl Decision {
    /// A decision with no route yet: the message is held with `reason`.
    pub fn held(reason: impl Into<String>) -> Self {
        Decision {
            action: Action::Hold,
            sender: None,
            sender_name: None,
            client: None,
            pod: None,
            rule: None,
            reason: reason.into(),
            recipients: Vec::new(),
            message_id: None,
            subject: None,
            personal: Personal::default(),
        }
    }
}

/// Decides what happens to one message, given its raw bytes.
///
/// Classification comes first: bounces, auto-replies and our own mail
/// are skipped whoever sent them. Then the sender is routed: an exact
/// address, the longest domain, `default_pod`, or else the message is held.
///
/// A panic while reading the message holds it instead of unwinding into
/// the caller: mail-parser checks its own state with `debug_assert!`, and
/// some malformed MIME trips those checks in a debug build (see
/// `tests/fuzz-regressions`).
pub fn decide(config: &Config, raw: &[u8]) -> Decision {
    decide_with(config, raw, &NoThreads)
}

/// [`decide`], knowing the threads relayed before.
pub fn decide_with(config: &Config, raw: &[u8], threads: &dyn ThreadLookup) -> Decision {
    let decided = panic::catch_unwind(AssertUnwindSafe(|| decide_raw(config, raw, threads)));
    decided.unwrap_or_else(|_| Decision::held("unparseable message: reading it panicked"))
}

/// [`decide_with`] without the guard against panics.
fn decide_raw(config: &Config, raw: &[u8], threads: &dyn ThreadLookup) -> Decision {
    if !crate::emit::starts_with_header(raw) {
        return Decision::held("malformed message: its first line is not a header field");
    }
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Decision::held("unparseable message: no headers found");
    };
    let d = decide_parsed(config, &msg, threads);
    drop_flat(msg);
    d
}

/// Drops a parsed message without recursing into enclosed messages.
///
/// mail-parser keeps each enclosed `message/rfc822` inside its parent, and
/// the derived drop recurses once per level: a few thousand nested levels
/// overflow a 2 MiB thread stack. Taking the inner messages out first keeps
/// the drop flat whatever the depth.
fn drop_flat(msg: Message<'_>) {
    let mut pending = vec![msg];
    while let Some(mut msg) = pending.pop() {
        for part in &mut msg.parts {
            if let PartType::Message(inner) = &mut part.body {
                pending.push(std::mem::take(inner));
            }
        }
    }
}

/// [`decide`] for a message already parsed.
fn decide_parsed(config: &Config, msg: &Message<'_>, threads: &dyn ThreadLookup) -> Decision {
    let mut d = Decision::held("no sender: neither From nor Sender has a usable address");
    d.message_id = msg.message_id().map(clean_message_id);
    d.subject = msg.subject().map(clean_subject);
    d.personal.references = references(msg);

    let sender = sender::find(msg);
    if let Some(s) = &sender {
        d.sender = Some(s.address.clone());
        d.sender_name = s.name.clone();
    }
    let address = sender.as_ref().map(|s| s.address.as_str());
    // A technician's own mail is never voicemail, whatever headers it
    // carries: it goes to the rest of the pod, never back to its author.
    let member = address.is_some_and(|a| !config.member_pods(a).is_empty());
    if let Some(vm) = voicemail::detect(config, msg, address).filter(|_| !member) {
        return decide_voicemail(config, msg, d, sender.as_ref(), vm);
    }
    if let Some(s) = &sender {
        if let Some(m) = config.table.lookup_address(&s.address) {
            d.client = Some(m.client.to_string());
            d.pod = Some(m.pod.to_string());
            d.rule = Some(m.rule);
        }
    }

    let own = config.relay.as_ref().map_or("", |r| r.from.as_str());
    let class = classify::classify(msg, own);
    if let Some(reason) = skip_reason(class, own, sender.as_ref()) {
        d.action = Action::Skip;
        d.reason = reason;
        return d;
    }
    let Some(sender) = sender else {
        return d;
    };
    if !d.personal.references.is_empty() {
        d.personal.thread = threads.find(&d.personal.references);
    }
    let member_of = config.member_pods(&sender.address);
    if let Some(own) = member_of.first() {
        return member_mail(config, d, &sender.address, &own.key);
    }
    d = follow_thread(config, d);
    d.personal.ack_to = Some(crate::ack::target(msg, &sender.address));
    if d.pod.is_none() {
        match &config.default_pod {
            Some(pod) => {
                d.pod = Some(pod.clone());
                d.rule = Some(Rule::Default);
            }
            None => {
                d.reason = format!(
                    "no client matches {} and there is no default_pod",
                    sender.address
                );
                return d;
            }
        }
    }
    route_to_pod(config, d)
}

/// Routes a voicemail notification by its caller, never by its sender.
///
/// A caller whose number a client lists routes to that client's pod with
/// rule `phone`. Any other caller (a number no client has, a withheld one,
/// none found) goes to `default_pod`, else the message is held: the PBX's
/// own address does not route, even when it sits in a client's domain.
/// Auto-reply headers do not skip it (see [`classify::classify_voicemail`]).
fn decide_voicemail(
    config: &Config,
    msg: &Message<'_>,
    mut d: Decision,
    sender: Option<&Sender>,
    vm: Voicemail,
) -> Decision {
    let own = config.relay.as_ref().map_or("", |r| r.from.as_str());
    if let Some(reason) = skip_reason(classify::classify_voicemail(msg, own), own, sender) {
        d.action = Action::Skip;
        d.reason = reason;
        return d;
    }
    let unknown = match &vm.caller {
        CallerId::Number(e164) => match config.table.lookup_phone(e164) {
            Some(m) => {
                d.client = Some(m.client.to_string());
                d.pod = Some(m.pod.to_string());
                d.rule = Some(m.rule);
                return route_to_pod(config, d);
            }
            None => format!("voicemail from {e164}, which no client lists"),
        },
        CallerId::Withheld(why) => format!("voicemail without a caller number ({why})"),
        CallerId::NotANumber(why) => format!("voicemail whose caller is not a number: {why}"),
    };
    let Some(pod) = &config.default_pod else {
        d.reason = format!("{unknown}, and there is no default_pod");
        return d;
    };
    d.pod = Some(pod.clone());
    d.rule = Some(Rule::Default);
    let mut d = route_to_pod(config, d);
    if d.action == Action::Relay {
        d.reason = format!("default_pod: {unknown}");
    }
    d
}

/// In-Reply-To, then References from the newest, without brackets or
/// repeats; at most [`MAX_REFERENCES`].
fn references(msg: &Message<'_>) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut add = |v: &mail_parser::HeaderValue<'_>, newest_first: bool| {
        let mut list: Vec<String> = match v {
            mail_parser::HeaderValue::Text(t) => vec![clean_message_id(t)],
            mail_parser::HeaderValue::TextList(l) => {
                l.iter().map(|t| clean_message_id(t)).collect()
            }
            _ => Vec::new(),
        };
        if newest_first {
            list.reverse();
        }
        for id in list {
            if !id.is_empty() && !ids.contains(&id) && ids.len() < MAX_REFERENCES {
                ids.push(id);
            }
        }
    };
    add(msg.in_reply_to(), true);
    add(msg.references(), true);
    ids
}

/// A pod member's mail: to the rest of the thread's pod (`reply`), or of
/// the member's own pod when it answers no known thread (`internal`).
/// With nobody else in the pod it is filed without a relay.
fn member_mail(config: &Config, mut d: Decision, author: &str, own_pod: &str) -> Decision {
    let thread = d
        .personal
        .thread
        .clone()
        .filter(|t| config.pod(&t.pod).is_some());
    let (pod_key, rule, client) = match thread {
        Some(t) => (t.pod, Rule::Reply, t.client),
        None => (own_pod.to_owned(), Rule::Internal, None),
    };
    let Some(pod) = config.pod(&pod_key) else {
        d.reason = format!("pod {pod_key:?} is not in the table");
        return d;
    };
    d.client = client;
    d.pod = Some(pod_key.clone());
    d.rule = Some(rule.clone());
    d.recipients = pod
        .members
        .iter()
        .map(|m| m.address.clone())
        .filter(|a| a != author)
        .collect();
    if d.recipients.is_empty() {
        d.action = Action::Skip;
        d.reason = format!("{rule} by {author}: nobody else in pod {pod_key} to relay it to");
        return d;
    }
    d.action = Action::Relay;
    d.reason = match &d.personal.thread {
        Some(t) if rule == Rule::Reply => format!("reply by {author} in thread {}", t.root),
        _ => format!("{rule} mail by {author}"),
    };
    d
}

/// Applies a known thread to a client's message: the thread beats a
/// domain, a phone and `default_pod`; an exact address beats the thread.
fn follow_thread(config: &Config, mut d: Decision) -> Decision {
    let Some(thread) = d.personal.thread.clone() else {
        return d;
    };
    if config.pod(&thread.pod).is_none() {
        tracing::warn!(
            thread = %thread.root,
            pod = %thread.pod,
            "the thread's pod is no longer in the table; routing by the table"
        );
        return d;
    }
    let table_pod = d.pod.clone();
    if let Some(Rule::Address(address)) = &d.rule {
        if table_pod.as_deref() != Some(thread.pod.as_str()) {
            let now = table_pod.unwrap_or_default();
            tracing::info!(
                thread = %thread.root,
                thread_pod = %thread.pod,
                pod = %now,
                "exact address {address} moves the thread to another pod"
            );
            d.personal.moved = Some(format!(
                "thread {} was with pod {}; address {address} now routes to pod {now}",
                thread.root, thread.pod
            ));
        }
        return d;
    }
    if let Some(other) = table_pod.filter(|p| *p != thread.pod) {
        let client = d.client.clone().unwrap_or_default();
        tracing::warn!(
            thread = %thread.root,
            thread_pod = %thread.pod,
            table_pod = %other,
            "client {client} is now with pod {other}; the thread stays with pod {}",
            thread.pod
        );
        d.personal.moved = Some(format!(
            "client {client} is now with pod {other}; this thread stays with pod {}",
            thread.pod
        ));
    }
    if d.client.is_none() {
        d.client = thread.client.clone();
    }
    d.pod = Some(thread.pod.clone());
    d.rule = Some(Rule::Thread(thread.root));
    d
}

/// Why a message must not be relayed, if it must not.
fn skip_reason(class: Class, own: &str, sender: Option<&Sender>) -> Option<String> {
    match class {
        Class::Person => {}
        Class::Bounce(r) | Class::AutoReply(r) | Class::Loop(r) => return Some(r),
    }
    let from_us = sender.is_some_and(|s| !own.is_empty() && s.address == own);
    from_us.then(|| format!("loop: sent from our own address {own}"))
}

/// Fills in the recipients of the decided pod, or holds the message when
/// the pod cannot take it.
fn route_to_pod(config: &Config, mut d: Decision) -> Decision {
    let pod_key = d.pod.clone().unwrap_or_default();
    let Some(pod) = config.pod(&pod_key) else {
        d.action = Action::Hold;
        d.reason = format!("pod {pod_key:?} is not in the table");
        return d;
    };
    d.recipients = pod.members.iter().map(|m| m.address.clone()).collect();
    if d.recipients.is_empty() {
        d.action = Action::Hold;
        d.reason = format!("pod {pod_key:?} has no members");
        return d;
    }
    d.action = Action::Relay;
    d.reason = d.rule.as_ref().map(ToString::to_string).unwrap_or_default();
    d
}

/// A Message-ID without angle brackets or stray white space.
fn clean_message_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

/// A subject on one line, for logs and the journal.
fn clean_subject(subject: &str) -> String {
    subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const TABLE: &str = r#"
[relay]
server = "127.0.0.1"
tls = "none"
from = "support@vendor.example"

[routing]
ack_interval = "2d"

[pods.east]
name = "East pod"
members = ["Ana <ana@vendor.example>", "Ben <ben@vendor.example>"]
ack = true
respond_within = "4h"
business_hours = "Mon-Fri 08:00-17:00"
time_zone = "America/Edmonton"
escalate_to = "lead@vendor.example"

[pods.west]
name = "West pod"
members = ["Cara <cara@vendor.example>"]

[clients.acme]
pod = "west"
domains = ["acme.example"]
addresses = ["boss@freemail.example"]
"#;

    fn config() -> Config {
        crate::config::from_str(TABLE, Path::new("routing.toml")).unwrap()
    }

    /// Every id leads to thread 7, with pod east.
    fn east_thread(ids: &[String]) -> Option<ThreadRef> {
        ids.iter()
            .any(|i| i == "root@acme.example")
            .then(|| ThreadRef {
                id: 7,
                root: "root@acme.example".into(),
                pod: "east".into(),
                client: Some("acme".into()),
            })
    }

    fn mail(from: &str, extra: &str) -> Vec<u8> {
        format!(
            "From: {from}\r\nSubject: Printer\r\nMessage-ID: <m@x.example>\r\n{extra}\r\nhi\r\n"
        )
        .into_bytes()
    }

    const IN_THREAD: &str = "In-Reply-To: <root@acme.example>\r\n";

    #[test]
    fn config_reads_the_personal_keys() {
        let c = config();
        let east = c.pod("east").unwrap();
        assert!(east.ack);
        assert_eq!(east.ack_interval, std::time::Duration::from_secs(2 * 86400));
        let r = east.respond.as_ref().unwrap();
        assert_eq!(r.within, std::time::Duration::from_secs(4 * 3600));
        assert_eq!(r.escalate_to.as_deref(), Some("lead@vendor.example"));
        assert!(!c.pod("west").unwrap().ack);
    }

    #[test]
    fn bad_personal_keys_are_errors_at_their_place() {
        let bad = TABLE
            .replace("\"Mon-Fri 08:00-17:00\"", "\"weekdays\"")
            .replace("America/Edmonton", "Mars/Olympus")
            .replace(
                "ack = true",
                "ack = true\nack_template = \"Hi {nmae}\"\nacks = 1",
            );
        let e = crate::config::from_str(&bad, Path::new("r.toml")).unwrap_err();
        let text = e.to_string();
        for want in [
            "business_hours",
            "time_zone",
            "{nmae}",
            "unknown key `acks`",
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
        assert!(e.problems.iter().all(|p| p.line > 1), "{text}");
    }

    #[test]
    fn a_thread_beats_a_domain_and_says_the_client_moved() {
        let d = decide_with(
            &config(),
            &mail("clerk@acme.example", IN_THREAD),
            &east_thread,
        );
        assert_eq!(d.action, Action::Relay);
        assert_eq!(d.pod.as_deref(), Some("east"));
        assert_eq!(d.rule, Some(Rule::Thread("root@acme.example".into())));
        assert_eq!(d.rule.as_ref().unwrap().kind(), "thread");
        assert_eq!(d.client.as_deref(), Some("acme"));
        let moved = d.personal.moved.unwrap();
        assert!(
            moved.contains("pod west") && moved.contains("pod east"),
            "{moved}"
        );
    }

    #[test]
    fn an_unknown_sender_in_a_known_thread_reaches_its_pod() {
        let d = decide_with(
            &config(),
            &mail("someone@home.example", IN_THREAD),
            &east_thread,
        );
        assert_eq!(d.action, Action::Relay);
        assert_eq!(d.pod.as_deref(), Some("east"));
        assert_eq!(d.recipients, ["ana@vendor.example", "ben@vendor.example"]);
        assert_eq!(d.personal.thread.unwrap().id, 7);
        // Without the journal the same message is held.
        let d = decide(&config(), &mail("someone@home.example", IN_THREAD));
        assert_eq!(d.action, Action::Hold);
    }

    #[test]
    fn an_exact_address_beats_a_thread_and_names_the_old_pod() {
        let d = decide_with(
            &config(),
            &mail("boss@freemail.example", IN_THREAD),
            &east_thread,
        );
        assert_eq!(d.pod.as_deref(), Some("west"));
        assert!(matches!(d.rule, Some(Rule::Address(_))));
        assert!(d.personal.moved.unwrap().contains("was with pod east"));
    }

    #[test]
    fn references_are_read_newest_first() {
        let raw = mail(
            "x@home.example",
            "In-Reply-To: <c@x>\r\nReferences: <a@x> <b@x>\r\n\t<c@x>\r\n",
        );
        let d = decide(&config(), &raw);
        assert_eq!(d.personal.references, ["c@x", "b@x", "a@x"]);
    }

    #[test]
    fn a_members_reply_goes_to_the_rest_of_the_threads_pod() {
        let raw = mail("Ana <ana@vendor.example>", IN_THREAD);
        let d = decide_with(&config(), &raw, &east_thread);
        assert_eq!(d.action, Action::Relay);
        assert_eq!(d.rule, Some(Rule::Reply));
        assert_eq!(d.rule.as_ref().unwrap().to_string(), "reply");
        assert_eq!(d.recipients, ["ben@vendor.example"]);
        assert_eq!(d.client.as_deref(), Some("acme"));
    }

    #[test]
    fn a_members_mail_outside_threads_is_internal_to_their_pod() {
        let d = decide_with(&config(), &mail("ben@vendor.example", ""), &east_thread);
        assert_eq!(d.rule, Some(Rule::Internal));
        assert_eq!(d.recipients, ["ana@vendor.example"]);
        // Alone in the pod: nothing to relay, filed as a skip.
        let d = decide_with(&config(), &mail("cara@vendor.example", ""), &east_thread);
        assert_eq!(d.action, Action::Skip);
        assert_eq!(d.pod.as_deref(), Some("west"));
    }

    #[test]
    fn ack_targets_are_worked_out_for_client_mail_only() {
        let d = decide(&config(), &mail("clerk@acme.example", ""));
        assert_eq!(d.personal.ack_to, Some(Ok("clerk@acme.example".into())));
        let d = decide(&config(), &mail("noreply@acme.example", ""));
        assert!(matches!(d.personal.ack_to, Some(Err(_))));
        let d = decide(&config(), &mail("ana@vendor.example", ""));
        assert_eq!(d.personal.ack_to, None);
    }
}
