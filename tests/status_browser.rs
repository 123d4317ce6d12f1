//! `/status` in a real browser: headless Chromium loads the page of a
//! daemon whose journal holds 8 weeks of decisions for the shipped
//! table's pods, the rendered DOM must show the pods, their members and
//! the SVG chart, and a screenshot is saved to
//! `target/test-artifacts/status.png`.
//!
//! Skipped (with a note) when Chromium is not installed, unless
//! `PODROUTER_REQUIRE_STACK=1` (as `scripts/test` sets), which makes that a
//! failure. The daemon uses the mail stack when it runs, for a healthy
//! page; without it, it points at dead ports and the page says so.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{dead_port, wait_until, Daemon, Scratch, Stack};
use podrouter::config;

/// Flags that keep Chromium from reaching out of this machine.
const QUIET: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];

/// The Chromium binary, or `None` after saying why the test is skipped.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file());
    if found.is_none() {
        let why = "chromium is not installed (apt-get install chromium; scripts/test does)";
        if std::env::var("PODROUTER_REQUIRE_STACK").as_deref() == Ok("1") {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
    }
    found
}

/// Runs Chromium with `args`, at most `limit`; returns its standard output.
fn run_chromium(bin: &Path, profile: &Path, args: &[String], limit: Duration) -> String {
    let out_file = profile.with_extension("out");
    let mut child = Command::new(bin)
        .args(QUIET)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium {args:?} failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} took longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(out_file).unwrap()
}

/// The shipped table with `[inbox]`, `[relay]`, `[daemon]` and `[http]`
/// replaced: the stack's when it runs, dead loopback ports otherwise.
fn table(stack: Option<&Stack>) -> String {
    let shipped = std::fs::read_to_string("routing.toml").unwrap();
    let routing = &shipped[shipped.find("\n[routing]").unwrap()..];
    let (user, imap, smtp, password) = match stack {
        Some(stack) => {
            let users = stack.users(&["support"]);
            (
                users.name("support"),
                stack.port("IMAP_PORT"),
                stack.port("SMTP_PORT"),
                stack.password().to_owned(),
            )
        }
        None => ("support".to_owned(), dead_port(), dead_port(), "x".into()),
    };
    format!(
        "[inbox]\nserver = \"127.0.0.1\"\nport = {imap}\ntls = \"none\"\nuser = \"{user}\"\n\
         password = \"{password}\"\n\n[relay]\nserver = \"127.0.0.1\"\nport = {smtp}\n\
         tls = \"none\"\nfrom = \"support@vendor.example\"\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\n{routing}"
    )
}

