//! The journal: a SQLite file that remembers every message the daemon
//! handled, and the guard that keeps a message from being relayed twice.
//!
//! The file is `<state_dir>/journal.sqlite3`, in WAL mode with
//! `synchronous = FULL`, so a write that returned is on disk. Table
//! `messages` holds one row per copy of a message seen in the inbox,
//! keyed by mailbox, UIDVALIDITY, UID and content hash. The columns are
//! listed in [`SCHEMA`]; `state` moves `pending` → `sending` →
//! `relayed` → `filed` for relayed mail and `pending` → `filed` for the
//! rest; `attempts` counts finished SMTP attempts. Timestamps are RFC 3339
//! UTC text.
//!
//! # Recognising a message again
//!
//! A UID alone does not identify a message: a mailbox that is recreated
//! gets a new UIDVALIDITY and new UIDs, and the same message can arrive
//! twice. [`Journal::observe`] therefore looks a copy up by its UID first
//! and then by content: the SHA-256 of the raw bytes, or the same
//! Message-ID from the same sender (which catches a second delivery whose
//! trace headers differ). A copy whose content was already relayed is
//! recorded as a duplicate (`action = 'skip'`, `duplicate_of` set) and
//! only filed.
//!
//! # Crash points
//!
//! The daemon writes the journal at each step and moves a message out of
//! the inbox only after its outcome is on disk. What a restart finds after
//! a crash at each point:
//!
//! 1. Before [`Journal::observe`]: nothing is recorded, the message is in
//!    the inbox and is handled as new.
//! 2. After `observe`, before [`Journal::begin_attempts`]: a `pending` row;
//!    the message is relayed as planned.
//! 3. After `begin_attempts` (state `sending`, written just before the
//!    message's SMTP transaction), before [`Journal::record_relayed`]: the
//!    relay may or may not have accepted the message. `observe` reports
//!    the row as `interrupted` and the daemon relays it again with a
//!    warning. The pod gets it twice only if the crash fell between the
//!    server's final reply and this write (one reply and one fsync).
//!    Relaying again is preferred to losing a message. Recipients already
//!    recorded by [`Journal::record_accepted`] are not sent to again.
//! 4. After `record_relayed`, before the IMAP MOVE: the row is `relayed`;
//!    the message is only filed, never relayed again.
//! 5. After the MOVE, before [`Journal::record_filed`]: the row stays
//!    `relayed` with no folder. The message has left the inbox, so nothing
//!    more happens; should it come back, step 4 applies.
//!
//! After a UIDVALIDITY reset the old rows no longer match by UID, but they
//! match by content: relayed ones make the new copy a duplicate, and an
//! unfinished one is adopted (its key moves to the new UID) so the
//! recipients who already accepted it are not sent to again.
//!
//! A message filed without being relayed (skipped, held, refused) that a
//! person moves back into the inbox is handled afresh: that is how held
//! mail is retried after the table is fixed. A relayed message moved back
//! is not relayed again.
//!
//! # Threads, responses and acknowledgements
//!
//! Table `threads` has one row per conversation a client opened: the
//! Message-ID that opened it (`root`), its pod, client and sender, when
//! the client's message arrived (`opened_at`), the first reply by a pod
//! member (`first_response_at`, `first_response_ms`, `responder`) and the
//! escalation (`escalated_at`). Table `thread_ids` maps every Message-ID
//! that leads to a thread (the relayed messages', their In-Reply-To and
//! References, members' replies, acknowledgements, escalated copies) to
//! it, keyed by Message-ID, so a reply is placed with one index probe per
//! id. A relayed message's thread is written in the same transaction as
//! its `relayed` state ([`Journal::record_relayed_linked`]), so a thread
//! never names a message that was not relayed, and a relayed message is
//! never without its thread. Table `acks` remembers when each address last
//! got an acknowledgement.
//!
//! The new tables are created with `IF NOT EXISTS` at every open, so a
//! journal written by an older podrouter gains them on its first start;
//! its old messages simply belong to no thread.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};

use crate::engine::{Decision, ThreadRef};

/// The journal's file name inside the state directory.
pub const FILE_NAME: &str = "journal.sqlite3";

