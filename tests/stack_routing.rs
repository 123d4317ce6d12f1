//! `podrouter run` against the real mail stack: the backlog, IDLE, reload
//! and shutdown. Skipped when the stack is not running (see
//! `tests/common/mod.rs`).

mod common;

use std::time::{Duration, Instant};

use common::{auto_reply, message, wait_until, Daemon, Scratch, Stack, Table, Users};

const ROLES: &[&str] = &["support", "ana", "ben", "cara"];

/// Writes the table and returns the scratch folder.
fn setup(stack: &Stack, users: &Users, table: &Table) -> Scratch {
    let scratch = Scratch::new();
    scratch.write_config(&table.render(users, stack.password()));
    scratch
}

#[test]
fn backlog_is_routed_and_every_message_sits_in_one_place() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let scratch = setup(&stack, &users, &Table::new(&stack));

    // 120 acme (east), 60 globex (west), 20 unknown (hold), 20 auto-replies
    // (skip). Each client message has its own sender, as in a real backlog
    // (one sender's flood would trip the storm limit).
    let mut backlog = Vec::new();
    let acme = |i| format!("clerk{i}@{}", users.domain("acme"));
    let globex = |i| format!("it{i}@{}", users.domain("globex"));
    for i in 0..120 {
        backlog.push(message(
            &acme(i),
            "Printer",
            &format!("acme{i}@{}", users.prefix),
        ));
    }
    for i in 0..60 {
        backlog.push(message(
            &globex(i),
            "Scanner",
            &format!("globex{i}@{}", users.prefix),
        ));
    }
    for i in 0..20 {
        let from = "someone@unknown.example";
        backlog.push(message(
            from,
            "Hello",
            &format!("unknown{i}@{}", users.prefix),
        ));
    }
    for i in 0..20 {
        backlog.push(auto_reply(&acme(i), &format!("ooo{i}@{}", users.prefix)));
    }
    let total = backlog.len();
    users.append("support", "INBOX", &backlog);

    let mut daemon = Daemon::start(&scratch);
    daemon.wait_ready();
    let ready = Instant::now();
    let drained = wait_until(Duration::from_secs(60), || {
        users.count("support", "INBOX") == 0
            && users.count("support", "Routed") + users.count("support", "Held") == total
    });
    let elapsed = ready.elapsed();
    assert!(drained, "backlog not drained:\n{}", daemon.log());
    println!(
        "backlog: {total} messages filed in {:.2} s after ready ({:.0} msg/s; \
         180 relayed, to 2 or 1 members)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );

    // Each message in exactly one folder of the support inbox.
    assert_eq!(users.count("support", "Routed"), 200);
    assert_eq!(users.count("support", "Held"), 20);
    // Each pod member got each of its messages exactly once, and no other.
    assert!(wait_until(Duration::from_secs(20), || {
        users.count("ana", "INBOX") == 120
            && users.count("ben", "INBOX") == 120
            && users.count("cara", "INBOX") == 60
    }));
    for i in 0..120 {
        let id = format!("<acme{i}@{}>", users.prefix);
        assert_eq!(users.count_with("ana", "INBOX", &id), 1, "{id}");
        assert_eq!(users.count_with("ben", "INBOX", &id), 1, "{id}");
        assert_eq!(users.count_with("cara", "INBOX", &id), 0, "{id}");
    }
    for i in 0..60 {
        let id = format!("<globex{i}@{}>", users.prefix);
        assert_eq!(users.count_with("cara", "INBOX", &id), 1, "{id}");
    }
    assert_eq!(users.count_with("ana", "INBOX", "Out of office"), 0);

    // The journal agrees, and the log has one line per message.
    let count = |sql: &str| scratch.journal_count(sql);
    assert_eq!(count("SELECT count(*) FROM messages"), total as i64);
    assert_eq!(
        count(
            "SELECT count(*) FROM messages WHERE action = 'relay' AND state = 'filed' \
             AND folder = 'Routed' AND relayed_at IS NOT NULL"
        ),
        180
    );
    assert_eq!(
        count("SELECT count(*) FROM messages WHERE action = 'skip' AND folder = 'Routed'"),
        20
    );
    assert_eq!(
        count("SELECT count(*) FROM messages WHERE action = 'hold' AND folder = 'Held'"),
        20
    );
    assert_eq!(daemon.log_count("message filed"), total);
    assert!(daemon.stop().success());
}