/// Writes 8 weeks of decisions for the table's pods into a new journal.
fn populate(state: &Path, config: &config::Config) -> usize {
    drop(podrouter::journal::Journal::open(state).unwrap());
    let mut conn = rusqlite::Connection::open(state.join("journal.sqlite3")).unwrap();
    let tx = conn.transaction().unwrap();
    let now = SystemTime::now();
    let pods: Vec<&str> = config.pods.keys().map(String::as_str).collect();
    let mut n: i64 = 0;
    let mut insert = |back_s: u64, client: Option<&str>, pod: Option<&str>, action, subject| {
        n += 1;
        let at = now - Duration::from_secs(back_s);
        let time = humantime::format_rfc3339_millis(at).to_string();
        let sender = match client {
            Some(c) => format!("clerk{}@{c}.example", n % 5),
            None => "ap@notsunnyvale.example".to_owned(),
        };
        let (folder, reason) = match action {
            "relay" => (
                "Routed",
                format!("domain {}.example", client.unwrap_or("-")),
            ),
            "skip" => ("Routed", "auto-reply: Auto-Submitted: auto-replied".into()),
            _ => (
                "Held",
                format!("no client matches {sender} and there is no default_pod"),
            ),
        };
        tx.execute(
            "INSERT INTO messages (mailbox, uidvalidity, uid, message_id, content_hash, \
             sender, client, pod, action, rule, reason, recipients, accepted, subject, \
             smtp_reply, folder, state, attempts, first_seen, relayed_at, filed_at) \
             VALUES ('support@127.0.0.1/INBOX', 1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, '', '', \
             ?10, ?11, ?12, 'filed', 1, ?13, ?14, ?13)",
            rusqlite::params![
                n,
                format!("m{n}@browser.test"),
                format!("hash{n}"),
                sender,
                client,
                pod,
                action,
                client.map(|c| format!("domain {c}.example")),
                reason,
                subject,
                (action == "relay").then_some("250 2.0.0 queued"),
                folder,
                time,
                (action == "relay").then_some(&time),
            ],
        )
        .unwrap();
    };
    // Relays: a weekly rhythm per pod, quieter at weekends.
    for back in (0..56u64).rev() {
        for (p, pod) in pods.iter().enumerate() {
            let clients: Vec<&str> = config
                .clients
                .values()
                .filter(|c| c.pod == *pod)
                .map(|c| c.key.as_str())
                .collect();
            let weekend = back % 7 < 2;
            let count = (back * 7 + p as u64 * 13) % 6 + if weekend { 0 } else { 3 + p as u64 };
            for i in 0..count {
                let client = clients[(i as usize + back as usize) % clients.len()];
                let at = back * 86_400 + 3_600 + i * 600;
                insert(
                    at,
                    Some(client),
                    Some(pod),
                    "relay",
                    "Printer on floor 2 is jammed",
                );
            }
        }
    }
    insert(
        1_800,
        Some("sunnyvale"),
        Some("alberta"),
        "skip",
        "Out of office",
    );
    insert(
        1_200,
        None,
        None,
        "hold",
        "<b>URGENT</b>: updated banking details",
    );
    insert(600, None, None, "hold", "Can't renew my dog licence online");
    tx.commit().unwrap();
    n as usize
}

#[test]
fn status_page_renders_pods_members_and_chart_in_chromium() {
    let Some(browser) = chromium() else { return };
    let stack = Stack::get();
    let scratch = Scratch::new();
    scratch.write_config(&table(stack.as_ref()));
    let config = config::load(&scratch.config()).unwrap();
    let rows = populate(&scratch.state(), &config);
    assert!(rows > 300, "{rows} journal rows");

    let mut daemon = Daemon::start(&scratch);
    let url = format!("http://{}/status", daemon.http_addr());
    if stack.is_some() {
        daemon.wait_ready();
        let addr = daemon.http_addr();
        let healthy = wait_until(Duration::from_secs(20), || {
            common::http_get(&addr, "/healthz").0 == 200
        });
        assert!(healthy, "{}", daemon.log());
    }

    // The DOM as Chromium built it.
    let profile = scratch.dir.path().join("chromium-profile");
    let dom = run_chromium(
        &browser,
        &profile,
        &["--dump-dom".into(), url.clone()],
        Duration::from_secs(90),
    );
    for pod in config.pods.values() {
        assert!(dom.contains(&pod.name), "pod {} missing:\n{dom}", pod.name);
        for member in &pod.members {
            let shown = member.name.as_deref().unwrap_or(&member.address);
            assert!(dom.contains(shown), "member {shown} missing");
        }
    }
    assert!(dom.contains("Ana Ruiz"), "{dom}");
    assert!(dom.contains("Town of Sunnyvale"), "{dom}");
    assert!(
        dom.contains("<svg") && dom.contains("id=\"daily-chart\""),
        "{dom}"
    );
    let bars = dom.matches("data-pod=").count();
    assert!(bars >= 100, "{bars} bars in the chart");
    assert!(dom.contains("&lt;b&gt;URGENT&lt;/b&gt;"), "subject escaped");
    assert!(!dom.contains("<b>URGENT"), "subject not escaped");
    assert!(dom.contains("Held (2)"), "{dom}");
    assert!(dom.contains("Last 50 decisions"));
    if stack.is_some() {
        assert!(dom.contains("Healthy"), "{dom}");
    }

    // A screenshot for a person to look at.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&target).unwrap();
    let shot = target.join("status.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &browser,
        &profile,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2200".into(),
            url,
        ],
        Duration::from_secs(90),
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
    println!("screenshot: {}", shot.display());
    assert!(daemon.stop().success());
}
