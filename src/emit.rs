//! Builds the exact bytes relayed to a pod.
//!
//! [`relay_bytes`] works on the raw header block, never re-serialising
//! through a MIME library, so the body and every header it does not touch
//! stay byte for byte as they came, apart from line endings. The output is
//! the DATA content before SMTP dot-stuffing (lettre does that).
//!
//! What changes:
//!
//! - Trace headers naming the pod, client and rule, plus our loop marker
//!   ([`LOOP_HEADER`]), go on top. Any `X-Podrouter-*` header already in the
//!   message is removed first, so a sender cannot forge them.
//! - [`FromMode::Rewrite`]: From becomes `"<sender> via <pod name>"
//!   <relay.from>`, the original From moves to `X-Original-From` (any
//!   `X-Original-From` the sender wrote is dropped), Reply-To is kept or,
//!   when absent, set to the original From, and `DKIM-Signature` headers
//!   are dropped (the rewrite breaks them).
//! - [`FromMode::Keep`]: nothing else changes.
//! - Every line ends in CRLF: a bare LF or a bare CR ends a line too, so no
//!   `\n.\n` or `\r\n.\r` trick can end SMTP DATA early.
//!
//! Headers we compose are pure ASCII, each line at most 998 characters and
//! folded near 76. A display name that is not plain ASCII becomes RFC 2047
//! encoded-words; control characters in names are dropped. Values copied
//! from the original From (into `X-Original-From` and `Reply-To`) keep the
//! sender's bytes, refolded.
//!
//! The bytes are meant for [`Action::Relay`](crate::engine::Action::Relay);
//! for another action they are built the same way, and trace headers whose
//! value is missing (no pod, client or rule) are left out.

use crate::config::FromMode;
use crate::engine::Decision;

/// The loop marker header; its value is `relay.from`.
pub const LOOP_HEADER: &str = "X-Podrouter-Loop";

/// On a relayed copy whose thread and table disagree about the pod: a
/// note naming the other pod.
pub const MOVED_HEADER: &str = "X-Podrouter-Moved";

/// On a relayed pod member's reply (or internal mail): who wrote it.
pub const REPLY_BY_HEADER: &str = "X-Podrouter-Reply-By";

/// On an escalated copy: how long the thread waited, e.g.
/// `unanswered for 4h`.
pub const ESCALATED_HEADER: &str = "X-Podrouter-Escalated";

/// Every header with this prefix is ours; incoming ones are removed.
const TRACE_PREFIX: &str = "X-Podrouter-";

/// Fold generated lines once they would pass this length (RFC 2047's 76).
const SOFT_LINE: usize = 76;

/// Never let a generated line pass this length (RFC 5322's 998).
const HARD_LINE: usize = 998;

/// The longest encoded-word we write (RFC 2047 allows 75).
const MAX_WORD: usize = 66;

/// The longest display name we keep from a sender, in characters.
const MAX_NAME_CHARS: usize = 200;

/// The encoded-word frame: `=?UTF-8?Q?` and `?=`.
const WORD_OPEN: &str = "=?UTF-8?Q?";
const WORD_CLOSE: &str = "?=";

/// What [`relay_bytes`] needs besides the message and its decision.
#[derive(Clone, Copy, Debug)]
pub struct EmitOptions<'a> {
    /// Rewrite From to our address, or keep it.
    pub from_mode: FromMode,
    /// `relay.from`: the From of rewritten mail and the loop marker value.
    pub relay_from: &'a str,
    /// The pod's human name, shown in the rewritten From.
    pub pod_name: &'a str,
}

/// Builds the DATA bytes relayed to a pod (before dot-stuffing).
pub fn relay_bytes(raw: &[u8], decision: &Decision, opts: &EmitOptions<'_>) -> Vec<u8> {
    // The header block is split once into lines; the body is streamed
    // line by line, never held as a list (a 50 MB attachment is 700,000
    // lines). In the body a lone CR ends a line; in the header block it
    // stays inside its line (and is written as a space), so it can never
    // start a header line of its own.
    let (head, body_start) = split_message(raw);
    let fields = parse_fields(&head);
    let mut out = Vec::with_capacity(raw.len() + 1024);

    // Our trace headers first, then the sender's headers.
    write_trace(&mut out, decision, opts);
    match opts.from_mode {
        FromMode::Keep => write_kept(&mut out, &fields),
        FromMode::Rewrite => write_rewritten(&mut out, &fields, decision, opts),
    }

    // The body, line by line, each ending in CRLF.
    if let Some(at) = body_start {
        out.extend_from_slice(b"\r\n");
        for line in Lines::new(&raw[at..], LoneCr::Breaks) {
            push_line(&mut out, line);
        }
    }
    out
}

