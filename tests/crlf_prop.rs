//! Property: whatever bytes come in, `relay_bytes` never panics and every
//! line it writes ends in CRLF (no bare LF, no bare CR), in both From modes.
//! This is what keeps a message from smuggling a second one into SMTP DATA.

use podrouter::config::FromMode;
use podrouter::emit::{relay_bytes, EmitOptions};
use podrouter::engine::{Action, Decision, Rule};
use proptest::prelude::*;

/// Pieces that tend to trip line handling, mixed with arbitrary bytes.
fn tricky_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        Just(b"\n.\n".to_vec()),
        Just(b"\r\n.\r".to_vec()),
        Just(b"\r.\r".to_vec()),
        Just(b"\r\n\r\n".to_vec()),
        Just(b"\n\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"From: Jean <jean@sunnyvale.example>\r\n".to_vec()),
        Just(b"From:".to_vec()),
        Just(b"Reply-To: \n".to_vec()),
        Just(b"X-Podrouter-Loop: support@vendor.example\n".to_vec()),
        Just(b"DKIM-Signature: v=1;\r\n\tb=x\r\n".to_vec()),
        Just(b" continued\r\n".to_vec()),
        Just(b"\xc3\xa9\xff\x00".to_vec()),
    ]
}

/// A raw message built from tricky pieces.
fn raw_message() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(tricky_piece(), 0..30).prop_map(|pieces| pieces.concat())
}

/// A decision with arbitrary (possibly hostile) names and keys.
fn decision() -> impl Strategy<Value = Decision> {
    (
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        proptest::option::of("[a-z]{1,8}"),
    )
        .prop_map(|(sender_name, sender, client, pod)| Decision {
            action: Action::Relay,
            sender,
            sender_name,
            client,
            pod,
            rule: Some(Rule::Domain("sunnyvale.example".into())),
            reason: "domain sunnyvale.example".into(),
            recipients: vec!["ana@vendor.example".into()],
            message_id: None,
            subject: None,
            personal: podrouter::engine::Personal::default(),
        })
}

/// Fails on the first LF without a CR before it, or CR without an LF after it.
fn assert_crlf_only(out: &[u8]) -> Result<(), TestCaseError> {
    for (i, &b) in out.iter().enumerate() {
        if b == b'\n' {
            prop_assert!(i > 0 && out[i - 1] == b'\r', "bare LF at {}", i);
        }
        if b == b'\r' {
            prop_assert!(out.get(i + 1) == Some(&b'\n'), "bare CR at {}", i);
        }
    }
    prop_assert!(out.ends_with(b"\r\n"), "output does not end in CRLF");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn output_lines_always_end_in_crlf(
        raw in raw_message(),
        decision in decision(),
        pod_name in any::<String>(),
        keep in any::<bool>(),
    ) {
        let opts = EmitOptions {
            from_mode: if keep { FromMode::Keep } else { FromMode::Rewrite },
            relay_from: "support@vendor.example",
            pod_name: &pod_name,
        };
        let out = relay_bytes(&raw, &decision, &opts);
        assert_crlf_only(&out)?;
    }

    #[test]
    fn arbitrary_bytes_in_both_modes(raw in prop::collection::vec(any::<u8>(), 0..4096)) {
        let decision = Decision {
            action: Action::Relay,
            sender: Some("jean@sunnyvale.example".into()),
            sender_name: Some("Jean Tremblay".into()),
            client: Some("sunnyvale".into()),
            pod: Some("alberta".into()),
            rule: Some(Rule::Default),
            reason: "default_pod".into(),
            recipients: vec![],
            message_id: None,
            subject: None,
            personal: podrouter::engine::Personal::default(),
        };
        for from_mode in [FromMode::Keep, FromMode::Rewrite] {
            let opts = EmitOptions {
                from_mode,
                relay_from: "support@vendor.example",
                pod_name: "POD 1: Alberta towns",
            };
            assert_crlf_only(&relay_bytes(&raw, &decision, &opts))?;
        }
    }
}
