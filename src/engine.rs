//! The decision for one message: classify, find the sender, route.
//!
//! [`decide`] is pure: it reads the raw bytes and the table and returns a
//! [`Decision`]. Nothing here touches the network or the disk, so the
//! offline `route` command, the daemon and the tests share it.

use std::fmt;

use serde::Serialize;

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
}

impl Rule {
    /// The short kind name: `address`, `domain`, `phone` or `default`.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::Address(_) => "address",
            Rule::Domain(_) => "domain",
            Rule::Phone(_) => "phone",
            Rule::Default => "default",
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

/// Decides what happens to one message, given its raw bytes.
pub fn decide(config: &crate::config::Config, raw: &[u8]) -> Decision {
    let _ = (config, raw);
    todo!("engine")
}
