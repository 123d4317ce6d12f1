//! `routing.toml` validation: the shipped table is good, and a broken one
//! reports every problem at its line and column.

use std::path::Path;
use std::process::Command;

use podrouter::config;

fn podrouter() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podrouter"));
    cmd.env_remove("PODROUTER_CONFIG");
    cmd
}

#[test]
fn shipped_table_is_valid() {
    let config = config::load(Path::new("routing.toml")).expect("routing.toml is valid");
    assert_eq!(config.pods.len(), 3);
    assert!(config.clients.len() >= 12);
    for pod in config.pods.values() {
        assert!((4..=5).contains(&pod.members.len()), "{} members", pod.key);
    }
}

#[test]
fn check_prints_a_summary() {
    let out = podrouter()
        .args(["check", "-c", "routing.toml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("alberta"), "{stdout}");
    assert!(stdout.contains("3 pods"), "{stdout}");
}

/// Every kind of problem in one file; each must be reported with its line.
const BROKEN: &str = r#"[inbox]
server = "imap.vendor.example"
tls = "none"
user = "support@vendor.example"
password_file = "/nonexistent/podrouter/imap.secret"
colour = "blue"

[relay]
server = "smtp.vendor.example"
from = "not an address"

[routing]
default_pod = "nowhere"

[pods.east]
name = "East"
members = []

[pods.west]
name = "West"
members = ["Ana <ana@vendor.example>", "<broken"]

[clients.one]
pod = "north"
domains = ["Town.example"]

[clients.two]
pod = "west"
domains = ["town.EXAMPLE"]
addresses = ["clerk@xn--mllerstadt-9db.example"]

[clients.three]
pod = "west"
addresses = ["Clerk@Müllerstadt.example"]

[clients.four]
pod = "west"
phones = [12]
"#;

#[test]
fn broken_table_reports_every_problem_with_its_line() {
    let err = config::from_str(BROKEN, Path::new("broken.toml")).unwrap_err();
    let text = err.to_string();
    let expect = [
        (3, "loopback"),
        (5, "password_file"),
        (6, "colour"),
        (10, "relay.from"),
        (13, "default_pod"),
        (17, "no members"),
        (21, "member"),
        (24, "north"),
        (29, "claimed by client \"one\""),
        (34, "claimed by client \"two\""),
        (38, "string"),
    ];
    for (line, needle) in expect {
        let hit = err
            .problems
            .iter()
            .any(|p| p.line == line && p.message.contains(needle));
        assert!(
            hit,
            "no problem at line {line} mentioning {needle:?} in:\n{text}"
        );
    }
    assert!(
        text.lines().all(|l| l.starts_with("broken.toml:")),
        "{text}"
    );
    assert_eq!(err.problems.len(), expect.len(), "{text}");
}

#[test]
fn duplicate_keys_and_wrong_types_are_located() {
    let text = "[pods.a]\nmembers = [\"a@v.example\"]\nmembers = [\"b@v.example\"]\n\
                [clients.c]\npod = 7\n";
    let err = config::from_str(text, Path::new("t.toml")).unwrap_err();
    let lines: Vec<usize> = err.problems.iter().map(|p| p.line).collect();
    assert!(lines.contains(&3), "{err}");
    assert!(lines.contains(&5), "{err}");
}

#[test]
fn world_readable_secret_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("imap.secret");
    std::fs::write(&secret, "hunter2\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "[inbox]\nserver = \"127.0.0.1\"\ntls = \"none\"\nuser = \"s\"\npassword_file = {:?}\n",
        secret.display().to_string()
    );
    let err = config::from_str(&text, Path::new("t.toml")).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
    assert!(!err.to_string().contains("hunter2"));

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = config::from_str(&text, Path::new("t.toml")).unwrap();
    let password = config.inbox.unwrap().server.password.unwrap();
    assert_eq!(password.expose(), "hunter2");
    assert!(!format!("{password:?}").contains("hunter2"));
}

#[test]
fn durations_beyond_a_year_are_refused_at_their_line() {
    // A window reaching back before 1970 once passed `check` and then
    // crashed the daemon on the first message.
    let text = "[routing]\nstorm_window = \"100y\"\n\
                [pods.a]\nmembers = [\"a@v.example\"]\nack_interval = \"500000000y\"\n";
    let err = config::from_str(text, Path::new("t.toml")).unwrap_err();
    let at: Vec<(usize, usize)> = err.problems.iter().map(|p| (p.line, p.column)).collect();
    assert!(at.contains(&(2, 16)), "{err}");
    assert!(at.contains(&(5, 16)), "{err}");
    assert!(err.to_string().contains("at most 366d"), "{err}");
}

#[test]
fn check_exits_1_on_a_broken_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, BROKEN).unwrap();
    let out = podrouter()
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.toml:17:"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let out = podrouter().args(["route"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = podrouter().args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn who_answers_for_address_domain_and_phone() {
    let run = |what: &str| {
        let out = podrouter()
            .args(["who", "-c", "routing.toml", what])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run("Clerk@IT.Sunnyvale.example");
    assert_eq!(code, Some(0));
    assert!(
        out.contains("sunnyvale") && out.contains("domain sunnyvale.example"),
        "{out}"
    );
    let (_, out) = run("+1 (403) 555-0100");
    assert!(out.contains("phone +14035550100"), "{out}");
    let (_, out) = run("xn--mllerstadt-9db.example");
    assert!(out.contains("mullerstadt"), "{out}");
    let (code, out) = run("someone@nowhere.example");
    assert_eq!(code, Some(1));
    assert!(out.contains("held"), "{out}");
}

