//! TLS that cannot be talked down, secrets that stay secret, and relayed
//! bytes checked on the wire: a certificate for another name, a server
//! without STARTTLS, plaintext off loopback, a password file others can
//! read, passwords grepped for in logs and the journal, and hostile
//! messages relayed to a recording SMTP sink. Skipped when the stack is not
//! running (the offline ones run always).

mod common;
mod inject;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{message, wait_until, Daemon, Scratch, Stack, Table, Users};
use inject::{contains, Greeter, Protocol, Proxy, SmtpSink};

const ROLES: &[&str] = &["support", "ana", "ben", "cara"];

fn podrouter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_podrouter"))
}

/// Starts the daemon and waits for it to give up; returns its log.
fn refused_at_start(scratch: &Scratch) -> String {
    let mut daemon = Daemon::start(scratch);
    let status = daemon
        .wait_exit(Duration::from_secs(30))
        .expect("podrouter gives up");
    assert!(!status.success());
    let log = daemon.log();
    assert!(!log.contains("ready"), "{log}");
    log
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    // 127.0.0.2 reaches the same server; its certificate names only
    // localhost and 127.0.0.1.
    let imaps = Proxy::start_at("127.0.0.2", stack.port("IMAPS_PORT"), Duration::ZERO);
    let smtps = Proxy::start_at("127.0.0.2", stack.port("SMTPS_PORT"), Duration::ZERO);

    let mut table = Table::new(&stack);
    let n = &mut table.net;
    n.imap_host = "127.0.0.2".into();
    n.imap_port = imaps.port();
    n.imap_tls = "implicit";
    n.imap_ca = Some(stack.ca_file());
    let scratch = Scratch::new();
    scratch.write_config(&table.render(&users, stack.password()));
    let log = refused_at_start(&scratch);
    assert!(log.contains("127.0.0.2"), "{log}");
    assert!(log.contains("not valid for"), "{log}");

    // On the relay side the message stays in the inbox.
    let mut table = Table::new(&stack);
    let n = &mut table.net;
    n.smtp_host = "127.0.0.2".into();
    n.smtp_port = smtps.port();
    n.smtp_tls = "implicit";
    n.smtp_ca = Some(stack.ca_file());
    let scratch = Scratch::new();
    scratch.write_config(&table.render(&users, stack.password()));
    let acme = format!("clerk@{}", users.domain("acme"));
    users.append(
        "support",
        "INBOX",
        &[message(&acme, "Name", &format!("name@{}", users.prefix))],
    );
    let mut daemon = Daemon::start(&scratch);
    daemon.wait_log("relay failed", 1, Duration::from_secs(30));
    let log = daemon.log();
    assert!(log.contains("not valid for"), "{log}");
    assert_eq!(users.count("support", "INBOX"), 1);
    assert_eq!(users.count("ana", "INBOX"), 0);
    assert!(daemon.stop().success());
}

#[test]
fn starttls_is_never_downgraded() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);

    // IMAP: a server without STARTTLS never sees the login.
    let imap = Greeter::start(Protocol::Imap);
    let mut table = Table::new(&stack);
    table.net.imap_port = imap.port();
    table.net.imap_tls = "starttls";
    let scratch = Scratch::new();
    scratch.write_config(&table.render(&users, "imap-Pw-9f3c1e"));
    let log = refused_at_start(&scratch);
    assert!(log.to_lowercase().contains("starttls"), "{log}");
    let got = imap.received();
    assert!(!got.to_uppercase().contains("LOGIN"), "{got}");
    assert!(!got.contains("imap-Pw-9f3c1e"), "{got}");

    // SMTP: a relay without STARTTLS never gets the message.
    let smtp = Greeter::start(Protocol::Smtp);
    let mut table = Table::new(&stack);
    table.net.smtp_port = smtp.port();
    table.net.smtp_tls = "starttls";
    let scratch = Scratch::new();
    scratch.write_config(&table.render(&users, stack.password()));
    let acme = format!("clerk@{}", users.domain("acme"));
    users.append(
        "support",
        "INBOX",
        &[message(&acme, "Tls", &format!("notls@{}", users.prefix))],
    );
    let mut daemon = Daemon::start(&scratch);
    daemon.wait_log("relay failed", 1, Duration::from_secs(30));
    assert!(daemon.stop().success());
    let got = smtp.received().to_uppercase();
    assert!(got.contains("EHLO"), "{got}");
    for verb in ["MAIL FROM", "RCPT", "DATA", "AUTH"] {
        assert!(!got.contains(verb), "{verb} sent without TLS: {got}");
    }
    assert_eq!(users.count("support", "INBOX"), 1);
}

