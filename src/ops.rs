//! Operations: what the operator commands (`log`, `trace`, `held`,
//! `release`, `stats`) read from the journal, and how they show it.
//!
//! [`Reader`] opens `<state_dir>/journal.sqlite3` read-only, next to a
//! running daemon (SQLite's WAL lets readers and the one writer work at
//! once). Only `release` writes, and it does so through
//! [`crate::journal::Journal`]'s own methods, like the daemon.
//!
//! Times are the journal's: RFC 3339 text in UTC, shown as
//! `YYYY-MM-DD HH:MM:SS` (UTC).
//!
//! The journal belongs to the daemon's user. A command run as root (say
//! with sudo) can leave SQLite's `-wal` and `-shm` files owned by root,
//! which would stop the daemon from writing; [`keep_owner`] gives them
//! back to the state folder's owner.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags};

use crate::engine::ThreadRef;
use crate::journal::FILE_NAME;

pub mod hold;
pub mod log;
pub mod stats;
pub mod trace;

/// Why the journal could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// There is no journal in the state folder.
    #[error(
        "no journal at {}: the daemon has not run with this state folder \
         (see --state-dir, PODROUTER_STATE_DIR and daemon.state_dir)",
        path.display()
    )]
    NoJournal {
        /// The file looked for.
        path: PathBuf,
    },
    /// SQLite could not open the file.
    #[error("cannot open journal {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("journal: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// A read-only connection to the journal.
#[derive(Debug)]
pub struct Reader {
    /// The connection; taken on drop so it closes before [`keep_owner`].
    conn: Option<Connection>,
    /// The state folder, whose owner the journal files keep.
    state_dir: PathBuf,
}