/// A relayed copy sent again because its thread went unanswered: the
/// mark in [`ESCALATED_HEADER`] and in front of the subject, and a new
/// Message-ID (`new_id`, without brackets) so mail clients that drop
/// repeated Message-IDs still show it. Everything else stays as relayed.
pub fn escalation_bytes(copy: &[u8], label: &str, new_id: &str) -> Vec<u8> {
    let lines = split_lines(copy, LoneCr::Joins);
    let (head, body) = split_head(&lines);
    let fields = parse_fields(head);
    let mut out = Vec::with_capacity(copy.len() + 256);
    push_header(&mut out, ESCALATED_HEADER, &unstructured(label));
    let mut has_subject = false;
    for field in &fields {
        if field.is(ESCALATED_HEADER) {
            continue;
        } else if field.is("Message-ID") {
            push_header(
                &mut out,
                "Message-ID",
                format!("<{}>", clean_address(new_id)).as_bytes(),
            );
        } else if field.is("Subject") {
            has_subject = true;
            let mut value = format!("[{}] ", clean_text(label)).into_bytes();
            value.extend_from_slice(&field.value());
            push_header(&mut out, "Subject", &value);
        } else {
            push_field(&mut out, field);
        }
    }
    if !has_subject {
        push_header(
            &mut out,
            "Subject",
            format!("[{}]", clean_text(label)).as_bytes(),
        );
    }
    if !fields.iter().any(|f| f.is("Message-ID")) {
        push_header(
            &mut out,
            "Message-ID",
            format!("<{}>", clean_address(new_id)).as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    for line in body.unwrap_or(&[]) {
        push_line(&mut out, line);
    }
    out
}

/// What a CR that is not followed by LF does when splitting lines.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LoneCr {
    /// It ends a line (the body).
    Breaks,
    /// It stays inside the line (the header block).
    Joins,
}

/// The lines of a byte string, split at CRLF, bare LF and (with
/// [`LoneCr::Breaks`]) bare CR; a final terminator adds no empty line.
struct Lines<'b> {
    raw: &'b [u8],
    /// Where the next line starts: just past the last terminator.
    at: usize,
    lone_cr: LoneCr,
}

impl<'b> Lines<'b> {
    fn new(raw: &'b [u8], lone_cr: LoneCr) -> Self {
        Lines {
            raw,
            at: 0,
            lone_cr,
        }
    }
}

impl<'b> Iterator for Lines<'b> {
    type Item = &'b [u8];

    fn next(&mut self) -> Option<&'b [u8]> {
        let start = self.at;
        if start >= self.raw.len() {
            return None;
        }
        let mut i = start;
        while let Some(&b) = self.raw.get(i) {
            let end = match b {
                b'\n' => i + 1,
                b'\r' if self.raw.get(i + 1) == Some(&b'\n') => i + 2,
                b'\r' if self.lone_cr == LoneCr::Breaks => i + 1,
                _ => {
                    i += 1;
                    continue;
                }
            };
            self.at = end;
            return Some(&self.raw[start..i]);
        }
        self.at = self.raw.len();
        Some(&self.raw[start..])
    }
}

/// Splits at CRLF, bare LF and (with [`LoneCr::Breaks`]) bare CR; a final
/// terminator adds no empty line.
fn split_lines(raw: &[u8], lone_cr: LoneCr) -> Vec<&[u8]> {
    Lines::new(raw, lone_cr).collect()
}

/// Whether `raw` opens with a header field (or is empty, or has an empty
/// header block). Mail that opens with anything else (an mbox `From `
/// line, an indented first header) is all body to [`relay_bytes`], while a
/// lenient parser may still find headers in it, so the engine holds it
/// rather than route by headers the pod would not see as headers.
pub fn starts_with_header(raw: &[u8]) -> bool {
    match Lines::new(raw, LoneCr::Joins).next() {
        Some(first) => first.is_empty() || field_name(first).is_some(),
        None => true,
    }
}

/// The header lines of a message, and where its body starts: the same
/// split as [`split_head`], without listing the body's lines.
fn split_message(raw: &[u8]) -> (Vec<&[u8]>, Option<usize>) {
    let mut lines = Lines::new(raw, LoneCr::Joins);
    let mut head = Vec::new();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return (head, Some(lines.at));
        }
        if head.is_empty() && field_name(line).is_none() {
            // The first line is not a header field: all of it is body.
            return (Vec::new(), Some(0));
        }
        head.push(line);
    }
    (head, None)
}

/// The header lines, and the body lines after the first empty line.
///
/// A message whose first line is not a header field has no header block:
/// all of it is body. A message without an empty line has no body.
fn split_head<'a, 'b>(lines: &'a [&'b [u8]]) -> (&'a [&'b [u8]], Option<&'a [&'b [u8]]>) {
    match lines.first() {
        None => (&[], None),
        Some(first) if !first.is_empty() && field_name(first).is_none() => (&[], Some(lines)),
        Some(_) => match lines.iter().position(|l| l.is_empty()) {
            Some(i) => (&lines[..i], Some(&lines[i + 1..])),
            None => (lines, None),
        },
    }
}

/// One header field: its first line and continuation lines.
struct Field<'a, 'b> {
    /// The field name, or `None` for a line that is not a header field.
    name: Option<&'b str>,
    /// The raw lines, without terminators.
    lines: &'a [&'b [u8]],
}

impl Field<'_, '_> {
    /// True when the field has this name (ASCII case-insensitive).
    fn is(&self, name: &str) -> bool {
        self.name.is_some_and(|n| n.eq_ignore_ascii_case(name))
    }

    /// True for our own `X-Podrouter-*` headers.
    fn is_trace(&self) -> bool {
        self.name.is_some_and(|n| {
            n.len() >= TRACE_PREFIX.len()
                && n.as_bytes()[..TRACE_PREFIX.len()].eq_ignore_ascii_case(TRACE_PREFIX.as_bytes())
        })
    }

