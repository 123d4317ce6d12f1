//! A 50 MB message goes through the real daemon: fetched from the real
//! Dovecot, decided, relayed, filed, with the daemon's peak memory under
//! three times the message's size, and the next message still flows.
//!
//! The relay is a recording SMTP sink on loopback: the stack's OpenSMTPD
//! refuses messages over 35 MB by default, and what is measured here is
//! podrouter's own memory. Skipped when the stack is not running.

mod common;
mod inject;

use std::time::Duration;

use common::{message, wait_until, Daemon, Scratch, Stack, Table};
use inject::{contains, SmtpSink};

/// The test message: five 10 MB attachments, base64, about 50 MB in all.
fn huge_message(from: &str, id: &str) -> Vec<u8> {
    let mut raw = format!(
        "From: Records <{from}>\r\nTo: support@vendor.example\r\n\
         Subject: Scanned archive, 5 parts\r\nMessage-ID: <{id}>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nThe scans are attached.\r\n"
    )
    .into_bytes();
    let mut seed = 0x9e37_79b9_u32;
    for part in 0..5 {
        raw.extend_from_slice(
            format!(
                "--b\r\nContent-Type: application/pdf; name=\"scan{part}.pdf\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n"
            )
            .as_bytes(),
        );
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for _ in 0..(10_000_000 / 78) {
            for _ in 0..76 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                raw.push(ALPHABET[(seed % 64) as usize]);
            }
            raw.extend_from_slice(b"\r\n");
        }
    }
    raw.extend_from_slice(b"--b--\r\n");
    raw
}

/// The daemon's peak resident memory (VmHWM) in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn a_50_mb_message_is_relayed_in_bounded_memory_and_the_next_one_follows() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(&["support", "ana", "ben", "cara"]);
    let sink = SmtpSink::start(false);
    let mut table = Table::new(&stack);
    table.net.smtp_port = sink.port();
    let scratch = Scratch::new();
    scratch.write_config(&table.render(&users, stack.password()));

    let from = format!("records@{}", users.domain("acme"));
    let huge_id = format!("huge@{}", users.prefix);
    let next_id = format!("after-huge@{}", users.prefix);
    let huge = huge_message(&from, &huge_id);
    let size = huge.len() as u64;
    users.append("support", "INBOX", &[huge]);
    users.append("support", "INBOX", &[message(&from, "Next", &next_id)]);

    let mut daemon = Daemon::start(&scratch);
    daemon.wait_ready();
    let done = wait_until(Duration::from_secs(300), || {
        users.count("support", "Routed") == 2
    });
    assert!(done, "{}", daemon.log());
    let peak = peak_rss(daemon.pid());
    assert!(daemon.stop().success());

    let taken = sink.taken();
    let relayed = |id: &str| {
        let needle = format!("<{id}>");
        taken
            .iter()
            .filter(|t| contains(&t.data, needle.as_bytes()))
            .count()
    };
    assert_eq!(relayed(&huge_id), 1);
    assert_eq!(relayed(&next_id), 1);
    let sent = taken.iter().map(|t| t.data.len() as u64).max().unwrap();
    assert!(sent >= size, "relayed {sent} bytes of {size}");

    let ratio = peak as f64 / size as f64;
    println!(
        "50 MB message: {:.1} MB, daemon peak RSS {:.1} MB ({ratio:.2}x its size)",
        size as f64 / 1e6,
        peak as f64 / 1e6
    );
    assert!(
        ratio < 3.0,
        "peak RSS {peak} is {ratio:.2}x the message size {size}"
    );
}
