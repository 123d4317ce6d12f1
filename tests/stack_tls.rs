//! `podrouter run` over TLS: IMAPS and SMTPS, STARTTLS on both sides, each
//! trusted through `ca_file`; and refusal of a certificate nobody vouches
//! for. Skipped when the stack is not running.

mod common;

use std::time::Duration;

use common::{message, wait_until, Daemon, Scratch, Stack, Table, Users};

const ROLES: &[&str] = &["support", "ana", "ben", "cara"];

/// Relays one acme message with this table and checks it arrived.
fn relays_one(stack: &Stack, users: &Users, table: &Table) {
    let scratch = Scratch::new();
    scratch.write_config(&table.render(users, stack.password()));
    let acme = format!("clerk@{}", users.domain("acme"));
    users.append(
        "support",
        "INBOX",
        &[message(&acme, "Tls", &format!("tls@{}", users.prefix))],
    );
    let mut daemon = Daemon::start(&scratch);
    assert!(
        wait_until(Duration::from_secs(20), || users.count("ana", "INBOX") == 1),
        "{}",
        daemon.log()
    );
    assert!(wait_until(Duration::from_secs(5), || users
        .count("support", "Routed")
        == 1));
    assert!(daemon.stop().success());
}

#[test]
fn implicit_tls_on_both_sides_through_ca_file() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    let n = &mut table.net;
    n.imap_host = "localhost".into();
    n.imap_port = stack.port("IMAPS_PORT");
    n.imap_tls = "implicit";
    n.imap_ca = Some(stack.ca_file());
    n.smtp_host = "localhost".into();
    n.smtp_port = stack.port("SMTPS_PORT");
    n.smtp_tls = "implicit";
    n.smtp_ca = Some(stack.ca_file());
    relays_one(&stack, &users, &table);
}

#[test]
fn starttls_on_both_sides_through_ca_file() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    let n = &mut table.net;
    n.imap_port = stack.port("IMAP_PORT");
    n.imap_tls = "starttls";
    n.imap_ca = Some(stack.ca_file());
    n.smtp_port = stack.port("SMTP_STARTTLS_PORT");
    n.smtp_tls = "starttls";
    n.smtp_ca = Some(stack.ca_file());
    relays_one(&stack, &users, &table);
}

#[test]
fn an_untrusted_imap_certificate_is_refused_at_start() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    table.net.imap_host = "localhost".into();
    table.net.imap_port = stack.port("IMAPS_PORT");
    table.net.imap_tls = "implicit";
    let scratch = Scratch::new();
    scratch.write_config(&table.render(&users, stack.password()));

    let mut daemon = Daemon::start(&scratch);
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .expect("podrouter gives up on an untrusted certificate");
    assert!(!status.success());
    let log = daemon.log();
    assert!(log.contains("tls handshake with localhost failed"), "{log}");
    assert!(log.to_lowercase().contains("certificate"), "{log}");
    assert!(!log.contains("ready"), "{log}");
}

#[test]
fn an_untrusted_smtp_certificate_keeps_mail_in_the_inbox() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    table.net.smtp_host = "localhost".into();
    table.net.smtp_port = stack.port("SMTPS_PORT");
    table.net.smtp_tls = "implicit";
    let scratch = Scratch::new();
    scratch.write_config(&table.render(&users, stack.password()));
    let acme = format!("clerk@{}", users.domain("acme"));
    users.append(
        "support",
        "INBOX",
        &[message(
            &acme,
            "Tls",
            &format!("untrusted@{}", users.prefix),
        )],
    );

    let mut daemon = Daemon::start(&scratch);
    daemon.wait_log("relay failed", 1, Duration::from_secs(20));
    assert_eq!(users.count("support", "INBOX"), 1);
    assert_eq!(users.count("ana", "INBOX"), 0);
    assert!(daemon.stop().success());
}
