//! The acknowledgement: one short reply telling a client who will help.
//!
//! A pod with `ack = true` answers a client's message, once it was relayed
//! and recorded, with a reply naming the pod and its people. What may be
//! answered is decided here, purely ([`target`]); how often (at most once
//! per sender within `ack_interval`) the journal remembers.
//!
//! The reply follows RFC 3834: `Auto-Submitted: auto-replied`, In-Reply-To
//! and References set to the client's message, a subject of
//! `Re: <original subject>`, sent from `relay.from` to the client's
//! Reply-To or From, with podrouter's loop marker so it is never relayed
//! when it comes back.

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use mail_parser::Message;

use crate::config::Pod;
use crate::emit::LOOP_HEADER;

/// The text sent when a pod sets no `ack_template`.
pub const DEFAULT_TEMPLATE: &str = "Hello,\n\
\n\
Thank you for your message \"{subject}\".\n\
{pod} has it: {members} will help you.\n\
\n\
To add anything, just reply; it reaches the same people.\n";

/// The placeholders an `ack_template` may use.
pub const PLACEHOLDERS: &[&str] = &["pod", "members", "client", "subject"];

/// The header naming the pod on an acknowledgement.
pub const ACK_HEADER: &str = "X-Podrouter-Ack";

/// Local parts (lowercase, with `-`, `_` and `.` removed) that never get
/// an automatic answer.
const NO_REPLY: &[&str] = &[
    "noreply",
    "donotreply",
    "dontreply",
    "mailerdaemon",
    "postmaster",
    "bounce",
    "bounces",
];

/// Headers that mark mailing-list mail (RFC 2369, RFC 2919 and kin).
const LIST_HEADERS: &[&str] = &[
    "List-Id",
    "List-Unsubscribe",
    "List-Post",
    "List-Help",
    "List-Owner",
    "X-Mailing-List",
    "Mailing-List",
];

/// Checks an `ack_template`: it must not be empty and may only use the
/// known placeholders.
pub fn check_template(template: &str) -> Result<(), String> {
    if template.trim().is_empty() {
        return Err("must not be empty".into());
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("has a `{` without its `}`".into());
        };
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "has an unknown placeholder {{{name}}}; use {}",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// Where an acknowledgement of this message would go: the Reply-To, else
/// the sender. `Err` says why none may be sent: list mail, bulk mail, or
/// a no-reply address. (Bounces and auto-replies are skipped before.)
pub fn target(msg: &Message<'_>, sender: &str) -> Result<String, String> {
    if let Some(h) = LIST_HEADERS.iter().find(|h| msg.header_raw(**h).is_some()) {
        return Err(format!("mailing list ({h})"));
    }
    for name in ["Precedence", "X-Precedence"] {
        let value = msg
            .header_raw(name)
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if ["list", "bulk", "junk", "auto_reply"]
            .iter()
            .any(|v| value.starts_with(v))
        {
            return Err(format!("{name}: {value}"));
        }
    }
    let reply_to = msg
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(|a| crate::address::normalize_address(a).ok());
    let to = reply_to.unwrap_or_else(|| sender.to_owned());
    if is_no_reply(&to) {
        return Err(format!("no-reply address {to}"));
    }
    if is_no_reply(sender) {
        return Err(format!("no-reply sender {sender}"));
    }
    Ok(to)
}

/// Whether an address is one that must not be answered automatically.
pub fn is_no_reply(address: &str) -> bool {
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    let local = local.to_ascii_lowercase();
    let squeezed: String = local.chars().filter(|c| !"-_.".contains(*c)).collect();
    NO_REPLY.iter().any(|n| squeezed.starts_with(n))
        || squeezed.contains("noreply")
        || squeezed.contains("donotreply")
        || local.starts_with("owner-")
        || local.ends_with("-request")
}

/// `Re: <subject>`, without doubling a `Re:` already there.
pub fn reply_subject(subject: Option<&str>) -> String {
    let subject = subject.unwrap_or("").trim();
    let has_re = subject
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("re:"));
    if has_re {
        subject.to_owned()
    } else if subject.is_empty() {
        "Re: your message".to_owned()
    } else {
        format!("Re: {subject}")
    }
}

