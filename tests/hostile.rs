//! Hostile and huge mail: whatever arrives, [`engine::decide`] gives a
//! decision with a reason, in bounded time and memory, without a panic, and
//! [`emit::relay_bytes`] writes only CRLF-terminated lines in both From modes.
//!
//! Three groups:
//!
//! - sizes and shapes generated here (50 MB, long lines, NUL bytes, 10,000
//!   recipients, MIME nested thousands deep, truncations, 100,000 headers);
//! - `tests/breakage/NAME.eml`, real-world oddities, each with
//!   `NAME.expect`: one line `ACTION REASON-SUBSTRING` (`skip bounce`,
//!   `relay domain town.example`);
//! - `tests/fuzz-regressions/*`: every input the fuzzer (`scripts/fuzz`)
//!   ever crashed on, replayed.
//!
//! Each message is decided on its own thread with a 2 MiB stack (the default
//! for test threads) under a generous time limit, so a hang fails the test
//! instead of stalling the run. Wall-clock times are printed, never asserted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use podrouter::config::{self, Config, FromMode};
use podrouter::emit::{self, EmitOptions};
use podrouter::engine::{self, Action, Decision};

/// The stack a message is decided on: the Rust default for spawned threads.
const STACK: usize = 2 << 20;

/// The time limit for one ordinary message; far above what any needs.
const LIMIT: Duration = Duration::from_secs(120);

/// RFC 5322's line limit, which every header line we generate keeps.
const HARD_LINE: usize = 998;

/// `relay.from` in the golden table.
const RELAY_FROM: &str = "support@vendor.example";

/// The golden table as it is: relay reasons name the rule that matched.
fn golden() -> &'static Arc<Config> {
    static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
    CONFIG.get_or_init(|| Arc::new(load_golden(false)))
}

/// The golden table with `default_pod = "east"`, so unknown senders reach emit.
fn with_default() -> &'static Arc<Config> {
    static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
    CONFIG.get_or_init(|| Arc::new(load_golden(true)))
}

fn load_golden(default_pod: bool) -> Config {
    let path = repo().join("tests/golden/routing.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    if default_pod {
        text = text.replace("[routing]\n", "[routing]\ndefault_pod = \"east\"\n");
    }
    config::from_str(&text, &path).unwrap()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `f` on a thread with a [`STACK`]-sized stack; fails after `limit`.
///
/// A panic on the thread fails the test with the thread's own message. A
/// thread still running at the limit is left behind: the test fails and
/// the harness ends the process when the run is over.
fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name(what.to_string())
        .stack_size(STACK)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread ended without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no decision within {limit:?}: a hang or a blow-up")
        }
    }
}

/// What one message gave: the decision and the relayed bytes in both modes.
struct Outcome {
    decision: Decision,
    keep: Vec<u8>,
    rewrite: Vec<u8>,
}

/// Decides and emits `raw` (both From modes) with the invariants checked.
fn run(config: &Config, raw: &[u8]) -> Outcome {
    let decision = engine::decide(config, raw);
    assert!(
        !decision.reason.is_empty(),
        "{} without a reason",
        decision.action
    );
    let pod_name = decision
        .pod
        .as_deref()
        .and_then(|p| config.pod(p))
        .map_or("Hostile pod", |p| p.name.as_str());
    let emit = |from_mode| {
        let opts = EmitOptions {
            from_mode,
            relay_from: RELAY_FROM,
            pod_name,
        };
        let bytes = emit::relay_bytes(raw, &decision, &opts);
        assert_crlf_only(&bytes);
        bytes
    };
    let keep = emit(FromMode::Keep);
    let rewrite = emit(FromMode::Rewrite);
    Outcome {
        decision,
        keep,
        rewrite,
    }
}

/// [`run`] on its own bounded thread, against the table with a default pod.
fn run_bounded(what: &str, raw: Vec<u8>) -> Outcome {
    let config = Arc::clone(with_default());
    bounded(what, LIMIT, move || run(&config, &raw))
}