/// The phone and voicemail settings, each problem at its line and column.
const BROKEN_PHONES: &str = r#"[routing]
default_region = "CA"

[voicemail]
senders = ["pbx@pbx.example", "not an address@", "fs.example"]
pattern = 'Caller: ([0-9+'
field = "header:X-Caller"
colour = "blue"

[pods.east]
members = ["ana@vendor.example"]
phone = "+1 123 555 0199"

[pods.west]
members = ["cara@vendor.example"]
phone = "call us"

[clients.one]
pod = "east"
phones = ["+1 403 555 0100", "5550100", "02079460000"]
"#;

#[test]
fn phone_and_voicemail_problems_are_located() {
    let err = config::from_str(BROKEN_PHONES, Path::new("phones.toml")).unwrap_err();
    let text = err.to_string();
    let expect = [
        (5, 31, "voicemail.senders"),
        (6, 11, "voicemail.pattern does not compile"),
        (8, 1, "unknown key `colour`"),
        (
            12,
            9,
            "pod \"east\": phone \"+1 123 555 0199\" is not a valid phone number",
        ),
        (
            16,
            9,
            "pod \"west\": phone \"call us\" is not a phone number",
        ),
        (20, 30, "\"5550100\" is not a valid phone number"),
        (20, 41, "\"02079460000\" is not a valid phone number"),
    ];
    for (line, column, needle) in expect {
        let hit = err
            .problems
            .iter()
            .any(|p| p.line == line && p.column == column && p.message.contains(needle));
        assert!(
            hit,
            "no problem at {line}:{column} mentioning {needle:?} in:\n{text}"
        );
    }
    assert_eq!(err.problems.len(), expect.len(), "{text}");
}

#[test]
fn a_pattern_needs_one_group_or_a_number_group() {
    let table = |pattern: &str, field: &str| {
        format!(
            "[voicemail]\nsenders = [\"pbx@pbx.example\"]\npattern = '{pattern}'\n{field}\n\
             [pods.east]\nmembers = [\"ana@vendor.example\"]\n"
        )
    };
    let err = config::from_str(&table("(a)(b)", ""), Path::new("t.toml")).unwrap_err();
    assert_eq!((err.problems[0].line, err.problems[0].column), (3, 11));
    assert!(
        err.to_string().contains("exactly one capture group"),
        "{err}"
    );

    let ok = config::from_str(
        &table("(?:from) (?P<number>[0-9]+) (x)", "field = \"body\""),
        Path::new("t.toml"),
    );
    assert!(ok.is_ok(), "{:?}", ok.err());

    let err = config::from_str(
        &table("([0-9]+)", "field = \"headers\""),
        Path::new("t.toml"),
    )
    .unwrap_err();
    assert_eq!((err.problems[0].line, err.problems[0].column), (4, 9));
    assert!(err.to_string().contains("header:X-Name"), "{err}");
}