    /// The value, unfolded (line breaks removed) and trimmed.
    fn value(&self) -> Vec<u8> {
        let mut value = Vec::new();
        for (i, line) in self.lines.iter().enumerate() {
            let part = if i == 0 {
                line.iter()
                    .position(|&b| b == b':')
                    .map_or(&line[..0], |c| &line[c + 1..])
            } else {
                line
            };
            value.extend(part.iter().map(|&b| if b == b'\r' { b' ' } else { b }));
        }
        trim_wsp(&value).to_vec()
    }
}

/// Groups header lines into fields; a line starting with SP or HT continues the last.
fn parse_fields<'a, 'b>(head: &'a [&'b [u8]]) -> Vec<Field<'a, 'b>> {
    let mut fields = Vec::new();
    let mut start = 0;
    for i in 1..=head.len() {
        let continues = head
            .get(i)
            .is_some_and(|l| matches!(l.first(), Some(b' ' | b'\t')));
        if !continues {
            let lines = &head[start..i];
            let name = lines.first().and_then(|l| field_name(l));
            fields.push(Field { name, lines });
            start = i;
        }
    }
    fields
}

/// The name of a header field line (`Name:` or the obsolete `Name :`).
fn field_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = trim_end_wsp(&line[..colon]);
    let valid = !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b));
    valid.then(|| std::str::from_utf8(name).ok()).flatten()
}

/// Writes the trace headers and the loop marker.
fn write_trace(out: &mut Vec<u8>, decision: &Decision, opts: &EmitOptions<'_>) {
    let rule = decision.rule.as_ref().map(ToString::to_string);
    let trace = [
        ("X-Podrouter-Pod", decision.pod.as_deref()),
        ("X-Podrouter-Client", decision.client.as_deref()),
        ("X-Podrouter-Rule", rule.as_deref()),
    ];
    for (name, value) in trace {
        if let Some(value) = value {
            push_header(out, name, &unstructured(value));
        }
    }
    if let Some(note) = &decision.personal.moved {
        push_header(out, MOVED_HEADER, &unstructured(note));
    }
    let member_mail = decision.rule.as_ref().is_some_and(|r| r.is_member_mail());
    if let (true, Some(author)) = (member_mail, decision.sender.as_deref()) {
        push_header(out, REPLY_BY_HEADER, &unstructured(&clean_address(author)));
    }
    push_header(
        out,
        LOOP_HEADER,
        &unstructured(&clean_address(opts.relay_from)),
    );
}

/// Keep mode: the sender's headers minus any `X-Podrouter-*`.
fn write_kept(out: &mut Vec<u8>, fields: &[Field<'_, '_>]) {
    for field in fields.iter().filter(|f| !f.is_trace()) {
        push_field(out, field);
    }
}

/// Rewrite mode: our From in place of the first From, and the headers it implies.
fn write_rewritten(
    out: &mut Vec<u8>,
    fields: &[Field<'_, '_>],
    decision: &Decision,
    opts: &EmitOptions<'_>,
) {
    let original_from = fields
        .iter()
        .find(|f| f.is("From"))
        .map(Field::value)
        .filter(|v| !v.is_empty())
        .map(|v| legacy_from_reencoded(v, decision));
    let has_reply_to = fields
        .iter()
        .any(|f| f.is("Reply-To") && !f.value().is_empty());
    let block = rewritten_from_block(original_from.as_deref(), has_reply_to, decision, opts);

    // Where there is no From at all, our block goes first.
    let mut placed = !fields.iter().any(|f| f.is("From"));
    if placed {
        out.extend_from_slice(&block);
    }
    for field in fields {
        if field.is("From") {
            if !placed {
                out.extend_from_slice(&block);
                placed = true;
            }
        } else if !dropped_on_rewrite(field, has_reply_to) {
            push_field(out, field);
        }
    }
}

/// The original From value, or, when it holds raw 8-bit bytes that are not
/// UTF-8 (legacy software writing Latin-1), the sender rebuilt from its
/// decoded name and address, so the headers we write are all valid.
fn legacy_from_reencoded(value: Vec<u8>, decision: &Decision) -> Vec<u8> {
    let Some(address) = decision.sender.as_deref() else {
        return value;
    };
    if std::str::from_utf8(&value).is_ok() {
        return value;
    }
    let name = decision
        .sender_name
        .as_deref()
        .map(clean_text)
        .unwrap_or_default();
    let address = format!("<{}>", clean_address(address));
    match display_phrase(&name) {
        phrase if phrase.is_empty() => address.into_bytes(),
        phrase => format!("{phrase} {address}").into_bytes(),
    }
}

/// Fields rewrite mode leaves out (besides From, which it replaces).
fn dropped_on_rewrite(field: &Field<'_, '_>, has_reply_to: bool) -> bool {
    field.is_trace()
        || field.is("DKIM-Signature")
        || field.is("X-Original-From")
        || (field.is("Reply-To") && !has_reply_to)
}

