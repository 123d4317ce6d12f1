//! Voicemail notifications decided offline against the golden table: the
//! audio attachment leaves byte for byte, the caller decides rather than
//! the PBX's sender, and unknown callers go to the default pod when there
//! is one.

use std::path::{Path, PathBuf};

use mail_parser::{MessageParser, MimeHeaders};
use podrouter::config::{self, Config};
use podrouter::emit::{self, EmitOptions};
use podrouter::engine::{self, Action, Rule};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// The golden table, with `extra` lines added to `[routing]`.
fn table(extra: &str) -> Config {
    let text = std::fs::read_to_string(golden("routing.toml")).unwrap();
    let text = text.replace("[routing]\n", &format!("[routing]\n{extra}"));
    config::from_str(&text, &golden("routing.toml")).expect("valid table")
}

fn emitted(config: &Config, raw: &[u8], d: &engine::Decision) -> Vec<u8> {
    let relay = config.relay.as_ref().unwrap();
    let pod = config.pod(d.pod.as_deref().unwrap()).unwrap();
    let opts = EmitOptions {
        from_mode: relay.from_mode,
        relay_from: &relay.from,
        pod_name: &pod.name,
    };
    emit::relay_bytes(raw, d, &opts)
}

/// (file name, decoded contents, raw encoded body) of every attachment.
fn attachments(raw: &[u8]) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let msg = MessageParser::default().parse(raw).expect("parses");
    msg.attachments()
        .map(|a| {
            let encoded = raw[a.offset_body as usize..a.offset_end as usize].to_vec();
            let name = a.attachment_name().unwrap_or_default().to_string();
            (name, a.contents().to_vec(), encoded)
        })
        .collect()
}

#[test]
fn the_audio_attachment_is_relayed_byte_for_byte() {
    let config = table("");
    let cases = [
        ("voicemail-asterisk.eml", "msg0000.wav"),
        (
            "voicemail-freeswitch.eml",
            "msg_7f0c6a9e-1f0b-4c63-9d3b-7c1e5d9f2a10.wav",
        ),
        (
            "voicemail-3cx.eml",
            "vmail_4035550100_200_20261119091500.wav",
        ),
    ];
    for (file, audio) in cases {
        let raw = std::fs::read(golden(file)).unwrap();
        let d = engine::decide(&config, &raw);
        assert_eq!(d.action, Action::Relay, "{file}: {}", d.reason);
        let out = emitted(&config, &raw, &d);
        let (before, after) = (attachments(&raw), attachments(&out));
        assert_eq!(before.len(), 1, "{file}");
        assert_eq!(before, after, "{file}: the attachment changed");
        let (name, wav, _) = &after[0];
        assert_eq!(name, audio);
        assert!(wav.starts_with(b"RIFF") && wav.len() > 400, "{file}");
    }
}

#[test]
fn the_caller_decides_not_the_pbxs_domain() {
    // asterisk@pbx.town.example sits in client town's domain (pod east);
    // the caller +14035550100 is client city's (pod west).
    let config = table("");
    let raw = std::fs::read(golden("voicemail-asterisk.eml")).unwrap();
    let d = engine::decide(&config, &raw);
    assert_eq!(d.client.as_deref(), Some("city"));
    assert_eq!(d.rule, Some(Rule::Phone("+14035550100".into())));

    // An unknown caller from the same PBX is held, not routed to town.
    let raw = std::fs::read(golden("voicemail-unknown-number.eml")).unwrap();
    let d = engine::decide(&config, &raw);
    assert_eq!(d.action, Action::Hold, "{}", d.reason);
    assert_eq!(d.client, None);
}

#[test]
fn unknown_and_withheld_callers_go_to_the_default_pod() {
    let config = table("default_pod = \"east\"\n");
    for (file, why) in [
        (
            "voicemail-unknown-number.eml",
            "voicemail from +13065550177",
        ),
        ("voicemail-anonymous.eml", "without a caller number"),
    ] {
        let raw = std::fs::read(golden(file)).unwrap();
        let d = engine::decide(&config, &raw);
        assert_eq!(d.action, Action::Relay, "{file}: {}", d.reason);
        assert_eq!(d.pod.as_deref(), Some("east"), "{file}");
        assert_eq!(d.client, None, "{file}");
        assert_eq!(d.rule, Some(Rule::Default), "{file}");
        assert!(
            d.reason.starts_with("default_pod: "),
            "{file}: {}",
            d.reason
        );
        assert!(d.reason.contains(why), "{file}: {}", d.reason);
    }
}

