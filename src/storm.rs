//! Auto-responder storms: one sender whose mail keeps coming.
//!
//! An auto-responder that does not say it is one (no `Auto-Submitted`, no
//! `Precedence`) can answer every relayed message, and each answer would be
//! relayed again. [`Storm`] counts, per sender, the messages decided
//! [`Action::Relay`] within `routing.storm_window`; past
//! `routing.storm_limit` the rest are held with a reason that says so. The
//! limit trips one warning per storm, not one per message.
//!
//! Voicemail routed by its caller's number is counted per caller, not per
//! sender: every notification comes from the PBX's one address, and a busy
//! morning's voicemail is not a storm. One caller leaving more than the
//! limit is.
//!
//! Messages are counted by content hash, so a message looked at again (a
//! retry, a restart) is not counted twice and keeps its first verdict. The
//! window is kept in memory; the daemon's [`apply`] seeds it from the
//! journal's recent rows once, so a restart does not reset a storm.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::config::{Config, StormConfig};
use crate::engine::{Action, Decision};
use crate::journal::Journal;

/// The start of the reason given to mail held for a storm.
pub const REASON_PREFIX: &str = "storm:";

/// What [`Storm::check`] says about one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: relay it.
    Pass,
    /// Over the limit: hold it, for this reason.
    Hold(String),
}

/// One message counted for a sender.
#[derive(Debug)]
struct Counted {
    /// When it was first seen.
    at: SystemTime,
    /// Its content hash, so it is counted once.
    hash: String,
    /// Whether it was within the limit.
    passed: bool,
}

/// The messages of one sender within the window.
#[derive(Debug, Default)]
struct Sender {
    /// Oldest first.
    counted: VecDeque<Counted>,
    /// Whether this storm has been reported already.
    warned: bool,
}

/// Per-sender sliding windows.
#[derive(Debug)]
pub struct Storm {
    /// The limit and window in force (replaced on reload).
    config: StormConfig,
    /// Senders with messages in the window.
    senders: HashMap<String, Sender>,
    /// Checks since the last sweep of idle senders.
    since_sweep: usize,
}

/// How many checks pass between sweeps of senders with nothing left.
const SWEEP_EVERY: usize = 1000;

impl Storm {
    /// An empty counter with these settings.
    pub fn new(config: StormConfig) -> Storm {
        Storm {
            config,
            senders: HashMap::new(),
            since_sweep: 0,
        }
    }

    /// Takes new settings (after a reload); what was counted stays.
    pub fn set_config(&mut self, config: StormConfig) {
        self.config = config;
    }

    /// Counts a message seen earlier (from the journal) without a verdict.
    pub fn seed(&mut self, sender: &str, hash: &str, at: SystemTime, passed: bool) {
        let entry = self.senders.entry(sender.to_owned()).or_default();
        if entry.counted.iter().any(|c| c.hash == hash) {
            return;
        }
        let pos = entry.counted.partition_point(|c| c.at <= at);
        entry.counted.insert(
            pos,
            Counted {
                at,
                hash: hash.to_owned(),
                passed,
            },
        );
    }

    /// Counts a relay-bound message from `sender` at `now` and says
    /// whether it may go.
    pub fn check(&mut self, sender: &str, hash: &str, now: SystemTime) -> Verdict {
        if self.config.limit == 0 {
            return Verdict::Pass;
        }
        self.sweep(now);
        let (limit, window) = (self.config.limit, self.config.window);
        let entry = self.senders.entry(sender.to_owned()).or_default();
        prune(entry, now, window, limit);
        let reason = || storm_reason(limit, sender, window);
        if let Some(c) = entry.counted.iter().find(|c| c.hash == hash) {
            return if c.passed {
                Verdict::Pass
            } else {
                Verdict::Hold(reason())
            };
        }
        let passed = entry.counted.len() < limit;
        entry.counted.push_back(Counted {
            at: now,
            hash: hash.to_owned(),
            passed,
        });
        if passed {
            return Verdict::Pass;
        }
        if !entry.warned {
            entry.warned = true;
            tracing::warn!(
                sender,
                limit,
                window = %humantime::format_duration(window),
                "auto-responder storm: holding this sender's further mail"
            );
        }
        Verdict::Hold(reason())
    }

    /// Drops senders with nothing left in the window, now and then.
    fn sweep(&mut self, now: SystemTime) {
        self.since_sweep += 1;
        if self.since_sweep < SWEEP_EVERY {
            return;
        }
        self.since_sweep = 0;
        let (window, limit) = (self.config.window, self.config.limit);
        self.senders.retain(|_, s| {
            prune(s, now, window, limit);
            !s.counted.is_empty()
        });
    }

    /// How many senders are tracked (for tests).
    pub fn senders(&self) -> usize {
        self.senders.len()
    }
}

