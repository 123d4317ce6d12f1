//! Fuzz target over the whole offline pipeline: parse, classify, find the
//! sender, route, then build the relayed bytes in both From modes.
//!
//! Whatever the input, nothing may panic, and the relayed bytes may hold no
//! bare CR or LF (a bare one could end SMTP DATA early or smuggle a header).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

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

/// True when a CR is not followed by LF, or an LF not preceded by CR.
fn has_bare_line_ending(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| {
        (b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
            || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
    })
}

fuzz_target!(|raw: &[u8]| {
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
        assert!(!has_bare_line_ending(&bytes), "bare CR or LF in relayed bytes");
    }
});