impl Reader {
    /// Opens `<state_dir>/journal.sqlite3` for reading.
    pub fn open(state_dir: &Path) -> Result<Reader, OpsError> {
        let path = state_dir.join(FILE_NAME);
        if !path.is_file() {
            return Err(OpsError::NoJournal { path });
        }
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(Duration::from_secs(10))?;
            // Fails early, with the file named, when it is not a journal.
            conn.query_row("SELECT count(*) FROM messages LIMIT 1", [], |_| Ok(()))?;
            Ok(conn)
        };
        let conn = open().map_err(|source| OpsError::Open {
            path: path.clone(),
            source,
        });
        keep_owner(state_dir);
        Ok(Reader {
            conn: Some(conn?),
            state_dir: state_dir.to_owned(),
        })
    }

    /// The connection.
    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("open until dropped")
    }

    /// The thread one of these Message-IDs leads to, read-only (for
    /// `route --state-dir`, which must not write the daemon's journal).
    pub fn find_thread(&self, ids: &[String]) -> Result<Option<ThreadRef>, OpsError> {
        if !self.has_threads()? {
            return Ok(None);
        }
        Ok(crate::journal::find_thread_in(self.conn(), ids)?)
    }

    /// Rows matching `filter` (`WHERE` text with `?N` placeholders),
    /// ordered by `order`, at most `limit` (0: all).
    fn entries(
        &self,
        filter: &str,
        order: &str,
        limit: usize,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Entry>, OpsError> {
        let limit = if limit == 0 { -1 } else { limit as i64 };
        let sql = format!(
            "SELECT {} FROM messages WHERE {filter} ORDER BY {order} LIMIT {limit}",
            Entry::COLUMNS
        );
        let mut stmt = self.conn().prepare(&sql)?;
        let rows = stmt.query_map(params, Entry::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest row for a message with these raw bytes (by content
    /// hash), or else with this Message-ID from this sender.
    pub fn latest_copy(
        &self,
        content_hash: &str,
        message_id: Option<&str>,
        sender: Option<&str>,
    ) -> Result<Option<Entry>, OpsError> {
        let mut found = self.entries("content_hash = ?1", "id DESC", 1, &[&content_hash])?;
        if found.is_empty() {
            if let (Some(id), Some(sender)) = (message_id, sender) {
                found = self.entries(
                    "message_id = ?1 AND sender = ?2",
                    "id DESC",
                    1,
                    &[&id, &sender],
                )?;
            }
        }
        Ok(found.pop())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        drop(self.conn.take());
        keep_owner(&self.state_dir);
    }
}

/// One journal row, as the operator commands show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// The row id, shown as `#N`.
    pub id: i64,
    /// `user@host/folder` the copy was seen in.
    pub mailbox: String,
    /// Its UID in that folder when it was seen.
    pub uid: u32,
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    /// The sender's normalised address.
    pub sender: Option<String>,
    /// The client's key.
    pub client: Option<String>,
    /// The pod's key.
    pub pod: Option<String>,
    /// `relay`, `skip` or `hold`.
    pub action: String,
    /// The rule that matched, as text.
    pub rule: Option<String>,
    /// Why: the rule for a relay, the cause for a skip or hold.
    pub reason: String,
    /// Envelope recipients, `, `-separated.
    pub recipients: String,
    /// Recipients that accepted it.
    pub accepted: String,
    /// Recipients refused for good, `addr: reply; ...`.
    pub refused: String,
    /// The decoded subject.
    pub subject: Option<String>,
    /// The relay's last reply.
    pub smtp_reply: Option<String>,
    /// Where it was filed.
    pub folder: Option<String>,
    /// `pending`, `sending`, `relayed` or `filed`.
    pub state: String,
    /// SMTP attempts with an outcome.
    pub attempts: u32,
    /// The last temporary failure.
    pub last_error: Option<String>,
    /// The row relayed before, when this copy is a duplicate.
    pub duplicate_of: Option<i64>,
    /// When it was first seen (RFC 3339, UTC).
    pub first_seen: String,
    /// When the relay took it.
    pub relayed_at: Option<String>,
    /// When it was filed.
    pub filed_at: Option<String>,
}

impl Entry {
    /// The action as a person should read it: a relay the SMTP server has
    /// not accepted yet (waiting in the inbox for a retry) says so.
    pub fn shown_action(&self) -> String {
        match (self.action.as_str(), self.state.as_str()) {
            ("relay", "pending" | "sending") if self.attempts > 0 => "relay (retrying)".into(),
            ("relay", "pending" | "sending") => "relay (not yet)".into(),
            _ => self.action.clone(),
        }
    }

    /// The columns [`Entry::from_row`] reads, in order.
    const COLUMNS: &'static str = "id, mailbox, uid, message_id, sender, client, pod, action, \
        rule, reason, recipients, accepted, refused, subject, smtp_reply, folder, state, \
        attempts, last_error, duplicate_of, first_seen, relayed_at, filed_at";

    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
        Ok(Entry {
            id: row.get(0)?,
            mailbox: row.get(1)?,
            uid: row.get(2)?,
            message_id: row.get(3)?,
            sender: row.get(4)?,
            client: row.get(5)?,
            pod: row.get(6)?,
            action: row.get(7)?,
            rule: row.get(8)?,
            reason: row.get(9)?,
            recipients: row.get(10)?,
            accepted: row.get(11)?,
            refused: row.get(12)?,
            subject: row.get(13)?,
            smtp_reply: row.get(14)?,
            folder: row.get(15)?,
            state: row.get(16)?,
            attempts: row.get(17)?,
            last_error: row.get(18)?,
            duplicate_of: row.get(19)?,
            first_seen: row.get(20)?,
            relayed_at: row.get(21)?,
            filed_at: row.get(22)?,
        })
    }
}

/// A `--since` value: a span back from now (`2h`, `1d`, `2weeks`) or a
/// day or time in UTC (`2026-12-01`, `2026-12-01T08:00:00Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// This long before now.
    Ago(Duration),
    /// From this instant.
    At(SystemTime),
}