/// The pod's members by name, as "Ana, Ben and Chloe"; a member without a
/// name is shown by address.
pub fn member_names(pod: &Pod) -> String {
    let names: Vec<String> = pod
        .members
        .iter()
        .map(|m| m.name.clone().unwrap_or_else(|| m.address.clone()))
        .collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Fills in a template's placeholders.
pub fn render(template: &str, pod: &Pod, client: &str, subject: &str) -> String {
    template
        .replace("{pod}", &pod.name)
        .replace("{members}", &member_names(pod))
        .replace("{client}", client)
        .replace("{subject}", subject)
}

/// What [`build`] needs to know about the client's message.
#[derive(Clone, Debug)]
pub struct Original<'a> {
    /// Its Message-ID, without brackets.
    pub message_id: Option<&'a str>,
    /// Its In-Reply-To and References ids, without brackets.
    pub references: &'a [String],
    /// Its decoded subject.
    pub subject: Option<&'a str>,
    /// Who gets the acknowledgement.
    pub to: &'a str,
    /// The client's name for `{client}`.
    pub client: &'a str,
}

/// The acknowledgement's bytes and its Message-ID (without brackets).
pub fn build(
    pod: &Pod,
    relay_from: &str,
    original: &Original<'_>,
) -> Result<(Vec<u8>, String), String> {
    let from: Mailbox = relay_from.parse().map_err(|e| format!("relay.from: {e}"))?;
    let to: Mailbox = original
        .to
        .parse()
        .map_err(|e| format!("{}: {e}", original.to))?;
    let from = Mailbox::new(Some(clean(&pod.name)), from.email);
    let domain = relay_from.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let id = fresh_id(original.message_id.unwrap_or(original.to), domain);
    let subject = clean(original.subject.unwrap_or(""));
    let body = render(&pod.ack_template, pod, &clean(original.client), &subject);
    let raw = |name: &'static str, value: String| {
        HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
    };
    let mut b = lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(reply_subject(Some(&subject)))
        .message_id(Some(format!("<{id}>")))
        .raw_header(raw("Auto-Submitted", "auto-replied".into()))
        .raw_header(raw(LOOP_HEADER, relay_from.to_owned()))
        .raw_header(raw(ACK_HEADER, pod.key.clone()))
        .raw_header(raw("X-Auto-Response-Suppress", "All".into()));
    if let Some(orig) = original.message_id {
        let mut refs: Vec<&str> = original
            .references
            .iter()
            .rev()
            .take(20)
            .rev()
            .map(String::as_str)
            .filter(|r| *r != orig)
            .collect();
        refs.push(orig);
        let refs: Vec<String> = refs.iter().map(|r| format!("<{r}>")).collect();
        b = b
            .in_reply_to(format!("<{orig}>"))
            .references(refs.join(" "));
    }
    let message = b
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| e.to_string())?;
    Ok((message.formatted(), id))
}

/// A Message-ID unique to this moment and message.
fn fresh_id(seed: &str, domain: &str) -> String {
    use sha2::{Digest, Sha256};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let digest = Sha256::digest(format!("{seed}/{nanos}/{}", std::process::id()));
    format!("podrouter.{}@{domain}", &hex::encode(digest)[..24])
}

