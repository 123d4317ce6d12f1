//! Voicemail notifications: telling them apart, and reading the caller.
//!
//! A PBX mails each voicemail to the support inbox. Such a message is
//! routed by the number of whoever called, not by who sent it: the sender
//! is the PBX, and a PBX whose address happens to sit in a client's domain
//! says nothing about the caller. [`detect`] says whether a message is a
//! voicemail notification and, if so, who called.
//!
//! A message is voicemail when its From (or Sender) is one of
//! `voicemail.senders` (an address, or a domain with its subdomains), when it carries Asterisk's `X-Asterisk-*` headers,
//! or when Exchange UM's `X-CallingTelephoneNumber` holds a dialable
//! number (Outlook's recall messages put `IPM.Note` there).
//!
//! The caller's number is looked for in this order, and the first place
//! that holds a value decides (a value such as `anonymous` included):
//!
//! 1. `voicemail.pattern` over `voicemail.field`, when configured;
//! 2. the headers `X-Asterisk-CallerID`, `X-Asterisk-VM-Caller-ID-Num`,
//!    and `X-CallingTelephoneNumber` when dialable;
//! 3. the Subject: FreeSWITCH's `Voicemail from "Name" <number>` (and its
//!    older `12 sec Voicemail from Name number`), 3CX's `New Voicemail
//!    from <number> - <name>`;
//! 4. the first text part (its first [`BODY_SCAN_MAX`] bytes): a `From:`
//!    line (FreePBX, FreeSWITCH, 3CX), else `Name <digits>` (Asterisk);
//! 5. an attachment named like 3CX's `vmail_<number>_<ext>_<stamp>.wav`.
//!
//! Every regex runs in linear time over bounded input, so no message can
//! make this slow.

use std::sync::LazyLock;

use mail_parser::parsers::MessageStream;
use mail_parser::{HeaderValue, Message, MimeHeaders, PartType};
use regex::Regex;

use crate::address::domain_of;
use crate::config::{Config, VoicemailConfig, VoicemailField};
use crate::phone::{self, CallerId};

/// How much of the first text part is scanned for a number, in bytes.
pub const BODY_SCAN_MAX: usize = 64 * 1024;

/// How much of a header or the Subject is scanned, in bytes.
const HEADER_SCAN_MAX: usize = 4 * 1024;

/// How many attachments' names are looked at.
const ATTACHMENTS_MAX: usize = 16;

/// The caller-ID headers, most specific first. `X-CallingTelephoneNumber`
/// counts only when it holds a dialable number.
const CALLER_HEADERS: [&str; 3] = [
    "X-Asterisk-CallerID",
    "X-Asterisk-VM-Caller-ID-Num",
    EXCHANGE_HEADER,
];

/// Exchange UM's caller header; Outlook recalls set it to `IPM.Note`.
const EXCHANGE_HEADER: &str = "X-CallingTelephoneNumber";

/// A voicemail notification's caller, and where it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voicemail {
    /// The caller: a number in E.164, or why there is none.
    pub caller: CallerId,
    /// Where the caller was found (`X-Asterisk-CallerID`, `subject`, ...),
    /// or `nowhere`.
    pub found_in: &'static str,
}

/// Whether the message is a voicemail notification, and who called.
///
/// `sender` is the normalised address [`crate::sender::find`] returned.
pub fn detect(config: &Config, msg: &Message<'_>, sender: Option<&str>) -> Option<Voicemail> {
    let settings = config.voicemail.as_ref();
    if !is_voicemail(msg, settings, sender) {
        return None;
    }
    let region = config.default_region.as_deref();
    let Some((raw, found_in)) = find_caller(msg, settings) else {
        return Some(Voicemail {
            caller: CallerId::Withheld("no caller number in the notification".into()),
            found_in: "nowhere",
        });
    };
    Some(Voicemail {
        caller: phone::read_caller(&raw, region),
        found_in,
    })
}

/// A configured PBX sender, Asterisk's headers, or Exchange UM's header
/// with a dialable number.
fn is_voicemail(
    msg: &Message<'_>,
    settings: Option<&VoicemailConfig>,
    sender: Option<&str>,
) -> bool {
    let listed = settings.zip(sender).is_some_and(|(v, s)| is_listed(v, s));
    listed
        || top_header_names(msg).any(|n| starts_with_ignore_case(n, "X-Asterisk-"))
        || header(msg, EXCHANGE_HEADER).is_some_and(|v| is_dialable(&v))
}

/// Whether a sender is a listed PBX address or sits in a listed domain.
fn is_listed(v: &VoicemailConfig, sender: &str) -> bool {
    let domain = domain_of(sender);
    v.senders.iter().any(|p| p == sender)
        || v.sender_domains.iter().any(|d| {
            domain == d
                || domain
                    .strip_suffix(d.as_str())
                    .is_some_and(|sub| sub.ends_with('.'))
        })
}

