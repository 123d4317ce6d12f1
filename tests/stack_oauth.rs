//! `podrouter run` signing in with OAuth2 on both sides (issue #8).
//!
//! A token endpoint on loopback (axum, in this file) issues short-lived
//! access tokens, rotates the refresh token at each grant and answers
//! token introspection. A second Dovecot, started here with its own config
//! and ports over the shared stack's users and maildirs, checks IMAP
//! sign-in (OAUTHBEARER and XOAUTH2) against that introspection. An SMTP
//! server written here accepts AUTH XOAUTH2 and checks tokens against the
//! same endpoint. Skipped when the stack is not running.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{http_get, message, wait_until, Daemon, Scratch, Stack, Table, Users};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const ROLES: &[&str] = &["support", "ana", "ben", "cara"];

/// What the token endpoint knows.
#[derive(Default)]
struct Tokens {
    /// The user every token belongs to.
    user: String,
    /// How long an access token lives.
    lifetime: Duration,
    /// The one refresh token that works now.
    refresh: String,
    /// Access tokens issued, with their expiry.
    access: HashMap<String, Instant>,
    /// Every token issued, access and refresh, to look for in the log.
    issued: Vec<String>,
    /// Refresh grants answered with a token.
    grants: usize,
    /// Refresh grants refused.
    refusals: usize,
    /// The grant was revoked: every token is dead.
    revoked: bool,
    /// Bumped when every access token is forgotten; SMTP sessions signed
    /// in before are dropped.
    generation: usize,
    /// The SMTP server refuses a token as Gmail does: an error challenge
    /// (334 and base64 JSON) first, then 535 after the empty answer.
    gmail_style: bool,
}

impl Tokens {
    fn active(&self, token: &str) -> bool {
        !self.revoked && self.access.get(token).is_some_and(|t| Instant::now() < *t)
    }
}

type Shared = Arc<Mutex<Tokens>>;

/// Messages the SMTP server accepted: (recipients, data).
type Outbox = Arc<Mutex<Vec<(Vec<String>, String)>>>;

/// One form field of an `application/x-www-form-urlencoded` body. The
/// tokens used here need no decoding.
fn field<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn json(status: u16, body: String) -> axum::response::Response {
    axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap()
}

/// `POST /token`: the refresh grant.
fn grant(tokens: &Shared, body: &str) -> axum::response::Response {
    let mut t = tokens.lock().unwrap();
    let given = field(body, "refresh_token").unwrap_or("");
    if t.revoked || given != t.refresh || field(body, "grant_type") != Some("refresh_token") {
        t.refusals += 1;
        return json(
            400,
            r#"{"error":"invalid_grant","error_description":"the grant was revoked"}"#.into(),
        );
    }
    t.grants += 1;
    let n = t.grants;
    let nonce = std::process::id();
    let access = format!("acc{n}x{nonce}TOKEN");
    let refresh = format!("ref{n}x{nonce}TOKEN");
    let expiry = Instant::now() + t.lifetime;
    t.access.insert(access.clone(), expiry);
    t.refresh = refresh.clone();
    t.issued.push(access.clone());
    t.issued.push(refresh.clone());
    json(
        200,
        format!(
            r#"{{"access_token":"{access}","token_type":"Bearer","expires_in":{},"refresh_token":"{refresh}"}}"#,
            t.lifetime.as_secs()
        ),
    )
}

