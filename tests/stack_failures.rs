//! `podrouter run` when things go wrong: the relay is down, the daemon
//! dies between relay and move, the mailbox is recreated. Nothing may be
//! lost and nothing relayed twice. Skipped when the stack is not running.

mod common;

use std::time::Duration;

use common::{dead_port, message, wait_until, Daemon, Scratch, Stack, Table};

const ROLES: &[&str] = &["support", "ana", "ben", "cara"];

#[test]
fn a_temporary_smtp_failure_is_retried_and_nothing_is_lost() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    table.net.smtp_port = dead_port();
    let scratch = Scratch::new();
    scratch.write_config(&table.render(&users, stack.password()));

    let acme = format!("clerk@{}", users.domain("acme"));
    let globex = format!("it@{}", users.domain("globex"));
    users.append(
        "support",
        "INBOX",
        &[
            message(&acme, "One", &format!("one@{}", users.prefix)),
            message(&globex, "Two", &format!("two@{}", users.prefix)),
        ],
    );
    let mut daemon = Daemon::start(&scratch);
    daemon.wait_log("will retry", 2, Duration::from_secs(20));
    assert_eq!(users.count("support", "INBOX"), 2, "both wait in the inbox");
    assert_eq!(
        scratch.journal_count(
            "SELECT count(*) FROM messages \
             WHERE state = 'pending' AND attempts >= 1 AND last_error IS NOT NULL"
        ),
        2
    );

    // The relay comes back (here: the table points at the real one).
    table.net.smtp_port = stack.port("SMTP_PORT");
    scratch.write_config(&table.render(&users, stack.password()));
    daemon.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(30), || users.count("support", "INBOX")
            == 0),
        "{}",
        daemon.log()
    );
    assert!(wait_until(Duration::from_secs(10), || {
        users.count("ana", "INBOX") == 1 && users.count("cara", "INBOX") == 1
    }));
    assert_eq!(users.count("support", "Routed"), 2);
    assert_eq!(
        scratch.journal_count(
            "SELECT count(*) FROM messages WHERE relayed_at IS NOT NULL AND attempts >= 2"
        ),
        2
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_crash_between_relay_and_move_does_not_relay_twice() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let scratch = Scratch::new();
    scratch.write_config(&Table::new(&stack).render(&users, stack.password()));
    let acme = format!("clerk@{}", users.domain("acme"));
    users.append(
        "support",
        "INBOX",
        &[message(&acme, "Once", &format!("once@{}", users.prefix))],
    );

    // First run aborts right after the relay is recorded.
    let mut daemon = Daemon::start_with(&scratch, &[("PODROUTER_TEST_CRASH_AFTER_RELAY", "1")]);
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .expect("the crash hook aborts the daemon");
    assert!(!status.success());
    assert!(wait_until(Duration::from_secs(10), || users
        .count("ana", "INBOX")
        == 1));
    assert_eq!(
        users.count("support", "INBOX"),
        1,
        "not moved before the crash"
    );
    assert_eq!(
        scratch.journal_count("SELECT count(*) FROM messages WHERE state = 'relayed'"),
        1
    );

    // The restart only files it.
    let mut daemon = Daemon::start(&scratch);
    assert!(
        wait_until(Duration::from_secs(20), || users.count("support", "Routed")
            == 1),
        "{}",
        daemon.log()
    );
    daemon.wait_log("already relayed", 1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(users.count("ana", "INBOX"), 1);
    assert_eq!(users.count("ben", "INBOX"), 1);
    assert_eq!(users.count("support", "INBOX"), 0);
    assert_eq!(
        scratch
            .journal_count("SELECT count(*) FROM messages WHERE state = 'filed' AND attempts = 1"),
        1
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_uidvalidity_reset_does_not_relay_twice() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    table.folder = "Support".into();
    let scratch = Scratch::new();
    scratch.write_config(&table.render(&users, stack.password()));

    let acme = format!("clerk@{}", users.domain("acme"));
    let batch: Vec<Vec<u8>> = (0..3)
        .map(|i| message(&acme, "Reset", &format!("reset{i}@{}", users.prefix)))
        .collect();
    let mut imap = users.imap("support");
    imap.create("Support");
    let (first_uv, _) = imap.select("Support");
    for m in &batch {
        imap.append("Support", m);
    }
    imap.logout();

    let mut daemon = Daemon::start(&scratch);
    assert!(wait_until(Duration::from_secs(20), || users
        .count("support", "Routed")
        == 3));
    assert!(wait_until(Duration::from_secs(10), || users
        .count("ana", "INBOX")
        == 3));

    // The folder is deleted and recreated (new UIDVALIDITY) while the
    // daemon is down, and the same messages come back. (Under a running
    // daemon Dovecot ends the session at once, or at its next IDLE check
    // within 30 s, and the daemon reconnects to the same effect.)
    assert!(daemon.stop().success());
    let mut imap = users.imap("support");
    imap.delete("Support");
    imap.create("Support");
    let (second_uv, _) = imap.select("Support");
    assert_ne!(first_uv, second_uv);
    for m in &batch {
        imap.append("Support", m);
    }
    imap.logout();

    let mut daemon = Daemon::start(&scratch);
    assert!(
        wait_until(Duration::from_secs(20), || users.count("support", "Routed")
            == 6),
        "{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(users.count("ana", "INBOX"), 3, "not relayed again");
    assert_eq!(users.count("ben", "INBOX"), 3);
    assert_eq!(
        scratch.journal_count(&format!(
            "SELECT count(*) FROM messages WHERE uidvalidity = {second_uv} \
             AND duplicate_of IS NOT NULL AND relayed_at IS NULL"
        )),
        3
    );
    assert!(daemon.stop().success());
}