/// Forgets a sender's messages older than the window; a storm that has
/// calmed below the limit may warn again next time.
fn prune(sender: &mut Sender, now: SystemTime, window: Duration, limit: usize) {
    let cutoff = crate::journal::ago(now, window);
    while sender.counted.front().is_some_and(|c| c.at < cutoff) {
        sender.counted.pop_front();
    }
    if sender.counted.len() < limit {
        sender.warned = false;
    }
}

/// "storm: more than 20 messages from x in 10m".
fn storm_reason(limit: usize, sender: &str, window: Duration) -> String {
    format!(
        "{REASON_PREFIX} more than {limit} messages from {sender} in {}",
        humantime::format_duration(window)
    )
}

/// Turns a relay decision over the limit into a hold.
pub fn limit(storm: &mut Storm, hash: &str, now: SystemTime, decision: Decision) -> Decision {
    if decision.action != Action::Relay {
        return decision;
    }
    let rule = decision.rule.as_ref().map(ToString::to_string);
    let Some(sender) = storm_key(decision.sender.as_deref(), rule.as_deref()) else {
        return decision;
    };
    match storm.check(&sender, hash, now) {
        Verdict::Pass => decision,
        Verdict::Hold(reason) => Decision {
            action: Action::Hold,
            reason,
            recipients: Vec::new(),
            ..decision
        },
    }
}

/// Whose messages a decision counts towards: the caller for voicemail
/// routed by phone (rule `phone +1...`), else the sender.
fn storm_key(sender: Option<&str>, rule: Option<&str>) -> Option<String> {
    if let Some(caller) = rule.and_then(|r| r.strip_prefix("phone ")) {
        return Some(format!("caller {caller}"));
    }
    sender.map(str::to_string)
}

/// The daemon's counter, and the journal it was seeded from.
static DAEMON: Mutex<Option<(PathBuf, Storm)>> = Mutex::new(None);

/// The daemon's hook after `decide`: applies the storm limit of `config`
/// with the process's counter, seeded from `journal` on first use.
pub fn apply(config: &Config, journal: &Journal, hash: &str, decision: Decision) -> Decision {
    if decision.action != Action::Relay || config.storm.limit == 0 {
        return decision;
    }
    let mut guard = DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_none_or(|(p, _)| p != journal.path()) {
        let mut storm = Storm::new(config.storm);
        seed_from_journal(&mut storm, journal.path(), SystemTime::now());
        *guard = Some((journal.path().to_owned(), storm));
    }
    let (_, storm) = guard.as_mut().expect("set above");
    storm.set_config(config.storm);
    limit(storm, hash, SystemTime::now(), decision)
}

/// Counts the journal's rows of the last window: relays, and holds for a
/// storm. Best effort: a journal that cannot be read starts the count
/// empty.
pub fn seed_from_journal(storm: &mut Storm, path: &Path, now: SystemTime) {
    if let Err(e) = try_seed(storm, path, now) {
        tracing::debug!(error = %e, "storm counter starts empty");
    }
}