/// The caller as written, and where: the first place that holds a value.
fn find_caller(
    msg: &Message<'_>,
    settings: Option<&VoicemailConfig>,
) -> Option<(String, &'static str)> {
    if let Some(found) = settings.and_then(|v| configured(msg, v)) {
        return Some((found, "voicemail.pattern"));
    }
    CALLER_HEADERS
        .iter()
        .find_map(|&name| caller_header(msg, name).map(|v| (v, name)))
        .or_else(|| {
            msg.subject()
                .and_then(subject_caller)
                .map(|v| (v, "subject"))
        })
        .or_else(|| body_caller(msg).map(|v| (v, "body")))
        .or_else(|| attachment_caller(msg).map(|v| (v, "attachment name")))
}

/// The site's own pattern over its field.
fn configured(msg: &Message<'_>, v: &VoicemailConfig) -> Option<String> {
    let re = v.pattern.as_ref()?;
    let text = match &v.field {
        VoicemailField::Subject => msg.subject().map(|s| cap(s, HEADER_SCAN_MAX).to_string()),
        VoicemailField::Body => first_text(msg).map(str::to_string),
        VoicemailField::Header(name) => header(msg, name),
    }?;
    capture(re, &text)
}

/// The `number` group of a match, else its first group.
fn capture(re: &Regex, text: &str) -> Option<String> {
    let caps = re.captures(text)?;
    let m = caps.name("number").or_else(|| caps.get(1))?;
    Some(m.as_str().to_string())
}

/// A caller-ID header's value; Exchange's only when dialable.
fn caller_header(msg: &Message<'_>, name: &str) -> Option<String> {
    let value = header(msg, name)?;
    let usable = if name == EXCHANGE_HEADER {
        is_dialable(&value)
    } else {
        !value.trim().is_empty()
    };
    usable.then_some(value)
}

/// Whether a value is a number one could dial: digits with the usual
/// punctuation, and at least three digits.
fn is_dialable(value: &str) -> bool {
    let v = value.trim();
    let v = v.strip_prefix("tel:").unwrap_or(v);
    v.bytes().filter(u8::is_ascii_digit).count() >= 3
        && v.bytes()
            .all(|b| b.is_ascii_digit() || b" +-().".contains(&b))
}

/// The caller in a FreeSWITCH or 3CX subject.
fn subject_caller(subject: &str) -> Option<String> {
    static FREESWITCH: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#"(?i)voicemail from\b[^<]*<([^<>]*)>"#).expect("valid"));
    static FREESWITCH_OLD: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)\bsec voicemail from\b.*?(\+?[0-9][0-9 ().-]{5,}[0-9])\s*$")
            .expect("valid")
    });
    static THREECX: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)^\s*new voicemail from\s+(\S(?:.*?\S)?)\s+-(?:\s|$)").expect("valid")
    });
    let subject = cap(subject, HEADER_SCAN_MAX);
    [&*FREESWITCH, &*FREESWITCH_OLD, &*THREECX]
        .iter()
        .find_map(|re| capture(re, subject))
}

/// The caller in the first text part: a `From:` line, else `Name <digits>`.
fn body_caller(msg: &Message<'_>) -> Option<String> {
    static FROM_LINE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?im)^[ \t]*From:[ \t]*([^\r\n]*?)[ \t]*\r?$").expect("valid")
    });
    static NAME_NUMBER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"<(\+?[0-9][0-9 ().-]{1,24})>").expect("valid"));
    let text = first_text(msg)?;
    capture(&FROM_LINE, text)
        .filter(|v| !v.is_empty())
        .or_else(|| capture(&NAME_NUMBER, text))
}

/// The number in a 3CX attachment name, `vmail_<number>_<ext>_<stamp>.wav`.
fn attachment_caller(msg: &Message<'_>) -> Option<String> {
    static VMAIL: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i)^vmail_(\+?[0-9]{3,20})_").expect("valid"));
    msg.attachments()
        .take(ATTACHMENTS_MAX)
        .filter_map(|a| a.attachment_name())
        .find_map(|name| capture(&VMAIL, cap(name, HEADER_SCAN_MAX)))
}

/// The first text part, at most [`BODY_SCAN_MAX`] bytes of it. Only a
/// `text/plain` part: an HTML part would first have to be converted whole.
fn first_text<'m>(msg: &'m Message<'_>) -> Option<&'m str> {
    let part = msg.text_part(0)?;
    match &part.body {
        PartType::Text(text) => Some(cap(text, BODY_SCAN_MAX)),
        _ => None,
    }
}

