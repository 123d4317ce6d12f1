//! Test harness for the integration tests against the real mail stack
//! (`scripts/mailstack start`: Dovecot and OpenSMTPD on loopback).
//!
//! [`Stack::get`] reads `stack.env`; when the stack is not running a test
//! prints why it is skipped and returns, unless `PODROUTER_REQUIRE_STACK=1`
//! makes that a failure. The stack is shared by every test (only one
//! OpenSMTPD can run per machine), so each test makes its own users with a
//! unique prefix ([`Users`]) and its own config, state folder and daemon
//! ([`Daemon`], killed when dropped).
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_imap::Client;
use futures::TryStreamExt;
use tokio::net::TcpStream;

/// The running stack, as described by its `stack.env`.
pub struct Stack {
    vars: HashMap<String, String>,
}

impl Stack {
    /// The stack, or `None` (after saying the test is skipped).
    pub fn get() -> Option<Stack> {
        let dir = std::env::var("PODROUTER_STACK_DIR")
            .unwrap_or_else(|_| "/tmp/podrouter-stack".to_owned());
        let env = Path::new(&dir).join("stack.env");
        let Ok(text) = fs::read_to_string(&env) else {
            let why = format!(
                "mail stack not running ({} missing); start it with scripts/mailstack start",
                env.display()
            );
            if std::env::var("PODROUTER_REQUIRE_STACK").as_deref() == Ok("1") {
                panic!("{why}");
            }
            eprintln!("skipped: {why}");
            return None;
        };
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Some(Stack { vars })
    }

    /// A value from `stack.env`.
    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("stack.env has no {key}"))
    }

    /// A port from `stack.env`.
    pub fn port(&self, key: &str) -> u16 {
        self.var(key).parse().unwrap()
    }

    /// The throwaway CA that signed the stack's certificates.
    pub fn ca_file(&self) -> PathBuf {
        PathBuf::from(self.var("CA_FILE"))
    }

    /// Every user's password.
    pub fn password(&self) -> &str {
        self.var("PASSWORD")
    }

    /// Runs `scripts/mailstack` with these arguments.
    pub fn script(&self, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mailstack");
        let out = Command::new(script)
            .args(args)
            .env("PODROUTER_STACK_DIR", self.var("STACK_DIR"))
            .output()
            .expect("scripts/mailstack runs");
        assert!(
            out.status.success(),
            "mailstack {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes a fresh set of users for one test.
    pub fn users(&self, roles: &[&str]) -> Users {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let salt = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 100_000;
        let prefix = format!(
            "t{}x{}x{salt}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let names: Vec<String> = roles.iter().map(|r| format!("{prefix}-{r}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.script(&[&["adduser"], refs.as_slice()].concat());
        self.script(&[&["reset"], refs.as_slice()].concat());
        let users = Users {
            prefix,
            mail_root: PathBuf::from(self.var("MAIL_ROOT")),
            imap_port: self.port("IMAP_PORT"),
            password: self.password().to_owned(),
        };
        users.wait_known(roles);
        users
    }
}

/// The users of one test: `<prefix>-<role>`.
pub struct Users {
    /// Unique to the test, e.g. `t1234x0x5678`.
    pub prefix: String,
    mail_root: PathBuf,
    imap_port: u16,
    password: String,
}

impl Users {
    /// The login name of a role.
    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Waits until Dovecot knows the new users: it re-reads its users file
    /// at most once a second, so a login right after `adduser` can fail.
    fn wait_known(&self, roles: &[&str]) {
        let known = wait_until(Duration::from_secs(10), || {
            roles.iter().all(|r| self.try_login(r))
        });
        assert!(known, "dovecot does not know the users {}-*", self.prefix);
    }

    /// Whether `role` can log in now.
    fn try_login(&self, role: &str) -> bool {
        let rt = runtime();
        let (port, user, password) = (self.imap_port, self.name(role), self.password.clone());
        rt.block_on(async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut client = Client::new(tcp);
            client.read_response().await.unwrap();
            match client.login(user, password).await {
                Ok(mut session) => {
                    let _ = session.logout().await;
                    true
                }
                Err(_) => false,
            }
        })
    }

    /// The address of a role (any domain reaches the user).
    pub fn address(&self, role: &str) -> String {
        format!("{}@vendor.example", self.name(role))
    }

    /// A client domain unique to this test.
    pub fn domain(&self, client: &str) -> String {
        format!("{}-{client}.example", self.prefix)
    }

    /// The files of a user's folder (`INBOX` or a folder name) on disk.
    pub fn maildir(&self, role: &str, folder: &str) -> Vec<Vec<u8>> {
        let base = self.mail_root.join(self.name(role)).join("Maildir");
        let dir = if folder == "INBOX" {
            base
        } else {
            base.join(format!(".{folder}"))
        };
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(bytes) = fs::read(entry.path()) {
                    out.push(bytes);
                }
            }
        }
        out
    }

    /// How many messages a user's folder holds on disk.
    pub fn count(&self, role: &str, folder: &str) -> usize {
        self.maildir(role, folder).len()
    }

    /// How many messages in a user's folder carry this text.
    pub fn count_with(&self, role: &str, folder: &str, needle: &str) -> usize {
        self.maildir(role, folder)
            .iter()
            .filter(|m| contains(m, needle))
            .count()
    }

    /// Opens an IMAP session as `role` (plaintext, loopback).
    pub fn imap(&self, role: &str) -> Imap {
        let rt = runtime();
        let (port, user, password) = (self.imap_port, self.name(role), self.password.clone());
        let session = rt.block_on(async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut client = Client::new(tcp);
            client.read_response().await.unwrap();
            client
                .login(user, password)
                .await
                .map_err(|(e, _)| e)
                .unwrap()
        });
        Imap { rt, session }
    }

    /// APPENDs messages to a user's folder in one session.
    pub fn append(&self, role: &str, folder: &str, messages: &[Vec<u8>]) {
        let mut imap = self.imap(role);
        for m in messages {
            imap.append(folder, m);
        }
        imap.logout();
    }
}

