//! `podrouter held` and `podrouter release` against the real mail stack,
//! next to a running daemon. Skipped when the stack is not running (see
//! `tests/common/mod.rs`).

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{message, wait_until, Daemon, Scratch, Stack, Table};

const ROLES: &[&str] = &["support", "ana", "ben", "cara"];

/// Runs `podrouter ARGS -c <config> --state-dir <state>` as user `tester`.
fn podrouter(scratch: &Scratch, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podrouter"))
        .args(args)
        .arg("-c")
        .arg(scratch.config())
        .arg("--state-dir")
        .arg(scratch.state())
        .env("USER", "tester")
        .env_remove("SUDO_USER")
        .env_remove("PODROUTER_STATE_DIR")
        .env("NO_COLOR", "1")
        .output()
        .expect("podrouter runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The UID `held` shows for the line naming `sender`, whose reason
/// holds `why`.
fn held_uid(scratch: &Scratch, sender: &str, why: &str) -> String {
    let out = podrouter(scratch, &["held"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.starts_with("UID "), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains(sender))
        .unwrap_or_else(|| panic!("held does not list {sender}:\n{stdout}"));
    assert!(line.contains(why), "{line}");
    line.split_whitespace().next().unwrap().to_owned()
}

#[test]
fn a_held_message_is_released_to_a_chosen_pod_once() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let scratch = Scratch::new();
    scratch.write_config(&Table::new(&stack).render(&users, stack.password()));
    let stranger = format!("someone@{}-unknown.example", users.prefix);
    let id = format!("held1@{}", users.prefix);
    let held = message(&stranger, "Please help", &id);
    users.append("support", "INBOX", std::slice::from_ref(&held));

    // The daemon holds it, and keeps running while a person releases it.
    let mut daemon = Daemon::start(&scratch);
    daemon.wait_ready();
    assert!(
        wait_until(Duration::from_secs(20), || users.count("support", "Held")
            == 1),
        "{}",
        daemon.log()
    );

    // A pod that does not exist is refused before anything is touched.
    let uid = held_uid(&scratch, &stranger, "no client matches");
    let out = podrouter(&scratch, &["release", &uid, "--pod", "mars"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no pod \"mars\""), "{}", text(&out));

    // Released to west (cara), then moved to Routed.
    let out = podrouter(&scratch, &["release", &uid, "--pod", "west"]);
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    let said = text(&out);
    assert!(
        said.contains(&format!("released UID {uid} to pod west as tester")),
        "{said}"
    );
    assert!(said.contains("queue id"), "{said}");
    assert!(said.contains("moved to Routed"), "{said}");
    let needle = format!("<{id}>");
    assert!(wait_until(Duration::from_secs(20), || users
        .count_with("cara", "INBOX", &needle)
        == 1));
    assert_eq!(
        users.count_with("cara", "INBOX", "X-Podrouter-Rule: release by tester"),
        1
    );
    assert_eq!(users.count("ana", "INBOX"), 0);
    assert_eq!(users.count("support", "Held"), 0);
    assert_eq!(users.count("support", "Routed"), 1);

    // The journal has the person's decision beside the table's.
    assert_eq!(
        scratch.journal_count(
            "SELECT count(*) FROM messages WHERE action = 'relay' AND pod = 'west' \
             AND rule = 'release by tester' AND reason = 'released by tester to pod west' \
             AND state = 'filed' AND folder = 'Routed' AND relayed_at IS NOT NULL \
             AND smtp_reply LIKE '250 %'"
        ),
        1
    );
    let out = podrouter(&scratch, &["trace", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let story = text(&out);
    assert!(story.contains("2 journal entries"), "{story}");
    assert!(
        story.contains("decision    hold: no client matches"),
        "{story}"
    );
    assert!(
        story.contains(
            "relay to pod west (client -), rule release by tester: released by tester to pod west"
        ),
        "{story}"
    );

    // The same UID again: gone from the hold folder.
    let out = podrouter(&scratch, &["release", &uid, "--pod", "west"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no message with UID"), "{}", text(&out));

    // The same message put back in the hold folder is moved, not relayed again.
    users.append("support", "Held", &[held]);
    let again = held_uid(&scratch, &stranger, "relayed already as entry");
    let out = podrouter(&scratch, &["release", &again, "--pod", "east"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("was relayed already"), "{}", text(&out));
    assert_eq!(users.count("support", "Held"), 0);
    assert_eq!(users.count("support", "Routed"), 2);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(users.count("ana", "INBOX"), 0, "east must not get it");
    assert_eq!(users.count_with("cara", "INBOX", &needle), 1);

    let out = podrouter(&scratch, &["held"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Held is empty"), "{}", text(&out));
    assert!(daemon.stop().success());
}