#[test]
fn a_live_message_is_picked_up_through_idle() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    table.poll_interval = "60s"; // a poll would take far longer than IDLE
    let scratch = setup(&stack, &users, &table);
    let mut daemon = Daemon::start(&scratch);
    daemon.wait_ready();
    std::thread::sleep(Duration::from_millis(300)); // let it enter IDLE

    let acme = format!("clerk@{}", users.domain("acme"));
    let mut imap = users.imap("support");
    let (mut pickup, mut delivery) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let id = format!("live{i}@{}", users.prefix);
        let appended = Instant::now();
        imap.append("INBOX", &message(&acme, "Live", &id));
        let filed = wait_until(Duration::from_secs(10), || {
            users.count("support", "Routed") == i + 1
        });
        assert!(filed, "live message {i} not filed:\n{}", daemon.log());
        pickup.push(appended.elapsed().as_millis());
        let needle = format!("<{id}>");
        let arrived = wait_until(Duration::from_secs(10), || {
            users.count_with("ben", "INBOX", &needle) == 1
        });
        assert!(arrived, "live message {i} not delivered:\n{}", daemon.log());
        delivery.push(appended.elapsed().as_millis());
        std::thread::sleep(Duration::from_millis(200));
    }
    imap.logout();
    println!("idle pickup: append to filed in Routed, ms: {pickup:?}");
    println!("idle pickup: append to the member's Maildir, ms: {delivery:?}");
    assert!(pickup.iter().all(|ms| *ms < 5_000), "{pickup:?}");
    assert!(daemon.stop().success());
}

#[test]
fn a_good_reload_moves_a_client_to_another_pod() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    let scratch = setup(&stack, &users, &table);
    let mut daemon = Daemon::start(&scratch);
    daemon.wait_ready();
    let acme = format!("clerk@{}", users.domain("acme"));

    users.append(
        "support",
        "INBOX",
        &[message(
            &acme,
            "Before",
            &format!("before@{}", users.prefix),
        )],
    );
    assert!(wait_until(Duration::from_secs(10), || users
        .count("ana", "INBOX")
        == 1));

    table.acme_pod = "west";
    scratch.write_config(&table.render(&users, stack.password()));
    daemon.signal("HUP");
    daemon.wait_log("reloaded the routing table", 1, Duration::from_secs(10));

    users.append(
        "support",
        "INBOX",
        &[message(&acme, "After", &format!("after@{}", users.prefix))],
    );
    assert!(
        wait_until(Duration::from_secs(10), || users.count("cara", "INBOX")
            == 1),
        "{}",
        daemon.log()
    );
    assert_eq!(users.count("ana", "INBOX"), 1);
    assert_eq!(users.count_with("cara", "INBOX", "after@"), 1);
    assert!(daemon.stop().success());
}

#[test]
fn a_bad_reload_keeps_the_old_table_routing() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    let scratch = setup(&stack, &users, &table);
    let mut daemon = Daemon::start(&scratch);
    daemon.wait_ready();

    // Moves acme to west, but also names a pod that does not exist.
    table.acme_pod = "west";
    table.extra = r#"
[clients.broken]
name = "Broken"
pod = "nowhere"
domains = ["broken.example"]
"#
    .into();
    scratch.write_config(&table.render(&users, stack.password()));
    daemon.signal("HUP");
    daemon.wait_log("reload refused", 1, Duration::from_secs(10));

    let acme = format!("clerk@{}", users.domain("acme"));
    users.append(
        "support",
        "INBOX",
        &[message(
            &acme,
            "Still east",
            &format!("east@{}", users.prefix),
        )],
    );
    assert!(
        wait_until(Duration::from_secs(10), || users.count("ana", "INBOX") == 1),
        "{}",
        daemon.log()
    );
    assert_eq!(users.count("cara", "INBOX"), 0);
    assert!(
        daemon.log().contains("nowhere"),
        "the error names the problem"
    );
    assert!(daemon.stop().success());
}

#[test]
fn sigterm_logs_out_and_exits_zero() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let scratch = setup(&stack, &users, &Table::new(&stack));
    let mut daemon = Daemon::start(&scratch);
    daemon.wait_ready();
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    let status = daemon.stop();
    println!("sigterm: exited in {} ms", asked.elapsed().as_millis());
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(daemon.log().contains("shutting down"));
    assert!(asked.elapsed() < Duration::from_secs(5));
}