/// A single-threaded runtime for the blocking IMAP helpers.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A blocking IMAP session for test set-up.
pub struct Imap {
    rt: tokio::runtime::Runtime,
    session: async_imap::Session<TcpStream>,
}

impl Imap {
    /// APPENDs one message.
    pub fn append(&mut self, folder: &str, raw: &[u8]) {
        self.rt
            .block_on(self.session.append(folder, None, None, raw))
            .unwrap();
    }

    /// Creates a folder.
    pub fn create(&mut self, folder: &str) {
        self.rt.block_on(self.session.create(folder)).unwrap();
    }

    /// Deletes a folder.
    pub fn delete(&mut self, folder: &str) {
        self.rt.block_on(self.session.delete(folder)).unwrap();
    }

    /// Selects a folder; returns its UIDVALIDITY and message count.
    pub fn select(&mut self, folder: &str) -> (u32, u32) {
        let mb = self.rt.block_on(self.session.select(folder)).unwrap();
        (mb.uid_validity.unwrap(), mb.exists)
    }

    /// The raw messages of a folder.
    pub fn fetch_all(&mut self, folder: &str) -> Vec<Vec<u8>> {
        let (_, exists) = self.select(folder);
        if exists == 0 {
            return Vec::new();
        }
        let session = &mut self.session;
        self.rt.block_on(async {
            let fetches: Vec<_> = session
                .fetch("1:*", "BODY.PEEK[]")
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            fetches
                .iter()
                .filter_map(|f| f.body().map(<[u8]>::to_vec))
                .collect()
        })
    }

    /// Logs out.
    pub fn logout(mut self) {
        let _ = self.rt.block_on(self.session.logout());
    }
}

/// Whether `haystack` holds `needle`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A plain test message from `from`, with a unique Message-ID.
pub fn message(from: &str, subject: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Client <{from}>\r\n\
         To: support@vendor.example\r\n\
         Subject: {subject}\r\n\
         Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\
         Message-ID: <{id}>\r\n\
         \r\n\
         Hello, the printer is broken ({id}).\r\n"
    )
    .into_bytes()
}

