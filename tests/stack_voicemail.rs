//! A voicemail notification through the real mail stack: appended to the
//! support inbox, relayed by `podrouter run` to the pod of the client whose
//! number called, its audio attachment intact. Skipped when the stack is
//! not running (see `tests/common/mod.rs`).

mod common;

use std::time::{Duration, Instant};

use common::{http_get, wait_until, Daemon, Scratch, Stack, Table};
use mail_parser::{MessageParser, MimeHeaders};

const ROLES: &[&str] = &["support", "ana", "ben", "cara"];

/// Deterministic audio-like bytes: a WAV header and a sawtooth.
fn audio(len: usize) -> Vec<u8> {
    let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
    wav.extend((0..len).map(|i| (i * 7 % 251) as u8));
    wav
}

/// Base64 in lines of 72 characters, CRLF.
fn base64_lines(data: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    let lines: Vec<&str> = out
        .as_bytes()
        .chunks(72)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    lines.join("\r\n")
}

/// An Asterisk voicemail notification from `pbx` for caller 4035550100.
fn notification(pbx: &str, id: &str, wav: &[u8]) -> Vec<u8> {
    format!(
        "From: \"Asterisk PBX\" <{pbx}>\r\n\
         To: support@vendor.example\r\n\
         Subject: [PBX]: New message 1 in mailbox 200\r\n\
         Date: Thu, 19 Nov 2026 06:52:14 -0700\r\n\
         Message-ID: <{id}>\r\n\
         MIME-Version: 1.0\r\n\
         Auto-Submitted: auto-generated\r\n\
         X-Asterisk-CallerID: 4035550100\r\n\
         X-Asterisk-CallerIDName: CITY HALL\r\n\
         Content-Type: multipart/mixed; boundary=\"----voicemail_1\"\r\n\
         \r\n\
         ------voicemail_1\r\n\
         Content-Type: text/plain; charset=ISO-8859-1\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         You were just left a 0:41 long message in mailbox 200 from CITY HALL.\r\n\
         \r\n\
         ------voicemail_1\r\n\
         Content-Type: audio/x-wav; name=\"msg0000.wav\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"msg0000.wav\"\r\n\
         \r\n\
         {}\r\n\
         \r\n\
         ------voicemail_1--\r\n",
        base64_lines(wav)
    )
    .into_bytes()
}

#[test]
fn a_voicemail_reaches_the_callers_pod_with_its_audio() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    // The caller's client is served by pod west (cara); the PBX's own
    // address sits in acme's domain, whose pod is east (ana, ben).
    table.extra = "\n[clients.city]\nname = \"City Hall\"\npod = \"west\"\n\
                   phones = [\"+1 403 555 0100\"]\n"
        .into();
    let scratch = Scratch::new();
    // Asterisk passes the number on as the trunk sent it: national here.
    let text = table.render(&users, stack.password());
    scratch.write_config(&text.replace("[routing]\n", "[routing]\ndefault_region = \"CA\"\n"));

    let wav = audio(120_000);
    let pbx = format!("asterisk@pbx.{}", users.domain("acme"));
    let id = format!("vm1@{}", users.prefix);
    users.append("support", "INBOX", &[notification(&pbx, &id, &wav)]);

    let mut daemon = Daemon::start(&scratch);
    daemon.wait_ready();
    let needle = format!("<{id}>");
    let arrived = wait_until(Duration::from_secs(30), || {
        users.count_with("cara", "INBOX", &needle) == 1
    });
    assert!(
        arrived,
        "voicemail not delivered to cara:\n{}",
        daemon.log()
    );
    assert!(wait_until(Duration::from_secs(10), || users
        .count("support", "Routed")
        == 1));
    assert_eq!(users.count("ana", "INBOX"), 0);
    assert_eq!(users.count("ben", "INBOX"), 0);

    let delivered = users.maildir("cara", "INBOX").remove(0);
    let msg = MessageParser::default().parse(&delivered).expect("parses");
    let attachments: Vec<_> = msg.attachments().collect();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0].attachment_name(), Some("msg0000.wav"));
    assert!(
        attachments[0].contents() == wav.as_slice(),
        "the audio changed"
    );
    let text = String::from_utf8_lossy(&delivered);
    assert!(
        text.contains("X-Podrouter-Rule: phone +14035550100"),
        "{text:.600}"
    );

    let rule: String = scratch
        .journal()
        .query_row("SELECT rule FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rule, "phone +14035550100");
    assert!(daemon.stop().success());
}

#[test]
fn a_running_daemon_answers_caller_lookups() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let mut table = Table::new(&stack);
    table.extra = "\n[clients.city]\nname = \"City Hall\"\npod = \"west\"\n\
                   phones = [\"+1 403 555 0100\"]\n"
        .into();
    let text = table
        .render(&users, stack.password())
        .replace("[routing]\n", "[routing]\ndefault_region = \"CA\"\n")
        .replace(
            "[pods.west]\n",
            "[pods.west]\nphone = \"+1 403 555 0199\"\n",
        );
    let scratch = Scratch::new();
    scratch.write_config(&text);
    let mut daemon = Daemon::start(&scratch);
    let addr = daemon.http_addr();
    daemon.wait_ready();

    let (status, body) = http_get(&addr, "/v1/route?caller=%2B14035550100");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "client": "city",
            "pod": "west",
            "phone": "+14035550199",
            "rule": "phone",
            "caller": "+14035550100",
        })
    );
    // A bare + arrives as a space and is read as a +.
    let (status, body) = http_get(&addr, "/v1/route?caller=+14035550100");
    assert_eq!(status, 200, "{body}");
    // No default pod in this table: an unknown caller is 404, with JSON.
    let (status, body) = http_get(&addr, "/v1/route?caller=%2B13065550177");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"error\":\"not found"), "{body}");
    let (status, body) = http_get(&addr, "/v1/route?caller=not-a-number");
    assert_eq!(status, 400, "{body}");

    // How long a PBX waits for an answer, over a fresh connection each.
    let mut ms: Vec<f64> = (0..200)
        .map(|_| {
            let start = Instant::now();
            let (status, _) = http_get(&addr, "/v1/route?caller=%2B14035550100");
            assert_eq!(status, 200);
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "caller lookup over HTTP, 200 calls: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms[100], ms[198], ms[199]
    );
    assert!(ms[198] < 500.0, "p99 {} ms", ms[198]);
    assert!(daemon.stop().success());
}