/// The new From, `X-Original-From`, and a Reply-To when the message has none.
fn rewritten_from_block(
    original_from: Option<&[u8]>,
    has_reply_to: bool,
    decision: &Decision,
    opts: &EmitOptions<'_>,
) -> Vec<u8> {
    let mut block = Vec::new();
    let phrase = display_phrase(&display_name(decision, opts.pod_name));
    let address = format!("<{}>", clean_address(opts.relay_from));
    let from = if phrase.is_empty() {
        address
    } else {
        format!("{phrase} {address}")
    };
    push_header(&mut block, "From", from.as_bytes());

    if let Some(original) = original_from {
        push_header(&mut block, "X-Original-From", original);
    }
    if !has_reply_to {
        let sender = decision.sender.as_deref().map(clean_address);
        let fallback = sender.filter(|s| !s.is_empty()).map(|s| format!("<{s}>"));
        let reply_to = original_from
            .map(<[u8]>::to_vec)
            .or(fallback.map(String::into_bytes));
        if let Some(reply_to) = reply_to {
            push_header(&mut block, "Reply-To", &reply_to);
        }
    }
    block
}

/// `<sender name or address> via <pod name>`, cleaned.
fn display_name(decision: &Decision, pod_name: &str) -> String {
    let named = decision.sender_name.as_deref().map(clean_text);
    let who = named
        .filter(|n| !n.is_empty())
        .or_else(|| decision.sender.as_deref().map(clean_text))
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.chars()
                .take(MAX_NAME_CHARS)
                .collect::<String>()
                .trim_end()
                .to_string()
        });
    let pod = clean_text(pod_name);
    match (who, pod.is_empty()) {
        (Some(who), false) => format!("{who} via {pod}"),
        (Some(who), true) => who,
        (None, _) => pod,
    }
}