/// An auto-reply, which the daemon must skip.
pub fn auto_reply(from: &str, id: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\n\
         To: support@vendor.example\r\n\
         Subject: Out of office\r\n\
         Auto-Submitted: auto-replied\r\n\
         Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\
         Message-ID: <{id}>\r\n\
         \r\n\
         I am away ({id}).\r\n"
    )
    .into_bytes()
}

/// How the inbox and relay are reached in a test config.
#[derive(Clone, Debug)]
pub struct Net {
    pub imap_host: String,
    pub imap_port: u16,
    pub imap_tls: &'static str,
    pub imap_ca: Option<PathBuf>,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_tls: &'static str,
    pub smtp_ca: Option<PathBuf>,
}

impl Net {
    /// Plaintext IMAP and SMTP on loopback.
    pub fn plain(stack: &Stack) -> Net {
        Net {
            imap_host: "127.0.0.1".into(),
            imap_port: stack.port("IMAP_PORT"),
            imap_tls: "none",
            imap_ca: None,
            smtp_host: "127.0.0.1".into(),
            smtp_port: stack.port("SMTP_PORT"),
            smtp_tls: "none",
            smtp_ca: None,
        }
    }
}

/// One test's routing table: pods `east` (ana, ben) and `west` (cara);
/// clients `acme` and `globex` with their own domains.
#[derive(Clone, Debug)]
pub struct Table {
    pub net: Net,
    /// The watched folder.
    pub folder: String,
    /// The pod of client `acme`.
    pub acme_pod: &'static str,
    /// `inbox.poll_interval` (only used without IDLE).
    pub poll_interval: &'static str,
    /// Text appended verbatim (e.g. to break the file).
    pub extra: String,
    /// `routing.storm_limit`; 0 (off) unless a test is about storms, since
    /// the tests send many messages from one address.
    pub storm_limit: usize,
    /// Lines added to `[pods.east]` (e.g. `ack = true`).
    pub east_extra: String,
    /// Lines added to `[routing]`.
    pub routing_extra: String,
    /// `[http] enabled`; the endpoint always listens on `127.0.0.1:0`, a
    /// port of its own per daemon ([`Daemon::http_addr`] reads it).
    pub http: bool,
}

impl Table {
    /// The default table over plaintext loopback.
    pub fn new(stack: &Stack) -> Table {
        Table {
            net: Net::plain(stack),
            folder: "INBOX".into(),
            acme_pod: "east",
            poll_interval: "2s",
            extra: String::new(),
            storm_limit: 0,
            east_extra: String::new(),
            routing_extra: String::new(),
            http: true,
        }
    }

    /// The TOML text for these users.
    pub fn render(&self, users: &Users, password: &str) -> String {
        let n = &self.net;
        let ca = |c: &Option<PathBuf>| {
            c.as_ref()
                .map(|p| format!("ca_file = \"{}\"\n", p.display()))
                .unwrap_or_default()
        };
        format!(
            r#"[inbox]
server = "{imap_host}"
port = {imap_port}
tls = "{imap_tls}"
{imap_ca}user = "{support}"
password = "{password}"
folder = "{folder}"
done_folder = "Routed"
hold_folder = "Held"
poll_interval = "{poll_interval}"

[relay]
server = "{smtp_host}"
port = {smtp_port}
tls = "{smtp_tls}"
{smtp_ca}from = "{support_addr}"
connections = 4

[routing]
storm_limit = {storm_limit}
{routing_extra}

[http]
enabled = {http}
listen = "127.0.0.1:0"

[pods.east]
name = "East pod"
members = ["Ana <{ana}>", "Ben <{ben}>"]
{east_extra}

[pods.west]
name = "West pod"
members = ["Cara <{cara}>"]

[clients.acme]
name = "Acme Town"
pod = "{acme_pod}"
domains = ["{acme}"]

[clients.globex]
name = "Globex County"
pod = "west"
domains = ["{globex}"]
{extra}
"#,
            imap_host = n.imap_host,
            imap_port = n.imap_port,
            imap_tls = n.imap_tls,
            imap_ca = ca(&n.imap_ca),
            smtp_host = n.smtp_host,
            smtp_port = n.smtp_port,
            smtp_tls = n.smtp_tls,
            smtp_ca = ca(&n.smtp_ca),
            support = users.name("support"),
            support_addr = users.address("support"),
            folder = self.folder,
            ana = users.address("ana"),
            ben = users.address("ben"),
            cara = users.address("cara"),
            acme_pod = self.acme_pod,
            poll_interval = self.poll_interval,
            acme = users.domain("acme"),
            globex = users.domain("globex"),
            extra = self.extra,
            storm_limit = self.storm_limit,
            east_extra = self.east_extra,
            routing_extra = self.routing_extra,
            http = self.http,
        )
    }
}

