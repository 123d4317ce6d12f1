//! Issue 7, "Keeping it personal", against the real mail stack: sticky
//! threads, the acknowledgement, technicians' replies and escalation.
//! Skipped when the stack is not running (see `tests/common/mod.rs`).

mod common;

use std::time::Duration;

use common::{
    auto_reply, contains, http_get, message, wait_until, Daemon, Scratch, Stack, Table, Users,
};

const ROLES: &[&str] = &["support", "ana", "ben", "cara", "client", "other", "lead"];

/// Writes the table and starts the daemon.
fn start(stack: &Stack, users: &Users, table: &Table) -> (Scratch, Daemon) {
    let scratch = Scratch::new();
    scratch.write_config(&table.render(users, stack.password()));
    let mut daemon = Daemon::start(&scratch);
    daemon.wait_ready();
    (scratch, daemon)
}

/// The client's address at acme's domain (delivered to user `client`).
fn client(users: &Users, role: &str) -> String {
    format!("{}@{}", users.name(role), users.domain("acme"))
}

/// A message answering `parent`, from `from`, with extra headers.
fn reply(from: &str, parent: &str, id: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\n\
         To: support@vendor.example\r\n\
         {extra}Subject: Re: Printer\r\n\
         Date: Mon, 1 Jan 2024 11:00:00 +0000\r\n\
         Message-ID: <{id}>\r\n\
         In-Reply-To: <{parent}>\r\n\
         References: <{parent}>\r\n\
         \r\n\
         More about the printer ({id}).\r\n"
    )
    .into_bytes()
}

/// `podrouter stats` over the test's journal.
fn stats(scratch: &Scratch) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podrouter"))
        .arg("stats")
        .arg("-c")
        .arg(scratch.config())
        .arg("--state-dir")
        .arg(scratch.state())
        .output()
        .expect("podrouter stats runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `role`'s INBOX holds `n` messages.
fn wait_count(users: &Users, daemon: &Daemon, role: &str, n: usize) {
    let ok = wait_until(Duration::from_secs(15), || users.count(role, "INBOX") >= n);
    assert!(
        ok,
        "{role} has {} messages, not {n}:\n{}",
        users.count(role, "INBOX"),
        daemon.log()
    );
}

/// Waits until the support Routed folder holds `n` messages.
fn wait_routed(users: &Users, daemon: &Daemon, n: usize) {
    let ok = wait_until(Duration::from_secs(15), || {
        users.count("support", "Routed") >= n
    });
    assert!(ok, "Routed never reached {n}:\n{}", daemon.log());
}

#[test]
fn an_acknowledgement_names_the_people_once_per_interval_and_never_for_an_auto_reply() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    table.east_extra = "ack = true\n".into();
    let (_scratch, mut daemon) = start(&stack, &users, &table);
    let clerk = client(&users, "client");

    // The first message: relayed, then acknowledged.
    let first = format!("ack1@{}", users.prefix);
    users.append("support", "INBOX", &[message(&clerk, "Printer", &first)]);
    wait_count(&users, &daemon, "ana", 1);
    wait_count(&users, &daemon, "client", 1);
    let ack = users.maildir("client", "INBOX").remove(0);
    for want in [
        "Auto-Submitted: auto-replied",
        "Subject: Re: Printer",
        &format!("In-Reply-To: <{first}>"),
        "East pod",
        "Ana and Ben",
        "X-Podrouter-Loop:",
    ] {
        assert!(
            contains(&ack, want),
            "ack lacks {want:?}:\n{}",
            String::from_utf8_lossy(&ack)
        );
    }

    // A second message within ack_interval: relayed, not acknowledged.
    let second = format!("ack2@{}", users.prefix);
    users.append("support", "INBOX", &[message(&clerk, "Toner", &second)]);
    wait_count(&users, &daemon, "ana", 2);
    daemon.wait_log(
        "acknowledged within ack_interval already",
        1,
        Duration::from_secs(10),
    );

    // An auto-reply from another of the client's people: skipped, never
    // acknowledged.
    let away = client(&users, "other");
    users.append(
        "support",
        "INBOX",
        &[auto_reply(&away, &format!("ooo@{}", users.prefix))],
    );
    wait_routed(&users, &daemon, 3);

    // The acknowledgement itself coming back to the inbox is not relayed.
    users.append("support", "INBOX", &[ack]);
    wait_routed(&users, &daemon, 4);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(users.count("client", "INBOX"), 1, "{}", daemon.log());
    assert_eq!(users.count("other", "INBOX"), 0);
    assert_eq!(users.count("ana", "INBOX"), 2);
    assert_eq!(daemon.log_count("acknowledgement sent"), 1);
    assert!(daemon.stop().success());
}