/// A display name as a quoted-string, or as encoded-words when it needs them.
fn display_phrase(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else if needs_encoding(name) {
        encoded_words(name)
    } else {
        let mut quoted = String::with_capacity(name.len() + 2);
        quoted.push('"');
        for c in name.chars() {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        quoted
    }
}

/// An unstructured header value: as is when plain ASCII, else encoded-words.
fn unstructured(value: &str) -> Vec<u8> {
    let clean = clean_text(value);
    if needs_encoding(&clean) {
        encoded_words(&clean).into_bytes()
    } else {
        clean.into_bytes()
    }
}

/// True when text cannot go into a header as plain ASCII words.
///
/// Non-ASCII text, text that looks like an encoded-word, and words too long
/// to fold all need RFC 2047.
fn needs_encoding(text: &str) -> bool {
    !text.is_ascii() || text.contains("=?") || text.split(' ').any(|w| w.len() > MAX_WORD)
}

/// RFC 2047 Q encoded-words (UTF-8), each at most [`MAX_WORD`] long, space-separated.
///
/// Words split only between characters, and the spaces between them are
/// ignored by decoders, so the text comes back whole.
fn encoded_words(text: &str) -> String {
    let budget = MAX_WORD - WORD_OPEN.len() - WORD_CLOSE.len();
    let mut words: Vec<String> = Vec::new();
    let mut payload = String::new();
    for c in text.chars() {
        let encoded = q_encode_char(c);
        if payload.len() + encoded.len() > budget {
            words.push(std::mem::take(&mut payload));
        }
        payload.push_str(&encoded);
    }
    if !payload.is_empty() {
        words.push(payload);
    }
    words
        .iter()
        .map(|w| format!("{WORD_OPEN}{w}{WORD_CLOSE}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One character in Q encoding, safe inside a phrase (RFC 2047 section 5).
fn q_encode_char(c: char) -> String {
    match c {
        ' ' => "_".to_string(),
        'a'..='z' | 'A'..='Z' | '0'..='9' | '!' | '*' | '+' | '-' | '/' => c.to_string(),
        _ => {
            let mut buf = [0u8; 4];
            c.encode_utf8(&mut buf)
                .bytes()
                .map(|b| format!("={b:02X}"))
                .collect()
        }
    }
}

/// Text fit for a header: controls and bidi overrides dropped, spaces collapsed.
fn clean_text(text: &str) -> String {
    let spaced: String = text
        .chars()
        .filter(|&c| !is_bidi_control(c))
        .map(|c| {
            if c.is_control() || c.is_whitespace() {
                ' '
            } else {
                c
            }
        })
        .collect();
    spaced
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bidirectional formatting characters, which can disguise a name.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// An address with whitespace, controls and angle brackets removed.
fn clean_address(address: &str) -> String {
    address
        .chars()
        .filter(|&c| !(c.is_control() || c.is_whitespace() || c == '<' || c == '>'))
        .collect()
}

/// Writes one header field's raw lines, each ending in CRLF.
fn push_field(out: &mut Vec<u8>, field: &Field<'_, '_>) {
    for line in field.lines {
        let start = out.len();
        push_line(out, line);
        let end = out.len() - 2;
        for b in &mut out[start..end] {
            if *b == b'\r' {
                *b = b' ';
            }
        }
    }
}

/// Writes one line and its CRLF.
fn push_line(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

/// Writes `Name: value` folded before whitespace near [`SOFT_LINE`].
///
/// The fold may come right after the colon when the first word is long
/// (an encoded-word after a long header name, say): that keeps lines with
/// encoded-words within RFC 2047's 76 characters.
///
/// `value` must hold no CR or LF (callers pass unfolded or cleaned text).
/// A run without whitespace longer than [`HARD_LINE`] allows is broken
/// with a fold (adding a space); only a hostile header has one.
fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    let mut line_len = name.len() + 1;
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    for segment in segments(trim_wsp(value)) {
        let segment = if segment.first().is_some_and(|b| is_wsp(*b)) {
            segment.to_vec()
        } else {
            [b" ".as_slice(), segment].concat()
        };
        if line_len + segment.len() > SOFT_LINE {
            out.extend_from_slice(b"\r\n");
            line_len = 0;
        }
        line_len = push_segment(out, &segment, line_len);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a segment, breaking it if it would pass [`HARD_LINE`]; returns the line length.
fn push_segment(out: &mut Vec<u8>, segment: &[u8], mut line_len: usize) -> usize {
    let mut rest = segment;
    while line_len + rest.len() > HARD_LINE {
        let cut = char_boundary(rest, HARD_LINE.saturating_sub(line_len).max(1));
        out.extend_from_slice(&rest[..cut]);
        out.extend_from_slice(b"\r\n ");
        line_len = 1;
        rest = &rest[cut..];
    }
    out.extend_from_slice(rest);
    line_len + rest.len()
}

/// The largest cut at or below `at` that does not split a UTF-8 sequence.
fn char_boundary(bytes: &[u8], at: usize) -> usize {
    let mut cut = at.min(bytes.len());
    while cut > 1 && bytes.get(cut).is_some_and(|b| (0x80..0xC0).contains(b)) {
        cut -= 1;
    }
    cut
}

/// Splits a value into runs, each a whitespace run plus the word after it.
fn segments(value: &[u8]) -> Vec<&[u8]> {
    let mut segments = Vec::new();
    let mut start = 0;
    for i in 1..value.len() {
        if is_wsp(value[i]) && !is_wsp(value[i - 1]) {
            segments.push(&value[start..i]);
            start = i;
        }
    }
    if start < value.len() {
        segments.push(&value[start..]);
    }
    segments
}

/// Space or tab.
fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Bytes without leading and trailing spaces and tabs.
fn trim_wsp(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_wsp(b))
        .unwrap_or(bytes.len());
    trim_end_wsp(&bytes[start..])
}

/// Bytes without trailing spaces and tabs.
fn trim_end_wsp(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| !is_wsp(b)).map_or(0, |i| i + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Action, Rule};

    const RELAY_FROM: &str = "support@vendor.example";

    #[test]
    fn the_streamed_split_agrees_with_the_listed_one() {
        let cases: [&[u8]; 12] = [
            b"",
            b"\r\n",
            b"\r\nbody",
            b"Subject: a\r\n\r\nbody\r\n",
            b"Subject: a\n\nbody\rmore\r\n",
            b"Subject: a\r\n",
            b"Subject: a\r\n continued\r\n\r\n\r\n\r\n",
            b"not a header\r\nSubject: a\r\n\r\nbody",
            b"Subject: a\rstill head\r\n\r\nx\ry",
            b"Subject: a\r\n\r\n",
            b"Subject: a\r\n\r\n\r",
            b"\n\n\n",
        ];
        for raw in cases {
            let lines = split_lines(raw, LoneCr::Joins);
            let (head, body) = split_head(&lines);
            let (streamed_head, start) = split_message(raw);
            assert_eq!(head, &streamed_head[..], "{raw:?}");
            let streamed_body: Option<Vec<&[u8]>> =
                start.map(|at| split_lines(&raw[at..], LoneCr::Breaks));
            let listed_body = body.map(|b| {
                b.first().map_or_else(Vec::new, |first| {
                    let at = first.as_ptr() as usize - raw.as_ptr() as usize;
                    split_lines(&raw[at..], LoneCr::Breaks)
                })
            });
            assert_eq!(listed_body, streamed_body, "{raw:?}");
        }
    }

    const POD: &str = "POD 1: Alberta towns";

    fn decision() -> Decision {
        Decision {
            action: Action::Relay,
            sender: Some("jean@sunnyvale.example".into()),
            sender_name: Some("Jean Tremblay".into()),
            client: Some("sunnyvale".into()),
            pod: Some("alberta".into()),
            rule: Some(Rule::Domain("sunnyvale.example".into())),
            reason: "domain sunnyvale.example".into(),
            recipients: vec!["ana@vendor.example".into()],
            message_id: Some("a1@sunnyvale.example".into()),
            subject: Some("printer".into()),
            personal: crate::engine::Personal::default(),
        }
    }

    fn opts(from_mode: FromMode) -> EmitOptions<'static> {
        EmitOptions {
            from_mode,
            relay_from: RELAY_FROM,
            pod_name: POD,
        }
    }

    fn emit(raw: &[u8], d: &Decision, mode: FromMode) -> String {
        let out = relay_bytes(raw, d, &opts(mode));
        assert_crlf_only(&out);
        String::from_utf8(out).expect("utf-8 in these tests")
    }

    fn assert_crlf_only(out: &[u8]) {
        for (i, &b) in out.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(
                    i.checked_sub(1).map(|p| out[p]),
                    Some(b'\r'),
                    "bare LF at {i}"
                );
            }
            if b == b'\r' {
                assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
        }
        assert!(out.ends_with(b"\r\n"), "no final CRLF");
    }

    /// The header block of an output, one unfolded field per entry.
    fn header_fields(out: &str) -> Vec<String> {
        let head = out.split("\r\n\r\n").next().unwrap_or_default();
        let mut fields: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            match fields.last_mut() {
                Some(last) if line.starts_with([' ', '\t']) => last.push_str(line),
                _ => fields.push(line.to_string()),
            }
        }
        fields
    }

    fn field<'a>(fields: &'a [String], name: &str) -> Vec<&'a str> {
        let prefix = format!("{name}:");
        fields
            .iter()
            .filter(|f| f.len() > prefix.len() && f[..prefix.len()].eq_ignore_ascii_case(&prefix))
            .map(|f| f[prefix.len()..].trim())
            .collect()
    }

    const MAIL: &str = "Return-Path: <jean@sunnyvale.example>\r\n\
        DKIM-Signature: v=1; a=rsa-sha256; d=sunnyvale.example;\r\n\
        \tb=abc\r\n\
        From: Jean Tremblay\r\n <jean@sunnyvale.example>\r\n\
        To: support@vendor.example\r\n\
        Subject: printer on floor 2\r\n\
        Message-ID: <a1@sunnyvale.example>\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        \r\n\
        The printer is jammed.\r\n\
        .\r\n\
        Thanks\r\n";

    #[test]
    fn rewrite_mode_from_reply_to_and_trace() {
        let out = emit(MAIL.as_bytes(), &decision(), FromMode::Rewrite);
        let fields = header_fields(&out);
        assert_eq!(
            &fields[..4],
            [
                "X-Podrouter-Pod: alberta",
                "X-Podrouter-Client: sunnyvale",
                "X-Podrouter-Rule: domain sunnyvale.example",
                "X-Podrouter-Loop: support@vendor.example",
            ]
        );
        assert_eq!(
            field(&fields, "From"),
            ["\"Jean Tremblay via POD 1: Alberta towns\" <support@vendor.example>"]
        );
        assert_eq!(
            field(&fields, "X-Original-From"),
            ["Jean Tremblay <jean@sunnyvale.example>"]
        );
        assert_eq!(
            field(&fields, "Reply-To"),
            ["Jean Tremblay <jean@sunnyvale.example>"]
        );
        assert!(field(&fields, "DKIM-Signature").is_empty());
        assert_eq!(field(&fields, "Subject"), ["printer on floor 2"]);
        assert_eq!(field(&fields, "Return-Path"), ["<jean@sunnyvale.example>"]);
        assert!(out.ends_with("\r\n\r\nThe printer is jammed.\r\n.\r\nThanks\r\n"));
    }

    #[test]
    fn rewrite_keeps_existing_reply_to_raw() {
        let raw = MAIL.replace(
            "To: support",
            "Reply-To: =?utf-8?q?Service_TI?= <ti@sunnyvale.example>\r\nTo: support",
        );
        let out = emit(raw.as_bytes(), &decision(), FromMode::Rewrite);
        let fields = header_fields(&out);
        assert_eq!(
            field(&fields, "Reply-To"),
            ["=?utf-8?q?Service_TI?= <ti@sunnyvale.example>"]
        );
    }

    #[test]
    fn rewrite_without_from_uses_the_sender_for_reply_to() {
        let raw = "Sender: jean@sunnyvale.example\r\nSubject: hi\r\n\r\nbody\r\n";
        let mut d = decision();
        d.sender_name = None;
        let out = emit(raw.as_bytes(), &d, FromMode::Rewrite);
        let fields = header_fields(&out);
        assert_eq!(
            field(&fields, "From"),
            ["\"jean@sunnyvale.example via POD 1: Alberta towns\" <support@vendor.example>"]
        );
        assert_eq!(field(&fields, "Reply-To"), ["<jean@sunnyvale.example>"]);
        assert!(field(&fields, "X-Original-From").is_empty());
    }

    #[test]
    fn rewrite_drops_forged_original_from_and_extra_from() {
        let raw = "From: a@sunnyvale.example\r\nFrom: b@evil.example\r\n\
                   X-Original-From: boss@vendor.example\r\n\r\nx\r\n";
        let out = emit(raw.as_bytes(), &decision(), FromMode::Rewrite);
        let fields = header_fields(&out);
        assert_eq!(field(&fields, "From").len(), 1);
        assert_eq!(field(&fields, "X-Original-From"), ["a@sunnyvale.example"]);
    }

    #[test]
    fn keep_mode_changes_only_trace_and_line_ends() {
        let out = emit(MAIL.as_bytes(), &decision(), FromMode::Keep);
        let trace_end = out.find("Return-Path:").unwrap();
        assert_eq!(&out[trace_end..], MAIL);
        assert!(out[..trace_end].starts_with("X-Podrouter-Pod: alberta\r\n"));
    }

    #[test]
    fn forged_trace_headers_are_removed() {
        let raw = "X-Podrouter-Pod: coast\r\nx-podrouter-rule : address boss@x\r\n\
                   X-PODROUTER-LOOP: support@vendor.example\r\n \tcontinued\r\n\
                   From: a@sunnyvale.example\r\n\r\nbody\r\n";
        for mode in [FromMode::Keep, FromMode::Rewrite] {
            let out = emit(raw.as_bytes(), &decision(), mode);
            let fields = header_fields(&out);
            assert_eq!(field(&fields, "X-Podrouter-Pod"), ["alberta"]);
            assert_eq!(
                field(&fields, "X-Podrouter-Rule"),
                ["domain sunnyvale.example"]
            );
            assert_eq!(field(&fields, "X-Podrouter-Loop"), [RELAY_FROM]);
            assert!(!out.contains("coast") && !out.contains("continued"));
        }
    }

    #[test]
    fn bare_lf_and_cr_become_crlf() {
        let raw = b"From: a@sunnyvale.example\nSubject: x\r\n\nline1\rline2\n.\nQUIT\r\n.\r";
        for mode in [FromMode::Keep, FromMode::Rewrite] {
            let out = emit(raw, &decision(), mode);
            assert!(
                out.ends_with("\r\n\r\nline1\r\nline2\r\n.\r\nQUIT\r\n.\r\n"),
                "{out}"
            );
        }
    }

    #[test]
    fn dot_lines_stay_for_lettre_to_stuff() {
        let raw = b"From: a@b.example\r\n\r\n.\r\n..\r\n.x\n";
        let out = emit(raw, &decision(), FromMode::Keep);
        assert!(out.ends_with("\r\n\r\n.\r\n..\r\n.x\r\n"));
        assert!(!out.starts_with('.'));
    }

    #[test]
    fn message_without_body_or_final_newline() {
        let out = emit(b"Subject: only headers", &decision(), FromMode::Keep);
        assert!(
            out.ends_with("X-Podrouter-Loop: support@vendor.example\r\nSubject: only headers\r\n")
        );
        assert!(!out.contains("\r\n\r\n"));
        let out = emit(b"", &decision(), FromMode::Rewrite);
        assert!(out.contains("From: \"Jean Tremblay via"));
    }

    #[test]
    fn message_without_headers_is_all_body() {
        let out = emit(b"just some text\nno headers\n", &decision(), FromMode::Keep);
        assert!(out.ends_with("support@vendor.example\r\n\r\njust some text\r\nno headers\r\n"));
    }

    #[test]
    fn display_name_with_quotes_and_backslash_is_escaped() {
        let mut d = decision();
        d.sender_name = Some("Jean \"IT\" \\ Tremblay".into());
        let out = emit(MAIL.as_bytes(), &d, FromMode::Rewrite);
        let fields = header_fields(&out);
        assert_eq!(
            field(&fields, "From"),
            ["\"Jean \\\"IT\\\" \\\\ Tremblay via POD 1: Alberta towns\" <support@vendor.example>"]
        );
    }

    #[test]
    fn non_ascii_display_name_is_encoded() {
        let mut d = decision();
        d.sender_name = Some("Chloé Tremblay".into());
        let out = emit(MAIL.as_bytes(), &d, FromMode::Rewrite);
        assert!(out.is_ascii() || !out[..out.find("\r\n\r\n").unwrap()].contains('é'));
        let fields = header_fields(&out);
        let from = field(&fields, "From")[0];
        assert!(
            from.starts_with("=?UTF-8?Q?Chlo=C3=A9_Tremblay_via_POD_1=3A_Alberta"),
            "{from}"
        );
        assert!(from.ends_with(" <support@vendor.example>"));
        assert_eq!(
            decode_words(from),
            "Chloé Tremblay via POD 1: Alberta towns"
        );
    }

    #[test]
    fn control_characters_in_a_name_never_make_a_header() {
        let mut d = decision();
        d.sender_name = Some("Evil\r\nBcc: all@vendor.example\r\n\r\nbody\u{0}\u{202E}".into());
        let out = emit(MAIL.as_bytes(), &d, FromMode::Rewrite);
        let fields = header_fields(&out);
        assert!(field(&fields, "Bcc").is_empty());
        let from = field(&fields, "From")[0];
        assert_eq!(
            from,
            "\"Evil Bcc: all@vendor.example body via POD 1: Alberta towns\" <support@vendor.example>"
        );
    }

    #[test]
    fn generated_lines_are_short_and_encoded_words_small() {
        let mut d = decision();
        d.sender_name = Some("Ünïcödé ".repeat(300));
        d.client = Some("x".repeat(5000));
        let out = emit(MAIL.as_bytes(), &d, FromMode::Rewrite);
        let head = &out[..out.find("\r\n\r\n").unwrap()];
        assert!(head.is_ascii());
        for line in head.split("\r\n") {
            assert!(line.len() <= 998, "{} chars", line.len());
            if line.contains("=?") {
                assert!(line.len() <= 76, "{line}");
            }
        }
        for word in head
            .split([' ', '\r', '\n'])
            .filter(|w| w.starts_with("=?"))
        {
            assert!(word.len() <= 75, "{word}");
        }
    }

    #[test]
    fn long_raw_from_is_refolded() {
        let long = (0..60)
            .map(|i| format!("u{i}@sunnyvale.example"))
            .collect::<Vec<_>>();
        let raw = format!("From: {}\r\n\r\nx\r\n", long.join(", "));
        let out = emit(raw.as_bytes(), &decision(), FromMode::Rewrite);
        assert!(out.split("\r\n").all(|l| l.len() <= 998));
        let fields = header_fields(&out);
        assert_eq!(
            field(&fields, "X-Original-From")[0].replace("\r\n", ""),
            long.join(", ")
        );
    }

    #[test]
    fn unbreakable_header_value_is_split_at_998() {
        let raw = format!("From: {}@x.example\r\n\r\nx\r\n", "a".repeat(3000));
        let out = emit(raw.as_bytes(), &decision(), FromMode::Rewrite);
        assert!(out.split("\r\n").all(|l| l.len() <= 998));
    }

    #[test]
    fn eight_bit_headers_pass_through() {
        let raw = b"From: J\xc3\xa9r\xf4me <j@sunnyvale.example>\r\nSubject: caf\xe9\r\n\r\nx\r\n";
        let out = relay_bytes(raw, &decision(), &opts(FromMode::Rewrite));
        assert_crlf_only(&out);
        let needle: &[u8] = b"Subject: caf\xe9\r\n";
        assert!(out.windows(needle.len()).any(|w| w == needle));
        // Not UTF-8, so the From we copy is rebuilt from the decoded sender.
        let text = String::from_utf8_lossy(&out);
        let fields = header_fields(&text);
        let original = field(&fields, "X-Original-From");
        assert_eq!(original.len(), 1);
        assert!(original[0].is_ascii(), "{original:?}");
        assert!(
            original[0].ends_with("<jean@sunnyvale.example>"),
            "{original:?}"
        );
    }

    #[test]
    fn lone_cr_in_a_header_never_starts_a_header_line() {
        let raw = b"From: Evil\rBcc: victim@elsewhere.example <a@sunnyvale.example>\r\n\
                    Subject: hi\rBcc: x@y\r\n\r\nbody\rline\r\n";
        for mode in [FromMode::Rewrite, FromMode::Keep] {
            let out = relay_bytes(raw, &decision(), &opts(mode));
            assert_crlf_only(&out);
            let text = String::from_utf8_lossy(&out);
            assert!(!text.contains("\r\nBcc"), "{text}");
            assert!(text.contains("Subject: hi Bcc: x@y\r\n"), "{text}");
            assert!(text.ends_with("\r\n\r\nbody\r\nline\r\n"), "{text}");
        }
    }

    #[test]
    fn utf8_from_is_copied_as_written() {
        let raw = "From: Jérôme <j@sunnyvale.example>\r\n\r\nx\r\n".as_bytes();
        let out = relay_bytes(raw, &decision(), &opts(FromMode::Rewrite));
        let needle = "X-Original-From: Jérôme <j@sunnyvale.example>\r\n".as_bytes();
        assert!(out.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn decision_without_route_still_builds() {
        let d = Decision {
            action: Action::Hold,
            sender: None,
            sender_name: None,
            client: None,
            pod: None,
            rule: None,
            reason: "no route".into(),
            recipients: vec![],
            message_id: None,
            subject: None,
            personal: crate::engine::Personal::default(),
        };
        let out = emit(MAIL.as_bytes(), &d, FromMode::Rewrite);
        let fields = header_fields(&out);
        assert_eq!(fields[0], "X-Podrouter-Loop: support@vendor.example");
        assert_eq!(
            field(&fields, "From"),
            ["\"POD 1: Alberta towns\" <support@vendor.example>"]
        );
    }

    #[test]
    fn non_ascii_trace_values_are_encoded() {
        let mut d = decision();
        d.rule = Some(Rule::Address("jérôme@sunnyvale.example".into()));
        let out = emit(MAIL.as_bytes(), &d, FromMode::Keep);
        let fields = header_fields(&out);
        let rule = field(&fields, "X-Podrouter-Rule")[0];
        assert_eq!(decode_words(rule), "address jérôme@sunnyvale.example");
    }

    /// Decodes our own Q encoded-words (test helper, not a general decoder).
    fn decode_words(value: &str) -> String {
        let mut bytes = Vec::new();
        let mut rest = value;
        while let Some(start) = rest.find(WORD_OPEN) {
            let body = &rest[start + WORD_OPEN.len()..];
            let end = body.find(WORD_CLOSE).unwrap();
            let mut chars = body[..end].bytes();
            while let Some(b) = chars.next() {
                match b {
                    b'_' => bytes.push(b' '),
                    b'=' => {
                        let hex = [chars.next().unwrap(), chars.next().unwrap()];
                        let hex = std::str::from_utf8(&hex).unwrap();
                        bytes.push(u8::from_str_radix(hex, 16).unwrap());
                    }
                    _ => bytes.push(b),
                }
            }
            rest = &body[end + WORD_CLOSE.len()..];
        }
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn mail_parser_decodes_what_we_encode() {
        let mut d = decision();
        d.sender_name = Some("Zoë \"Z\" Ødegård — 東京 ".repeat(4));
        let out = relay_bytes(MAIL.as_bytes(), &d, &opts(FromMode::Rewrite));
        let msg = mail_parser::MessageParser::default().parse(&out).unwrap();
        let from = msg.from().and_then(|a| a.first()).unwrap();
        let expected = format!(
            "{} via {POD}",
            clean_text(d.sender_name.as_deref().unwrap())
        );
        assert_eq!(from.name.as_deref(), Some(expected.as_str()));
        assert_eq!(from.address.as_deref(), Some(RELAY_FROM));
        assert_eq!(
            msg.body_text(0).unwrap().trim_end(),
            "The printer is jammed.\r\n.\r\nThanks"
        );
    }
}