#[test]
fn who_shows_a_phone_route() {
    let out = podrouter()
        .args(["who", "-c", "routing.toml", "4035550100"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("phone +14035550100"), "{stdout}");
    assert!(stdout.contains("alberta"), "{stdout}");
}

#[test]
fn http_defaults_to_loopback_9187_and_checks_its_keys() {
    let config = config::load(Path::new("routing.toml")).unwrap();
    assert!(config.http.enabled);
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:9187");

    let text = "[http]\nenabled = false\nlisten = \"127.0.0.1:0\"\n";
    let config = config::from_str(text, Path::new("t.toml")).unwrap();
    assert!(!config.http.enabled);
    assert_eq!(config.http.listen.port(), 0, "port 0 is allowed");

    let text = "[pods.a]\nmembers = [\"a@v.example\"]\n\n[http]\nport = 80\n\
                listen = \"localhost:http\"\n";
    let err = config::from_str(text, Path::new("t.toml")).unwrap_err();
    let at = |line: usize, needle: &str| {
        err.problems
            .iter()
            .any(|p| p.line == line && p.message.contains(needle))
    };
    assert!(at(5, "unknown key `port`"), "{err}");
    assert!(at(5, "`enabled`, `listen`"), "{err}");
    assert!(
        at(6, "http.listen \"localhost:http\" is not an address"),
        "{err}"
    );

    let text = "[http]\nenabled = \"yes\"\n";
    let err = config::from_str(text, Path::new("t.toml")).unwrap_err();
    assert_eq!(err.problems[0].line, 2, "{err}");
    assert!(err.problems[0].message.contains("boolean"), "{err}");
}

#[test]
fn check_warns_when_http_listens_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    let table = std::fs::read_to_string("routing.toml").unwrap();
    std::fs::write(
        &path,
        format!("{table}\n[http]\nlisten = \"0.0.0.0:9187\"\n"),
    )
    .unwrap();
    let out = podrouter()
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning:") && stdout.contains("http.listen 0.0.0.0:9187 is not loopback"),
        "{stdout}"
    );
}

#[test]
fn route_emit_writes_each_relay_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, out) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("out"),
    );
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mail = "From: Jean <jean@sunnyvale.example>\r\nSubject: hi\r\n\r\nbody\r\n";
    std::fs::write(a.join("x.eml"), mail).unwrap();
    std::fs::write(b.join("x.eml"), mail).unwrap();
    let route = |emit: &Path, files: &[&Path]| {
        podrouter()
            .args(["route", "-c", "routing.toml", "--emit"])
            .arg(emit)
            .args(files)
            .output()
            .unwrap()
    };

    let ok = route(&out, &[&a.join("x.eml")]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let relayed = std::fs::read(out.join("x.eml")).unwrap();
    assert!(relayed.starts_with(b"X-Podrouter-Pod: alberta\r\n"));

    // Two inputs of one name, and an input that is its own target.
    let clash = route(
        &dir.path().join("out2"),
        &[&a.join("x.eml"), &b.join("x.eml")],
    );
    assert_eq!(clash.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&clash.stderr).contains("would both be written"));
    assert!(!dir.path().join("out2").join("x.eml").exists());
    let itself = route(&a, &[&a.join("x.eml")]);
    assert_eq!(itself.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&itself.stderr).contains("would overwrite the input"));
    assert_eq!(std::fs::read_to_string(a.join("x.eml")).unwrap(), mail);
}
