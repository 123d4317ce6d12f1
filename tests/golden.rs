//! Golden cases: each `tests/golden/NAME.eml` is decided against
//! `tests/golden/routing.toml`, and the decision must equal
//! `NAME.expected.json`. For a relay, the exact bytes that would be sent
//! must equal `NAME.relayed`.
//!
//! After a deliberate change, regenerate the expectations with
//! `PODROUTER_BLESS=1 cargo test --test golden` and review the diff.

use std::path::{Path, PathBuf};

use podrouter::config::{self, Config};
use podrouter::emit::{self, EmitOptions};
use podrouter::engine::{self, Action, Decision};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn expected_json(d: &Decision) -> serde_json::Value {
    serde_json::json!({
        "sender": d.sender,
        "client": d.client,
        "pod": d.pod,
        "action": d.action,
        "recipients": d.recipients,
        "reason": d.reason,
    })
}

fn relayed(config: &Config, raw: &[u8], d: &Decision) -> Vec<u8> {
    let relay = config.relay.as_ref().unwrap();
    let pod = config.pod(d.pod.as_deref().unwrap()).unwrap();
    let opts = EmitOptions {
        from_mode: relay.from_mode,
        relay_from: &relay.from,
        pod_name: &pod.name,
    };
    emit::relay_bytes(raw, d, &opts)
}

/// Compares `actual` with the file at `path`, or writes it when blessing.
fn compare(path: &Path, actual: &[u8], failures: &mut Vec<String>) {
    if std::env::var_os("PODROUTER_BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    match std::fs::read(path) {
        Ok(expected) if expected == actual => {}
        Ok(_) => failures.push(format!(
            "{} differs; got:\n{}",
            path.display(),
            String::from_utf8_lossy(actual)
        )),
        Err(e) => failures.push(format!("{}: {e}", path.display())),
    }
}

#[test]
fn golden_cases() {
    let dir = golden_dir();
    let config = config::load(&dir.join("routing.toml")).expect("golden routing.toml");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "only {} golden cases found", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        let raw = std::fs::read(case).unwrap();
        let decision = engine::decide(&config, &raw);
        let mut json = serde_json::to_string_pretty(&expected_json(&decision)).unwrap();
        json.push('\n');
        compare(
            &case.with_extension("expected.json"),
            json.as_bytes(),
            &mut failures,
        );
        if decision.action == Action::Relay {
            let bytes = relayed(&config, &raw, &decision);
            compare(&case.with_extension("relayed"), &bytes, &mut failures);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