fn assert_crlf_only(bytes: &[u8]) {
    let bare = bytes.iter().enumerate().position(|(i, &b)| {
        (b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
            || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
    });
    assert_eq!(bare, None, "bare CR or LF in relayed bytes");
}

fn assert_relay(outcome: &Outcome, reason: &str) {
    let d = &outcome.decision;
    assert_eq!(d.action, Action::Relay, "{}", d.reason);
    assert_eq!(d.reason, reason);
}

/// The header block of emitted bytes, as fields: name and physical lines.
fn emitted_fields(bytes: &[u8]) -> Vec<(String, Vec<&[u8]>)> {
    let mut fields: Vec<(String, Vec<&[u8]>)> = Vec::new();
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        match (line[0], fields.last_mut()) {
            (b' ' | b'\t', Some((_, lines))) => lines.push(line),
            _ => {
                let name = line.split(|&b| b == b':').next().unwrap_or_default();
                let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                fields.push((name, vec![line]));
            }
        }
    }
    fields
}

/// Every line of the header fields we generate is at most 998 bytes.
///
/// Ours are the `X-Podrouter-*` trace fields and, when rewriting, From,
/// `X-Original-From` and a Reply-To; headers copied from the sender keep
/// the sender's lines.
fn assert_generated_lines_short(bytes: &[u8], rewritten: bool) {
    for (name, lines) in emitted_fields(bytes) {
        let ours = name.starts_with("x-podrouter-")
            || (rewritten && ["from", "x-original-from", "reply-to"].contains(&name.as_str()));
        for line in lines.iter().filter(|_| ours) {
            assert!(
                line.len() <= HARD_LINE,
                "generated {name} line of {} bytes",
                line.len()
            );
        }
    }
}

/// The first line of a field's value in emitted bytes, or `None`.
fn emitted_value(bytes: &[u8], field: &str) -> Option<String> {
    emitted_fields(bytes)
        .into_iter()
        .find(|(name, _)| name == field)
        .map(|(_, lines)| {
            let joined: Vec<u8> = lines.concat();
            let text = String::from_utf8_lossy(&joined).into_owned();
            text.split_once(':')
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        })
}

