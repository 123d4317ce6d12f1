//! Tells bounces, auto-replies and our own loops from mail written by people.
//!
//! [`classify`] runs before routing, so a bounce from a client's own mail
//! host is skipped like any other. The checks run in a fixed order, and the
//! first that fires decides:
//!
//! 1. **Loop**: our `X-Podrouter-Loop` marker carrying our own address.
//! 2. **Report**: a `multipart/report` anywhere in the message's own MIME
//!    tree (RFC 6522). `delivery-status` is a bounce (delay and success
//!    notices included: none of them is for a person);
//!    `disposition-notification` (a read receipt) is an auto-reply. A
//!    forwarded `message/rfc822` part is another message: its insides never
//!    count, the outer message decides.
//! 3. **Bounce**: `X-Failed-Recipients`, a `MAILER-DAEMON` or `postmaster`
//!    From, or a null `Return-Path` (`<>`, or IIS's `<<>>`).
//! 4. **Auto-reply**: `Auto-Submitted` other than `no`, the vendor
//!    autoreply headers, `Precedence` (or `X-Precedence`) `auto_reply`,
//!    `bulk` or `junk`, `X-Apple-Action: vacation`, Exchange's `Mailbox
//!    Rules Agent`.
//! 5. **Person**: everything else.
//!
//! Deliberately *not* signals: `X-Auto-Response-Suppress` (Outlook puts it
//! on mail people write), `X-MS-Exchange-Inbox-Rules-Loop` (rule forwards
//! carry it too), subject prefixes such as "Out of Office:", and
//! `Precedence: list` (mail a person sends through a group address, such as
//! a Google Group, carries it; list mail must still reach a pod). See
//! `CLASSIFY.md` in the shared notes for the sources.
//!
//! Top-level header values are read from the raw bytes of the message, so
//! the result does not depend on which headers the caller's
//! `MessageParser` was told to parse; only the MIME tree (which needs
//! `Content-Type`) comes from the parsed parts.

use std::borrow::Cow;

use mail_parser::parsers::MessageStream;
use mail_parser::{Address, HeaderName, HeaderValue, Message, MessagePart};

use crate::emit::LOOP_HEADER;

/// The longest header value quoted in a reason, in characters.
const REASON_VALUE_MAX: usize = 40;

/// What kind of message this is; the `String` is a short reason for the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// Written by a person: route it.
    Person,
    /// A delivery status notification or similar failure report: skip it.
    Bounce(String),
    /// An out-of-office, vacation, autoresponder or read receipt: skip it.
    AutoReply(String),
    /// Our own relayed mail coming back: skip it.
    Loop(String),
}

impl Class {
    /// The reason, or `None` for [`Class::Person`].
    pub fn reason(&self) -> Option<&str> {
        match self {
            Class::Person => None,
            Class::Bounce(r) | Class::AutoReply(r) | Class::Loop(r) => Some(r),
        }
    }

    /// True for mail written by a person.
    pub fn is_person(&self) -> bool {
        matches!(self, Class::Person)
    }
}

/// Classifies a parsed message; `own_address` is `relay.from`.
pub fn classify(msg: &Message<'_>, own_address: &str) -> Class {
    classify_with(msg, own_address, true)
}

/// Classifies a voicemail notification: loops, reports and bounces as
/// [`classify`] does, but without the auto-reply header signals.
///
/// A PBX is a machine and may say so (`Auto-Submitted: auto-generated`,
/// `Precedence: bulk`), yet its voicemail notice carries a caller's
/// message for a person. [`crate::voicemail`] decides which mail is
/// voicemail (a `[voicemail]` sender, or Asterisk's or Exchange UM's
/// headers) before this runs.
pub fn classify_voicemail(msg: &Message<'_>, own_address: &str) -> Class {
    classify_with(msg, own_address, false)
}

/// [`classify`], with or without the auto-reply header signals (step 4).
fn classify_with(msg: &Message<'_>, own_address: &str, header_auto_replies: bool) -> Class {
    let headers = top_headers(msg);
    if let Some(reason) = loop_reason(&headers, own_address) {
        return Class::Loop(reason);
    }
    if let Some(class) = report_class(msg) {
        return class;
    }
    if let Some(reason) = bounce_reason(&headers) {
        return Class::Bounce(reason);
    }
    if !header_auto_replies {
        return Class::Person;
    }
    if let Some(reason) = auto_reply_reason(&headers) {
        return Class::AutoReply(reason);
    }
    Class::Person
}