/// A test's folder: config file, state folder, daemon log.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A new scratch folder.
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The config file's path.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("routing.toml")
    }

    /// The daemon's state folder.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes the config file.
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join("routing.toml.tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(tmp, self.config()).unwrap();
    }

    /// Opens the journal read-only.
    pub fn journal(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.state().join("journal.sqlite3"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    /// Runs one query that yields a single integer.
    pub fn journal_count(&self, sql: &str) -> i64 {
        self.journal().query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

/// A running `podrouter run`; killed (and its log printed, if the test
/// failed) when dropped.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    pub started: Instant,
}

impl Daemon {
    /// Starts `podrouter run -c <config> --state-dir <state>`.
    pub fn start(scratch: &Scratch) -> Daemon {
        Self::start_with(scratch, &[])
    }

    /// Starts it with extra environment variables.
    pub fn start_with(scratch: &Scratch, env: &[(&str, &str)]) -> Daemon {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let log = scratch
            .dir
            .path()
            .join(format!("daemon{}.log", NEXT.fetch_add(1, Ordering::SeqCst)));
        let out = fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_podrouter"));
        cmd.arg("run")
            .arg("-c")
            .arg(scratch.config())
            .arg("--state-dir")
            .arg(scratch.state())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("PODROUTER_STATE_DIR")
            .env_remove("PODROUTER_TEST_CRASH_AFTER_RELAY")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("podrouter starts");
        Daemon {
            child: Some(child),
            log,
            started: Instant::now(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal by name (`HUP`, `TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// The log so far, without colour codes.
    pub fn log(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until the log has `n` lines containing `needle`.
    pub fn wait_log(&mut self, needle: &str, n: usize, limit: Duration) {
        let ok = wait_until(limit, || self.log_count(needle) >= n || self.exited());
        assert!(
            ok && self.log_count(needle) >= n,
            "log never had {n}× {needle:?} within {limit:?}:\n{}",
            self.log()
        );
    }

    /// The address the HTTP endpoint bound (`127.0.0.1:PORT`), from the
    /// daemon's `http listening addr=...` line; waits for it.
    pub fn http_addr(&mut self) -> String {
        self.wait_log("http listening", 1, Duration::from_secs(20));
        let log = self.log();
        let line = log.lines().find(|l| l.contains("http listening")).unwrap();
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        addr.to_owned()
    }

    /// Waits for the daemon to say it is ready.
    pub fn wait_ready(&mut self) {
        self.wait_log("ready", 1, Duration::from_secs(20));
    }

    /// Whether the process has ended.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_some())
    }

    /// Waits for the process to end, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status (at most 30 s).
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(30))
            .expect("podrouter exits within 30 s of SIGTERM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log {} ----\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes terminal colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A loopback port where nothing listens.
pub fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// GETs `http://<addr><path>`; returns the status and the body. Any
/// status is returned, not turned into an error.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut response = agent
        .get(format!("http://{addr}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(16 * 1024 * 1024)
        .read_to_string()
        .unwrap();
    (status, body)
}