/// A table whose [inbox] and [relay] are given by `inbox` and `relay`.
fn offline_table(inbox: &str, relay: &str) -> String {
    format!(
        "[inbox]\n{inbox}\n\n[relay]\n{relay}\nfrom = \"support@vendor.example\"\n\n\
         [pods.p]\nmembers = [\"a@vendor.example\"]\n\n\
         [clients.c]\npod = \"p\"\ndomains = [\"c.example\"]\n"
    )
}

#[test]
fn plaintext_is_only_allowed_to_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routing.toml");
    let inbox = "server = \"mail.example.org\"\ntls = \"none\"\nuser = \"support\"\npassword_env = \"NOPE\"";
    let relay = "server = \"smtp.example.org\"\ntls = \"none\"";
    std::fs::write(&path, offline_table(inbox, relay)).unwrap();
    let out = podrouter()
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("inbox: tls = \"none\""), "{text}");
    assert!(text.contains("relay: tls = \"none\""), "{text}");
    assert!(text.contains("only allowed to a loopback"), "{text}");

    let out = podrouter()
        .args(["run", "-c"])
        .arg(&path)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("only allowed to a loopback"), "{text}");
}

#[test]
fn a_password_file_others_can_read_is_refused_by_check_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("imap.pw");
    std::fs::write(&secret, "Pw-in-a-file-7d1\n").unwrap();
    for mode in [0o640, 0o604] {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        let inbox = format!(
            "server = \"127.0.0.1\"\ntls = \"none\"\nuser = \"support\"\npassword_file = \"{}\"",
            secret.display()
        );
        let path = dir.path().join("routing.toml");
        std::fs::write(
            &path,
            offline_table(&inbox, "server = \"127.0.0.1\"\ntls = \"none\""),
        )
        .unwrap();
        let check = podrouter()
            .arg("check")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&check.stderr).to_string()
            + &String::from_utf8_lossy(&check.stdout);
        assert_eq!(check.status.code(), Some(1), "{text}");
        assert!(text.contains("chmod 600"), "{text}");
        assert!(!text.contains("Pw-in-a-file-7d1"), "{text}");
        let run = podrouter()
            .args(["run", "-c"])
            .arg(&path)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{text}");
        assert!(text.contains("chmod 600"), "{text}");
        assert!(!text.contains("Pw-in-a-file-7d1"), "{text}");
    }
}

/// Adds `<prefix>-support` with its own password; waits until it logs in.
fn support_with_password(stack: &Stack, users: &Users, password: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mailstack");
    for args in [["adduser"], ["reset"]] {
        let ok = Command::new(&script)
            .args(args)
            .arg(users.name("support"))
            .env("PODROUTER_STACK_DIR", stack.var("STACK_DIR"))
            .env("PODROUTER_STACK_PASSWORD", password)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

/// APPENDs one message to INBOX, logging in with `password`.
fn append_as(stack: &Stack, user: &str, password: &str, raw: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", stack.port("IMAP_PORT")))
            .await
            .unwrap();
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.unwrap();
        let mut session = client
            .login(user, password)
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        session.append("INBOX", None, None, raw).await.unwrap();
        let _ = session.logout().await;
    });
}

/// The forms a password could leak in: as is, and base64 (AUTH PLAIN).
fn leak_forms(user: &str, password: &str) -> Vec<Vec<u8>> {
    let plain = format!("\0{user}\0{password}");
    vec![
        password.as_bytes().to_vec(),
        base64(password.as_bytes()).into_bytes(),
        base64(plain.as_bytes()).into_bytes(),
    ]
}