/// The table and its indexes; applied at every open.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id           INTEGER PRIMARY KEY,
    mailbox      TEXT    NOT NULL,
    uidvalidity  INTEGER NOT NULL,
    uid          INTEGER NOT NULL,
    message_id   TEXT,
    content_hash TEXT    NOT NULL,
    sender       TEXT,
    client       TEXT,
    pod          TEXT,
    action       TEXT    NOT NULL CHECK (action IN ('relay', 'skip', 'hold')),
    rule         TEXT,
    reason       TEXT    NOT NULL,
    recipients   TEXT    NOT NULL DEFAULT '',
    accepted     TEXT    NOT NULL DEFAULT '',
    refused      TEXT    NOT NULL DEFAULT '',
    subject      TEXT,
    smtp_reply   TEXT,
    folder       TEXT,
    state        TEXT    NOT NULL
                 CHECK (state IN ('pending', 'sending', 'relayed', 'filed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    duplicate_of INTEGER REFERENCES messages (id),
    first_seen   TEXT    NOT NULL,
    relayed_at   TEXT,
    filed_at     TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_copy
    ON messages (mailbox, uidvalidity, uid, content_hash);
CREATE INDEX IF NOT EXISTS messages_hash ON messages (content_hash);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE TABLE IF NOT EXISTS threads (
    id                INTEGER PRIMARY KEY,
    root              TEXT    NOT NULL UNIQUE,
    pod               TEXT    NOT NULL,
    client            TEXT,
    sender            TEXT,
    subject           TEXT,
    opened_row        INTEGER REFERENCES messages (id),
    opened_at         TEXT    NOT NULL,
    first_response_at TEXT,
    first_response_ms INTEGER,
    responder         TEXT,
    escalated_at      TEXT
);
CREATE INDEX IF NOT EXISTS threads_waiting ON threads (first_response_at, escalated_at);
CREATE TABLE IF NOT EXISTS thread_ids (
    message_id TEXT    PRIMARY KEY,
    thread     INTEGER NOT NULL REFERENCES threads (id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS acks (
    address    TEXT PRIMARY KEY,
    sent_at    TEXT NOT NULL,
    pod        TEXT,
    message_id TEXT
) WITHOUT ROWID;
";

/// The separator of the address lists in `recipients` and `accepted`.
const LIST_SEP: &str = ", ";

/// A journal row's id.
pub type RowId = i64;

/// Why the journal could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The state directory could not be created.
    #[error("cannot create state directory {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The SQLite file could not be opened or set up.
    #[error("cannot open journal {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A read or write failed.
    #[error("journal: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// One copy of a message as it sits in the inbox now.
#[derive(Clone, Copy, Debug)]
pub struct Sighting<'a> {
    /// Which inbox: `user@host/folder`.
    pub mailbox: &'a str,
    /// The folder's UIDVALIDITY.
    pub uidvalidity: u32,
    /// The message's UID.
    pub uid: u32,
    /// SHA-256 of the raw bytes, lowercase hex (see [`content_hash`]).
    pub content_hash: &'a str,
    /// What the engine decided for it now.
    pub decision: &'a Decision,
}

/// What the journal knows about a copy, and so what the daemon does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not relayed yet: act on the decision.
    Open {
        /// The row to update.
        id: RowId,
        /// Recipients that already accepted it in an earlier attempt.
        accepted: Vec<String>,
        /// An earlier attempt was cut off after it began sending.
        interrupted: bool,
    },
    /// Already relayed, as this copy or an earlier one: file it only.
    Relayed {
        /// This copy's row.
        id: RowId,
        /// The row that was relayed, when it is another copy.
        duplicate_of: Option<RowId>,
    },
    /// A copy with the same content under another UID in this inbox is
    /// still being handled; look again once that one is done.
    Twin {
        /// The other copy's row.
        of: RowId,
    },
}

/// What a relayed message adds to the threads (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadLink {
    /// The known thread; `None` opens a new one rooted at `message_id`
    /// (for a client's message; a member's mail opens none).
    pub thread: Option<i64>,
    /// The message's own Message-ID.
    pub message_id: String,
    /// Its In-Reply-To and References.
    pub references: Vec<String>,
    /// The pod it went to; a client's message moves the thread there.
    pub pod: String,
    /// The client, when known.
    pub client: Option<String>,
    /// The sender.
    pub sender: Option<String>,
    /// The subject.
    pub subject: Option<String>,
    /// A client wrote it (it may open a thread), not a pod member.
    pub from_client: bool,
}

/// A thread waiting for its first reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The thread's key.
    pub id: i64,
    /// The Message-ID that opened it.
    pub root: String,
    /// Its pod.
    pub pod: String,
    /// The client's address.
    pub sender: Option<String>,
    /// The subject.
    pub subject: Option<String>,
    /// When the client's message arrived.
    pub opened_at: SystemTime,
}

/// The SQLite journal; safe to share between the tasks of the daemon.
#[derive(Debug)]
pub struct Journal {
    /// The file, for messages.
    path: PathBuf,
    /// One connection; writes are short and never held across an await.
    conn: Mutex<Connection>,
}

/// SHA-256 of a message's raw bytes, as lowercase hex.
pub fn content_hash(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
}