impl Since {
    /// Parses a `--since` value (clap's value parser).
    pub fn parse(text: &str) -> Result<Since, String> {
        let text = text.trim();
        if let Ok(d) = humantime::parse_duration(text) {
            return Ok(Since::Ago(d));
        }
        let full = if text.len() == 10 {
            format!("{text}T00:00:00Z")
        } else {
            text.to_owned()
        };
        humantime::parse_rfc3339_weak(&full)
            .map(Since::At)
            .map_err(|_| {
                format!("{text:?} is neither a span like 2h or 1d nor a date like 2026-12-01")
            })
    }

    /// The earliest time included, as journal text, seen from `now`.
    pub fn cutoff(self, now: SystemTime) -> String {
        let at = match self {
            Since::Ago(d) => crate::journal::ago(now, d),
            Since::At(t) => t,
        };
        humantime::format_rfc3339_millis(at).to_string()
    }
}

/// A journal time as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn show_time(rfc3339: &str) -> String {
    rfc3339.get(..19).unwrap_or(rfc3339).replacen('T', " ", 1)
}

/// Text safe for a terminal: control characters become spaces.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// At most `max` characters of `text`, with `…` when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Writes a header and rows as left-aligned columns two spaces apart
/// (the last column unpadded).
pub fn write_columns(
    out: &mut impl std::io::Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// An optional column for display: the value or `-`.
pub fn or_dash(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), printable)
}