/// Standard base64, for looking for an encoded password.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn secrets_never_reach_logs_or_the_journal() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(&["ana", "ben", "cara"]);
    let imap_pw = "Imap-Zq8Rw3-secret-41c";
    let smtp_pw = "Smtp-Kv2Lp9-secret-7e0";
    support_with_password(&stack, &users, imap_pw);
    let sink = SmtpSink::start(true);

    let scratch = Scratch::new();
    let pw_file = scratch.dir.path().join("imap.pw");
    std::fs::write(&pw_file, format!("{imap_pw}\n")).unwrap();
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut table = Table::new(&stack);
    table.net.smtp_port = sink.port();
    let text = table
        .render(&users, "PLACEHOLDER")
        .replace(
            "password = \"PLACEHOLDER\"",
            &format!("password_file = \"{}\"", pw_file.display()),
        )
        .replace(
            "connections = 4",
            "connections = 4\nuser = \"relay-user\"\npassword_env = \"PODROUTER_TEST_SMTP_PW\"",
        );
    scratch.write_config(&text);
    let login_ok = wait_until(Duration::from_secs(10), || {
        let check = podrouter()
            .arg("check")
            .arg("-c")
            .arg(scratch.config())
            .output()
            .unwrap();
        check.status.success()
    });
    assert!(login_ok);
    let acme = format!("clerk@{}", users.domain("acme"));
    let raw = message(&acme, "Secret", &format!("sec@{}", users.prefix));
    append_as(&stack, &users.name("support"), imap_pw, &raw);

    // A full pass, logging everything.
    let mut daemon = Daemon::start_with(
        &scratch,
        &[("RUST_LOG", "trace"), ("PODROUTER_TEST_SMTP_PW", smtp_pw)],
    );
    assert!(
        wait_until(Duration::from_secs(30), || users.count("support", "Routed")
            == 1),
        "{}",
        daemon.log()
    );
    assert!(daemon.stop().success());
    assert_eq!(sink.taken().len(), 1, "relayed through the sink");
    let transcript = sink.transcripts.lock().unwrap().concat();
    assert!(contains(&transcript, b"AUTH"), "the relay logged in");

    // A wrong password fails with an error that does not show it.
    let wrong = "Wrong-Pw-Yx5Tb2-3aa";
    std::fs::write(&pw_file, format!("{wrong}\n")).unwrap();
    let mut failed = Daemon::start_with(&scratch, &[("RUST_LOG", "trace")]);
    let status = failed
        .wait_exit(Duration::from_secs(30))
        .expect("login refused");
    assert!(!status.success());

    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        ("daemon log".into(), daemon.log().into_bytes()),
        ("failed daemon log".into(), failed.log().into_bytes()),
    ];
    for entry in std::fs::read_dir(scratch.state()).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        haystacks.push((entry.path().display().to_string(), bytes));
    }
    let check = podrouter()
        .arg("check")
        .arg("-c")
        .arg(scratch.config())
        .output()
        .unwrap();
    haystacks.push(("check output".into(), [check.stdout, check.stderr].concat()));
    let mut forms = leak_forms(&users.name("support"), imap_pw);
    forms.extend(leak_forms("relay-user", smtp_pw));
    forms.extend(leak_forms(&users.name("support"), wrong));
    for (name, hay) in &haystacks {
        for form in &forms {
            assert!(
                !contains(hay, form),
                "{name} holds a secret ({})",
                String::from_utf8_lossy(form)
            );
        }
    }
    println!(
        "secrets: {} places searched for {} forms of 3 passwords (trace-level logs); none found",
        haystacks.len(),
        forms.len()
    );
}

/// Hostile messages: (id, raw bytes).
fn hostile(users: &Users) -> Vec<(String, Vec<u8>)> {
    let from = format!("clerk@{}", users.domain("acme"));
    let id = |n: &str| format!("{n}@{}", users.prefix);
    let head = |n: &str, eol: &str| {
        format!(
            "From: Clerk <{from}>{eol}To: support@vendor.example{eol}Subject: {n}{eol}\
             Message-ID: <{}>{eol}",
            id(n)
        )
    };
    let mut out = Vec::new();
    let mut add = |n: &str, raw: String| out.push((id(n), raw.into_bytes()));
    add(
        "barelf",
        format!(
            "{}\nline one\n.\nline three\n..\n.hidden\n",
            head("barelf", "\n")
        ),
    );
    add(
        "smuggle",
        format!(
            "{}\r\nhello\r\n.\r\nMAIL FROM:<evil@evil.example>\r\nRCPT TO:<victim@evil.example>\r\n\
             DATA\r\nsmuggled\r\n.\r\nQUIT\r\n",
            head("smuggle", "\r\n")
        ),
    );
    add(
        "smugglelf",
        format!(
            "{}\r\nhello\n.\nMAIL FROM:<evil@evil.example>\n.\r\n\r.\rRCPT TO:<victim@evil.example>\r\n",
            head("smugglelf", "\r\n")
        ),
    );
    add(
        "crname",
        format!(
            "From: \"Clerk\rBcc: victim@evil.example\" <{from}>\r\nTo: support@vendor.example\r\n\
             Subject: crname\r\nMessage-ID: <{}>\r\n\r\nbody\r\n",
            id("crname")
        ),
    );
    add(
        "encname",
        format!(
            "From: =?utf-8?q?Clerk=0D=0ABcc:_victim@evil.example?= <{from}>\r\n\
             To: support@vendor.example\r\nSubject: =?utf-8?q?x=0D=0ABcc:_victim2@evil.example?=\r\n\
             Message-ID: <{}>\r\n\r\n.\r\nno final newline",
            id("encname")
        ),
    );
    out
}