/// A small pseudo-random generator, so generated bodies do not compress
/// to nothing and stay the same from run to run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Base64 lines (76 characters, CRLF) totalling about `bytes` bytes.
fn base64_lines(out: &mut Vec<u8>, bytes: usize, rng: &mut Lcg) {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for _ in 0..bytes / 78 {
        for _ in 0..76 {
            out.push(ALPHABET[(rng.next() % 64) as usize]);
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A person's plain message from the Town's clerk, with extra headers.
fn clerk_message(extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Town Clerk <clerk@town.example>\r\n\
         To: support@vendor.example\r\n\
         Subject: printer on floor 2\r\n\
         Message-ID: <hostile-1@town.example>\r\n\
         Date: Tue, 3 Jun 2025 09:14:00 -0600\r\n\
         {extra_headers}\
         \r\n\
         {body}"
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------
// Sizes

/// A 50 MB message with attachments is decided and relayed whole, in time
/// linear enough to finish well inside the limit.
#[test]
fn fifty_megabyte_message_with_attachments() {
    const SIZE: usize = 50 << 20;
    const ATTACHMENTS: usize = 5;
    let mut raw = clerk_message(
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"big-1\"\r\n",
        "--big-1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nScans attached.\r\n",
    );
    let mut rng = Lcg(42);
    for n in 0..ATTACHMENTS {
        let head = format!(
            "--big-1\r\nContent-Type: application/pdf; name=\"scan-{n}.pdf\"\r\n\
             Content-Disposition: attachment; filename=\"scan-{n}.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        );
        raw.extend_from_slice(head.as_bytes());
        base64_lines(&mut raw, SIZE / ATTACHMENTS, &mut rng);
    }
    raw.extend_from_slice(b"--big-1--\r\n");
    let input_len = raw.len();
    assert!(input_len > 49 << 20, "only {input_len} bytes generated");

    let config = Arc::clone(with_default());
    let started = Instant::now();
    let (decision, keep_len, rewrite_len) = bounded("50 MB", Duration::from_secs(600), move || {
        let outcome = run(&config, &raw);
        (outcome.decision, outcome.keep.len(), outcome.rewrite.len())
    });
    eprintln!(
        "50 MB: decided and emitted twice in {:?}",
        started.elapsed()
    );

    assert_eq!(decision.action, Action::Relay, "{}", decision.reason);
    assert_eq!(decision.reason, "domain town.example");
    // The input is already CRLF: the output only gains the trace headers
    // (and, rewritten, the new From block).
    for len in [keep_len, rewrite_len] {
        assert!(
            len >= input_len && len < input_len + 2048,
            "{len} from {input_len}"
        );
    }
}

/// Header lines far past 998 characters: the message is still decided, and
/// every line of the headers we write stays within 998.
#[test]
fn header_lines_over_998_characters() {
    let long_name = format!("Clerk {}", "Tremblay-".repeat(400));
    let long_subject = "printer ".repeat(1_000);
    let unbroken = "x".repeat(20_000);
    let long_to: Vec<String> = (0..150)
        .map(|i| format!("desk{i}@vendor.example"))
        .collect();
    let raw = format!(
        "From: \"{long_name}\" <clerk@town.example>\r\n\
         To: {}\r\n\
         Subject: {long_subject}\r\n\
         X-Unbroken: {unbroken}\r\n\
         \r\n\
         body\r\n",
        long_to.join(",")
    );
    let outcome = run_bounded("long headers", raw.into_bytes());
    assert_relay(&outcome, "domain town.example");
    assert_generated_lines_short(&outcome.keep, false);
    assert_generated_lines_short(&outcome.rewrite, true);

    // The rewritten message is still a valid message: it parses, its From
    // is ours, and deciding it again finds our loop marker.
    let again = engine::decide(with_default(), &outcome.rewrite);
    assert_eq!(again.action, Action::Skip, "{}", again.reason);
    assert!(again.reason.starts_with("loop"), "{}", again.reason);
    assert_eq!(again.sender.as_deref(), Some(RELAY_FROM));
    let original = emitted_value(&outcome.rewrite, "x-original-from").unwrap();
    assert!(original.contains("clerk@town.example"));
}

/// An address or a name with no whitespace to fold at, over 998 long.
#[test]
fn unbreakable_sender_over_998_characters() {
    let cases = [
        format!("From: {}@town.example\r\n", "c".repeat(1_500)),
        format!("From: {} <clerk@town.example>\r\n", "N".repeat(3_000)),
        format!(
            "From: =?utf-8?q?{}?= <clerk@town.example>\r\n",
            "=C3=A9".repeat(800)
        ),
        format!("From: <clerk@{}.town.example>\r\n", "sub".repeat(600)),
    ];
    for (n, from) in cases.into_iter().enumerate() {
        let raw = format!("{from}Subject: long\r\n\r\nbody\r\n");
        let outcome = run_bounded(&format!("unbreakable {n}"), raw.into_bytes());
        assert_generated_lines_short(&outcome.keep, false);
        assert_generated_lines_short(&outcome.rewrite, true);
    }
}

/// NUL bytes in header names, values, the sender and the body.
#[test]
fn nul_bytes_in_headers_and_body() {
    let raw = b"From: \"Town\0Clerk\" <clerk@town.example>\r\n\
                To: support@vendor.example\0\r\n\
                Subject: pr\0inter\r\n\
                X-\0Odd: \0\0\0\r\n\
                \r\n\
                line one\0\r\n\0\0\0\r\nline three\r\n"
        .to_vec();
    let outcome = run_bounded("nul", raw);
    assert_relay(&outcome, "domain town.example");
    let from = emitted_value(&outcome.rewrite, "from").unwrap();
    assert!(!from.contains('\0'), "a NUL in the From we wrote: {from:?}");
    assert!(
        outcome.keep.windows(3).any(|w| w == b"\0\0\0"),
        "body changed"
    );

    for raw in [
        &b"From: clerk\0@town.example\r\n\r\nx"[..],
        b"From: clerk@town.exa\0mple\r\n\r\nx",
        b"\0\0\0\0",
        b"\0From: clerk@town.example\r\n\r\nx",
        b"From: clerk@town.example\r\n\0\r\n\r\nx",
    ] {
        run_bounded("nul variants", raw.to_vec());
    }
}

/// 10,000 addresses in To (and in Cc, and in From itself).
#[test]
fn ten_thousand_addresses() {
    let many: Vec<String> = (0..10_000)
        .map(|i| format!("Desk {i} <d{i}@city.example>"))
        .collect();
    let folded = many.join(",\r\n ");
    let raw = clerk_message(
        &format!("Cc: {folded}\r\nTo: {}\r\n", many.join(", ")),
        "hi\r\n",
    );
    let outcome = run_bounded("10k To", raw);
    assert_relay(&outcome, "domain town.example");

    // The first usable mailbox of a 10,000-long From decides.
    let raw = format!("From: mayor@town.example, {folded}\r\nSubject: many\r\n\r\nx\r\n");
    let outcome = run_bounded("10k From", raw.into_bytes());
    assert_relay(&outcome, "address mayor@town.example");
    assert_generated_lines_short(&outcome.rewrite, true);

    // 10,000 unusable mailboxes, then one in Sender.
    let junk = vec!["undisclosed-recipients:;"; 10_000].join(" ");
    let raw = format!("From: {junk}\r\nSender: clerk@city.example\r\n\r\nx\r\n");
    let outcome = run_bounded("10k junk From", raw.into_bytes());
    assert_relay(&outcome, "domain city.example");
}

/// 100,000 headers, of several kinds.
#[test]
fn hundred_thousand_headers() {
    let mut filler = String::new();
    for i in 0..100_000 {
        let _ = write!(filler, "X-Filler-{i}: value {i}\r\n");
    }
    let outcome = run_bounded("100k filler", clerk_message(&filler, "x\r\n"));
    assert_relay(&outcome, "domain town.example");

    let received = "Received: from mx.town.example (mx.town.example [192.0.2.1])\r\n\tby mx.vendor.example with ESMTPS id 1; Tue, 3 Jun 2025 09:14:00 -0600\r\n";
    let outcome = run_bounded(
        "100k Received",
        clerk_message(&received.repeat(100_000), "x\r\n"),
    );
    assert_relay(&outcome, "domain town.example");

    let froms = "From: clerk@town.example\r\n".repeat(100_000);
    let outcome = run_bounded("100k From", format!("{froms}\r\nx\r\n").into_bytes());
    assert_relay(&outcome, "domain town.example");

    let no = "Auto-Submitted: no\r\nPrecedence: first-class\r\n".repeat(50_000);
    let outcome = run_bounded("100k Auto-Submitted", clerk_message(&no, "x\r\n"));
    assert_relay(&outcome, "domain town.example");
}

/// 100,000 MIME parts side by side.
#[test]
fn hundred_thousand_parts() {
    let mut body = String::new();
    for i in 0..100_000 {
        let _ = write!(body, "--p\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n");
    }
    body.push_str("--p--\r\n");
    let raw = clerk_message("Content-Type: multipart/mixed; boundary=p\r\n", &body);
    let outcome = run_bounded("100k parts", raw);
    assert_relay(&outcome, "domain town.example");
}

// ---------------------------------------------------------------------------
// Nesting

/// `depth` multiparts, each inside the last, around one text part.
fn nested_multipart(depth: usize, leaf: &str) -> Vec<u8> {
    let mut s = String::from("From: clerk@town.example\r\nSubject: deep\r\nMIME-Version: 1.0\r\n");
    for i in 0..depth {
        let _ = write!(
            s,
            "Content-Type: multipart/mixed; boundary=\"n{i}\"\r\n\r\n--n{i}\r\n"
        );
    }
    s.push_str(leaf);
    for i in (0..depth).rev() {
        let _ = write!(s, "--n{i}--\r\n");
    }
    s.into_bytes()
}

/// `depth` enclosed messages, each a `message/rfc822` inside a multipart.
fn nested_rfc822(depth: usize, leaf: &str) -> Vec<u8> {
    let mut s = String::from("From: clerk@town.example\r\nSubject: deep\r\nMIME-Version: 1.0\r\n");
    for i in 0..depth {
        let _ = write!(
            s,
            "Content-Type: multipart/mixed; boundary=\"m{i}\"\r\n\r\n--m{i}\r\n\
             Content-Type: message/rfc822\r\n\r\nFrom: fwd{i}@city.example\r\n"
        );
    }
    s.push_str(leaf);
    for i in (0..depth).rev() {
        let _ = write!(s, "--m{i}--\r\n");
    }
    s.into_bytes()
}

/// `depth` bare `message/rfc822` bodies, each the whole of its parent.
fn nested_bare_rfc822(depth: usize) -> Vec<u8> {
    let mut s = String::from("From: clerk@town.example\r\nSubject: deep\r\n");
    for i in 0..depth {
        let _ = write!(
            s,
            "Content-Type: message/rfc822\r\n\r\nFrom: fwd{i}@city.example\r\n"
        );
    }
    s.push_str("Content-Type: text/plain\r\n\r\nhello\r\n");
    s.into_bytes()
}

const TEXT_LEAF: &str = "Content-Type: text/plain\r\n\r\nhello\r\n";

const REPORT_LEAF: &str =
    "Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n\r\n\
     --r\r\nContent-Type: text/plain\r\n\r\nfailed\r\n\
     --r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n\
     Final-Recipient: rfc822; x@city.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--r--\r\n";

/// MIME nested 1,000 deep (and enclosed messages 20,000 deep) on a 2 MiB
/// stack. mail-parser walks multiparts and enclosed messages with a heap
/// stack, but its `Message` type nests each enclosed message inside its
/// parent and the derived drop recursed once per level: about 7,000 levels
/// overflowed a 2 MiB stack in a debug build. The engine now takes the
/// tree apart without recursion.
#[test]
fn mime_nested_deep() {
    let outcome = run_bounded("multipart 1000", nested_multipart(1_000, TEXT_LEAF));
    assert_relay(&outcome, "domain town.example");

    let outcome = run_bounded("rfc822 1000", nested_rfc822(1_000, TEXT_LEAF));
    assert_relay(&outcome, "domain town.example");

    let outcome = run_bounded("bare rfc822 20000", nested_bare_rfc822(20_000));
    assert_relay(&outcome, "domain town.example");

    let outcome = run_bounded("rfc822 10000", nested_rfc822(10_000, TEXT_LEAF));
    assert_relay(&outcome, "domain town.example");

    // A report deep in the message's own tree still counts; one inside an
    // enclosed message is someone else's report.
    let outcome = run_bounded(
        "report in multipart 1000",
        nested_multipart(1_000, REPORT_LEAF),
    );
    assert_eq!(outcome.decision.action, Action::Skip);
    assert!(outcome.decision.reason.contains("delivery-status"));
    let outcome = run_bounded("report in rfc822 1000", nested_rfc822(1_000, REPORT_LEAF));
    assert_relay(&outcome, "domain town.example");
}

/// Nesting that never closes, and a digest whose parts are all messages.
#[test]
fn mime_nested_unclosed_and_digest() {
    let mut raw = nested_rfc822(5_000, TEXT_LEAF);
    raw.truncate(raw.len() / 2);
    run_bounded("unclosed rfc822", raw);

    let mut raw = nested_multipart(5_000, TEXT_LEAF);
    raw.truncate(raw.len() * 2 / 3);
    run_bounded("unclosed multipart", raw);

    let mut s = String::from("From: clerk@town.example\r\n");
    for i in 0..5_000 {
        let _ = write!(
            s,
            "Content-Type: multipart/digest; boundary=d{i}\r\n\r\n--d{i}\r\n"
        );
    }
    run_bounded("digest", s.into_bytes());
}

/// Deeply nested comments, groups, quotes and encoded-words in headers.
#[test]
fn deeply_nested_header_syntax() {
    let values = [
        format!("{}clerk@town.example", "(".repeat(100_000)),
        format!(
            "clerk@town.example {}{}",
            "(".repeat(50_000),
            ")".repeat(50_000)
        ),
        format!(
            "{}clerk@town.example{}",
            "<".repeat(100_000),
            ">".repeat(100_000)
        ),
        format!("{} clerk@town.example", "g:".repeat(100_000)),
        format!("{}clerk@town.example", "\"\\".repeat(100_000)),
        format!("{} <clerk@town.example>", "=?utf-8?q?a?= ".repeat(50_000)),
        format!("{} <clerk@town.example>", "=?utf-8?b?".repeat(50_000)),
    ];
    for (n, value) in values.into_iter().enumerate() {
        for header in [
            "From",
            "Sender",
            "Subject",
            "Content-Type",
            "Auto-Submitted",
            "Return-Path",
        ] {
            let raw = format!("{header}: {value}\r\nFrom: x@city.example\r\n\r\nx\r\n");
            run_bounded(&format!("nested syntax {n} in {header}"), raw.into_bytes());
        }
    }
}

// ---------------------------------------------------------------------------
// Shapes

/// A message with a body part, an attachment and a report: cut at every
/// byte, each prefix still gets a decision.
#[test]
fn truncated_at_every_byte() {
    let raw = b"Return-Path: <clerk@town.example>\r\n\
        From: \"Clerk, Town\" <clerk@town.example>\r\n\
        To: support@vendor.example\r\n\
        Subject: =?utf-8?q?Imprimante_=C3=A9tage_2?=\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed;\r\n\tboundary=\"=_outer\"\r\n\
        \r\n\
        --=_outer\r\n\
        Content-Type: multipart/alternative; boundary=\"=_alt\"\r\n\
        \r\n\
        --=_alt\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\
        \r\n\
        L'imprimante =C3=A9tage 2 est bloqu=C3=A9e.\r\n\
        --=_alt\r\n\
        Content-Type: text/html; charset=utf-8\r\n\
        \r\n\
        <p>L'imprimante</p>\r\n\
        --=_alt--\r\n\
        --=_outer\r\n\
        Content-Type: application/octet-stream; name=\"log.bin\"\r\n\
        Content-Transfer-Encoding: base64\r\n\
        \r\n\
        SGVsbG8sIHRoaXMgaXMgYSBsb2cgZmlsZSB0aGF0IGlzIGN1dCBzaG9ydC4=\r\n\
        --=_outer\r\n\
        Content-Type: message/rfc822\r\n\
        \r\n\
        From: printer@town.example\r\n\
        Subject: jam\r\n\
        \r\n\
        Tray 2 jammed.\r\n\
        --=_outer--\r\n";
    let config = Arc::clone(with_default());
    let owned = raw.to_vec();
    let count = bounded("every prefix", LIMIT, move || {
        for cut in 0..=owned.len() {
            run(&config, &owned[..cut]);
        }
        owned.len() + 1
    });
    eprintln!("{count} prefixes decided");

    // Named cuts, past the headers: the sender is known, the route holds.
    let text = String::from_utf8(raw.to_vec()).unwrap();
    for marker in [
        "--=_al",
        "SGVsbG8sIHRoaXMg",
        "L'imprimante =C3=A",
        "--=_outer--",
    ] {
        let cut = text.find(marker).unwrap() + marker.len() / 2;
        let outcome = run_bounded("named cut", text.as_bytes()[..cut].to_vec());
        assert_relay(&outcome, "domain town.example");
    }
    // Cut inside the From address: a different (unknown) sender.
    let cut = text.find("town.example>").unwrap() + 4;
    let outcome = run_bounded("cut in From", text.as_bytes()[..cut].to_vec());
    assert!(!outcome.decision.reason.is_empty());
}

/// Empty input, headers only, no colon, no headers at all, odd line endings.
#[test]
fn degenerate_shapes() {
    let outcome = run_bounded("empty", Vec::new());
    assert_eq!(outcome.decision.action, Action::Hold);
    assert!(outcome.keep.len() < 200, "emit invented a message");

    let outcome = run_bounded(
        "headers only",
        b"From: clerk@town.example\r\nSubject: x\r\n".to_vec(),
    );
    assert_relay(&outcome, "domain town.example");
    // mail-parser reads no value from a header cut before its line ends:
    // such a message is held, which loses nothing.
    run_bounded("headers only, no end", b"From: clerk@town.example".to_vec());

    let outcome = run_bounded(
        "bare LF",
        b"From: clerk@town.example\nSubject: x\n\nbody\n.\nmore\n".to_vec(),
    );
    assert_relay(&outcome, "domain town.example");
    let outcome = run_bounded(
        "bare CR",
        b"From: clerk@town.example\rSubject: x\r\rbody\r.\r".to_vec(),
    );
    assert!(!outcome.decision.reason.is_empty());

    for raw in [
        &b"From clerk@town.example\r\nSubject: no colon above\r\n\r\nbody\r\n"[..],
        b"This is not a header\r\nFrom: clerk@town.example\r\n\r\nbody\r\n",
        b"From: clerk@town.example\r\nNo colon here\r\nSubject: x\r\n\r\nbody\r\n",
        b": empty name\r\nFrom: clerk@town.example\r\n\r\nx",
        b"\r\n\r\nFrom: clerk@town.example\r\n\r\nx",
        b"\r\n",
        b"\n",
        b"\r",
        b" \t \r\n",
        b"From:\r\n\r\n",
        b"From: <>\r\nSender: <@>\r\n\r\n",
        b"just a body with no headers at all",
    ] {
        run_bounded("degenerate", raw.to_vec());
    }
}

/// A body of one 20 MB line, and a header folded 200,000 times.
#[test]
fn huge_single_lines_and_folds() {
    let mut raw = clerk_message("", "");
    raw.extend(std::iter::repeat_n(b'a', 20 << 20));
    let input_len = raw.len();
    let config = Arc::clone(with_default());
    let (d, len) = bounded("20 MB line", LIMIT, move || {
        let o = run(&config, &raw);
        (o.decision, o.keep.len())
    });
    assert_eq!(d.action, Action::Relay);
    assert!(len < input_len + 1024);

    let folded = format!("Subject: a{}\r\n", "\r\n b".repeat(200_000));
    let outcome = run_bounded("200k folds", clerk_message(&folded, "x\r\n"));
    assert_relay(&outcome, "domain town.example");
}

// ---------------------------------------------------------------------------
// Real-world breakage

/// One `tests/breakage` case: the message and what it must decide.
struct Case {
    eml: PathBuf,
    action: String,
    reason: String,
}

fn breakage_cases() -> Vec<Case> {
    let dir = repo().join("tests/breakage");
    let mut cases: Vec<Case> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|eml| {
            let expect = eml.with_extension("expect");
            let text = std::fs::read_to_string(&expect)
                .unwrap_or_else(|e| panic!("{}: {e}", expect.display()));
            let line = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .unwrap_or_else(|| panic!("{}: no expectation", expect.display()));
            let (action, reason) = line.split_once(' ').unwrap_or((line, ""));
            Case {
                eml,
                action: action.to_string(),
                reason: reason.trim().to_string(),
            }
        })
        .collect();
    cases.sort_by(|a, b| a.eml.cmp(&b.eml));
    cases
}

/// Every breakage case gets its expected action and a reason naming why.
#[test]
fn breakage_cases_decide_as_expected() {
    let cases = breakage_cases();
    assert!(
        cases.len() >= 20,
        "only {} breakage cases found",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let raw = std::fs::read(&case.eml).unwrap();
        let name = case.eml.file_name().unwrap().to_string_lossy().into_owned();
        let config = Arc::clone(golden());
        let outcome = bounded(&name, LIMIT, move || run(&config, &raw));
        let d = &outcome.decision;
        if d.action.as_str() != case.action || !d.reason.contains(&case.reason) {
            failures.push(format!(
                "{name}: expected {} {:?}, got {} {:?}",
                case.action, case.reason, d.action, d.reason
            ));
        }
    }
    eprintln!("{} breakage cases ran", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every input the fuzzer ever crashed on still gets a decision.
#[test]
fn fuzz_regressions_replay() {
    let dir = repo().join("tests/fuzz-regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("README")
        })
        .collect();
    files.sort();
    for file in &files {
        let raw = std::fs::read(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        run_bounded(&name, raw);
    }
    eprintln!("{} fuzz regressions replayed", files.len());
}

/// Mail that does not open with a header field is all body to the relay,
/// while a lenient parser still finds a From further down: holding it keeps
/// the route and the relayed headers from disagreeing.
#[test]
fn a_first_line_that_is_no_header_is_held_not_routed_by_hidden_headers() {
    let cases: [&[u8]; 3] = [
        b"From attacker@evil.example Mon Nov 16 10:00:00 2026\r\n\
          From: clerk@sunnyvale.example\r\nSubject: hi\r\n\r\nbody\r\n",
        b" From: clerk@sunnyvale.example\r\nSubject: hi\r\n\r\nbody\r\n",
        b"just text\nFrom: clerk@sunnyvale.example\n\nbody\n",
    ];
    for raw in cases {
        let outcome = run_bounded("first line not a header", raw.to_vec());
        assert_eq!(outcome.decision.action, Action::Hold, "{raw:?}");
        assert!(
            outcome
                .decision
                .reason
                .contains("first line is not a header"),
            "{}",
            outcome.decision.reason
        );
    }
}
