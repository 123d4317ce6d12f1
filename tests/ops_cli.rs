//! The operator commands through the binary: `log`, `trace`, `stats`,
//! `held --offline`, `manpage` and the help texts, on a journal written
//! in a temporary folder (no mail servers needed).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use podrouter::journal::{Journal, FILE_NAME};

/// A table with three pods; the journal's folder is set by each test.
fn table(state_dir: &Path) -> String {
    format!(
        r#"[inbox]
server = "127.0.0.1"
tls = "none"
user = "support"
done_folder = "Routed"
hold_folder = "Held"

[daemon]
state_dir = "{}"

[pods.alberta]
name = "Alberta"
members = ["ana@vendor.example"]

[pods.coast]
name = "Coast"
members = ["jonas@vendor.example"]

[pods.prairies]
name = "Prairies"
members = ["emma@vendor.example"]

[clients.sunnyvale]
pod = "alberta"
domains = ["sunnyvale.example"]

[clients.cochrane]
pod = "alberta"
domains = ["cochrane.example"]

[clients.tofino]
pod = "coast"
domains = ["tofino.example"]

[clients.moose]
pod = "prairies"
domains = ["moose.example"]
"#,
        state_dir.display()
    )
}

/// A journal time `days` ago.
fn ago(days: u64) -> String {
    let t = SystemTime::now() - Duration::from_secs(days * 86_400);
    humantime::format_rfc3339_millis(t).to_string()
}

/// One row: (client, pod, action, days ago, message id, folder).
type Row<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
    u64,
    &'a str,
    &'a str,
);

