//! The decision for one message: classify, find the sender, route.
//!
//! [`decide`] is pure: it reads the raw bytes and the table and returns a
//! [`Decision`]. Nothing here touches the network or the disk, so the
//! offline `route` command, the daemon and the tests share it.

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
}

impl Rule {
    /// The short kind name: `address`, `domain`, `phone`, `default` or
    /// `release`.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::Address(_) => "address",
            Rule::Domain(_) => "domain",
            Rule::Phone(_) => "phone",
            Rule::Default => "default",
            Rule::Release(_) => "release",
        }
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
}

impl Decision {
    /// A decision with no route yet: the message is held with `reason`.
    fn held(reason: impl Into<String>) -> Self {
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
    let decided = panic::catch_unwind(AssertUnwindSafe(|| decide_raw(config, raw)));
    decided.unwrap_or_else(|_| Decision::held("unparseable message: reading it panicked"))
}

/// [`decide`] without the guard against panics.
fn decide_raw(config: &Config, raw: &[u8]) -> Decision {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Decision::held("unparseable message: no headers found");
    };
    let d = decide_parsed(config, &msg);
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
fn decide_parsed(config: &Config, msg: &Message<'_>) -> Decision {
    let mut d = Decision::held("no sender: neither From nor Sender has a usable address");
    d.message_id = msg.message_id().map(clean_message_id);
    d.subject = msg.subject().map(clean_subject);

    let sender = sender::find(msg);
    if let Some(s) = &sender {
        d.sender = Some(s.address.clone());
        d.sender_name = s.name.clone();
    }
    let address = sender.as_ref().map(|s| s.address.as_str());
    if let Some(vm) = voicemail::detect(config, msg, address) {
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
