//! `podrouter trace`: the whole story of one message (by Message-ID) or
//! of one sender's recent mail (by address), from the journal.
//!
//! A Message-ID's story is every row with that ID, oldest first, plus the
//! copies recorded as its duplicates: when each copy arrived, what was
//! decided and by which rule, the relay's reply and queue id, retries,
//! refusals, and the folder it was filed in.

use std::io::Write;

use super::{or_dash, printable, show_time, Entry, OpsError, Reader};

/// What `trace` was asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Message-ID, without angle brackets.
    MessageId(String),
    /// A sender's normalised address.
    Sender(String),
}

impl Reader {
    /// Every row of a Message-ID and of its duplicates, oldest first.
    pub fn message_story(&self, message_id: &str) -> Result<Vec<Entry>, OpsError> {
        self.entries(
            "message_id = ?1 OR duplicate_of IN (SELECT id FROM messages WHERE message_id = ?1)",
            "id",
            0,
            &[&message_id],
        )
    }

    /// A sender's most recent rows, newest first.
    pub fn sender_mail(&self, sender: &str, limit: usize) -> Result<Vec<Entry>, OpsError> {
        self.entries("sender = ?1", "first_seen DESC, id DESC", limit, &[&sender])
    }

    /// Works out what `text` names and returns its rows: a Message-ID
    /// (always, when in angle brackets), else a sender's address.
    pub fn trace(&self, text: &str, limit: usize) -> Result<(Target, Vec<Entry>), OpsError> {
        let text = text.trim();
        let bracketed = text.starts_with('<') && text.ends_with('>');
        let id = text.trim_start_matches('<').trim_end_matches('>').trim();
        let story = self.message_story(id)?;
        if bracketed || !story.is_empty() || !id.contains('@') {
            return Ok((Target::MessageId(id.to_owned()), story));
        }
        let sender = crate::address::normalize_address(id).unwrap_or_else(|_| id.to_lowercase());
        let mail = self.sender_mail(&sender, limit)?;
        Ok((Target::Sender(sender), mail))
    }
}

/// The queue id in a relay's positive reply, when it names one:
/// OpenSMTPD and sendmail (`250 2.0.0 4f3a2b1c Message accepted for
/// delivery`), Postfix (`250 2.0.0 Ok: queued as 4F3A2B1C`), Exim
/// (`250 OK id=1abcde-000001-AB`).
pub fn queue_id(reply: &str) -> Option<&str> {
    let words: Vec<&str> = reply.split_whitespace().collect();
    let is_id = |w: &&str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    };
    if let Some(i) = words.windows(2).position(|w| w == ["queued", "as"]) {
        return words
            .get(i + 2)
            .map(|w| w.trim_end_matches(['.', ',', ')']))
            .filter(is_id);
    }
    if let Some(w) = words.iter().find_map(|w| w.strip_prefix("id=")) {
        return Some(w).filter(is_id);
    }
    // `250 [x.y.z] ID Message accepted ...`
    let mut rest = words.iter().skip(1).copied().peekable();
    if rest.peek().is_some_and(|w| is_status_code(w)) {
        rest.next();
    }
    let id = rest.next()?;
    let accepted = rest.next()?.eq_ignore_ascii_case("message")
        && rest.next()?.eq_ignore_ascii_case("accepted");
    Some(id).filter(|id| accepted && is_id(id))
}