fn try_seed(storm: &mut Storm, path: &Path, now: SystemTime) -> rusqlite::Result<()> {
    let window = storm.config.window;
    let cutoff = crate::journal::ago(now, window);
    let cutoff = humantime::format_rfc3339_millis(cutoff).to_string();
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(
        "SELECT sender, content_hash, first_seen, action, rule FROM messages \
         WHERE sender IS NOT NULL AND duplicate_of IS NULL AND first_seen >= ?1 \
         AND (action = 'relay' OR (action = 'hold' AND reason LIKE 'storm:%')) \
         ORDER BY first_seen",
    )?;
    let rows = stmt.query_map([cutoff], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    for row in rows {
        let (sender, hash, seen, action, rule) = row?;
        let key = storm_key(Some(&sender), rule.as_deref()).unwrap_or(sender);
        if let Ok(at) = humantime::parse_rfc3339(&seen) {
            storm.seed(&key, &hash, at, action == "relay");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn storm(limit: usize) -> Storm {
        Storm::new(StormConfig {
            limit,
            window: 10 * MIN,
        })
    }

    fn t(minutes: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + minutes * 60)
    }

    #[test]
    fn holds_after_the_limit_within_the_window() {
        let mut s = storm(3);
        let verdicts: Vec<Verdict> = (0..5)
            .map(|i| s.check("x@a.example", &format!("h{i}"), t(i)))
            .collect();
        assert_eq!(verdicts[..3], [Verdict::Pass, Verdict::Pass, Verdict::Pass]);
        assert_eq!(
            verdicts[3],
            Verdict::Hold("storm: more than 3 messages from x@a.example in 10m".into())
        );
        assert!(matches!(verdicts[4], Verdict::Hold(_)));
        // Another sender is not affected.
        assert_eq!(s.check("y@a.example", "h9", t(4)), Verdict::Pass);
    }

    #[test]
    fn the_window_slides() {
        let mut s = storm(2);
        assert_eq!(s.check("x", "a", t(0)), Verdict::Pass);
        assert_eq!(s.check("x", "b", t(5)), Verdict::Pass);
        assert!(matches!(s.check("x", "c", t(9)), Verdict::Hold(_)));
        // At 11 min "a" has left the window; "b" and "c" are still in it.
        assert!(matches!(s.check("x", "d", t(11)), Verdict::Hold(_)));
        // At 20 min only "d" (at 11) is left.
        assert_eq!(s.check("x", "e", t(20)), Verdict::Pass);
    }

    #[test]
    fn a_message_seen_again_keeps_its_verdict_and_is_not_recounted() {
        let mut s = storm(1);
        assert_eq!(s.check("x", "a", t(0)), Verdict::Pass);
        assert!(matches!(s.check("x", "b", t(1)), Verdict::Hold(_)));
        for _ in 0..5 {
            assert_eq!(s.check("x", "a", t(2)), Verdict::Pass);
            assert!(matches!(s.check("x", "b", t(2)), Verdict::Hold(_)));
        }
    }

    #[test]
    fn limit_zero_is_off() {
        let mut s = storm(0);
        for i in 0..100 {
            assert_eq!(s.check("x", &i.to_string(), t(0)), Verdict::Pass);
        }
        assert_eq!(s.senders(), 0);
    }

    #[test]
    fn seeded_messages_count() {
        let mut s = storm(2);
        s.seed("x", "a", t(0), true);
        s.seed("x", "b", t(1), true);
        s.seed("x", "b", t(1), true);
        assert!(matches!(s.check("x", "c", t(2)), Verdict::Hold(_)));
        assert_eq!(s.check("x", "a", t(2)), Verdict::Pass);
    }

    #[test]
    fn idle_senders_are_swept() {
        let mut s = storm(5);
        for i in 0..SWEEP_EVERY - 1 {
            s.check(&format!("s{i}"), "h", t(0));
        }
        assert_eq!(s.senders(), SWEEP_EVERY - 1);
        s.check("late", "h", t(60));
        assert_eq!(s.senders(), 1);
    }

    #[test]
    fn config_keys_have_defaults_and_are_validated() {
        let base = "[pods.p]\nmembers = [\"a@b.example\"]\n";
        let path = Path::new("routing.toml");
        let c = crate::config::from_str(base, path).unwrap();
        assert_eq!(c.storm, StormConfig::default());
        let text = format!("[routing]\nstorm_limit = 5\nstorm_window = \"90s\"\n{base}");
        let c = crate::config::from_str(&text, path).unwrap();
        assert_eq!(c.storm.limit, 5);
        assert_eq!(c.storm.window, Duration::from_secs(90));
        let bad = format!("[routing]\nstorm_window = \"often\"\n{base}");
        let e = crate::config::from_str(&bad, path).unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
    }

    #[test]
    fn limit_turns_only_relays_into_holds() {
        let mut s = storm(1);
        let relay = Decision {
            action: Action::Relay,
            sender: Some("x@a.example".into()),
            sender_name: None,
            client: Some("acme".into()),
            pod: Some("east".into()),
            rule: None,
            reason: "domain".into(),
            recipients: vec!["ana@v.example".into()],
            message_id: None,
            subject: None,
            personal: crate::engine::Personal::default(),
        };
        let first = limit(&mut s, "a", t(0), relay.clone());
        assert_eq!(first.action, Action::Relay);
        let second = limit(&mut s, "b", t(0), relay.clone());
        assert_eq!(second.action, Action::Hold);
        assert!(second.reason.starts_with(REASON_PREFIX));
        assert!(second.recipients.is_empty());
        assert_eq!(second.pod.as_deref(), Some("east"));
        let skip = Decision {
            action: Action::Skip,
            ..relay
        };
        assert_eq!(limit(&mut s, "c", t(0), skip).action, Action::Skip);
    }

    #[test]
    fn seeding_reads_recent_relays_from_the_journal() {
        use crate::journal::{content_hash, Sighting};
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        for i in 0..3 {
            let raw = format!("message {i}");
            let hash = content_hash(raw.as_bytes());
            let d = Decision {
                action: Action::Relay,
                sender: Some("x@a.example".into()),
                sender_name: None,
                client: None,
                pod: None,
                rule: None,
                reason: "domain".into(),
                recipients: vec!["ana@v.example".into()],
                message_id: None,
                subject: None,
                personal: crate::engine::Personal::default(),
            };
            let s = Sighting {
                mailbox: "support@localhost/INBOX",
                uidvalidity: 1,
                uid: i + 1,
                content_hash: &hash,
                decision: &d,
            };
            journal.observe(&s, |_| true).unwrap();
        }
        let mut s = storm(3);
        seed_from_journal(&mut s, journal.path(), SystemTime::now());
        assert!(matches!(
            s.check("x@a.example", "new", SystemTime::now()),
            Verdict::Hold(_)
        ));
        let mut later = storm(3);
        seed_from_journal(&mut later, journal.path(), SystemTime::now() + 11 * MIN);
        assert_eq!(
            later.check("x@a.example", "new", SystemTime::now() + 11 * MIN),
            Verdict::Pass
        );
    }
}