/// Gives the journal and its `-wal`/`-shm` files back to the owner of the
/// state folder when they belong to someone else (a command run as root
/// creates them as root). Only root can do that; anyone else gets a
/// warning, since the daemon may no longer be able to write them.
pub fn keep_owner(state_dir: &Path) {
    let Ok(dir) = std::fs::metadata(state_dir) else {
        return;
    };
    for suffix in ["", "-wal", "-shm"] {
        let path = state_dir.join(format!("{FILE_NAME}{suffix}"));
        let Ok(file) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !file.is_file() || (file.uid(), file.gid()) == (dir.uid(), dir.gid()) {
            continue;
        }
        if let Err(e) = std::os::unix::fs::chown(&path, Some(dir.uid()), Some(dir.gid())) {
            eprintln!(
                "warning: {} is not owned by the owner of {} and cannot be given back \
                 ({e}); run podrouter as that user or as root",
                path.display(),
                state_dir.display()
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A journal with rows written by SQL, for the tests of each command.

    use std::path::Path;

    use crate::journal::Journal;

    /// One row to insert; unset columns get plain defaults.
    #[derive(Clone, Debug, Default)]
    pub struct Row<'a> {
        pub message_id: Option<&'a str>,
        pub hash: &'a str,
        pub sender: Option<&'a str>,
        pub client: Option<&'a str>,
        pub pod: Option<&'a str>,
        pub action: &'a str,
        pub reason: &'a str,
        pub subject: Option<&'a str>,
        pub smtp_reply: Option<&'a str>,
        pub folder: Option<&'a str>,
        pub attempts: u32,
        pub last_error: Option<&'a str>,
        pub duplicate_of: Option<i64>,
        pub first_seen: &'a str,
        pub relayed: bool,
    }

    /// Creates the journal (through [`Journal::open`]) and inserts rows;
    /// returns their ids.
    pub fn journal(dir: &Path, rows: &[Row<'_>]) -> Vec<i64> {
        drop(Journal::open(dir).unwrap());
        let conn = rusqlite::Connection::open(dir.join(crate::journal::FILE_NAME)).unwrap();
        let mut ids = Vec::new();
        for (n, r) in rows.iter().enumerate() {
            let hash = if r.hash.is_empty() {
                format!("hash{n}")
            } else {
                r.hash.to_owned()
            };
            conn.execute(
                "INSERT INTO messages (mailbox, uidvalidity, uid, message_id, content_hash, \
                 sender, client, pod, action, rule, reason, recipients, accepted, subject, \
                 smtp_reply, folder, state, attempts, last_error, duplicate_of, first_seen, \
                 relayed_at, filed_at) VALUES ('support@localhost/INBOX', 1, ?1, ?2, ?3, ?4, \
                 ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13, 'filed', ?14, ?15, ?16, ?17, \
                 ?18, ?17)",
                rusqlite::params![
                    n as i64 + 1,
                    r.message_id,
                    hash,
                    r.sender,
                    r.client,
                    r.pod,
                    if r.action.is_empty() {
                        "relay"
                    } else {
                        r.action
                    },
                    r.client.map(|c| format!("domain {c}.example")),
                    r.reason,
                    if r.relayed { "ana@vendor.example" } else { "" },
                    r.subject,
                    r.smtp_reply,
                    r.folder,
                    r.attempts,
                    r.last_error,
                    r.duplicate_of,
                    r.first_seen,
                    r.relayed.then_some(r.first_seen),
                ],
            )
            .unwrap();
            ids.push(conn.last_insert_rowid());
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_spans_and_dates() {
        let now = humantime::parse_rfc3339("2026-12-10T12:00:00Z").unwrap();
        let cut = |t: &str| Since::parse(t).unwrap().cutoff(now);
        assert_eq!(cut("2h"), "2026-12-10T10:00:00.000Z");
        assert_eq!(cut("1d"), "2026-12-09T12:00:00.000Z");
        assert_eq!(cut("2026-12-01"), "2026-12-01T00:00:00.000Z");
        assert_eq!(cut("2026-12-01T08:30:00Z"), "2026-12-01T08:30:00.000Z");
        assert!(Since::parse("yesterday").is_err());
        // Further back than 1970 means everything, not a panic.
        assert_eq!(cut("100y"), "1970-01-01T00:00:00.000Z");
        assert_eq!(cut("1000000d"), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn times_and_text_for_the_terminal() {
        assert_eq!(show_time("2026-12-01T10:00:05.123Z"), "2026-12-01 10:00:05");
        assert_eq!(printable("a\u{1b}[31mb\n"), "a [31mb ");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
        assert_eq!(or_dash(None), "-");
    }

    #[test]
    fn journal_files_made_by_root_are_given_back_to_the_folders_owner() {
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if !root {
            eprintln!("skipped: only root can change a file's owner");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            std::fs::write(state.join(format!("{FILE_NAME}{suffix}")), b"").unwrap();
        }
        std::fs::write(state.join("other"), b"").unwrap();
        std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
        keep_owner(&state);
        for suffix in ["", "-wal", "-shm"] {
            let m = std::fs::metadata(state.join(format!("{FILE_NAME}{suffix}"))).unwrap();
            assert_eq!((m.uid(), m.gid()), (65534, 65534), "{suffix}");
        }
        let other = std::fs::metadata(state.join("other")).unwrap();
        assert_eq!(other.uid(), 0, "only the journal's files are touched");
    }

    #[test]
    fn a_missing_journal_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Reader::open(dir.path()).unwrap_err();
        assert!(matches!(err, OpsError::NoJournal { .. }), "{err}");
        assert!(err.to_string().contains("journal.sqlite3"));
    }

    #[test]
    fn the_latest_copy_is_found_by_hash_then_by_message_id() {
        let dir = tempfile::tempdir().unwrap();
        let row = |hash, reason| testing::Row {
            hash,
            message_id: Some("a@x"),
            sender: Some("clerk@sunnyvale.example"),
            action: "hold",
            reason,
            first_seen: "2026-12-01T10:00:00.000Z",
            ..Default::default()
        };
        testing::journal(dir.path(), &[row("h1", "first"), row("h1", "second")]);
        let reader = Reader::open(dir.path()).unwrap();
        let found = reader.latest_copy("h1", None, None).unwrap().unwrap();
        assert_eq!(found.reason, "second");
        let by_id = reader
            .latest_copy("other", Some("a@x"), Some("clerk@sunnyvale.example"))
            .unwrap();
        assert_eq!(by_id.unwrap().reason, "second");
        assert!(reader
            .latest_copy("other", Some("a@x"), None)
            .unwrap()
            .is_none());
    }
}
