//! The README's Microsoft 365 and Google examples are tables `check`
//! accepts, once their secret files exist.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use podrouter::config::{self, Auth};

/// The README's ```toml blocks that name `provider = "<name>"`.
fn example(provider: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let needle = format!("provider = \"{provider}\"");
    readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains(&needle))
        .unwrap_or_else(|| panic!("README has no example with {needle}"))
        .to_owned()
}

fn check(provider: &str) -> config::Config {
    let dir = tempfile::tempdir().unwrap();
    check_in(provider, dir.path())
}

/// Writes the example's secret files into `dir` and validates it.
fn check_in(provider: &str, dir: &Path) -> config::Config {
    let text = example(provider)
        .replace("/etc/podrouter/", &format!("{}/", dir.display()))
        .replace("/var/lib/podrouter/", &format!("{}/", dir.display()));
    for name in ["oauth2.refresh", "oauth2.client-secret"] {
        let path = dir.join(name);
        std::fs::write(&path, "x\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(dir.join("routing.toml"), &text).unwrap();
    config::from_str(&text, &dir.join("routing.toml"))
        .unwrap_or_else(|e| panic!("the README's {provider} example: {e}"))
}

#[test]
fn readme_microsoft_example_is_valid() {
    let c = check("microsoft");
    for server in [&c.inbox.unwrap().server, &c.relay.unwrap().server] {
        let Auth::OAuth2(o) = &server.auth else {
            panic!("signs in with oauth2")
        };
        assert!(o
            .token_url
            .starts_with("https://login.microsoftonline.com/vendor.example/"));
    }
}

#[test]
fn readme_google_example_is_valid() {
    let c = check("google");
    let Auth::OAuth2(o) = &c.relay.unwrap().server.auth else {
        panic!("signs in with oauth2")
    };
    assert_eq!(o.token_url, "https://oauth2.googleapis.com/token");
    assert!(o.client_secret.is_some());
}

#[test]
fn check_prints_each_sides_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    check_in("microsoft", dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podrouter"))
        .arg("check")
        .arg("-c")
        .arg(dir.path().join("routing.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.matches("oauth2 microsoft").count(), 2, "{stdout}");
}