/// Text on one line, without control characters.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Member;
    use mail_parser::MessageParser;

    fn pod() -> Pod {
        Pod {
            key: "east".into(),
            name: "East pod".into(),
            members: vec![
                Member {
                    name: Some("Ana Ruiz".into()),
                    address: "ana@vendor.example".into(),
                },
                Member {
                    name: None,
                    address: "ben@vendor.example".into(),
                },
                Member {
                    name: Some("Chloé".into()),
                    address: "chloe@vendor.example".into(),
                },
            ],
            phone: None,
            ack: true,
            ack_template: DEFAULT_TEMPLATE.into(),
            ack_interval: std::time::Duration::from_secs(86400),
            respond: None,
        }
    }

    fn target_of(raw: &str) -> Result<String, String> {
        let msg = MessageParser::default().parse(raw.as_bytes()).unwrap();
        target(&msg, "clerk@town.example")
    }

    #[test]
    fn templates_use_only_known_placeholders() {
        assert!(check_template(DEFAULT_TEMPLATE).is_ok());
        assert!(check_template("Hi {client}, {pod} has it").is_ok());
        assert!(check_template("Hi {name}").is_err());
        assert!(check_template("Hi {pod").is_err());
        assert!(check_template("  ").is_err());
    }

    #[test]
    fn a_person_gets_one_at_reply_to_or_from() {
        let plain = "From: clerk@town.example\r\nSubject: x\r\n\r\nhi\r\n";
        assert_eq!(target_of(plain).unwrap(), "clerk@town.example");
        let reply_to =
            "From: clerk@town.example\r\nReply-To: Desk <Desk@Town.example>\r\n\r\nhi\r\n";
        assert_eq!(target_of(reply_to).unwrap(), "desk@town.example");
    }

    #[test]
    fn lists_bulk_and_no_reply_senders_never_get_one() {
        for raw in [
            "From: a@town.example\r\nList-Id: <news.town.example>\r\n\r\nx\r\n",
            "From: a@town.example\r\nPrecedence: list\r\n\r\nx\r\n",
            "From: a@town.example\r\nPrecedence: bulk\r\n\r\nx\r\n",
            "From: a@town.example\r\nReply-To: no-reply@town.example\r\n\r\nx\r\n",
        ] {
            assert!(target_of(raw).is_err(), "{raw}");
        }
        for a in [
            "noreply@x.example",
            "no-reply@x.example",
            "do_not_reply@x.example",
            "DoNotReply@x.example",
            "alerts-noreply@x.example",
            "mailer-daemon@x.example",
            "owner-list@x.example",
            "list-request@x.example",
        ] {
            assert!(is_no_reply(a), "{a}");
        }
        assert!(!is_no_reply("nora@x.example"));
    }

    #[test]
    fn the_subject_gets_one_re() {
        assert_eq!(reply_subject(Some("Printer")), "Re: Printer");
        assert_eq!(reply_subject(Some("RE: Printer")), "RE: Printer");
        assert_eq!(reply_subject(None), "Re: your message");
    }

    #[test]
    fn the_text_names_the_pod_and_its_people() {
        let text = render(DEFAULT_TEMPLATE, &pod(), "Town", "Printer");
        assert!(text.contains("East pod has it: Ana Ruiz, ben@vendor.example and Chloé will"));
        assert!(text.contains("\"Printer\""));
    }

    #[test]
    fn the_reply_threads_and_says_it_is_automatic() {
        let refs = vec!["older@town.example".to_owned()];
        let original = Original {
            message_id: Some("m1@town.example"),
            references: &refs,
            subject: Some("Printer"),
            to: "clerk@town.example",
            client: "Town",
        };
        let (bytes, id) = build(&pod(), "support@vendor.example", &original).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("Auto-Submitted: auto-replied"), "{text}");
        assert!(text.contains("In-Reply-To: <m1@town.example>"), "{text}");
        assert!(text.contains("References: <older@town.example> <m1@town.example>"));
        assert!(text.contains("Subject: Re: Printer"));
        assert!(text.contains("X-Podrouter-Loop: support@vendor.example"));
        assert!(text.contains("To: clerk@town.example"));
        assert!(text.contains(&format!("<{id}>")));
        assert!(id.ends_with("@vendor.example"));
        let msg = MessageParser::default().parse(&bytes[..]).unwrap();
        let c = crate::classify::classify(&msg, "support@vendor.example");
        assert!(!c.is_person(), "an ack coming back is not relayed: {c:?}");
    }
}