/// `span` before `now`, but never before 1970: journal times are RFC 3339
/// text, which cannot show an earlier time.
pub fn ago(now: SystemTime, span: std::time::Duration) -> SystemTime {
    now.checked_sub(span)
        .filter(|t| *t >= SystemTime::UNIX_EPOCH)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The thread one of these Message-IDs leads to in the journal behind
/// `conn`; the first that leads anywhere wins.
pub(crate) fn find_thread_in(
    conn: &Connection,
    ids: &[String],
) -> rusqlite::Result<Option<ThreadRef>> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.id, t.root, t.pod, t.client FROM thread_ids i \
         JOIN threads t ON t.id = i.thread WHERE i.message_id = ?1",
    )?;
    for id in ids {
        let found = stmt
            .query_row([id], |r| {
                Ok(ThreadRef {
                    id: r.get(0)?,
                    root: r.get(1)?,
                    pod: r.get(2)?,
                    client: r.get(3)?,
                })
            })
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// The current time as RFC 3339 UTC text with milliseconds.
fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Splits an address list column back into addresses.
fn split_list(text: &str) -> Vec<String> {
    text.split(LIST_SEP)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The columns a decision fills.
#[derive(Clone)]
struct DecisionColumns {
    message_id: Option<String>,
    sender: Option<String>,
    client: Option<String>,
    pod: Option<String>,
    action: &'static str,
    rule: Option<String>,
    reason: String,
    recipients: String,
    subject: Option<String>,
}

impl DecisionColumns {
    fn new(d: &Decision) -> Self {
        DecisionColumns {
            message_id: d.message_id.clone(),
            sender: d.sender.clone(),
            client: d.client.clone(),
            pod: d.pod.clone(),
            action: d.action.as_str(),
            rule: d.rule.as_ref().map(ToString::to_string),
            reason: d.reason.clone(),
            recipients: d.recipients.join(LIST_SEP),
            subject: d.subject.clone(),
        }
    }
}

/// A row found by [`Journal::observe`]'s lookups.
struct Found {
    id: RowId,
    mailbox: String,
    uidvalidity: u32,
    uid: u32,
    state: String,
    relayed: bool,
    duplicate_of: Option<RowId>,
    accepted: String,
}

impl Found {
    const COLUMNS: &'static str =
        "id, mailbox, uidvalidity, uid, state, relayed_at IS NOT NULL, duplicate_of, accepted";

    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Found> {
        Ok(Found {
            id: row.get(0)?,
            mailbox: row.get(1)?,
            uidvalidity: row.get(2)?,
            uid: row.get(3)?,
            state: row.get(4)?,
            relayed: row.get(5)?,
            duplicate_of: row.get(6)?,
            accepted: row.get(7)?,
        })
    }

    fn is_open(&self) -> bool {
        !self.relayed && matches!(self.state.as_str(), "pending" | "sending")
    }

    fn open(&self) -> Seen {
        Seen::Open {
            id: self.id,
            accepted: split_list(&self.accepted),
            interrupted: self.state == "sending",
        }
    }
}

impl Journal {
    /// Opens (creating if needed) `<state_dir>/journal.sqlite3`.
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(state_dir).map_err(|source| JournalError::StateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join(FILE_NAME);
        let conn = Self::connect(&path).map_err(|source| JournalError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Journal {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// Opens the file and applies the settings and the schema.
    fn connect(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Point lookups by index: 512 KiB of page cache is plenty, where
        // SQLite's default of 2 MiB stays resident once a drain filled it.
        conn.pragma_update(None, "cache_size", -512)?;
        conn.execute_batch(SCHEMA)?;
        Ok(conn)
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection; a panic elsewhere while holding it leaves SQLite
    /// consistent, so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a copy seen in the inbox and says what to do with it.
    ///
    /// `in_inbox` tells whether a UID is still in the same inbox; a twin
    /// whose copy has gone is adopted rather than waited for.
    pub fn observe(
        &self,
        s: &Sighting<'_>,
        in_inbox: impl Fn(u32) -> bool,
    ) -> Result<Seen, JournalError> {
        let mut seen = self.observe_all(std::slice::from_ref(s), in_inbox)?;
        Ok(seen.remove(0))
    }

    /// [`Journal::observe`] for a batch, in one transaction (one fsync).
    /// Copies are looked at in order, so a twin later in the batch sees
    /// the row of the one before it.
    pub fn observe_all(
        &self,
        sightings: &[Sighting<'_>],
        in_inbox: impl Fn(u32) -> bool,
    ) -> Result<Vec<Seen>, JournalError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut seen = Vec::with_capacity(sightings.len());
        for s in sightings {
            let cols = DecisionColumns::new(s.decision);
            seen.push(Self::observe_in(&tx, s, &cols, &in_inbox)?);
        }
        tx.commit()?;
        Ok(seen)
    }

    fn observe_in(
        tx: &Transaction<'_>,
        s: &Sighting<'_>,
        cols: &DecisionColumns,
        in_inbox: &impl Fn(u32) -> bool,
    ) -> Result<Seen, JournalError> {
        // This very copy, seen before.
        if let Some(found) = Self::find_copy(tx, s)? {
            if found.relayed || found.duplicate_of.is_some() {
                return Ok(Seen::Relayed {
                    id: found.id,
                    duplicate_of: found.duplicate_of,
                });
            }
            Self::update_decision(tx, found.id, cols)?;
            return Ok(found.open());
        }

        // The same message under another UID or in another inbox.
        let others = Self::find_same_content(tx, s, cols)?;
        if let Some(orig) = others.iter().find(|f| f.relayed) {
            let id = Self::insert_duplicate(tx, s, cols, orig.id)?;
            return Ok(Seen::Relayed {
                id,
                duplicate_of: Some(orig.id),
            });
        }
        if let Some(open) = others.iter().find(|f| f.is_open()) {
            let here = open.mailbox == s.mailbox && open.uidvalidity == s.uidvalidity;
            if here && in_inbox(open.uid) {
                return Ok(Seen::Twin { of: open.id });
            }
            Self::adopt(tx, open.id, s)?;
            Self::update_decision(tx, open.id, cols)?;
            return Ok(open.open());
        }

        // A message never seen, or seen and filed without a relay.
        let id = Self::insert(tx, s, cols, None)?;
        Ok(Seen::Open {
            id,
            accepted: Vec::new(),
            interrupted: false,
        })
    }

    fn find_copy(tx: &Transaction<'_>, s: &Sighting<'_>) -> rusqlite::Result<Option<Found>> {
        let sql = format!(
            "SELECT {} FROM messages WHERE mailbox = ?1 AND uidvalidity = ?2 AND uid = ?3 \
             AND content_hash = ?4",
            Found::COLUMNS
        );
        tx.query_row(
            &sql,
            params![s.mailbox, s.uidvalidity, s.uid, s.content_hash],
            Found::from_row,
        )
        .optional()
    }

    fn find_same_content(
        tx: &Transaction<'_>,
        s: &Sighting<'_>,
        cols: &DecisionColumns,
    ) -> rusqlite::Result<Vec<Found>> {
        let sql = format!(
            "SELECT {} FROM messages WHERE duplicate_of IS NULL AND (content_hash = ?1 \
             OR (?2 IS NOT NULL AND ?3 IS NOT NULL AND message_id = ?2 AND sender = ?3)) \
             ORDER BY id",
            Found::COLUMNS
        );
        let mut stmt = tx.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![s.content_hash, cols.message_id, cols.sender],
            Found::from_row,
        )?;
        rows.collect()
    }

    fn insert(
        tx: &Transaction<'_>,
        s: &Sighting<'_>,
        cols: &DecisionColumns,
        duplicate_of: Option<RowId>,
    ) -> rusqlite::Result<RowId> {
        tx.execute(
            "INSERT INTO messages (mailbox, uidvalidity, uid, message_id, content_hash, \
             sender, client, pod, action, rule, reason, recipients, subject, state, \
             duplicate_of, first_seen) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'pending', ?14, ?15)",
            params![
                s.mailbox,
                s.uidvalidity,
                s.uid,
                cols.message_id,
                s.content_hash,
                cols.sender,
                cols.client,
                cols.pod,
                cols.action,
                cols.rule,
                cols.reason,
                cols.recipients,
                cols.subject,
                duplicate_of,
                now(),
            ],
        )?;
        Ok(tx.last_insert_rowid())
    }

    fn insert_duplicate(
        tx: &Transaction<'_>,
        s: &Sighting<'_>,
        cols: &DecisionColumns,
        orig: RowId,
    ) -> rusqlite::Result<RowId> {
        let relayed_at: Option<String> = tx.query_row(
            "SELECT relayed_at FROM messages WHERE id = ?1",
            [orig],
            |r| r.get(0),
        )?;
        let dup = DecisionColumns {
            action: "skip",
            reason: format!(
                "already relayed as journal entry {orig} at {}",
                relayed_at.unwrap_or_default()
            ),
            recipients: String::new(),
            ..cols.clone()
        };
        Self::insert(tx, s, &dup, Some(orig))
    }

    fn adopt(tx: &Transaction<'_>, id: RowId, s: &Sighting<'_>) -> rusqlite::Result<()> {
        tx.execute(
            "UPDATE messages SET mailbox = ?2, uidvalidity = ?3, uid = ?4, content_hash = ?5 \
             WHERE id = ?1",
            params![id, s.mailbox, s.uidvalidity, s.uid, s.content_hash],
        )?;
        Ok(())
    }

    fn update_decision(
        tx: &Transaction<'_>,
        id: RowId,
        cols: &DecisionColumns,
    ) -> rusqlite::Result<()> {
        tx.execute(
            "UPDATE messages SET message_id = ?2, sender = ?3, client = ?4, pod = ?5, \
             action = ?6, rule = ?7, reason = ?8, recipients = ?9, subject = ?10 WHERE id = ?1",
            params![
                id,
                cols.message_id,
                cols.sender,
                cols.client,
                cols.pod,
                cols.action,
                cols.rule,
                cols.reason,
                cols.recipients,
                cols.subject,
            ],
        )?;
        Ok(())
    }

    /// Records that SMTP attempts start for these rows (state `sending`),
    /// in one transaction. The attempt is counted when its outcome is
    /// recorded.
    ///
    /// This write is not fsynced (`synchronous = NORMAL` for it alone): it
    /// only marks the attempt for the warning after a crash. A process
    /// crash keeps it; a power cut may lose it, and then the message is
    /// relayed again just the same, without the warning.
    pub fn begin_attempts(&self, ids: &[RowId]) -> Result<(), JournalError> {
        let mut conn = self.lock();
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let marked = Self::update_all_in(
            &mut conn,
            ids,
            "UPDATE messages SET state = 'sending' WHERE id = ?1",
        );
        conn.pragma_update(None, "synchronous", "FULL")?;
        marked
    }

    /// Undoes [`Journal::begin_attempts`] for rows whose attempt never
    /// started (shutdown came first).
    pub fn release(&self, ids: &[RowId]) -> Result<(), JournalError> {
        self.update_all(
            ids,
            "UPDATE messages SET state = 'pending' WHERE id = ?1 AND state = 'sending'",
        )
    }

    /// Runs one single-parameter update per row, in one transaction.
    fn update_all(&self, ids: &[RowId], sql: &str) -> Result<(), JournalError> {
        Self::update_all_in(&mut self.lock(), ids, sql)
    }

    fn update_all_in(conn: &mut Connection, ids: &[RowId], sql: &str) -> Result<(), JournalError> {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(sql)?;
            for id in ids {
                stmt.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records that one recipient accepted the message, before the next is
    /// tried, so that recipient is never sent to again.
    pub fn record_accepted(
        &self,
        id: RowId,
        recipient: &str,
        reply: &str,
    ) -> Result<(), JournalError> {
        self.lock().execute(
            "UPDATE messages SET accepted = CASE WHEN accepted = '' THEN ?2 \
             ELSE accepted || ?3 || ?2 END, smtp_reply = ?4 WHERE id = ?1",
            params![id, recipient, LIST_SEP, reply],
        )?;
        Ok(())
    }

    /// Records that the relay took the message: the guard against a second
    /// relay. `refused` lists recipients refused for good, with the reply.
    pub fn record_relayed(
        &self,
        id: RowId,
        accepted: &[String],
        refused: &[(String, String)],
        reply: &str,
    ) -> Result<(), JournalError> {
        self.record_relayed_linked(id, accepted, refused, reply, None)
            .map(drop)
    }

    /// [`Journal::record_relayed`], and in the same transaction the
    /// message's place in its thread. Returns the thread, when it has one.
    pub fn record_relayed_linked(
        &self,
        id: RowId,
        accepted: &[String],
        refused: &[(String, String)],
        reply: &str,
        link: Option<&ThreadLink>,
    ) -> Result<Option<i64>, JournalError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE messages SET state = 'relayed', accepted = ?2, refused = ?3, \
             smtp_reply = ?4, last_error = NULL, relayed_at = ?5, attempts = attempts + 1 \
             WHERE id = ?1",
            params![
                id,
                accepted.join(LIST_SEP),
                join_refused(refused),
                reply,
                now()
            ],
        )?;
        let thread = match link {
            Some(link) => Self::link_in(&tx, id, link)?,
            None => None,
        };
        tx.commit()?;
        Ok(thread)
    }

    /// Places a message in its thread, opening one for a client's message
    /// that answers none.
    fn link_in(
        tx: &Transaction<'_>,
        row: RowId,
        link: &ThreadLink,
    ) -> rusqlite::Result<Option<i64>> {
        let thread = match link.thread {
            Some(t) if link.from_client => {
                // A client's message (re)places the thread with its pod.
                tx.execute(
                    "UPDATE threads SET pod = ?2 WHERE id = ?1",
                    params![t, link.pod],
                )?;
                t
            }
            Some(t) => t,
            None if link.from_client => {
                tx.execute(
                    "INSERT INTO threads (root, pod, client, sender, subject, opened_row, opened_at) \
                     SELECT ?1, ?2, ?3, ?4, ?5, id, first_seen FROM messages WHERE id = ?6 \
                     ON CONFLICT (root) DO NOTHING",
                    params![
                        link.message_id,
                        link.pod,
                        link.client,
                        link.sender,
                        link.subject,
                        row
                    ],
                )?;
                tx.query_row(
                    "SELECT id FROM threads WHERE root = ?1",
                    [&link.message_id],
                    |r| r.get(0),
                )?
            }
            None => return Ok(None),
        };
        let ids = std::iter::once(&link.message_id).chain(&link.references);
        Self::link_ids_in(tx, thread, ids)?;
        Ok(Some(thread))
    }

    fn link_ids_in<'a>(
        tx: &Transaction<'_>,
        thread: i64,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> rusqlite::Result<()> {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO thread_ids (message_id, thread) VALUES (?1, ?2) \
             ON CONFLICT (message_id) DO NOTHING",
        )?;
        for id in ids {
            if !id.is_empty() {
                stmt.execute(params![id, thread])?;
            }
        }
        Ok(())
    }

    /// Adds Message-IDs (an acknowledgement's, an escalated copy's) to a
    /// thread.
    pub fn link_ids(&self, thread: i64, ids: &[String]) -> Result<(), JournalError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        Self::link_ids_in(&tx, thread, ids)?;
        tx.commit()?;
        Ok(())
    }

    /// The thread one of these Message-IDs leads to; the first that leads
    /// anywhere wins.
    pub fn find_thread(&self, ids: &[String]) -> Result<Option<ThreadRef>, JournalError> {
        Ok(find_thread_in(&self.lock(), ids)?)
    }

    /// Records a pod member's reply in a thread. Returns the time from
    /// the client's message to this reply when it is the thread's first.
    pub fn record_response(
        &self,
        thread: i64,
        responder: &str,
        message_id: Option<&str>,
    ) -> Result<Option<Duration>, JournalError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if let Some(id) = message_id {
            Self::link_ids_in(&tx, thread, [&id.to_owned()])?;
        }
        let opened: Option<String> = tx
            .query_row(
                "SELECT opened_at FROM threads WHERE id = ?1 AND first_response_at IS NULL",
                [thread],
                |r| r.get(0),
            )
            .optional()?;
        let Some(opened) = opened else {
            tx.commit()?;
            return Ok(None);
        };
        let at = SystemTime::now();
        let waited = humantime::parse_rfc3339(&opened)
            .ok()
            .and_then(|o| at.duration_since(o).ok())
            .unwrap_or_default();
        tx.execute(
            "UPDATE threads SET first_response_at = ?2, first_response_ms = ?3, responder = ?4 \
             WHERE id = ?1",
            params![
                thread,
                humantime::format_rfc3339_millis(at).to_string(),
                waited.as_millis() as i64,
                responder
            ],
        )?;
        tx.commit()?;
        Ok(Some(waited))
    }

    /// Claims the acknowledgement for `address`: true, and the time
    /// recorded, unless it had one less than `interval` ago. Claimed
    /// before sending, so a failed send is not retried.
    pub fn claim_ack(
        &self,
        address: &str,
        interval: Duration,
        pod: &str,
        message_id: &str,
    ) -> Result<bool, JournalError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last: Option<String> = tx
            .query_row(
                "SELECT sent_at FROM acks WHERE address = ?1",
                [address],
                |r| r.get(0),
            )
            .optional()?;
        let now_t = SystemTime::now();
        let recent = last
            .and_then(|l| humantime::parse_rfc3339(&l).ok())
            .is_some_and(|l| now_t.duration_since(l).unwrap_or_default() < interval);
        if recent {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO acks (address, sent_at, pod, message_id) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (address) DO UPDATE SET sent_at = ?2, pod = ?3, message_id = ?4",
            params![address, now(), pod, message_id],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Threads with no reply yet and not escalated.
    pub fn waiting_threads(&self) -> Result<Vec<Waiting>, JournalError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, root, pod, sender, subject, opened_at FROM threads \
             WHERE first_response_at IS NULL AND escalated_at IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            let opened: String = r.get(5)?;
            Ok(Waiting {
                id: r.get(0)?,
                root: r.get(1)?,
                pod: r.get(2)?,
                sender: r.get(3)?,
                subject: r.get(4)?,
                opened_at: humantime::parse_rfc3339(&opened).unwrap_or(SystemTime::UNIX_EPOCH),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks a thread escalated (`escalated = true`) before its copy is
    /// sent, or takes the mark back after a temporary failure.
    pub fn mark_escalated(&self, thread: i64, escalated: bool) -> Result<(), JournalError> {
        let at = escalated.then(now);
        self.lock().execute(
            "UPDATE threads SET escalated_at = ?2 WHERE id = ?1",
            params![thread, at],
        )?;
        Ok(())
    }

    /// Records a temporary failure; the message stays open for a retry.
    pub fn record_deferred(&self, id: RowId, error: &str) -> Result<(), JournalError> {
        self.lock().execute(
            "UPDATE messages SET state = 'pending', last_error = ?2, attempts = attempts + 1 \
             WHERE id = ?1",
            params![id, error],
        )?;
        Ok(())
    }

    /// Records that the relay refused the message for every recipient; it
    /// is filed for a person next.
    pub fn record_refused(
        &self,
        id: RowId,
        refused: &[(String, String)],
        reply: &str,
    ) -> Result<(), JournalError> {
        self.lock().execute(
            "UPDATE messages SET state = 'pending', refused = ?2, smtp_reply = ?3, \
             last_error = ?3, reason = reason || '; refused by the relay', \
             attempts = attempts + 1 WHERE id = ?1",
            params![id, join_refused(refused), reply],
        )?;
        Ok(())
    }

    /// Records that these rows' messages now sit in `folder`.
    pub fn record_filed(&self, ids: &[RowId], folder: &str) -> Result<(), JournalError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let at = now();
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE messages SET state = 'filed', folder = ?2, filed_at = ?3 WHERE id = ?1",
            )?;
            for id in ids {
                stmt.execute(params![id, folder, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Formats refused recipients as `addr: reply; addr: reply`.
fn join_refused(refused: &[(String, String)]) -> String {
    refused
        .iter()
        .map(|(rcpt, reply)| format!("{rcpt}: {reply}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Action, Rule};

    fn decision(message_id: Option<&str>, sender: &str) -> Decision {
        Decision {
            action: Action::Relay,
            sender: Some(sender.to_owned()),
            sender_name: None,
            client: Some("sunnyvale".to_owned()),
            pod: Some("alberta".to_owned()),
            rule: Some(Rule::Domain("sunnyvale.example".to_owned())),
            reason: "domain sunnyvale.example".to_owned(),
            recipients: vec![
                "ana@vendor.example".to_owned(),
                "ben@vendor.example".to_owned(),
            ],
            message_id: message_id.map(str::to_owned),
            subject: Some("Printer".to_owned()),
            personal: crate::engine::Personal::default(),
        }
    }

    fn sighting<'a>(uv: u32, uid: u32, hash: &'a str, d: &'a Decision) -> Sighting<'a> {
        Sighting {
            mailbox: "support@localhost/INBOX",
            uidvalidity: uv,
            uid,
            content_hash: hash,
            decision: d,
        }
    }

    fn open_id(seen: &Seen) -> RowId {
        match seen {
            Seen::Open { id, .. } => *id,
            other => panic!("expected an open row, got {other:?}"),
        }
    }

    fn column(j: &Journal, id: RowId, name: &str) -> Option<String> {
        j.lock()
            .query_row(
                &format!("SELECT CAST({name} AS TEXT) FROM messages WHERE id = ?1"),
                [id],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// Observes, relays and files one copy; returns its row.
    fn relay_and_file(j: &Journal, s: &Sighting<'_>) -> RowId {
        let id = open_id(&j.observe(s, |_| true).unwrap());
        j.begin_attempts(&[id]).unwrap();
        j.record_relayed(id, &s.decision.recipients, &[], "250 ok")
            .unwrap();
        j.record_filed(&[id], "Routed").unwrap();
        id
    }

    #[test]
    fn opens_in_wal_mode_with_the_documented_columns() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("state")).unwrap();
        assert!(j.path().ends_with(FILE_NAME));
        let mode: String = j
            .lock()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let conn = j.lock();
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info('messages')")
            .unwrap();
        let names: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for want in [
            "id",
            "uidvalidity",
            "uid",
            "message_id",
            "content_hash",
            "sender",
            "client",
            "pod",
            "action",
            "rule",
            "reason",
            "recipients",
            "subject",
            "smtp_reply",
            "folder",
            "state",
            "attempts",
            "first_seen",
            "relayed_at",
            "filed_at",
        ] {
            assert!(names.iter().any(|n| n == want), "missing column {want}");
        }
    }

    #[test]
    fn a_new_message_is_open_and_records_the_decision() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(Some("a@x"), "clerk@sunnyvale.example");
        let hash = content_hash(b"raw");
        let seen = j.observe(&sighting(7, 1, &hash, &d), |_| true).unwrap();
        let id = open_id(&seen);
        assert_eq!(column(&j, id, "state").as_deref(), Some("pending"));
        assert_eq!(column(&j, id, "action").as_deref(), Some("relay"));
        assert_eq!(
            column(&j, id, "rule").as_deref(),
            Some("domain sunnyvale.example")
        );
        assert_eq!(
            column(&j, id, "recipients").as_deref(),
            Some("ana@vendor.example, ben@vendor.example")
        );
        assert!(column(&j, id, "first_seen").unwrap().ends_with('Z'));
    }

    #[test]
    fn crash_after_relay_before_move_files_without_relaying() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(Some("a@x"), "clerk@sunnyvale.example");
        let hash = content_hash(b"raw");
        let s = sighting(7, 1, &hash, &d);
        let id = open_id(&j.observe(&s, |_| true).unwrap());
        j.begin_attempts(&[id]).unwrap();
        j.record_relayed(id, &d.recipients, &[], "250 ok").unwrap();
        drop(j);

        let j = Journal::open(dir.path()).unwrap();
        let seen = j.observe(&s, |_| true).unwrap();
        assert_eq!(
            seen,
            Seen::Relayed {
                id,
                duplicate_of: None
            }
        );
    }

    #[test]
    fn crash_during_send_is_reported_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(Some("a@x"), "clerk@sunnyvale.example");
        let hash = content_hash(b"raw");
        let s = sighting(7, 1, &hash, &d);
        let id = open_id(&j.observe(&s, |_| true).unwrap());
        j.begin_attempts(&[id]).unwrap();
        j.record_accepted(id, "ana@vendor.example", "250 ok")
            .unwrap();

        let seen = j.observe(&s, |_| true).unwrap();
        assert_eq!(
            seen,
            Seen::Open {
                id,
                accepted: vec!["ana@vendor.example".to_owned()],
                interrupted: true
            }
        );
        j.record_deferred(id, "451 later").unwrap();
        assert_eq!(column(&j, id, "attempts").as_deref(), Some("1"));
        assert_eq!(column(&j, id, "state").as_deref(), Some("pending"));
    }

    #[test]
    fn a_released_attempt_is_not_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(Some("a@x"), "clerk@sunnyvale.example");
        let hash = content_hash(b"raw");
        let s = sighting(7, 1, &hash, &d);
        let id = open_id(&j.observe(&s, |_| true).unwrap());
        j.begin_attempts(&[id]).unwrap();
        j.release(&[id]).unwrap();
        let seen = j.observe(&s, |_| true).unwrap();
        assert!(
            matches!(
                seen,
                Seen::Open {
                    interrupted: false,
                    ..
                }
            ),
            "{seen:?}"
        );
    }

    #[test]
    fn twins_in_one_batch_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(Some("a@x"), "clerk@sunnyvale.example");
        let hash = content_hash(b"raw");
        let batch = [sighting(7, 1, &hash, &d), sighting(7, 2, &hash, &d)];
        let seen = j.observe_all(&batch, |_| true).unwrap();
        let first = open_id(&seen[0]);
        assert_eq!(seen[1], Seen::Twin { of: first });
    }

    #[test]
    fn uidvalidity_reset_makes_a_relayed_message_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(Some("a@x"), "clerk@sunnyvale.example");
        let hash = content_hash(b"raw");
        let orig = relay_and_file(&j, &sighting(7, 1, &hash, &d));

        let seen = j.observe(&sighting(8, 1, &hash, &d), |_| true).unwrap();
        let Seen::Relayed {
            id,
            duplicate_of: Some(of),
        } = seen
        else {
            panic!("expected a duplicate, got {seen:?}");
        };
        assert_eq!(of, orig);
        assert_ne!(id, orig);
        assert_eq!(column(&j, id, "action").as_deref(), Some("skip"));
        assert!(column(&j, id, "relayed_at").is_none());
        // Seen again under the same new UID: still only filed.
        let again = j.observe(&sighting(8, 1, &hash, &d), |_| true).unwrap();
        assert!(matches!(again, Seen::Relayed { .. }));
    }

    #[test]
    fn same_message_id_and_sender_with_other_bytes_is_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(Some("a@x"), "clerk@sunnyvale.example");
        let h1 = content_hash(b"Received: one\r\n\r\nbody");
        let h2 = content_hash(b"Received: two\r\n\r\nbody");
        relay_and_file(&j, &sighting(7, 1, &h1, &d));
        let seen = j.observe(&sighting(7, 2, &h2, &d), |_| true).unwrap();
        assert!(matches!(
            seen,
            Seen::Relayed {
                duplicate_of: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_message_id_reused_by_another_sender_is_not_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d1 = decision(Some("a@x"), "clerk@sunnyvale.example");
        let d2 = decision(Some("a@x"), "mallory@elsewhere.example");
        let h1 = content_hash(b"one");
        let h2 = content_hash(b"two");
        relay_and_file(&j, &sighting(7, 1, &h1, &d1));
        let seen = j.observe(&sighting(7, 2, &h2, &d2), |_| true).unwrap();
        assert!(matches!(seen, Seen::Open { .. }));
    }

    #[test]
    fn without_message_id_only_identical_bytes_match() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(None, "clerk@sunnyvale.example");
        let h1 = content_hash(b"one");
        let h2 = content_hash(b"two");
        relay_and_file(&j, &sighting(7, 1, &h1, &d));
        assert!(matches!(
            j.observe(&sighting(7, 2, &h2, &d), |_| true).unwrap(),
            Seen::Open { .. }
        ));
        assert!(matches!(
            j.observe(&sighting(7, 3, &h1, &d), |_| true).unwrap(),
            Seen::Relayed { .. }
        ));
    }

    #[test]
    fn a_twin_waits_while_its_copy_is_in_the_inbox() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(Some("a@x"), "clerk@sunnyvale.example");
        let hash = content_hash(b"raw");
        let first = open_id(&j.observe(&sighting(7, 1, &hash, &d), |_| true).unwrap());
        let seen = j
            .observe(&sighting(7, 2, &hash, &d), |uid| uid == 1)
            .unwrap();
        assert_eq!(seen, Seen::Twin { of: first });
        // The first copy vanished from the inbox: the second takes its row.
        let seen = j.observe(&sighting(7, 2, &hash, &d), |_| false).unwrap();
        assert_eq!(open_id(&seen), first);
    }

    #[test]
    fn an_unfinished_row_is_adopted_after_a_uidvalidity_reset() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(Some("a@x"), "clerk@sunnyvale.example");
        let hash = content_hash(b"raw");
        let id = open_id(&j.observe(&sighting(7, 1, &hash, &d), |_| true).unwrap());
        j.begin_attempts(&[id]).unwrap();
        j.record_accepted(id, "ana@vendor.example", "250 ok")
            .unwrap();
        j.record_deferred(id, "451 try later").unwrap();

        let seen = j.observe(&sighting(8, 5, &hash, &d), |_| true).unwrap();
        assert_eq!(
            seen,
            Seen::Open {
                id,
                accepted: vec!["ana@vendor.example".to_owned()],
                interrupted: false
            }
        );
        assert_eq!(column(&j, id, "uidvalidity").as_deref(), Some("8"));
    }

    #[test]
    fn held_mail_moved_back_is_handled_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(Some("a@x"), "clerk@sunnyvale.example");
        let hash = content_hash(b"raw");
        let id = open_id(&j.observe(&sighting(7, 1, &hash, &d), |_| true).unwrap());
        j.record_refused(
            id,
            &[("ana@vendor.example".into(), "550 no".into())],
            "550 no",
        )
        .unwrap();
        j.record_filed(&[id], "Held").unwrap();
        assert_eq!(
            column(&j, id, "refused").as_deref(),
            Some("ana@vendor.example: 550 no")
        );

        let seen = j.observe(&sighting(7, 9, &hash, &d), |_| true).unwrap();
        assert_ne!(open_id(&seen), id);
    }

    #[test]
    fn partial_delivery_keeps_accepted_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(Some("a@x"), "clerk@sunnyvale.example");
        let hash = content_hash(b"raw");
        let id = open_id(&j.observe(&sighting(7, 1, &hash, &d), |_| true).unwrap());
        let accepted = vec!["ana@vendor.example".to_owned()];
        let refused = vec![(
            "ben@vendor.example".to_owned(),
            "550 5.1.1 unknown".to_owned(),
        )];
        j.record_relayed(id, &accepted, &refused, "250 ok").unwrap();
        assert_eq!(
            column(&j, id, "accepted").as_deref(),
            Some("ana@vendor.example")
        );
        assert_eq!(
            column(&j, id, "refused").as_deref(),
            Some("ben@vendor.example: 550 5.1.1 unknown")
        );
        assert_eq!(column(&j, id, "state").as_deref(), Some("relayed"));
    }
    fn link(message_id: &str, refs: &[&str], thread: Option<i64>, from_client: bool) -> ThreadLink {
        ThreadLink {
            thread,
            message_id: message_id.to_owned(),
            references: refs.iter().map(|r| r.to_string()).collect(),
            pod: "alberta".to_owned(),
            client: Some("sunnyvale".to_owned()),
            sender: Some("clerk@sunnyvale.example".to_owned()),
            subject: Some("Printer".to_owned()),
            from_client,
        }
    }

    #[test]
    fn a_relayed_message_opens_a_thread_its_replies_find() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(Some("root@x"), "clerk@sunnyvale.example");
        let hash = content_hash(b"raw");
        let id = open_id(&j.observe(&sighting(7, 1, &hash, &d), |_| true).unwrap());
        let l = link("root@x", &["older@x"], None, true);
        let thread = j
            .record_relayed_linked(id, &d.recipients, &[], "250 ok", Some(&l))
            .unwrap()
            .unwrap();
        assert_eq!(column(&j, id, "state").as_deref(), Some("relayed"));
        for ids in [
            vec!["nope@x".to_owned(), "root@x".to_owned()],
            vec!["older@x".to_owned()],
        ] {
            let found = j.find_thread(&ids).unwrap().unwrap();
            assert_eq!(
                (found.id, found.root.as_str(), found.pod.as_str()),
                (thread, "root@x", "alberta")
            );
        }
        assert!(j.find_thread(&["nope@x".to_owned()]).unwrap().is_none());
        assert_eq!(j.waiting_threads().unwrap().len(), 1);

        // The first reply is the first response; a second one is not.
        let first = j
            .record_response(thread, "ana@vendor.example", Some("reply@x"))
            .unwrap();
        assert!(first.is_some());
        assert!(j
            .record_response(thread, "ben@vendor.example", None)
            .unwrap()
            .is_none());
        assert_eq!(
            j.find_thread(&["reply@x".to_owned()]).unwrap().unwrap().id,
            thread
        );
        assert!(j.waiting_threads().unwrap().is_empty());
    }

    #[test]
    fn an_escalation_mark_takes_a_thread_off_the_waiting_list() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let d = decision(Some("root@x"), "clerk@sunnyvale.example");
        let hash = content_hash(b"raw");
        let id = open_id(&j.observe(&sighting(7, 1, &hash, &d), |_| true).unwrap());
        let l = link("root@x", &[], None, true);
        let t = j
            .record_relayed_linked(id, &[], &[], "250", Some(&l))
            .unwrap()
            .unwrap();
        j.mark_escalated(t, true).unwrap();
        assert!(j.waiting_threads().unwrap().is_empty());
        j.mark_escalated(t, false).unwrap();
        assert_eq!(j.waiting_threads().unwrap().len(), 1);
    }

    #[test]
    fn an_ack_is_claimed_once_per_interval_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86400);
        let j = Journal::open(dir.path()).unwrap();
        assert!(j.claim_ack("clerk@x", day, "alberta", "a1@x").unwrap());
        assert!(!j.claim_ack("clerk@x", day, "alberta", "a2@x").unwrap());
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert!(!j.claim_ack("clerk@x", day, "alberta", "a3@x").unwrap());
        assert!(j.claim_ack("other@x", day, "alberta", "a4@x").unwrap());
        assert!(j
            .claim_ack("clerk@x", Duration::ZERO, "alberta", "a5@x")
            .unwrap());
    }

    #[test]
    fn an_old_journal_gains_the_thread_tables() {
        let dir = tempfile::tempdir().unwrap();
        let old_schema = SCHEMA
            .split("CREATE TABLE IF NOT EXISTS threads")
            .next()
            .unwrap();
        {
            let conn = Connection::open(dir.path().join(FILE_NAME)).unwrap();
            conn.execute_batch(old_schema).unwrap();
            conn.execute(
                "INSERT INTO messages (mailbox, uidvalidity, uid, content_hash, action, reason, \
                 state, first_seen) VALUES ('m', 1, 1, 'h', 'relay', 'r', 'filed', 'now')",
                [],
            )
            .unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        assert!(j.waiting_threads().unwrap().is_empty());
        assert!(j.find_thread(&["x@y".to_owned()]).unwrap().is_none());
        let rows: i64 = j
            .lock()
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }
}
