//! Every message of the public corpus in `../shared/corpus/` gets a
//! decision with a reason, and nothing panics. The corpus sits beside the
//! project, not in it; where it is missing this test says so and passes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use podrouter::config;
use podrouter::emit::{self, EmitOptions};
use podrouter::engine::{self, Action};

fn corpus_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            corpus_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "eml") {
            out.push(path);
        }
    }
}

#[test]
fn every_corpus_message_gets_a_decision() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if !root.is_dir() {
        eprintln!("skipped: no corpus at ../shared/corpus");
        return;
    }
    let mut files = Vec::new();
    corpus_files(&root, &mut files);
    files.sort();
    assert!(!files.is_empty(), "the corpus folder holds no .eml files");

    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/routing.toml");
    // With a default pod, unknown senders are relayed too, so the emit
    // stage sees the whole corpus rather than only what it would hold.
    let text = std::fs::read_to_string(&golden).unwrap();
    let text = text.replace("[routing]\n", "[routing]\ndefault_pod = \"east\"\n");
    let config = config::from_str(&text, &golden).unwrap();
    let relay = config.relay.as_ref().unwrap();
    let mut failures = Vec::new();
    let mut counts = [0usize; 3];
    for file in &files {
        let raw = std::fs::read(file).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let d = engine::decide(&config, &raw);
            let opts = EmitOptions {
                from_mode: relay.from_mode,
                relay_from: &relay.from,
                pod_name: "Corpus pod",
            };
            let bytes = emit::relay_bytes(&raw, &d, &opts);
            (d, bytes)
        }));
        match outcome {
            Err(_) => failures.push(format!("{}: panicked", file.display())),
            Ok((d, _)) if d.reason.is_empty() => {
                failures.push(format!("{}: {} without a reason", file.display(), d.action))
            }
            Ok((d, bytes)) => {
                counts[d.action as usize] += 1;
                if has_bare_line_ending(&bytes) {
                    failures.push(format!(
                        "{}: bare CR or LF in relayed bytes",
                        file.display()
                    ));
                }
            }
        }
    }
    eprintln!(
        "{} corpus messages: {} relay, {} skip, {} hold",
        files.len(),
        counts[Action::Relay as usize],
        counts[Action::Skip as usize],
        counts[Action::Hold as usize]
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn has_bare_line_ending(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| {
        (b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
            || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
    })
}