#[test]
fn auto_submitted_voicemail_is_relayed_but_the_same_headers_skip_other_mail() {
    let config = table("");
    let raw = std::fs::read(golden("voicemail-freepbx.eml")).unwrap();
    let d = engine::decide(&config, &raw);
    assert_eq!(d.action, Action::Relay, "{}", d.reason);

    // The same message without its X-Asterisk headers is an auto-reply.
    let text = String::from_utf8(raw).unwrap();
    let plain: String = text
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("X-Asterisk-"))
        .collect();
    let d = engine::decide(&config, plain.as_bytes());
    assert_eq!(d.action, Action::Skip, "{}", d.reason);
    assert!(d.reason.starts_with("auto-reply"), "{}", d.reason);
}

#[test]
fn a_looped_voicemail_is_still_skipped() {
    let config = table("");
    let raw = std::fs::read(golden("voicemail-freepbx.eml")).unwrap();
    let mut looped = b"X-Podrouter-Loop: support@vendor.example\r\n".to_vec();
    looped.extend_from_slice(&raw);
    let d = engine::decide(&config, &looped);
    assert_eq!(d.action, Action::Skip, "{}", d.reason);
    assert!(d.reason.starts_with("loop"), "{}", d.reason);
}

#[test]
fn route_json_shows_the_phone_rule_and_caller() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podrouter"))
        .args(["route", "--json", "-c"])
        .arg(golden("routing.toml"))
        .arg(golden("voicemail-3cx.eml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rule"], "phone");
    assert_eq!(v["reason"], "phone +14035550100");
    assert_eq!(v["caller"], "+14035550100");
    assert_eq!(v["pod"], "west");
}

mod never_panics {
    use super::*;
    use podrouter::calls;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Any caller string gets an answer, not a panic.
        #[test]
        fn caller_lookups(caller in "\\PC{0,120}") {
            let config = table("default_pod = \"east\"\n");
            let l = calls::lookup(&config, &caller);
            prop_assert!(l.answer.pod.is_some() || l.answer.error.is_some());
        }

        /// Phone-ish callers: digits, pluses, spaces and brackets.
        #[test]
        fn phone_shaped_callers(caller in "[0-9+ ()<>\"-]{0,40}") {
            let config = table("");
            let _ = calls::lookup(&config, &caller);
        }

        /// A voicemail with any caller header, subject and body is decided
        /// without the panic guard firing.
        #[test]
        fn voicemail_decisions(
            header in "[ -~]{0,60}",
            subject in "\\PC{0,80}",
            body in "[ -~\\t\\r\\n]{0,400}",
        ) {
            let config = table("");
            let raw = format!(
                "From: PBX <voicemail@pbx.example>\r\nX-Asterisk-CallerID: {header}\r\n\
                 Subject: {subject}\r\n\r\n{body}"
            );
            let d = engine::decide(&config, raw.as_bytes());
            prop_assert!(!d.reason.contains("panicked"), "{}", d.reason);
        }
    }
}

/// A technician's mail that happens to carry a PBX header is not
/// voicemail: it goes to the rest of the pod, never back to its author.
#[test]
fn a_pod_members_mail_with_asterisk_headers_is_not_voicemail() {
    let config = table("");
    let raw = b"From: ana@vendor.example\r\nTo: support@vendor.example\r\n\
        X-Asterisk-CallerID: 4035550100\r\nSubject: note\r\nMessage-ID: <m1@vendor.example>\r\n\
        \r\nhello\r\n";
    let d = engine::decide(&config, raw);
    assert_ne!(
        d.rule.as_ref().map(|r| r.kind()),
        Some("phone"),
        "{}",
        d.reason
    );
    assert!(
        !d.recipients.iter().any(|r| r == "ana@vendor.example"),
        "{:?}",
        d.recipients
    );
}