/// `POST /introspect` (RFC 7662), as Dovecot asks it.
fn introspect(tokens: &Shared, body: &str) -> axum::response::Response {
    let t = tokens.lock().unwrap();
    let token = field(body, "token").unwrap_or("");
    if t.active(token) {
        json(200, format!(r#"{{"active":true,"username":"{}"}}"#, t.user))
    } else {
        json(200, r#"{"active":false}"#.into())
    }
}

/// The token endpoint, the SMTP server and the second Dovecot of one test.
struct Provider {
    tokens: Shared,
    base: String,
    smtp_port: u16,
    /// Messages the SMTP server accepted: (recipients, data).
    mail: Outbox,
    dovecot: Dovecot,
    _runtime: tokio::runtime::Runtime,
}

impl Provider {
    /// `mechanisms`: what the IMAP server offers (`xoauth2 oauthbearer`).
    fn start(
        users: &Users,
        stack: &Stack,
        lifetime: Duration,
        dir: &Path,
        mechanisms: &str,
    ) -> Provider {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let tokens: Shared = Arc::new(Mutex::new(Tokens {
            user: users.name("support"),
            lifetime,
            refresh: "ref0TOKEN".into(),
            issued: vec!["ref0TOKEN".into()],
            ..Tokens::default()
        }));
        let mail = Arc::new(Mutex::new(Vec::new()));
        let (base, smtp_port) = runtime.block_on(async {
            let t1 = Arc::clone(&tokens);
            let t2 = Arc::clone(&tokens);
            let app = axum::Router::new()
                .route(
                    "/token",
                    axum::routing::post(move |b: String| async move { grant(&t1, &b) }),
                )
                .route(
                    "/introspect",
                    axum::routing::post(move |b: String| async move { introspect(&t2, &b) }),
                );
            let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", http.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(http, app).await });
            let smtp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = smtp.local_addr().unwrap().port();
            tokio::spawn(smtp_server(smtp, Arc::clone(&tokens), Arc::clone(&mail)));
            (base, port)
        });
        let dovecot = Dovecot::start(stack, &format!("{base}/introspect"), dir, mechanisms);
        Provider {
            tokens,
            base,
            smtp_port,
            mail,
            dovecot,
            _runtime: runtime,
        }
    }

    fn relayed(&self) -> usize {
        self.mail.lock().unwrap().len()
    }

    fn grants(&self) -> usize {
        self.tokens.lock().unwrap().grants
    }

    fn revoke(&self) {
        self.tokens.lock().unwrap().revoked = true;
    }

    /// Every access token dies (the refresh token still works), and the
    /// SMTP server drops the sessions signed in with them.
    fn forget_access(&self) {
        let mut t = self.tokens.lock().unwrap();
        t.access.clear();
        t.generation += 1;
    }

    /// The routing table, signing in with OAuth2 on both sides.
    fn table(&self, stack: &Stack, users: &Users, refresh_file: &Path) -> String {
        let mut table = Table::new(stack);
        table.net.imap_port = self.dovecot.port;
        table.net.smtp_port = self.smtp_port;
        let text = table.render(users, "unused");
        let text = text.replacen("password = \"unused\"\n", "auth = \"oauth2\"\n", 1);
        let text = text.replacen(
            "connections = 4\n",
            &format!(
                "connections = 4\nuser = \"{}\"\nauth = \"oauth2\"\n",
                users.name("support")
            ),
            1,
        );
        format!(
            "{text}\n[oauth2]\ntoken_url = \"{}/token\"\nclient_id = \"podrouter-test\"\n\
             refresh_token_file = \"{}\"\nscopes = [\"mail\"]\n",
            self.base,
            refresh_file.display()
        )
    }
}

/// A minimal SMTP server: AUTH XOAUTH2 checked against the token
/// endpoint; every command of a session whose grant was revoked gets 421.
async fn smtp_server(listener: tokio::net::TcpListener, tokens: Shared, mail: Outbox) {
    while let Ok((stream, _)) = listener.accept().await {
        let tokens = Arc::clone(&tokens);
        let mail = Arc::clone(&mail);
        tokio::spawn(async move {
            let _ = smtp_session(stream, tokens, mail).await;
        });
    }
}

async fn smtp_session(
    stream: tokio::net::TcpStream,
    tokens: Shared,
    mail: Outbox,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 oauth-smtp.test ready\r\n").await?;
    let mut authed: Option<usize> = None;
    let mut rcpts = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_owned();
        let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let dropped = {
            let t = tokens.lock().unwrap();
            authed.is_some_and(|g| t.revoked || g != t.generation)
        };
        if dropped {
            write.write_all(b"421 4.7.0 token revoked\r\n").await?;
            return Ok(());
        }
        let reply: String = match verb.as_str() {
            "EHLO" => "250-oauth-smtp.test\r\n250-AUTH XOAUTH2\r\n250 8BITMIME\r\n".into(),
            "AUTH" => {
                let b64 = cmd.split(' ').nth(2).unwrap_or("");
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&raw).into_owned();
                let token = text
                    .split('\x01')
                    .find_map(|p| p.strip_prefix("auth=Bearer "))
                    .unwrap_or("");
                let t = tokens.lock().unwrap();
                let user_ok = text.starts_with(&format!("user={}\x01", t.user));
                if user_ok && t.active(token) {
                    authed = Some(t.generation);
                    "235 2.7.0 accepted\r\n".into()
                } else if t.gmail_style {
                    // {"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}
                    "334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==\r\n".into()
                } else {
                    "535 5.7.8 token not accepted\r\n".into()
                }
            }
            "MAIL" | "RCPT" if authed.is_none() => "530 5.7.0 authentication required\r\n".into(),
            "MAIL" => {
                rcpts.clear();
                "250 ok\r\n".into()
            }
            "RCPT" => {
                rcpts.push(cmd.clone());
                "250 ok\r\n".into()
            }
            "DATA" => {
                write.write_all(b"354 go on\r\n").await?;
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    if lines.read_line(&mut l).await? == 0 {
                        return Ok(());
                    }
                    if l == ".\r\n" {
                        break;
                    }
                    data.push_str(&l);
                }
                mail.lock()
                    .unwrap()
                    .push((std::mem::take(&mut rcpts), data));
                "250 2.0.0 queued\r\n".into()
            }
            "" => "535 5.7.8 token not accepted\r\n".into(),
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => "250 ok\r\n".into(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

/// A second Dovecot over the stack's users and maildirs, signing in with
/// the `oauth2` passdb only. Stopped when dropped.
struct Dovecot {
    conf: PathBuf,
    port: u16,
}

impl Dovecot {
    fn start(stack: &Stack, introspection_url: &str, dir: &Path, mechanisms: &str) -> Dovecot {
        let root = dir.join("dovecot");
        fs::create_dir_all(root.join("run")).unwrap();
        // Dovecot's auth process must be able to read it.
        for d in [dir, root.as_path()] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let port = common::dead_port();
        let ext = root.join("oauth2.conf.ext");
        fs::write(
            &ext,
            format!(
                "introspection_mode = post\nintrospection_url = {introspection_url}\n\
                 username_attribute = username\nactive_attribute = active\n\
                 active_value = true\n"
            ),
        )
        .unwrap();
        let conf = root.join("dovecot.conf");
        fs::write(
            &conf,
            format!(
                r#"protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_username_format = %Ln
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = oauth2
  mechanisms = {mechanisms}
  args = {ext}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"#,
                root = root.display(),
                ext = ext.display(),
                users = stack.var("USERS_FILE"),
            ),
        )
        .unwrap();
        // Its daemon keeps any pipe open: no output is captured.
        let started = Command::new("dovecot")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(
            started.success(),
            "dovecot for oauth2 did not start: {}",
            fs::read_to_string(root.join("dovecot.log")).unwrap_or_default()
        );
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "dovecot for oauth2 does not listen on {port}");
        Dovecot { conf, port }
    }

    /// Drops every IMAP session of `user`, as a server does when a token
    /// expires or maintenance restarts it.
    fn kick(&self, user: &str) {
        let _ = Command::new("doveadm")
            .arg("-c")
            .arg(&self.conf)
            .args(["kick", user])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn log(&self) -> String {
        let dir = self.conf.parent().unwrap();
        fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("dovecot")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn refresh_file(scratch: &Scratch) -> PathBuf {
    let path = scratch.dir.path().join("refresh.token");
    fs::write(&path, "ref0TOKEN\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn acme_message(users: &Users, n: usize) -> Vec<u8> {
    let acme = format!("clerk@{}", users.domain("acme"));
    message(
        &acme,
        &format!("OAuth {n}"),
        &format!("oauth{n}@{}", users.prefix),
    )
}

#[test]
fn fresh_and_expiring_tokens_sign_in_refresh_and_rotate() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    let provider = Provider::start(
        &users,
        &stack,
        Duration::from_secs(4),
        dir,
        "xoauth2 oauthbearer",
    );
    let file = refresh_file(&scratch);
    scratch.write_config(&provider.table(&stack, &users, &file));

    // A fresh token: signed in on both sides, one message relayed.
    users.append("support", "INBOX", &[acme_message(&users, 1)]);
    let mut daemon = Daemon::start(&scratch);
    let relayed = wait_until(Duration::from_secs(30), || provider.relayed() == 1);
    assert!(relayed, "{}\n{}", daemon.log(), provider.dovecot.log());
    assert!(wait_until(Duration::from_secs(10), || users
        .count("support", "Routed")
        == 1));

    // The token expires mid-run: refreshed ahead of expiry, and the
    // rotated refresh token is saved (mode 0600).
    assert!(
        wait_until(Duration::from_secs(20), || provider.grants() >= 3),
        "{}",
        daemon.log()
    );
    let current = provider.tokens.lock().unwrap().refresh.clone();
    let saved = wait_until(Duration::from_secs(5), || {
        let now = provider.tokens.lock().unwrap().refresh.clone();
        fs::read_to_string(&file).unwrap_or_default().trim() == now
    });
    assert!(saved, "the file holds the rotated token {current}");
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The server drops the session after the first token has long
    // expired: the daemon signs in again with a refreshed one.
    provider.dovecot.kick(&users.name("support"));
    daemon.wait_log("connected", 2, Duration::from_secs(30));
    users.append("support", "INBOX", &[acme_message(&users, 2)]);
    let relayed = wait_until(Duration::from_secs(30), || provider.relayed() == 2);
    assert!(relayed, "{}", daemon.log());

    let addr = daemon.http_addr();
    let (_, metrics) = http_get(&addr, "/metrics");
    assert!(metrics.contains("podrouter_oauth_token_expiry_seconds{side=\"inbox\"}"));
    assert!(metrics.contains("podrouter_oauth_refresh_failures_total{side=\"relay\"} 0"));
    assert!(daemon.stop().success());

    // No token, access or refresh, ever reaches the log.
    let log = daemon.log();
    for token in provider.tokens.lock().unwrap().issued.iter() {
        assert!(
            !log.contains(token.as_str()),
            "the log shows {token}:\n{log}"
        );
    }
    assert!(log.contains("oauth2 access token refreshed"), "{log}");
}

#[test]
fn a_revoked_grant_fails_loudly_and_keeps_the_mail() {
    let Some(stack) = Stack::get() else { return };
    let users = stack.users(ROLES);
    let scratch = Scratch::new();
    // This server offers XOAUTH2 only, not OAUTHBEARER.
    let dir = scratch.dir.path();
    let provider = Provider::start(&users, &stack, Duration::from_secs(30), dir, "xoauth2");
    let file = refresh_file(&scratch);
    scratch.write_config(&provider.table(&stack, &users, &file));

    users.append("support", "INBOX", &[acme_message(&users, 1)]);
    let mut daemon = Daemon::start(&scratch);
    let relayed = wait_until(Duration::from_secs(30), || provider.relayed() == 1);
    assert!(relayed, "{}\n{}", daemon.log(), provider.dovecot.log());
    let addr = daemon.http_addr();
    let healthy = wait_until(Duration::from_secs(30), || {
        http_get(&addr, "/healthz").0 == 200
    });
    assert!(healthy, "{}", http_get(&addr, "/healthz").1);

    // Every access token dies early; the refresh token still works. The
    // IMAP server refuses the cached token at the next sign-in: refreshed
    // once, signed in again.
    provider.forget_access();
    provider.dovecot.kick(&users.name("support"));
    daemon.wait_log("connected", 2, Duration::from_secs(30));
    // Again, now for the relay: its server drops the session, then refuses
    // the cached token; refreshed once, signed in, relayed.
    provider.forget_access();
    users.append("support", "INBOX", &[acme_message(&users, 2)]);
    let relayed = wait_until(Duration::from_secs(30), || provider.relayed() == 2);
    assert!(relayed, "{}", daemon.log());
    let filed = wait_until(Duration::from_secs(10), || {
        users.count("support", "Routed") == 2
    });
    assert!(filed, "{}", daemon.log());
    for side in ["imap server", "smtp relay"] {
        let line = format!("{side} refused the oauth2 access token; refreshing it once");
        assert_eq!(daemon.log_count(&line), 1, "{}", daemon.log());
    }

    // Refused as Gmail does, with an error challenge: refreshed once; the
    // message goes out at its retry, on a new session.
    provider.tokens.lock().unwrap().gmail_style = true;
    provider.forget_access();
    users.append("support", "INBOX", &[acme_message(&users, 3)]);
    let relayed = wait_until(Duration::from_secs(30), || provider.relayed() == 3);
    assert!(relayed, "{}", daemon.log());
    let filed = wait_until(Duration::from_secs(10), || {
        users.count("support", "Routed") == 3
    });
    assert!(filed, "{}", daemon.log());
    let line = "smtp relay refused the oauth2 access token; refreshing it once";
    assert_eq!(daemon.log_count(line), 2, "{}", daemon.log());

    // The grant is revoked: the relay's server drops its session and
    // refuses the token; the refresh that follows is refused too.
    provider.revoke();
    users.append("support", "INBOX", &[acme_message(&users, 4)]);
    daemon.wait_log("oauth2 token refresh failed", 1, Duration::from_secs(60));
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("oauth2 token refresh failed"))
        .unwrap();
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("invalid_grant"), "{line}");

    let (status, body) = http_get(&addr, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("oauth2 token refresh failed"), "{body}");
    let (_, metrics) = http_get(&addr, "/metrics");
    assert!(
        !metrics.contains("podrouter_oauth_refresh_failures_total{side=\"relay\"} 0"),
        "{metrics}"
    );

    // The IMAP server drops the session: signing in again fails the same
    // way, and the daemon keeps trying with backoff.
    provider.dovecot.kick(&users.name("support"));
    daemon.wait_log("cannot connect", 1, Duration::from_secs(30));
    let counted = wait_until(Duration::from_secs(10), || {
        let (_, m) = http_get(&addr, "/metrics");
        m.contains("podrouter_oauth_refresh_failures_total{side=\"inbox\"}")
            && !m.contains("podrouter_oauth_refresh_failures_total{side=\"inbox\"} 0")
            && !m.contains("podrouter_imap_errors_total{kind=\"oauth2\"} 0")
    });
    assert!(counted, "{}", http_get(&addr, "/metrics").1);
    assert!(
        !daemon.exited(),
        "the daemon keeps running:\n{}",
        daemon.log()
    );

    // Nothing lost: the fourth message waits in the inbox.
    std::thread::sleep(Duration::from_secs(2));
    let counts = (
        provider.relayed(),
        users.count("support", "INBOX"),
        users.count("support", "Routed"),
    );
    assert_eq!(
        counts,
        (3, 1, 3),
        "relayed, inbox, routed\n{}",
        daemon.log()
    );
    assert!(daemon.stop().success());
    let log = daemon.log();
    for token in provider.tokens.lock().unwrap().issued.iter() {
        assert!(!log.contains(token.as_str()), "the log shows {token}");
    }
}