/// The first top-level header of that name, unfolded, RFC 2047 words
/// decoded, at most [`HEADER_SCAN_MAX`] bytes.
fn header(msg: &Message<'_>, name: &str) -> Option<String> {
    let root = msg.parts.first()?;
    let h = root
        .headers
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(name))?;
    let raw = msg
        .raw_message
        .get(h.offset_start as usize..h.offset_end as usize)?;
    let raw = &raw[..raw.len().min(HEADER_SCAN_MAX)];
    let text = if raw.windows(2).any(|w| w == b"=?") {
        match MessageStream::new(raw).parse_unstructured() {
            HeaderValue::Text(t) => t.into_owned(),
            _ => String::from_utf8_lossy(raw).into_owned(),
        }
    } else {
        String::from_utf8_lossy(raw).into_owned()
    };
    let unfolded: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    Some(unfolded.trim().to_string())
}

/// The names of the top-level headers.
fn top_header_names<'m>(msg: &'m Message<'_>) -> impl Iterator<Item = &'m str> {
    msg.parts
        .first()
        .into_iter()
        .flat_map(|p| p.headers.iter().map(|h| h.name.as_str()))
}

/// ASCII case-insensitive `starts_with`.
fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use mail_parser::MessageParser;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[routing]\ndefault_region = \"CA\"\n\
             [pods.east]\nmembers = [\"ana@vendor.example\"]\n{extra}"
        );
        crate::config::from_str(&text, Path::new("t.toml")).expect("valid")
    }

    fn detect_in(config: &Config, raw: &str) -> Option<Voicemail> {
        let msg = MessageParser::default()
            .parse(raw.as_bytes())
            .expect("parses");
        let sender = crate::sender::find(&msg).map(|s| s.address);
        detect(config, &msg, sender.as_deref())
    }

    fn caller(config: &Config, raw: &str) -> CallerId {
        detect_in(config, raw).expect("is voicemail").caller
    }

    fn number(n: &str) -> CallerId {
        CallerId::Number(n.into())
    }

    const PBX: &str = "[voicemail]\nsenders = [\"PBX@pbx.example\"]\n";

    fn from_pbx(headers: &str, body: &str) -> String {
        format!("From: PBX <pbx@pbx.example>\r\nTo: support@vendor.example\r\n{headers}\r\n{body}")
    }

    #[test]
    fn asterisk_headers_make_voicemail_without_config() {
        let c = config("");
        let raw = "From: Asterisk PBX <asterisk@pbx.example>\r\n\
                   Subject: [PBX]: New message 1 in mailbox 100\r\n\
                   X-Asterisk-CallerID: 4035550100\r\n\r\nDear support\r\n";
        let vm = detect_in(&c, raw).unwrap();
        assert_eq!(vm.caller, number("+14035550100"));
        assert_eq!(vm.found_in, "X-Asterisk-CallerID");
        let raw = "From: PBX <p@pbx.example>\r\nX-Asterisk-VM-Caller-ID-Num: 14035550100\r\n\r\nx";
        assert_eq!(caller(&c, raw), number("+14035550100"));
    }

    #[test]
    fn plain_mail_is_not_voicemail() {
        let c = config(PBX);
        let raw = "From: Jane <jane@town.example>\r\nSubject: Voicemail from \"J\" <4035550100>\r\n\r\nFrom: 4035550100\r\n";
        assert!(detect_in(&c, raw).is_none());
    }

    #[test]
    fn exchange_header_only_when_dialable() {
        let c = config("");
        let raw =
            "From: UM <um@town.example>\r\nX-CallingTelephoneNumber: +1 403 555 0100\r\n\r\nx";
        assert_eq!(caller(&c, raw), number("+14035550100"));
        let recall =
            "From: Jane <jane@town.example>\r\nX-CallingTelephoneNumber: IPM.Note\r\n\r\nx";
        assert!(detect_in(&c, recall).is_none());
        // From a listed PBX, a recall value is skipped, not read.
        let c = config(PBX);
        let raw = from_pbx(
            "X-CallingTelephoneNumber: IPM.Note\r\n",
            "From: 4035550100\r\n",
        );
        assert_eq!(caller(&c, &raw), number("+14035550100"));
    }

    #[test]
    fn a_listed_domain_covers_its_subdomains_only() {
        let c = config("[voicemail]\nsenders = [\"pbx.example\"]\n");
        let raw = "From: \"Jane\" <4035550100@pbx.example>\r\nSubject: Voicemail from \"Jane\" <4035550100> 00:00:12\r\n\r\nx";
        assert_eq!(caller(&c, raw), number("+14035550100"));
        let raw = raw.replace("@pbx.example", "@sip.pbx.example");
        assert_eq!(caller(&c, &raw), number("+14035550100"));
        let raw = raw.replace("@sip.pbx.example", "@notpbx.example");
        assert!(detect_in(&c, &raw).is_none());
    }

    #[test]
    fn freeswitch_subjects() {
        let c = config(PBX);
        let raw = from_pbx(
            "Subject: Voicemail from \"Jane Doe\" <4035550100> 00:00:12\r\n",
            "hello\r\n",
        );
        assert_eq!(caller(&c, &raw), number("+14035550100"));
        let raw = from_pbx(
            "Subject: 12 sec Voicemail from Jane Doe 403 555 0100\r\n",
            "hello\r\n",
        );
        assert_eq!(caller(&c, &raw), number("+14035550100"));
    }

    #[test]
    fn threecx_subject_body_and_attachment() {
        let c = config(PBX);
        let raw = from_pbx(
            "Subject: New Voicemail from 4035550100 - 4035550100\r\n",
            "x\r\n",
        );
        assert_eq!(caller(&c, &raw), number("+14035550100"));
        let raw = from_pbx(
            "Subject: New voicemail\r\n",
            "Hi\r\nFrom: 4035550100\r\nTo: \"100\"\r\n",
        );
        assert_eq!(caller(&c, &raw), number("+14035550100"));
        let raw = from_pbx(
            "Subject: New voicemail\r\nContent-Type: multipart/mixed; boundary=b\r\n",
            "--b\r\nContent-Type: text/plain\r\n\r\nYou have a message\r\n--b\r\n\
             Content-Type: audio/wav\r\nContent-Disposition: attachment; \
             filename=\"vmail_4035550100_100_20261119065214.wav\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nUklGRg==\r\n--b--\r\n",
        );
        let vm = detect_in(&c, &raw).unwrap();
        assert_eq!(vm.caller, number("+14035550100"));
        assert_eq!(vm.found_in, "attachment name");
    }

    #[test]
    fn freepbx_body_from_line() {
        let c = config(PBX);
        let raw = from_pbx(
            "Subject: PBX Voicemail Notification\r\n",
            "Support,\r\n\r\nThere is a new voicemail in mailbox 200:\r\n\r\n\
             \tFrom:\t\"Jane Doe\" <4035550100>\r\n\tLength:\t0:41 seconds\r\n",
        );
        assert_eq!(caller(&c, &raw), number("+14035550100"));
    }

    #[test]
    fn no_number_words_and_extensions_are_withheld() {
        let c = config(PBX);
        for value in [
            "anonymous",
            "an unknown caller",
            "Restricted",
            "201",
            "+266696687",
        ] {
            let raw = from_pbx(&format!("X-Asterisk-CallerID: {value}\r\n"), "x\r\n");
            assert!(matches!(caller(&c, &raw), CallerId::Withheld(_)), "{value}");
        }
        let raw = from_pbx("Subject: New message\r\n", "nothing here\r\n");
        let vm = detect_in(&c, &raw).unwrap();
        assert!(matches!(vm.caller, CallerId::Withheld(_)));
        assert_eq!(vm.found_in, "nowhere");
    }

    #[test]
    fn a_configured_pattern_comes_first() {
        let c = config(
            "[voicemail]\nsenders = [\"pbx@pbx.example\"]\n\
             pattern = 'Caller: (?P<number>[0-9+ -]+)'\nfield = \"body\"\n",
        );
        let raw = from_pbx("X-Asterisk-CallerID: 201\r\n", "Caller: 403 555 0100\r\n");
        let vm = detect_in(&c, &raw).unwrap();
        assert_eq!(vm.caller, number("+14035550100"));
        assert_eq!(vm.found_in, "voicemail.pattern");

        let c = config(
            "[voicemail]\nsenders = [\"pbx@pbx.example\"]\n\
             pattern = '^(\\d+)$'\nfield = \"header:X-Caller\"\n",
        );
        let raw = from_pbx("X-Caller: 4035550100\r\n", "x\r\n");
        assert_eq!(caller(&c, &raw), number("+14035550100"));
        // No match: the built-in formats still apply.
        let raw = from_pbx("X-Caller: none\r\n", "From: 4035550100\r\n");
        assert_eq!(caller(&c, &raw), number("+14035550100"));
    }

    #[test]
    fn only_the_first_64_kib_of_the_body_is_read() {
        let c = config(PBX);
        let filler = "x".repeat(BODY_SCAN_MAX + 10);
        let raw = from_pbx(
            "Subject: hi\r\n",
            &format!("{filler}\r\nFrom: 4035550100\r\n"),
        );
        assert!(matches!(caller(&c, &raw), CallerId::Withheld(_)));
    }

    #[test]
    fn cap_cuts_at_a_character_boundary() {
        assert_eq!(cap("aé", 2), "a");
        assert_eq!(cap("abc", 5), "abc");
    }
}