/// DATA as sent, dot-stuffing undone and the final `.` line dropped.
fn unstuff(data: &[u8]) -> Vec<u8> {
    let body = data.strip_suffix(b".\r\n").expect("ends with the dot line");
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

#[test]
fn hostile_messages_go_out_exactly_as_built_and_smuggle_nothing() {
    use podrouter::emit::{self, EmitOptions};

    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let sink = SmtpSink::start(false);
    let mut table = Table::new(&stack);
    table.net.smtp_port = sink.port();
    let scratch = Scratch::new();
    scratch.write_config(&table.render(&users, stack.password()));
    let messages = hostile(&users);
    let raws: Vec<Vec<u8>> = messages.iter().map(|(_, r)| r.clone()).collect();
    users.append("support", "INBOX", &raws);

    let mut daemon = Daemon::start(&scratch);
    let n = messages.len();
    assert!(
        wait_until(Duration::from_secs(30), || users.count("support", "Routed")
            == n),
        "{}",
        daemon.log()
    );
    assert!(daemon.stop().success());

    // What the daemon should have sent, built offline from what Dovecot
    // hands out (APPEND may have normalised line ends).
    let config = podrouter::config::load(&scratch.config()).unwrap();
    let relay = config.relay.as_ref().unwrap();
    let stored = users.imap("support").fetch_all("Routed");
    let taken = sink.taken();
    assert_eq!(
        taken.len(),
        n,
        "one transaction per message, nothing smuggled"
    );
    let mut extra_crlf = 0;
    for t in &taken {
        assert!(!t.from.contains("evil"), "smuggled MAIL FROM: {t:?}");
        let mut rcpt = t.rcpt.clone();
        rcpt.sort();
        assert_eq!(
            rcpt,
            [
                format!("TO:<{}>", users.address("ana")),
                format!("TO:<{}>", users.address("ben"))
            ],
            "{t:?}"
        );
        let data = &t.data;
        for (i, b) in data.iter().enumerate() {
            match b {
                b'\n' => assert!(i > 0 && data[i - 1] == b'\r', "bare LF on the wire"),
                b'\r' => assert_eq!(data.get(i + 1), Some(&b'\n'), "bare CR on the wire"),
                _ => {}
            }
        }
        let sent = unstuff(data);
        let header_end = sent
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(sent.len());
        let header = String::from_utf8_lossy(&sent[..header_end]).to_lowercase();
        assert!(
            !header.lines().any(|l| l.starts_with("bcc:")),
            "injected header:\n{header}"
        );
        let (id, _) = messages
            .iter()
            .find(|(id, _)| contains(&sent, format!("<{id}>").as_bytes()))
            .expect("a known message");
        let raw = stored
            .iter()
            .find(|r| contains(r, format!("<{id}>").as_bytes()))
            .expect("stored copy");
        let decision = podrouter::engine::decide(&config, raw);
        let pod = decision.pod.as_deref().and_then(|k| config.pod(k)).unwrap();
        let opts = EmitOptions {
            from_mode: relay.from_mode,
            relay_from: &relay.from,
            pod_name: &pod.name,
        };
        let expected = emit::relay_bytes(raw, &decision, &opts);
        // lettre always writes CRLF.CRLF after the bytes, so a message that
        // ends with CRLF gains one empty last line on the wire.
        let sent = match sent.strip_suffix(b"\r\n") {
            Some(s) if expected.ends_with(b"\r\n") && s == expected.as_slice() => {
                extra_crlf += 1;
                s.to_vec()
            }
            _ => sent,
        };
        assert!(
            sent == expected,
            "{id}: the wire differs from what emit built:\n{}\n----\n{}",
            String::from_utf8_lossy(&sent),
            String::from_utf8_lossy(&expected)
        );
        for other in messages.iter().filter(|(o, _)| o != id) {
            assert!(
                !contains(&sent, format!("<{}>", other.0).as_bytes()),
                "{id} carries {}",
                other.0
            );
        }
    }
    println!(
        "wire: {n} hostile messages, one transaction each, CRLF only, byte-identical to emit \
         ({extra_crlf} with the empty last line lettre's terminator adds)"
    );
}