/// One top-level header: its name and raw value bytes (folds included).
struct RawHeader<'a> {
    name: &'a str,
    raw: &'a [u8],
}

impl RawHeader<'_> {
    /// True when the header has this name (ASCII case-insensitive).
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The value unfolded, trimmed, as (lossy) UTF-8.
    fn value(&self) -> String {
        let text = String::from_utf8_lossy(self.raw);
        let unfolded: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        unfolded.trim().to_string()
    }
}

/// The top-level headers with their raw bytes; empty for a message without parts.
fn top_headers<'a>(msg: &'a Message<'_>) -> Vec<RawHeader<'a>> {
    let Some(root) = msg.parts.first() else {
        return Vec::new();
    };
    root.headers
        .iter()
        .filter_map(|h| {
            let range = h.offset_start as usize..h.offset_end as usize;
            let raw = msg.raw_message.get(range)?;
            Some(RawHeader {
                name: h.name.as_str(),
                raw,
            })
        })
        .collect()
}

/// Our loop marker with our own address.
///
/// A marker with any other value is not a loop: another podrouter (or a
/// forged header) does not make the message ours. Such a message goes on
/// to the later checks like any other.
fn loop_reason(headers: &[RawHeader<'_>], own_address: &str) -> Option<String> {
    let own = own_address.trim();
    if own.is_empty() {
        return None;
    }
    headers
        .iter()
        .filter(|h| h.is(LOOP_HEADER))
        .any(|h| loop_value_matches(h, own))
        .then(|| format!("loop: {LOOP_HEADER}"))
}

/// True when a loop header names `own` (raw, bracketed or RFC 2047 encoded).
fn loop_value_matches(header: &RawHeader<'_>, own: &str) -> bool {
    let raw = header.value();
    if strip_brackets(&raw).eq_ignore_ascii_case(own) {
        return true;
    }
    if !raw.contains("=?") {
        return false;
    }
    match MessageStream::new(header.raw).parse_unstructured() {
        HeaderValue::Text(text) => strip_brackets(text.trim()).eq_ignore_ascii_case(own),
        _ => false,
    }
}

/// `<addr>` to `addr`; anything else unchanged.
fn strip_brackets(value: &str) -> &str {
    value
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .unwrap_or(value)
        .trim()
}

/// A `multipart/report` (or a bare `message/delivery-status`) in the
/// message's own tree.
///
/// `msg.parts` holds only this message's parts: mail-parser keeps the parts
/// of an enclosed `message/rfc822` inside that part's own [`Message`], so a
/// forwarded bounce is never seen here.
fn report_class(msg: &Message<'_>) -> Option<Class> {
    msg.parts.iter().find_map(part_report_class)
}

/// The report class of one MIME part, if it is a report.
fn part_report_class(part: &MessagePart<'_>) -> Option<Class> {
    let ct = part
        .headers
        .iter()
        .find(|h| h.name == HeaderName::ContentType)?
        .value
        .as_content_type()?;
    let subtype = ct.subtype().unwrap_or_default();
    match (ct.ctype(), subtype) {
        ("multipart", "report") => {
            let report_type = ct.attribute("report-type").unwrap_or_default();
            report_type_class(&report_type.trim().to_ascii_lowercase())
        }
        ("message", "delivery-status") => {
            Some(Class::Bounce("bounce: message/delivery-status part".into()))
        }
        _ => None,
    }
}

/// The class for a `report-type` value; `None` for other report kinds.
fn report_type_class(report_type: &str) -> Option<Class> {
    match report_type {
        "delivery-status" => Some(Class::Bounce(
            "bounce: multipart/report delivery-status".into(),
        )),
        "disposition-notification" => Some(Class::AutoReply(
            "auto-reply: multipart/report disposition-notification".into(),
        )),
        _ => None,
    }
}

/// Header signs of a bounce without a machine-readable report.
fn bounce_reason(headers: &[RawHeader<'_>]) -> Option<String> {
    if headers
        .iter()
        .any(|h| h.is("X-Failed-Recipients") && !h.value().is_empty())
    {
        return Some("bounce: X-Failed-Recipients".into());
    }
    if let Some(local) = headers
        .iter()
        .filter(|h| h.is("From"))
        .find_map(daemon_local_part)
    {
        return Some(format!("bounce: From {local}"));
    }
    let return_path = headers.iter().find(|h| h.is("Return-Path"))?;
    is_null_path(&return_path.value()).then(|| "bounce: null Return-Path".into())
}

/// `mailer-daemon` or `postmaster` when a From address has that local part.
fn daemon_local_part(from: &RawHeader<'_>) -> Option<&'static str> {
    let HeaderValue::Address(address) = MessageStream::new(from.raw).parse_address() else {
        return None;
    };
    addresses(&address).into_iter().find_map(|addr| {
        let local = addr.rsplit_once('@').map_or(addr.as_str(), |(l, _)| l);
        let local = local.trim().trim_matches('"');
        ["mailer-daemon", "postmaster"]
            .into_iter()
            .find(|d| local.eq_ignore_ascii_case(d))
    })
}

/// Every address in a list or group, as written.
fn addresses(address: &Address<'_>) -> Vec<String> {
    address
        .iter()
        .filter_map(|a| a.address.as_deref().map(str::to_string))
        .collect()
}

/// `<>` or `<<>>`, ignoring spaces and comments.
fn is_null_path(value: &str) -> bool {
    let compact: String = strip_comments(value)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    compact == "<>" || compact == "<<>>"
}

/// A header name and the test its (unfolded) value must pass to fire.
type Signal = (&'static str, fn(&str) -> bool);

/// Header signs of an automatic answer, checked in this order.
const AUTO_REPLY_SIGNALS: [Signal; 12] = [
    ("Auto-Submitted", is_auto_submitted),
    ("X-Autoreply", is_vendor_yes),
    ("X-Autorespond", is_vendor_yes),
    ("X-Autoresponse", is_vendor_yes),
    ("X-AutoReply-From", is_vendor_yes),
    ("X-Mail-Autoreply", is_vendor_yes),
    ("X-Autoresponder", is_vendor_yes),
    ("X-Autogenerated", |v| first_token(v) == "reply"),
    ("X-Apple-Action", |v| first_token(v) == "vacation"),
    (
        "X-MS-Exchange-Generated-Message-Source",
        is_mailbox_rules_agent,
    ),
    ("Precedence", is_auto_precedence),
    ("X-Precedence", is_auto_precedence),
];

/// The first auto-reply signal the headers carry, as a reason.
fn auto_reply_reason(headers: &[RawHeader<'_>]) -> Option<String> {
    AUTO_REPLY_SIGNALS.iter().find_map(|&(name, fires)| {
        let value = headers
            .iter()
            .filter(|h| h.is(name))
            .map(RawHeader::value)
            .find(|v| fires(v))?;
        Some(format!("auto-reply: {name}: {}", reason_value(&value)))
    })
}

/// RFC 3834: any `Auto-Submitted` value but `no` marks machine mail.
fn is_auto_submitted(value: &str) -> bool {
    !matches!(first_token(value).as_str(), "" | "no")
}

/// A vendor autoreply header with a value other than a plain "no".
fn is_vendor_yes(value: &str) -> bool {
    !matches!(first_token(value).as_str(), "" | "no" | "false" | "0")
}

/// Exchange's mark on out-of-office and rule replies.
fn is_mailbox_rules_agent(value: &str) -> bool {
    strip_comments(value)
        .trim()
        .eq_ignore_ascii_case("Mailbox Rules Agent")
}

/// `Precedence` values that mean machine or mass mail (`list` is not one).
fn is_auto_precedence(value: &str) -> bool {
    matches!(
        first_token(value).as_str(),
        "auto_reply" | "auto-reply" | "bulk" | "junk"
    )
}

/// A header value made safe and short for the journal.
fn reason_value(value: &str) -> String {
    let clean: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if clean.chars().count() <= REASON_VALUE_MAX {
        return clean;
    }
    let cut: String = clean.chars().take(REASON_VALUE_MAX).collect();
    format!("{cut}...")
}

/// The first word of a header value, comments removed, lowercased.
///
/// `auto-replied (zimbra; vacation)` and `auto-replied; owner-email="x"`
/// both give `auto-replied`.
fn first_token(value: &str) -> String {
    strip_comments(value)
        .split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .find(|t| !t.is_empty())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The value with RFC 5322 comments (nested parentheses) removed.
fn strip_comments(value: &str) -> Cow<'_, str> {
    if !value.contains('(') {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut depth = 0usize;
    let mut escaped = false;
    for c in value.chars() {
        match (depth, c) {
            (_, _) if escaped => escaped = false,
            (d, '\\') if d > 0 => escaped = true,
            (_, '(') => depth += 1,
            (d, ')') if d > 0 => depth -= 1,
            (0, c) => out.push(c),
            _ => {}
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    const OWN: &str = "support@vendor.example";

    fn class_of(raw: &str) -> Class {
        let msg = MessageParser::default()
            .parse(raw.as_bytes())
            .expect("parses");
        classify(&msg, OWN)
    }

    fn person(headers: &str) -> String {
        format!(
            "From: Jean Tremblay <jean@sunnyvale.example>\r\n\
             To: support@vendor.example\r\n\
             Subject: printer on floor 2\r\n\
             Message-ID: <a1@sunnyvale.example>\r\n\
             {headers}\r\n\
             The printer is jammed again.\r\n"
        )
    }

    fn assert_auto(raw: &str) {
        let class = class_of(raw);
        assert!(matches!(class, Class::AutoReply(_)), "{class:?}");
    }

    fn assert_bounce(raw: &str) {
        let class = class_of(raw);
        assert!(matches!(class, Class::Bounce(_)), "{class:?}");
    }

    #[test]
    fn plain_mail_is_a_person() {
        assert_eq!(class_of(&person("")), Class::Person);
    }

    #[test]
    fn x_auto_response_suppress_alone_is_a_person() {
        let raw = person("X-Auto-Response-Suppress: All\r\n");
        assert_eq!(class_of(&raw), Class::Person);
        let raw = person("X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply\r\n");
        assert_eq!(class_of(&raw), Class::Person);
    }

    #[test]
    fn inbox_rules_loop_alone_is_a_person() {
        let raw = person("X-MS-Exchange-Inbox-Rules-Loop: jean@sunnyvale.example\r\n");
        assert_eq!(class_of(&raw), Class::Person);
    }

    #[test]
    fn auto_submitted_no_is_a_person() {
        assert_eq!(class_of(&person("Auto-Submitted: no\r\n")), Class::Person);
        assert_eq!(
            class_of(&person("Auto-Submitted: No (human)\r\n")),
            Class::Person
        );
    }

    #[test]
    fn out_of_office_subject_alone_is_a_person() {
        let raw = person("").replace("printer on floor 2", "Out of Office: back Monday?");
        assert_eq!(class_of(&raw), Class::Person);
    }

    #[test]
    fn precedence_list_is_a_person() {
        assert_eq!(class_of(&person("Precedence: list\r\n")), Class::Person);
    }

    #[test]
    fn auto_submitted_values_with_comments_and_params() {
        for value in [
            "auto-replied",
            "Auto-Replied (zimbra; vacation)",
            "auto-replied; owner-email=\"jean@sunnyvale.example\"",
            "auto-generated (failure)",
            "auto-notified",
            "(note) auto-generated",
        ] {
            assert_auto(&person(&format!("Auto-Submitted: {value}\r\n")));
        }
    }

    #[test]
    fn auto_submitted_reason_names_the_header() {
        let class = class_of(&person("Auto-Submitted: auto-replied\r\n"));
        assert_eq!(
            class,
            Class::AutoReply("auto-reply: Auto-Submitted: auto-replied".into())
        );
    }

    #[test]
    fn exchange_out_of_office() {
        let raw = person(
            "Auto-Submitted: auto-generated\r\n\
             X-Auto-Response-Suppress: All\r\n\
             X-MS-Exchange-Inbox-Rules-Loop: jean@sunnyvale.example\r\n\
             X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent\r\n",
        )
        .replace("printer on floor 2", "Automatic reply: printer on floor 2");
        assert_auto(&raw);
    }

    #[test]
    fn mailbox_rules_agent_alone() {
        assert_auto(&person(
            "X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent\r\n",
        ));
        let raw = person("X-MS-Exchange-Generated-Message-Source: Transport Rule Agent\r\n");
        assert_eq!(class_of(&raw), Class::Person);
    }

    #[test]
    fn vendor_autoreply_headers() {
        for header in [
            "X-Autoreply: yes",
            "X-Autorespond: vacation",
            "X-Autoresponse: yes",
            "X-AutoReply-From: jean@sunnyvale.example",
            "X-Mail-Autoreply: yes",
            "X-Autoresponder: 1",
            "X-Autogenerated: Reply",
            "X-Apple-Action: vacation",
        ] {
            assert_auto(&person(&format!("{header}\r\n")));
        }
        assert_eq!(class_of(&person("X-Autoreply: no\r\n")), Class::Person);
        assert_eq!(
            class_of(&person("X-Autogenerated: Forward\r\n")),
            Class::Person
        );
    }

    #[test]
    fn precedence_values() {
        for header in [
            "Precedence: bulk",
            "Precedence: junk",
            "Precedence: auto_reply",
            "X-Precedence: bulk",
            "Precedence: BULK",
        ] {
            assert_auto(&person(&format!("{header}\r\n")));
        }
        assert_eq!(
            class_of(&person("Precedence: first-class\r\n")),
            Class::Person
        );
    }

    #[test]
    fn own_loop_marker_is_a_loop() {
        let raw = person("X-Podrouter-Loop: Support@Vendor.Example\r\n");
        assert_eq!(class_of(&raw), Class::Loop("loop: X-Podrouter-Loop".into()));
    }

    #[test]
    fn loop_beats_bounce_and_auto_reply() {
        let raw = person(
            "X-Podrouter-Loop: <support@vendor.example>\r\n\
             Auto-Submitted: auto-replied\r\n\
             Return-Path: <>\r\n",
        );
        assert!(matches!(class_of(&raw), Class::Loop(_)));
    }

    #[test]
    fn foreign_loop_marker_is_not_a_loop() {
        let raw = person("X-Podrouter-Loop: help@elsewhere.example\r\n");
        assert_eq!(class_of(&raw), Class::Person);
        let msg = MessageParser::default().parse(raw.as_bytes()).unwrap();
        assert_eq!(classify(&msg, ""), Class::Person);
    }

    #[test]
    fn encoded_loop_marker_is_a_loop() {
        let raw = person("X-Podrouter-Loop: =?utf-8?q?support=40vendor.example?=\r\n");
        assert!(matches!(class_of(&raw), Class::Loop(_)));
    }

    #[test]
    fn null_return_path_is_a_bounce() {
        for value in ["<>", "<<>>", " < > ", "<> (null sender)"] {
            let raw = person(&format!("Return-Path: {value}\r\n"));
            assert_eq!(
                class_of(&raw),
                Class::Bounce("bounce: null Return-Path".into())
            );
        }
        let raw = person("Return-Path: <jean@sunnyvale.example>\r\n");
        assert_eq!(class_of(&raw), Class::Person);
    }

    #[test]
    fn bounce_beats_auto_reply() {
        let raw = person("Return-Path: <>\r\nAuto-Submitted: auto-replied\r\n");
        assert_bounce(&raw);
    }

    #[test]
    fn daemon_senders_are_bounces() {
        for from in [
            "MAILER-DAEMON@mx.sunnyvale.example (Mail Delivery System)",
            "Mail Delivery Subsystem <MAILER-DAEMON>",
            "postmaster@sunnyvale.example",
            "\"Postmaster\" <Postmaster@sunnyvale.example>",
        ] {
            let raw = person("").replace("Jean Tremblay <jean@sunnyvale.example>", from);
            assert_bounce(&raw);
        }
        let raw = person("").replace("jean@", "postmaster-desk@");
        assert_eq!(class_of(&raw), Class::Person);
    }

    #[test]
    fn x_failed_recipients_is_a_bounce() {
        let raw = person("X-Failed-Recipients: nobody@sunnyvale.example\r\n");
        assert_eq!(
            class_of(&raw),
            Class::Bounce("bounce: X-Failed-Recipients".into())
        );
    }

    fn dsn(from: &str, extra: &str) -> String {
        format!(
            "Return-Path: <>\r\n\
             From: {from}\r\n\
             To: support@vendor.example\r\n\
             Subject: Undelivered Mail Returned to Sender\r\n\
             {extra}\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status;\r\n\
             \tboundary=\"B1\"\r\n\
             \r\n\
             --B1\r\n\
             Content-Description: Notification\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             \r\n\
             I'm sorry to have to inform you that your message could not be delivered.\r\n\
             \r\n\
             --B1\r\n\
             Content-Description: Delivery report\r\n\
             Content-Type: message/delivery-status\r\n\
             \r\n\
             Reporting-MTA: dns; mx.vendor.example\r\n\
             \r\n\
             Final-Recipient: rfc822; nobody@sunnyvale.example\r\n\
             Action: failed\r\n\
             Status: 5.1.1\r\n\
             \r\n\
             --B1\r\n\
             Content-Description: Undelivered Message Headers\r\n\
             Content-Type: text/rfc822-headers\r\n\
             \r\n\
             From: support@vendor.example\r\n\
             Subject: your ticket\r\n\
             \r\n\
             --B1--\r\n"
        )
    }

    #[test]
    fn postfix_dsn_is_a_bounce() {
        let raw = dsn(
            "MAILER-DAEMON@mx.vendor.example (Mail Delivery System)",
            "Auto-Submitted: auto-replied\r\n",
        );
        assert_eq!(
            class_of(&raw),
            Class::Bounce("bounce: multipart/report delivery-status".into())
        );
    }

    #[test]
    fn exim_bounce_is_a_bounce() {
        let raw = dsn(
            "Mail Delivery System <Mailer-Daemon@mx.sunnyvale.example>",
            "X-Failed-Recipients: nobody@sunnyvale.example\r\nAuto-Submitted: auto-replied\r\n",
        );
        assert_bounce(&raw);
        // Old Exim: plain text, no report part.
        let raw = "From: Mail Delivery System <Mailer-Daemon@mx.sunnyvale.example>\r\n\
                   To: support@vendor.example\r\n\
                   Subject: Mail delivery failed: returning message to sender\r\n\
                   X-Failed-Recipients: nobody@sunnyvale.example\r\n\
                   Auto-Submitted: auto-replied\r\n\
                   \r\n\
                   This message was created automatically by mail delivery software.\r\n";
        assert_eq!(
            class_of(raw),
            Class::Bounce("bounce: X-Failed-Recipients".into())
        );
    }

    #[test]
    fn exchange_ndr_from_a_client_host_is_a_bounce() {
        // A client's own Exchange sends it as postmaster@ its own domain.
        let raw = dsn(
            "postmaster@sunnyvale.example",
            "X-MS-Exchange-Message-Is-Ndr:\r\nAuto-Submitted: auto-replied\r\nPrecedence: bulk\r\n",
        )
        .replace("Return-Path: <>\r\n", "")
        .replace(
            "report-type=delivery-status",
            "report-type=\"Delivery-Status\"",
        );
        assert_eq!(
            class_of(&raw),
            Class::Bounce("bounce: multipart/report delivery-status".into())
        );
    }

    #[test]
    fn report_nested_in_a_signed_wrapper_counts() {
        let inner = dsn("Mail Delivery System <x@mx.sunnyvale.example>", "");
        let (inner_head, inner_body) = inner.split_once("\r\n\r\n").unwrap();
        let ct = inner_head.split("MIME-Version: 1.0\r\n").nth(1).unwrap();
        let raw = format!(
            "From: Relay <relay@sunnyvale.example>\r\n\
             Subject: report\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"S\"\r\n\
             \r\n\
             --S\r\n\
             {ct}\r\n\
             \r\n\
             {inner_body}\r\n\
             --S\r\n\
             Content-Type: application/pkcs7-signature\r\n\
             \r\n\
             AAAA\r\n\
             --S--\r\n"
        );
        assert_bounce(&raw);
    }

    #[test]
    fn forwarded_dsn_inside_message_rfc822_is_a_person() {
        let forwarded =
            dsn("Mail Delivery System <x@mx.other.example>", "").replace("Return-Path: <>\r\n", "");
        let raw = format!(
            "From: Jean Tremblay <jean@sunnyvale.example>\r\n\
             To: support@vendor.example\r\n\
             Subject: Fwd: Undelivered Mail Returned to Sender\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"F\"\r\n\
             \r\n\
             --F\r\n\
             Content-Type: text/plain\r\n\
             \r\n\
             Why did this bounce?\r\n\
             --F\r\n\
             Content-Type: message/rfc822\r\n\
             \r\n\
             {forwarded}\r\n\
             --F--\r\n"
        );
        assert_eq!(class_of(&raw), Class::Person);
    }

    #[test]
    fn forwarded_auto_reply_headers_do_not_count() {
        let raw = format!(
            "From: Jean Tremblay <jean@sunnyvale.example>\r\n\
             Subject: Fwd: Automatic reply\r\n\
             Content-Type: multipart/mixed; boundary=\"F\"\r\n\
             \r\n\
             --F\r\n\
             Content-Type: message/rfc822\r\n\
             \r\n\
             {}\r\n\
             --F--\r\n",
            person("Auto-Submitted: auto-replied\r\nReturn-Path: <>\r\n")
        );
        assert_eq!(class_of(&raw), Class::Person);
    }

    #[test]
    fn read_receipt_is_an_auto_reply() {
        let raw = "From: Jean Tremblay <jean@sunnyvale.example>\r\n\
                   Return-Path: <>\r\n\
                   Subject: Read: printer\r\n\
                   Content-Type: multipart/report; report-type=disposition-notification; boundary=\"R\"\r\n\
                   \r\n\
                   --R\r\n\
                   Content-Type: text/plain\r\n\
                   \r\n\
                   Your message was read.\r\n\
                   --R\r\n\
                   Content-Type: message/disposition-notification\r\n\
                   \r\n\
                   Disposition: manual-action/MDN-sent-manually; displayed\r\n\
                   --R--\r\n";
        assert_eq!(
            class_of(raw),
            Class::AutoReply("auto-reply: multipart/report disposition-notification".into())
        );
    }

    #[test]
    fn odd_input_never_panics() {
        let inputs: [&[u8]; 6] = [
            b"",
            b"\r\n\r\n",
            b"From:\r\nAuto-Submitted:\r\nReturn-Path:\r\nX-Podrouter-Loop:\r\n\r\nx",
            b"From: \xff\xfe <\xc3@\x80>\r\nPrecedence: \xff\r\n\r\n",
            b"Content-Type: multipart/report\r\n\r\n--",
            b"X-Precedence: (((bulk\r\nAuto-Submitted: \\(\r\n\r\n",
        ];
        for raw in inputs {
            if let Some(msg) = MessageParser::default().parse(raw) {
                let _ = classify(&msg, OWN);
            }
        }
        let _ = classify(&Message::default(), OWN);
        let huge = format!("Precedence: {}\r\n\r\nx", "b".repeat(100_000));
        assert_eq!(class_of(&huge), Class::Person);
    }

    #[test]
    fn reason_values_are_short_and_clean() {
        let raw = person(&format!("Auto-Submitted: auto-{}\r\n", "x".repeat(200)));
        let Class::AutoReply(reason) = class_of(&raw) else {
            panic!("not an auto-reply");
        };
        assert!(reason.len() < 100, "{reason}");
    }

    #[test]
    fn strip_comments_handles_nesting_and_escapes() {
        assert_eq!(strip_comments("a (b (c) d) e"), "a  e");
        assert_eq!(strip_comments("a (b \\) c) d"), "a  d");
        assert_eq!(strip_comments("a (unclosed"), "a ");
        assert_eq!(first_token("  (x) Auto-Replied;y"), "auto-replied");
    }

    /// Header-ish pieces mixed with arbitrary bytes, for the no-panic property.
    fn tricky_message() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..30),
            Just(b"Return-Path: <>\r\n".to_vec()),
            Just(b"From: MAILER-DAEMON\r\n".to_vec()),
            Just(b"Auto-Submitted: (\r\n".to_vec()),
            Just(b"X-Podrouter-Loop: =?utf-8?q?=\r\n".to_vec()),
            Just(
                b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n"
                    .to_vec()
            ),
            Just(b"Content-Type: message/rfc822\r\n".to_vec()),
            Just(b"\r\n--b\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
        ];
        prop::collection::vec(piece, 0..25).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn classify_never_panics(raw in tricky_message()) {
            if let Some(msg) = MessageParser::default().parse(&raw) {
                let _ = classify(&msg, OWN);
            }
        }
    }
}
