//! The HTTP endpoint of `podrouter run` against the real mail stack:
//! `/metrics` counts what went through, `/healthz` is 200 while the inbox
//! and relay work and 503 with a reason when either does not. Each daemon
//! listens on a port of its own (`listen = "127.0.0.1:0"`). Skipped when
//! the stack is not running (see `tests/common/mod.rs`).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    auto_reply, dead_port, http_get, message, wait_until, Daemon, Scratch, Stack, Table, Users,
};

const ROLES: &[&str] = &["support", "ana", "ben", "cara"];

fn setup(stack: &Stack, users: &Users, table: &Table) -> Scratch {
    let scratch = Scratch::new();
    scratch.write_config(&table.render(users, stack.password()));
    scratch
}

/// Waits until `/healthz` answers `status`; returns the body.
fn wait_health(addr: &str, status: u16, daemon: &Daemon) -> String {
    let mut last = (0, String::new());
    let ok = wait_until(Duration::from_secs(30), || {
        last = http_get(addr, "/healthz");
        last.0 == status
    });
    assert!(
        ok,
        "/healthz never answered {status}; last {last:?}\n{}",
        daemon.log()
    );
    last.1
}

/// The value of the sample line starting with `name` (labels included).
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_what_went_through_and_health_is_ok() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let scratch = setup(&stack, &users, &Table::new(&stack));
    let mut daemon = Daemon::start(&scratch);
    let addr = daemon.http_addr();
    daemon.wait_ready();

    // 3 to east, 2 to west, 1 held, 1 skipped.
    let acme = |i| format!("clerk{i}@{}", users.domain("acme"));
    let mut mail: Vec<Vec<u8>> = (0..3)
        .map(|i| message(&acme(i), "Printer", &format!("a{i}@{}", users.prefix)))
        .collect();
    for i in 0..2 {
        let from = format!("it{i}@{}", users.domain("globex"));
        mail.push(message(&from, "Scanner", &format!("g{i}@{}", users.prefix)));
    }
    mail.push(message(
        "someone@unknown.example",
        "Hello",
        &format!("u@{}", users.prefix),
    ));
    mail.push(auto_reply(&acme(9), &format!("ooo@{}", users.prefix)));
    users.append("support", "INBOX", &mail);
    assert!(
        wait_until(Duration::from_secs(30), || daemon
            .log_count("message filed")
            == 7),
        "{}",
        daemon.log()
    );

    let (status, text) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    println!("{text}");
    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name}:\n{text}"));
    assert_eq!(
        value(r#"podrouter_messages_total{pod="east",action="relay"}"#),
        3.0
    );
    assert_eq!(
        value(r#"podrouter_messages_total{pod="west",action="relay"}"#),
        2.0
    );
    assert_eq!(
        value(r#"podrouter_messages_total{pod="",action="hold"}"#),
        1.0
    );
    let skips: f64 = text
        .lines()
        .filter(|l| l.starts_with("podrouter_messages_total{") && l.contains(r#"action="skip""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(skips, 1.0, "{text}");
    assert_eq!(value("podrouter_relay_duration_seconds_count"), 5.0);
    assert_eq!(
        value("podrouter_fetch_to_filed_duration_seconds_count"),
        7.0
    );
    assert_eq!(value("podrouter_held_messages"), 1.0);
    assert_eq!(value(r#"podrouter_table_entries{kind="clients"}"#), 2.0);
    assert_eq!(value(r#"podrouter_table_entries{kind="pods"}"#), 2.0);
    assert_eq!(value(r#"podrouter_table_entries{kind="domains"}"#), 2.0);
    assert_eq!(value("podrouter_inbox_connected"), 1.0);
    assert!(value("podrouter_last_wake_timestamp_seconds") > 1.7e9);
    assert!(text.ends_with("# EOF\n"));

    assert_eq!(wait_health(&addr, 200, &daemon), "ok\n");
    let (status, page) = http_get(&addr, "/status");
    assert_eq!(status, 200);
    assert!(page.contains("East pod") && page.contains("<svg"), "{page}");
    assert!(page.contains(&format!("u@{}", users.prefix)) || page.contains("Hello"));

    // A broken table on reload: counted, shown, and the old one stays.
    let mut broken = Table::new(&stack);
    broken.extra = "[clients.bad]\npod = \"nowhere\"\n".into();
    scratch.write_config(&broken.render(&users, stack.password()));
    daemon.signal("HUP");
    daemon.wait_log("reload refused", 1, Duration::from_secs(20));
    let (_, text) = http_get(&addr, "/metrics");
    assert_eq!(
        sample(&text, r#"podrouter_config_reloads_total{result="failure"}"#),
        Some(1.0),
        "{text}"
    );
    let (_, page) = http_get(&addr, "/status");
    assert!(page.contains("was refused"), "{page}");
    assert!(page.contains("nowhere"), "{page}");
    assert!(daemon.stop().success());
}

#[test]
fn health_is_503_with_a_reason_when_the_relay_is_at_a_dead_port() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    table.net.smtp_port = dead_port();
    let scratch = setup(&stack, &users, &table);
    let mut daemon = Daemon::start(&scratch);
    let addr = daemon.http_addr();
    daemon.wait_ready();
    let why = wait_health(&addr, 503, &daemon);
    assert!(
        why.starts_with("relay did not answer its last check:"),
        "{why}"
    );
    assert!(why.contains(&table.net.smtp_port.to_string()), "{why}");

    // A message waits for a retry, counted.
    let from = format!("clerk@{}", users.domain("acme"));
    users.append(
        "support",
        "INBOX",
        &[message(&from, "Printer", &format!("r@{}", users.prefix))],
    );
    let counted = wait_until(Duration::from_secs(20), || {
        let (_, text) = http_get(&addr, "/metrics");
        sample(&text, "podrouter_retries_total").unwrap_or(0.0) >= 1.0
            && sample(&text, "podrouter_retry_waiting_messages") == Some(1.0)
    });
    assert!(counted, "{}", http_get(&addr, "/metrics").1);
    let (_, text) = http_get(&addr, "/metrics");
    assert!(
        text.contains(r#"podrouter_smtp_errors_total{kind="connect"}"#)
            || text.contains(r#"podrouter_smtp_errors_total{kind="unavailable"}"#),
        "{text}"
    );
    assert_eq!(sample(&text, "podrouter_relay_up"), Some(0.0));
    assert!(daemon.stop().success());
}

#[test]
fn health_turns_503_when_the_smtp_side_stops_answering() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    // The relay goes through a proxy this test can stop, so the shared
    // stack keeps serving the other tests.
    let proxy = Proxy::start(stack.port("SMTP_PORT"));
    let mut table = Table::new(&stack);
    table.net.smtp_port = proxy.port;
    let scratch = setup(&stack, &users, &table);
    let mut daemon = Daemon::start(&scratch);
    let addr = daemon.http_addr();
    daemon.wait_ready();
    let from = format!("clerk@{}", users.domain("acme"));
    users.append(
        "support",
        "INBOX",
        &[message(&from, "Printer", &format!("p1@{}", users.prefix))],
    );
    daemon.wait_log("message filed", 1, Duration::from_secs(20));
    assert_eq!(wait_health(&addr, 200, &daemon), "ok\n");

    proxy.stop();
    users.append(
        "support",
        "INBOX",
        &[message(&from, "Printer", &format!("p2@{}", users.prefix))],
    );
    let why = wait_health(&addr, 503, &daemon);
    assert!(
        why.starts_with("relay did not answer its last check:"),
        "{why}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn health_is_503_while_the_inbox_cannot_be_reached() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    table.net.imap_port = dead_port();
    let scratch = setup(&stack, &users, &table);
    let mut daemon = Daemon::start(&scratch);
    let addr = daemon.http_addr();
    let why = wait_health(&addr, 503, &daemon);
    assert!(why.starts_with("inbox not connected"), "{why}");
    wait_until(Duration::from_secs(10), || {
        http_get(&addr, "/healthz").1.contains("cannot connect")
    });
    let why = http_get(&addr, "/healthz").1;
    assert!(why.contains("cannot connect"), "{why}");
    let (_, text) = http_get(&addr, "/metrics");
    assert!(sample(&text, r#"podrouter_imap_errors_total{kind="connect"}"#) >= Some(1.0));
    assert_eq!(sample(&text, "podrouter_inbox_connected"), Some(0.0));
    assert!(daemon.stop().success());
}

#[test]
fn a_listen_address_in_use_stops_the_start_with_a_clear_error() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = Table::new(&stack).render(&users, stack.password()).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let scratch = Scratch::new();
    scratch.write_config(&text);
    let mut daemon = Daemon::start(&scratch);
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .expect("podrouter exits");
    assert!(!status.success());
    let log = daemon.log();
    assert!(
        log.contains(&format!("cannot listen for HTTP on 127.0.0.1:{port}")),
        "{log}"
    );

    // Switched off, nothing listens and the daemon runs.
    let mut off = Table::new(&stack);
    off.http = false;
    scratch.write_config(&off.render(&users, stack.password()));
    let mut daemon = Daemon::start(&scratch);
    daemon.wait_ready();
    assert_eq!(daemon.log_count("http listening"), 0);
    assert!(daemon.stop().success());
}

/// A TCP proxy to a loopback port, stopped on demand: the listener closes
/// and every connection through it is cut.
struct Proxy {
    port: u16,
    stopped: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stopped = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (stop, keep) = (Arc::clone(&stopped), Arc::clone(&streams));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut kept = keep.lock().unwrap();
                kept.push(client.try_clone().unwrap());
                kept.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy {
            port,
            stopped,
            streams,
        }
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Let the accept loop see the flag and drop the listener.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Copies `from` to `to` on a thread until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}