#[test]
fn a_reply_from_an_unknown_address_in_a_known_thread_reaches_its_pod() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let (scratch, mut daemon) = start(&stack, &users, &Table::new(&stack));
    let root = format!("root@{}", users.prefix);
    users.append(
        "support",
        "INBOX",
        &[message(&client(&users, "client"), "Printer", &root)],
    );
    wait_count(&users, &daemon, "ben", 1);

    // The client writes back from a personal address nobody listed.
    let personal = format!("{}@home-mail.example", users.name("other"));
    let follow = format!("follow@{}", users.prefix);
    users.append("support", "INBOX", &[reply(&personal, &root, &follow, "")]);
    wait_count(&users, &daemon, "ben", 2);
    let needle = format!("<{follow}>");
    let copy = users
        .maildir("ben", "INBOX")
        .into_iter()
        .find(|m| contains(m, &needle))
        .expect("the follow-up reached ben");
    assert!(contains(&copy, &format!("X-Podrouter-Rule: thread {root}")));
    assert_eq!(users.count_with("ana", "INBOX", &needle), 1);
    assert_eq!(users.count_with("cara", "INBOX", &needle), 0);
    assert_eq!(users.count("support", "Held"), 0);
    let thread_rules = scratch.journal_count(
        "SELECT count(*) FROM messages WHERE rule LIKE 'thread %' AND action = 'relay'",
    );
    assert_eq!(thread_rules, 1);
    assert!(daemon.stop().success());

    // `route --state-dir` reads the same threads offline; without it the
    // unknown sender would be held.
    let eml = scratch.dir.path().join("follow.eml");
    std::fs::write(&eml, reply(&personal, &root, "again@x.example", "")).unwrap();
    let route = |state: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_podrouter"));
        cmd.arg("route")
            .arg("--json")
            .arg("-c")
            .arg(scratch.config());
        if state {
            cmd.arg("--state-dir").arg(scratch.state());
        }
        let out = cmd.arg(&eml).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let with = route(true);
    assert!(
        with.contains("\"rule\":\"thread\"") && with.contains("\"pod\":\"east\""),
        "{with}"
    );
    assert!(route(false).contains("\"action\":\"hold\""));
}

#[test]
fn a_technicians_reply_all_reaches_the_rest_of_the_pod_and_sets_the_first_response() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let (scratch, mut daemon) = start(&stack, &users, &Table::new(&stack));
    let clerk = client(&users, "client");
    let root = format!("root@{}", users.prefix);
    users.append("support", "INBOX", &[message(&clerk, "Printer", &root)]);
    wait_count(&users, &daemon, "ana", 1);
    wait_count(&users, &daemon, "ben", 1);

    // Ana answers the client with the support address in Cc: the copy
    // lands in the support inbox.
    let answer = format!("answer@{}", users.prefix);
    let cc = format!("To: <{clerk}>\r\nCc: <{}>\r\n", users.address("support"));
    let raw = reply(&users.address("ana"), &root, &answer, &cc);
    users.append("support", "INBOX", &[raw]);
    wait_count(&users, &daemon, "ben", 2);
    wait_routed(&users, &daemon, 2);
    std::thread::sleep(Duration::from_millis(500));

    let needle = format!("<{answer}>");
    let copy = users
        .maildir("ben", "INBOX")
        .into_iter()
        .find(|m| contains(m, &needle))
        .expect("ben has ana's reply");
    assert!(contains(&copy, "X-Podrouter-Rule: reply"));
    assert!(contains(&copy, "X-Podrouter-Reply-By:"));
    assert_eq!(
        users.count_with("ana", "INBOX", &needle),
        0,
        "not back to its author"
    );
    assert_eq!(
        users.count("client", "INBOX"),
        0,
        "nothing goes back to the client"
    );
    assert_eq!(users.count("cara", "INBOX"), 0);

    let responded = scratch.journal_count(
        "SELECT count(*) FROM threads WHERE first_response_ms IS NOT NULL \
         AND first_response_ms >= 0 AND responder LIKE '%-ana@vendor.example'",
    );
    assert_eq!(responded, 1, "{}", daemon.log());
    let ms = scratch.journal_count("SELECT first_response_ms FROM threads");
    println!("first response recorded: {ms} ms after the client's message");
    assert!(daemon.log().contains("first response in the thread"));
    let report = stats(&scratch);
    println!("{report}");
    let section = report
        .split("first response per pod")
        .nth(1)
        .unwrap_or_default();
    let east = section
        .lines()
        .find(|l| l.trim_start().starts_with("east "))
        .unwrap_or_default();
    assert!(
        report.contains("first response per pod") && east.split_whitespace().nth(1) == Some("1"),
        "{report}"
    );
    assert!(
        report.contains("no thread waits for a first response"),
        "{report}"
    );

    // /metrics and /status show the same.
    let addr = daemon.http_addr();
    let (code, metrics) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    for want in [
        "podrouter_first_response_seconds{pod=\"east\",quantile=\"0.5\"}",
        "podrouter_first_response_seconds{pod=\"east\",quantile=\"0.9\"}",
        "podrouter_threads_waiting{pod=\"east\"} 0",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }
    let (code, page) = http_get(&addr, "/status");
    assert_eq!(code, 200);
    assert!(page.contains("<h2>First response</h2>"), "{page}");
    assert!(daemon.stop().success());
}

