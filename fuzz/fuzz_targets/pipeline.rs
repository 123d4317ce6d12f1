//! Fuzz target over the whole offline pipeline: parse, classify, find the
//! sender, route, then build the relayed bytes in both From modes.
//!
//! Whatever the input, nothing may panic, and the relayed bytes may hold no
//! bare CR or LF (a bare one could end SMTP DATA early or smuggle a header).
//!
//! One exception, by design: mail-parser checks its own state with
//! `debug_assert!`, which this build (debug assertions on) turns into
//! panics on some malformed MIME. `engine::decide` catches a panic while
//! reading a message and holds it, so such a panic is let through to that
//! guard rather than reported. A panic anywhere else, or one from
//! mail-parser that escapes `decide`, still aborts and is a finding.
#![no_main]

use std::collections::BTreeSet;
use std::panic;
use std::path::Path;
use std::sync::{Mutex, Once, OnceLock};

use libfuzzer_sys::fuzz_target;
use podrouter::config::{self, Config, FromMode};
use podrouter::emit::{self, EmitOptions};
use podrouter::engine;

/// The golden table plus a default pod, so unknown senders reach emit too.
const TABLE: &str = include_str!("../../tests/golden/routing.toml");

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let text = TABLE.replace("[routing]\n", "[routing]\ndefault_pod = \"east\"\n");
        config::from_str(&text, Path::new("tests/golden/routing.toml"))
            .expect("the golden table is valid")
    })
}

/// Wraps libFuzzer's aborting panic hook so that mail-parser's own
/// assertion panics unwind to the guard in `engine::decide`.
fn let_parser_panics_unwind() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let in_parser = info
                .location()
                .is_some_and(|l| l.file().contains("/mail-parser-"));
            if !in_parser {
                abort(info);
            } else if let Some(at) = info.location() {
                note_parser_panic(at.to_string());
            }
        }));
    });
}

/// Prints each mail-parser panic location once, so a run shows which fired.
fn note_parser_panic(at: String) {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.insert(at.clone()) {
        eprintln!("pipeline: mail-parser panicked at {at}; decide held the message");
    }
}

/// True when a CR is not followed by LF, or an LF not preceded by CR.
fn has_bare_line_ending(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| {
        (b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
            || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
    })
}

fuzz_target!(|raw: &[u8]| {
    let_parser_panics_unwind();
    let config = config();
    let decision = engine::decide(config, raw);
    assert!(!decision.reason.is_empty(), "a decision without a reason");
    let relay_from = config.relay.as_ref().map_or("", |r| r.from.as_str());
    for from_mode in [FromMode::Keep, FromMode::Rewrite] {
        let opts = EmitOptions {
            from_mode,
            relay_from,
            pod_name: "Fuzz pod",
        };
        let bytes = emit::relay_bytes(raw, &decision, &opts);
        assert!(
            !has_bare_line_ending(&bytes),
            "bare CR or LF in relayed bytes"
        );
    }
});
