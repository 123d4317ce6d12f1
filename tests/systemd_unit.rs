//! The shipped systemd unit: its hardening score from
//! `systemd-analyze security --offline=true` (2.0 or better; lower is
//! safer), the settings the service relies on, and the watchdog pings the
//! daemon sends when `WatchdogSec=` is set. Skipped without
//! `systemd-analyze` unless `PODROUTER_REQUIRE_STACK=1` (CI).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, Scratch, Stack, Table};

/// The unit file in the repository.
fn unit() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/podrouter.service")
}

/// Fails in CI, skips elsewhere.
fn unavailable(why: &str) {
    if std::env::var("PODROUTER_REQUIRE_STACK").as_deref() == Ok("1") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
}

#[test]
fn the_unit_scores_two_or_better() {
    let out = match Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit())
        .output()
    {
        Ok(out) => out,
        Err(e) => return unavailable(&format!("systemd-analyze cannot run: {e}")),
    };
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for podrouter.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{text}"));
    println!("systemd-analyze security: exposure {score}");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}

#[test]
fn the_unit_has_the_settings_the_service_relies_on() {
    let text = std::fs::read_to_string(unit()).unwrap();
    let has = |line: &str| text.lines().any(|l| l.trim() == line);
    for line in [
        "Type=notify",
        "User=podrouter",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=podrouter",
        "WatchdogSec=60s",
    ] {
        assert!(has(line), "{line} missing from the unit");
    }
    // Nothing makes the config or the binary writable again.
    assert!(
        !text.contains("ReadWritePaths"),
        "the unit writes outside its state"
    );
}

#[test]
fn the_daemon_pings_the_watchdog_when_asked() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(&["support", "ana", "ben", "cara"]);
    let scratch = Scratch::new();
    scratch.write_config(&Table::new(&stack).render(&users, stack.password()));
    let socket_path = scratch.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let socket_env = socket_path.display().to_string();
    let mut daemon = Daemon::start_with(
        &scratch,
        &[("NOTIFY_SOCKET", &socket_env), ("WATCHDOG_USEC", "1000000")],
    );
    let mut ready = false;
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]);
            ready |= msg.lines().any(|l| l == "READY=1");
            pings += msg.lines().filter(|l| *l == "WATCHDOG=1").count();
        }
    }
    assert!(daemon.stop().success());
    println!("watchdog: READY={ready}, {pings} pings in 4 s with WATCHDOG_USEC=1s");
    assert!(ready, "{}", daemon.log());
    assert!(pings >= 4, "{pings} pings:\n{}", daemon.log());
}