/// Writes the rows through SQL matching the journal's schema.
fn journal(dir: &Path, rows: &[Row<'_>]) {
    drop(Journal::open(dir).unwrap());
    let conn = rusqlite::Connection::open(dir.join(FILE_NAME)).unwrap();
    for (n, (client, pod, action, days, id, folder)) in rows.iter().enumerate() {
        let time = ago(*days);
        let relayed = (*action == "relay").then(|| time.clone());
        conn.execute(
            "INSERT INTO messages (mailbox, uidvalidity, uid, message_id, content_hash, sender, \
             client, pod, action, rule, reason, subject, smtp_reply, folder, state, attempts, \
             first_seen, relayed_at, filed_at) VALUES ('support@127.0.0.1/INBOX', 1, ?1, ?2, \
             ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'filed', 1, ?13, ?14, ?13)",
            rusqlite::params![
                n as i64 + 1,
                id,
                format!("hash{n}"),
                format!("clerk@{}.example", client.unwrap_or("unknown")),
                client,
                pod,
                action,
                client.map(|c| format!("domain {c}.example")),
                client.map_or("no client matches".to_owned(), |c| format!(
                    "domain {c}.example"
                )),
                format!("Subject {n}"),
                relayed
                    .as_ref()
                    .map(|_| "250 2.0.0 1a2b3c4d Message accepted for delivery"),
                folder,
                time,
                relayed,
            ],
        )
        .unwrap();
    }
}

/// A scratch folder with the table (`routing.toml`) and a journal.
fn setup(rows: &[Row<'_>]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    journal(&state, rows);
    std::fs::write(dir.path().join("routing.toml"), table(&state)).unwrap();
    dir
}

/// The standard journal: 12 alberta (sunnyvale 4, cochrane 8), 6 coast,
/// 6 prairies relays, one hold, one skip.
fn standard() -> tempfile::TempDir {
    let mut rows: Vec<Row<'_>> = Vec::new();
    for _ in 0..4 {
        rows.push((
            Some("sunnyvale"),
            Some("alberta"),
            "relay",
            3,
            "s@x",
            "Routed",
        ));
    }
    for _ in 0..8 {
        rows.push((
            Some("cochrane"),
            Some("alberta"),
            "relay",
            10,
            "c@x",
            "Routed",
        ));
    }
    for _ in 0..6 {
        rows.push((Some("tofino"), Some("coast"), "relay", 2, "t@x", "Routed"));
        rows.push((
            Some("moose"),
            Some("prairies"),
            "relay",
            20,
            "m@x",
            "Routed",
        ));
    }
    rows.push((None, None, "hold", 1, "h@x", "Held"));
    rows.push((Some("tofino"), None, "skip", 0, "ooo@x", "Routed"));
    setup(&rows)
}

/// Runs podrouter in `dir` with `-c routing.toml`.
fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podrouter"))
        .current_dir(dir)
        .args(args)
        .args(["-c", "routing.toml"])
        .env_remove("PODROUTER_STATE_DIR")
        .env_remove("PODROUTER_CONFIG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn log_lists_newest_first_and_filters() {
    let dir = standard();
    let out = run(dir.path(), &["log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TIME (UTC)"), "{text}");
    assert_eq!(lines.len(), 1 + 26, "{text}");
    assert!(lines[1].contains(" skip "), "newest first: {text}");
    assert!(lines[2].contains(" hold ") && lines[2].contains("no client matches"));

    let out = run(dir.path(), &["log", "--pod", "coast", "--action", "relay"]);
    assert_eq!(stdout(&out).lines().count(), 1 + 6);
    let out = run(dir.path(), &["log", "--since", "5d", "--limit", "3"]);
    assert_eq!(stdout(&out).lines().count(), 1 + 3);
    let out = run(dir.path(), &["log", "--client", "nobody"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("no decisions match"));
}

#[test]
fn log_json_has_one_object_per_line_with_the_documented_keys() {
    let dir = standard();
    let out = run(dir.path(), &["log", "--json", "--action", "hold"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    for key in [
        "time",
        "sender",
        "client",
        "pod",
        "action",
        "reason",
        "subject",
        "message_id",
        "folder",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["action"], "hold");
    assert_eq!(v["folder"], "Held");
    assert_eq!(v["message_id"], "h@x");
}

#[test]
fn bad_input_and_a_missing_journal_exit_with_the_documented_codes() {
    let dir = standard();
    let out = run(dir.path(), &["log", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(dir.path(), &["log", "--action", "bounce"]);
    assert_eq!(out.status.code(), Some(2));

    let empty = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["log", "--state-dir", empty.path().to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no journal at"), "{}", stderr(&out));
    assert!(
        !empty.path().join(FILE_NAME).exists(),
        "reading never creates a journal"
    );
}

#[test]
fn trace_tells_a_story_or_exits_1() {
    let dir = standard();
    let out = run(dir.path(), &["trace", "<h@x>"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Message-ID <h@x>: 1 journal entry"), "{text}");
    assert!(
        text.contains("decision    hold: no client matches"),
        "{text}"
    );
    assert!(text.contains("filed       in Held at"), "{text}");

    let out = run(
        dir.path(),
        &["trace", "clerk@tofino.example", "--limit", "2"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("mail from clerk@tofino.example: 2 journal entries"),
        "{text}"
    );
    assert!(text.contains("queue id 1a2b3c4d"), "{text}");

    let out = run(dir.path(), &["trace", "<nothing@x>"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no Message-ID <nothing@x>"));
}

#[test]
fn stats_shows_weeks_shares_clients_and_a_balance_hint() {
    let dir = standard();
    let out = run(dir.path(), &["stats", "--weeks", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("last 4 weeks"), "{text}");
    let total = text.lines().find(|l| l.starts_with("total")).unwrap();
    assert_eq!(
        total.split_whitespace().collect::<Vec<_>>(),
        ["total", "12", "6", "6", "24"],
        "{text}"
    );
    assert!(
        text.contains("share             50%     25%       25%"),
        "{text}"
    );
    assert!(
        text.contains("alberta       cochrane 8 (67%), sunnyvale 4 (33%)"),
        "{text}"
    );
    // alberta 12, coast 6, prairies 6: sunnyvale (4) is nearest half the gap.
    assert!(
        text.contains(
            "move client sunnyvale (4 msgs/4w) from alberta to coast: shares 50/25/25 -> 33/42/25"
        ),
        "{text}"
    );

    let out = run(dir.path(), &["stats", "--weeks", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn held_offline_lists_what_the_journal_filed_in_the_hold_folder() {
    let dir = standard();
    let out = run(dir.path(), &["held", "--offline"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("ENTRY  TIME (UTC)"), "{text}");
    assert!(lines[1].contains("clerk@unknown.example") && lines[1].contains("no client matches"));
}

#[test]
fn manpages_are_written_for_every_visible_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_podrouter"))
        .arg("manpage")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for page in [
        "podrouter",
        "check",
        "route",
        "who",
        "run",
        "log",
        "trace",
        "held",
        "release",
        "stats",
    ] {
        let name = if page == "podrouter" {
            "podrouter.1".to_owned()
        } else {
            format!("podrouter-{page}.1")
        };
        let text = std::fs::read_to_string(dir.path().join(&name)).unwrap();
        assert!(text.contains(".SH NAME"), "{name}");
    }
    assert!(!dir.path().join("podrouter-manpage.1").exists());
    let main = std::fs::read_to_string(dir.path().join("podrouter.1")).unwrap();
    for section in [
        "EXIT STATUS",
        "FILES",
        "ENVIRONMENT",
        "podrouter\\-release(1)",
    ] {
        assert!(main.contains(section), "{section} missing");
    }
}

#[test]
fn every_command_has_a_complete_help() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_podrouter"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        stdout(&out)
    };
    let top = help(&["--help"]);
    for cmd in [
        "check", "route", "who", "run", "log", "trace", "held", "release", "stats",
    ] {
        assert!(
            top.contains(&format!("\n  {cmd} ")),
            "{cmd} missing:\n{top}"
        );
        let sub = help(&[cmd, "--help"]);
        assert!(sub.contains("Usage: podrouter"), "{cmd}");
        assert!(sub.contains("--config"), "{cmd}: {sub}");
    }
    assert!(
        !top.contains("manpage"),
        "the packaging helper stays hidden"
    );
    assert!(top.contains("Exit status:"));
    let log = help(&["log", "--help"]);
    for option in [
        "--since", "--pod", "--client", "--action", "--limit", "--json",
    ] {
        assert!(log.contains(option), "{option}");
    }
    assert!(help(&["release", "--help"]).contains("--pod <POD>"));
    assert!(help(&["stats", "--help"]).contains("--weeks <N>"));
}