#[test]
fn an_unanswered_thread_escalates_once() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    table.east_extra = format!(
        "respond_within = \"2s\"\nescalate_to = \"{}\"\n",
        users.address("lead")
    );
    let (scratch, mut daemon) = start(&stack, &users, &table);
    let root = format!("root@{}", users.prefix);
    users.append(
        "support",
        "INBOX",
        &[message(&client(&users, "client"), "Printer", &root)],
    );
    wait_count(&users, &daemon, "ana", 1);

    // Due 2 s after it arrived; the timer looks every second.
    wait_count(&users, &daemon, "ana", 2);
    wait_count(&users, &daemon, "lead", 1);
    // Several more ticks: still exactly once.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(users.count("ana", "INBOX"), 2, "{}", daemon.log());
    assert_eq!(users.count("ben", "INBOX"), 2);
    assert_eq!(users.count("lead", "INBOX"), 1);
    let escalated = users.maildir("lead", "INBOX").remove(0);
    assert!(contains(&escalated, "Subject: [unanswered for 2s] Printer"));
    assert!(contains(
        &escalated,
        "X-Podrouter-Escalated: unanswered for 2s"
    ));
    assert_eq!(
        scratch.journal_count("SELECT count(*) FROM threads WHERE escalated_at IS NOT NULL"),
        1
    );
    assert_eq!(
        daemon.log_count("unanswered for 2s: sent again to the pod"),
        1
    );

    // The copy kept for it is gone.
    let kept = std::fs::read_dir(scratch.state().join("threads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(kept, 0);
    let report = stats(&scratch);
    assert!(
        report.contains("threads waiting for a first response: 1"),
        "{report}"
    );
    assert!(report.contains("  yes  "), "{report}");
    assert!(daemon.stop().success());
}

#[test]
fn a_shifted_clock_makes_a_thread_due_without_waiting_for_it() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    table.east_extra = "respond_within = \"4h\"\n".into();
    let scratch = Scratch::new();
    scratch.write_config(&table.render(&users, stack.password()));
    // The daemon's escalation clock runs five hours ahead.
    let mut daemon = Daemon::start_with(&scratch, &[("PODROUTER_TEST_CLOCK_OFFSET", "5h")]);
    daemon.wait_ready();
    let root = format!("root@{}", users.prefix);
    users.append(
        "support",
        "INBOX",
        &[message(&client(&users, "client"), "Printer", &root)],
    );
    wait_count(&users, &daemon, "ana", 2);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(users.count("ana", "INBOX"), 2, "{}", daemon.log());
    assert_eq!(
        users.count_with("ana", "INBOX", "[unanswered for 4h] Printer"),
        1
    );
    assert_eq!(
        daemon.log_count("unanswered for 4h: sent again to the pod"),
        1
    );
    assert!(daemon.stop().success());
}