/// Whether a word is an enhanced status code such as `2.0.0`.
fn is_status_code(word: &str) -> bool {
    let parts: Vec<&str> = word.trim_end_matches(':').split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Writes the story of `target`.
pub fn write_story(
    out: &mut impl Write,
    target: &Target,
    entries: &[Entry],
) -> std::io::Result<()> {
    match target {
        Target::MessageId(id) => writeln!(
            out,
            "Message-ID <{}>: {}",
            printable(id),
            entries_count(entries.len())
        )?,
        Target::Sender(s) => writeln!(
            out,
            "mail from {}: {}, newest first",
            printable(s),
            entries_count(entries.len())
        )?,
    }
    for e in entries {
        writeln!(out)?;
        write_entry(out, e, entries)?;
    }
    Ok(())
}

/// `1 journal entry`, `3 journal entries`.
fn entries_count(n: usize) -> String {
    format!("{n} journal entr{}", if n == 1 { "y" } else { "ies" })
}

/// Writes one row as labelled lines.
fn write_entry(out: &mut impl Write, e: &Entry, all: &[Entry]) -> std::io::Result<()> {
    let line = |out: &mut dyn Write, label: &str, text: String| {
        writeln!(out, "  {label:<11} {}", printable(&text))
    };
    writeln!(
        out,
        "#{}  <{}>  {}",
        e.id,
        or_dash(e.message_id.as_deref()),
        or_dash(e.subject.as_deref())
    )?;
    line(
        out,
        "arrived",
        format!(
            "{} UTC in {} (uid {})",
            show_time(&e.first_seen),
            e.mailbox,
            e.uid
        ),
    )?;
    line(out, "sender", or_dash(e.sender.as_deref()))?;
    line(out, "decision", decision(e))?;
    if let Some(of) = e.duplicate_of {
        line(out, "duplicate", format!("of #{of}: not relayed again"))?;
    }
    let copies: Vec<String> = all
        .iter()
        .filter(|c| c.duplicate_of == Some(e.id))
        .map(|c| format!("#{}", c.id))
        .collect();
    if !copies.is_empty() {
        line(
            out,
            "copies",
            format!("{} arrived later and were filed only", copies.join(", ")),
        )?;
    }
    write_delivery(out, e)?;
    line(out, "filed", filed(e))?;
    Ok(())
}

/// `relay to pod P (client C) by rule R`, or the skip or hold and why.
fn decision(e: &Entry) -> String {
    let who = format!(
        "pod {} (client {})",
        or_dash(e.pod.as_deref()),
        or_dash(e.client.as_deref())
    );
    match e.action.as_str() {
        "relay" => match e.rule.as_deref() {
            Some(rule) if rule == e.reason => format!("relay to {who}, rule {rule}"),
            Some(rule) => format!("relay to {who}, rule {rule}: {}", e.reason),
            None => format!("relay to {who}: {}", e.reason),
        },
        "hold" => format!("hold: {}", e.reason),
        other => format!("{other}: {}", e.reason),
    }
}

/// The relay's side: recipients, reply, queue id, retries, refusals.
fn write_delivery(out: &mut impl Write, e: &Entry) -> std::io::Result<()> {
    let mut line = |label: &str, text: String| writeln!(out, "  {label:<11} {}", printable(&text));
    if !e.recipients.is_empty() {
        line("recipients", e.recipients.clone())?;
    }
    if let Some(at) = &e.relayed_at {
        let reply = e.smtp_reply.as_deref().unwrap_or("");
        let queue = queue_id(reply).map_or(String::new(), |q| format!(", queue id {q}"));
        line("relayed", format!("{} UTC{queue}", show_time(at)))?;
    }
    if let Some(reply) = e.smtp_reply.as_deref().filter(|r| !r.is_empty()) {
        line("smtp reply", reply.to_owned())?;
    }
    if !e.accepted.is_empty() && e.accepted != e.recipients {
        line("accepted", e.accepted.clone())?;
    }
    if !e.refused.is_empty() {
        line("refused", e.refused.clone())?;
    }
    if e.attempts > 1 || e.last_error.is_some() {
        let last = e
            .last_error
            .as_deref()
            .map_or(String::new(), |err| format!("; last error: {err}"));
        line("attempts", format!("{}{last}", e.attempts))?;
    }
    Ok(())
}

/// Where the copy went, or where it stands.
fn filed(e: &Entry) -> String {
    match (&e.folder, &e.filed_at, e.state.as_str()) {
        (Some(folder), Some(at), _) => format!("in {folder} at {} UTC", show_time(at)),
        (Some(folder), None, _) => format!("in {folder}"),
        (None, _, "relayed") => "relayed; not yet moved out of the inbox".to_owned(),
        (None, _, "sending") => {
            "not yet: a relay attempt was cut off (it is retried and may reach the pod twice)"
                .to_owned()
        }
        (None, _, _) => "not yet: still in the inbox, waiting for a relay or a retry".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{journal, Row};

    #[test]
    fn queue_ids_from_common_servers() {
        assert_eq!(
            queue_id("250 2.0.0 4f3a2b1c Message accepted for delivery"),
            Some("4f3a2b1c")
        );
        assert_eq!(
            queue_id("250 2.0.0 Ok: queued as 4F3A2B1C0D"),
            Some("4F3A2B1C0D")
        );
        assert_eq!(
            queue_id("250 OK id=1abcde-000001-AB"),
            Some("1abcde-000001-AB")
        );
        assert_eq!(queue_id("250 ok"), None);
        assert_eq!(queue_id(""), None);
        assert_eq!(queue_id("250 2.0.0 <x> Message accepted"), None);
    }

    fn sample(dir: &std::path::Path) -> Vec<i64> {
        let relayed = Row {
            message_id: Some("a1@town.example"),
            sender: Some("clerk@town.example"),
            client: Some("sunnyvale"),
            pod: Some("alberta"),
            reason: "domain sunnyvale.example",
            subject: Some("Printer"),
            smtp_reply: Some("250 2.0.0 4f3a2b1c Message accepted for delivery"),
            folder: Some("Routed"),
            attempts: 2,
            first_seen: "2026-12-01T08:00:00.000Z",
            relayed: true,
            ..Default::default()
        };
        let mut ids = journal(dir, std::slice::from_ref(&relayed));
        let dup = Row {
            message_id: Some("a1@town.example"),
            action: "skip",
            reason: "already relayed as journal entry 1",
            duplicate_of: Some(ids[0]),
            first_seen: "2026-12-02T08:00:00.000Z",
            relayed: false,
            smtp_reply: None,
            attempts: 0,
            ..relayed.clone()
        };
        let other = Row {
            message_id: Some("b2@town.example"),
            action: "hold",
            reason: "no client matches",
            folder: Some("Held"),
            first_seen: "2026-12-03T08:00:00.000Z",
            relayed: false,
            client: None,
            pod: None,
            smtp_reply: None,
            attempts: 0,
            ..relayed
        };
        let conn_ids = {
            let conn = rusqlite::Connection::open(dir.join(crate::journal::FILE_NAME)).unwrap();
            let mut out = Vec::new();
            for (uid, r) in [(50, dup), (51, other)] {
                conn.execute(
                    "INSERT INTO messages (mailbox, uidvalidity, uid, message_id, content_hash, \
                     sender, action, reason, subject, folder, state, duplicate_of, first_seen) \
                     VALUES ('support@localhost/INBOX', 1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                     'filed', ?9, ?10)",
                    rusqlite::params![
                        uid,
                        r.message_id,
                        format!("h{uid}"),
                        r.sender,
                        r.action,
                        r.reason,
                        r.subject,
                        r.folder,
                        r.duplicate_of,
                        r.first_seen
                    ],
                )
                .unwrap();
                out.push(conn.last_insert_rowid());
            }
            out
        };
        ids.extend(conn_ids);
        ids
    }

    #[test]
    fn a_message_id_story_includes_its_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let ids = sample(dir.path());
        let r = Reader::open(dir.path()).unwrap();
        for text in [
            "<a1@town.example>",
            "a1@town.example",
            " <a1@town.example> ",
        ] {
            let (target, rows) = r.trace(text, 20).unwrap();
            assert_eq!(target, Target::MessageId("a1@town.example".into()));
            assert_eq!(rows.iter().map(|e| e.id).collect::<Vec<_>>(), ids[..2]);
        }
        let (target, rows) = r.trace("<nobody@x>", 20).unwrap();
        assert_eq!(target, Target::MessageId("nobody@x".into()));
        assert!(rows.is_empty());
    }

    #[test]
    fn an_address_lists_the_senders_mail_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let ids = sample(dir.path());
        let r = Reader::open(dir.path()).unwrap();
        let (target, rows) = r.trace("Clerk@Town.example", 20).unwrap();
        assert_eq!(target, Target::Sender("clerk@town.example".into()));
        assert_eq!(
            rows.iter().map(|e| e.id).collect::<Vec<_>>(),
            [ids[2], ids[1], ids[0]]
        );
        let (_, rows) = r.trace("clerk@town.example", 1).unwrap();
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn the_story_tells_reply_queue_id_retries_folder_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let r = Reader::open(dir.path()).unwrap();
        let (target, rows) = r.trace("a1@town.example", 20).unwrap();
        let mut out = Vec::new();
        write_story(&mut out, &target, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        for want in [
            "Message-ID <a1@town.example>: 2 journal entries",
            "arrived     2026-12-01 08:00:00 UTC in support@localhost/INBOX (uid 1)",
            "decision    relay to pod alberta (client sunnyvale), rule domain sunnyvale.example",
            "queue id 4f3a2b1c",
            "smtp reply  250 2.0.0 4f3a2b1c Message accepted for delivery",
            "attempts    2",
            "filed       in Routed at 2026-12-01 08:00:00 UTC",
            "copies      #2 arrived later and were filed only",
            "duplicate   of #1: not relayed again",
            "decision    skip: already relayed as journal entry 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }
}
