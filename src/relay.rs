//! SMTP out: hands a message to the `[relay]` server for a pod's members.
//!
//! [`Relay`] keeps up to `relay.connections` SMTP connections open and
//! sends over them with lettre's `AsyncSmtpConnection`. The envelope
//! sender is `relay.from`; the recipients are the decision's.
//! [`Relay::deliver`] sorts every outcome into accepted, refused for good,
//! or deferred, which decides whether a message is filed, held or retried.
//!
//! lettre ends a transaction at the first refused RCPT, before DATA, and
//! its error does not say which recipient was refused. So when a message
//! with several recipients is refused for good, it is sent again once per
//! recipient; each recipient that accepts is reported through a callback
//! (the journal records it) before the next one is tried.
//!
//! The connections are opened here, not by lettre's pooled
//! `AsyncSmtpTransport`, for one reason: lettre 0.11.23 leaves Nagle's
//! algorithm on, and since it writes the final `.` of DATA apart from the
//! body, every message waits ~40 ms for the server's delayed ACK (measured
//! here: 50 ms a message against 3.5 ms with `TCP_NODELAY`). lettre fixed
//! this upstream (lettre/lettre#1159) after 0.11.23; once a release has it,
//! `AsyncSmtpTransport` with `send_raw` can take this pool's place. Errors
//! while a connection is set up (greeting, EHLO, STARTTLS, AUTH) concern
//! the relay, not the message, and never hold it.
//!
//! lettre's `tracing` feature stays off: its debug output writes the AUTH
//! line.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::Address;
use tokio::net::TcpStream;

use crate::config::{Auth, RelayConfig, Server, TlsMode};
use crate::oauth::{self, TokenSource};
use crate::tls::{self, TlsError};

/// How long connecting and setting up a session may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one transaction (MAIL to the reply after DATA) may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(300);

/// After a failed connect, new connects fail at once for this long.
const DOWN_FOR: Duration = Duration::from_secs(5);

/// An idle connection older than this is closed instead of reused.
const POOL_IDLE: Duration = Duration::from_secs(50);

/// Why a message could not be relayed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// `tls = "none"` names a host that is not this machine.
    #[error("refusing plaintext SMTP to {host}: tls = \"none\" is only allowed to loopback")]
    PlaintextNotLoopback {
        /// The configured host.
        host: String,
    },
    /// The trust anchors could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `relay.from` or a recipient is not a valid address.
    #[error("invalid address {address:?}: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// What lettre said.
        reason: String,
    },
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TLS handshake failed (e.g. the certificate was not trusted).
    #[error("tls handshake with {host} failed: {source}")]
    Handshake {
        /// The host.
        host: String,
        /// What rustls said.
        source: std::io::Error,
    },
    /// Setting up the session failed: greeting, EHLO, STARTTLS or AUTH.
    #[error("smtp session setup: {}", reply_of(.0))]
    Session(#[source] lettre::transport::smtp::Error),
    /// Connecting failed a moment ago; not tried again yet.
    #[error("relay unavailable: {reason}")]
    Down {
        /// The reply or error of the last attempt.
        reason: String,
    },
    /// A step took longer than its bound.
    #[error("smtp {what} timed out")]
    Timeout {
        /// The step.
        what: &'static str,
    },
    /// No OAuth2 access token could be had (logged by the token source).
    #[error("oauth2: {0}")]
    OAuth(#[from] crate::oauth::OAuthError),
    /// The transaction failed (connection, or a negative reply).
    #[error("smtp: {}", reply_of(.0))]
    Smtp(#[source] lettre::transport::smtp::Error),
}

impl RelayError {
    /// Whether retrying cannot help this message: a 5xx reply to its
    /// transaction, an invalid recipient, or a message lettre refuses to
    /// send (8-bit data to a server without 8BITMIME).
    pub fn is_permanent(&self) -> bool {
        match self {
            RelayError::Address { .. } => true,
            RelayError::Smtp(e) => {
                e.is_permanent() || (e.is_client() && e.to_string().contains("non-ascii"))
            }
            _ => false,
        }
    }

    /// The server's reply (code and text) or a short description.
    pub fn reply(&self) -> String {
        match self {
            RelayError::Smtp(e) | RelayError::Session(e) => reply_of(e),
            RelayError::Down { reason } => reason.clone(),
            other => other.to_string(),
        }
    }

    /// Whether a person must fix the settings or the relay account
    /// (logged as an error): TLS, STARTTLS missing, AUTH refused.
    pub fn is_setup_problem(&self) -> bool {
        match self {
            RelayError::PlaintextNotLoopback { .. }
            | RelayError::Tls(_)
            | RelayError::Handshake { .. } => true,
            RelayError::Session(e) => e.is_permanent() || e.is_tls() || e.is_client(),
            _ => false,
        }
    }
}

/// The code and text of a negative reply, or lettre's description.
fn reply_of(e: &lettre::transport::smtp::Error) -> String {
    match (e.status(), std::error::Error::source(e)) {
        (Some(code), Some(text)) => format!("{code} {text}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

/// The code and first line of a positive reply, for the journal.
fn reply_text(response: &Response) -> String {
    let line = response.first_line().unwrap_or("");
    format!("{} {line}", response.code()).trim_end().to_owned()
}

/// What became of one message.
#[derive(Debug)]
pub enum Delivery {
    /// At least one recipient accepted it; the others listed were refused.
    Accepted {
        /// Recipients that accepted it in this call.
        accepted: Vec<String>,
        /// Recipients refused for good, each with the reply.
        refused: Vec<(String, String)>,
        /// The last positive reply.
        reply: String,
    },
    /// Every recipient was refused for good.
    Refused {
        /// Each recipient with the reply.
        refused: Vec<(String, String)>,
        /// The reply to the whole message.
        reply: String,
    },
    /// A temporary failure; recipients already reported through the
    /// callback have the message, the rest must be retried.
    Deferred {
        /// What went wrong.
        error: RelayError,
    },
}

/// An open connection waiting for the next message.
struct Parked {
    conn: AsyncSmtpConnection,
    since: Instant,
}

/// The SMTP side of the daemon: settings and a small connection pool.
pub struct Relay {
    /// Where and how to connect.
    server: Server,
    /// lettre's STARTTLS settings (trust anchors, name checked).
    starttls: Option<TlsParameters>,
    /// Login for AUTH, when the config has one.
    credentials: Option<Credentials>,
    /// Access tokens for AUTH XOAUTH2, with `auth = "oauth2"`.
    oauth: Option<Arc<TokenSource>>,
    /// The name given in EHLO.
    hello: ClientId,
    /// The envelope sender.
    from: Address,
    /// Open connections not in use; at most `limit`.
    idle: Mutex<Vec<Parked>>,
    /// `relay.connections`.
    limit: usize,
    /// One permit per connection: at most `limit` transactions at once,
    /// however many messages the daemon has in flight.
    slots: tokio::sync::Semaphore,
    /// When and why connecting last failed.
    down: Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("host", &self.server.host)
            .field("from", &self.from)
            .finish()
    }
}

impl Relay {
    /// Checks the settings; no connection is opened until the first send.
    pub fn new(config: &RelayConfig) -> Result<Relay, RelayError> {
        let server = config.server.clone();
        let starttls = match server.tls {
            TlsMode::Starttls => Some(starttls_parameters(&server)?),
            TlsMode::Implicit => {
                tls::client_config(server.ca_file.as_deref())?;
                None
            }
            TlsMode::None if tls::is_loopback_host(&server.host) => None,
            TlsMode::None => return Err(RelayError::PlaintextNotLoopback { host: server.host }),
        };
        let oauth = match &server.auth {
            Auth::OAuth2(c) => Some(oauth::source(c)?),
            Auth::Password => None,
        };
        let credentials = match (&server.user, &server.password) {
            _ if oauth.is_some() => None,
            (Some(user), Some(password)) => {
                Some(Credentials::new(user.clone(), password.expose().to_owned()))
            }
            _ => None,
        };
        Ok(Relay {
            from: parse_address(&config.from)?,
            starttls,
            credentials,
            oauth,
            hello: hello_name(),
            idle: Mutex::new(Vec::new()),
            down: Mutex::new(None),
            limit: config.connections.max(1),
            slots: tokio::sync::Semaphore::new(config.connections.max(1)),
            server,
        })
    }

    /// Sends `bytes` to `recipients`; see the module doc for the fallback
    /// to one transaction per recipient. `on_accept(recipient, reply)` runs
    /// after each single-recipient acceptance, before the next send; its
    /// error stops the delivery.
    pub async fn deliver<E>(
        &self,
        bytes: &[u8],
        recipients: &[String],
        mut on_accept: impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<Delivery, E> {
        let first = self.send_with_retry(bytes, recipients).await;
        let error = match first {
            Ok(reply) => {
                return Ok(Delivery::Accepted {
                    accepted: recipients.to_vec(),
                    refused: Vec::new(),
                    reply,
                })
            }
            Err(error) => error,
        };
        if !error.is_permanent() {
            return Ok(Delivery::Deferred { error });
        }
        if recipients.len() < 2 {
            let refused = recipients
                .iter()
                .map(|r| (r.clone(), error.reply()))
                .collect();
            return Ok(Delivery::Refused {
                refused,
                reply: error.reply(),
            });
        }
        tracing::warn!(
            reply = %error.reply(),
            "relay refused the message; trying each recipient on its own"
        );
        self.deliver_one_by_one(bytes, recipients, &mut on_accept)
            .await
    }

    /// The per-recipient fallback after a permanent refusal.
    async fn deliver_one_by_one<E>(
        &self,
        bytes: &[u8],
        recipients: &[String],
        on_accept: &mut impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<Delivery, E> {
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        let mut last_reply = String::new();
        for rcpt in recipients {
            match self
                .send_with_retry(bytes, std::slice::from_ref(rcpt))
                .await
            {
                Ok(reply) => {
                    on_accept(rcpt, &reply)?;
                    accepted.push(rcpt.clone());
                    last_reply = reply;
                }
                Err(e) if e.is_permanent() => refused.push((rcpt.clone(), e.reply())),
                Err(error) => return Ok(Delivery::Deferred { error }),
            }
        }
        if accepted.is_empty() {
            let reply = refused.last().map(|(_, r)| r.clone()).unwrap_or_default();
            return Ok(Delivery::Refused { refused, reply });
        }
        Ok(Delivery::Accepted {
            accepted,
            refused,
            reply: last_reply,
        })
    }

    /// One transaction, tried a second time at once after a temporary
    /// failure (a pooled connection may have been closed by the server).
    async fn send_with_retry(&self, bytes: &[u8], to: &[String]) -> Result<String, RelayError> {
        match self.send_once(bytes, to).await {
            Err(e) if !e.is_permanent() && !e.is_setup_problem() => {
                tracing::debug!(reply = %e.reply(), "temporary smtp failure; trying once more");
                self.send_once(bytes, to).await
            }
            other => other,
        }
    }

    /// One SMTP transaction for `to`, on a pooled or new connection.
    async fn send_once(&self, bytes: &[u8], to: &[String]) -> Result<String, RelayError> {
        let to = to
            .iter()
            .map(|r| parse_address(r))
            .collect::<Result<Vec<_>, _>>()?;
        let envelope =
            Envelope::new(Some(self.from.clone()), to).map_err(|e| RelayError::Address {
                address: String::new(),
                reason: e.to_string(),
            })?;
        // Never closed, so acquiring cannot fail; held until the connection
        // is parked or dropped.
        let _slot = self.slots.acquire().await.ok();
        let mut conn = match self.take() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let sent = tokio::time::timeout(SEND_TIMEOUT, conn.send(&envelope, bytes)).await;
        match sent {
            Ok(Ok(response)) => {
                self.park(conn);
                Ok(reply_text(&response))
            }
            Ok(Err(e)) => {
                // lettre has sent QUIT and closed the connection.
                Err(RelayError::Smtp(e))
            }
            Err(_) => Err(RelayError::Timeout {
                what: "transaction",
            }),
        }
    }

    /// A parked connection that is fresh enough to reuse.
    fn take(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(parked) = idle.pop() {
            if parked.since.elapsed() < POOL_IDLE && !parked.conn.has_broken() {
                return Some(parked.conn);
            }
        }
        None
    }

    /// Keeps a healthy connection for the next message.
    fn park(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.limit {
            idle.push(Parked {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Opens a session: TCP (no Nagle), TLS as configured, EHLO, AUTH.
    ///
    /// After a failure, the next [`DOWN_FOR`] fail at once with the same
    /// reason: a relay that is down (or slow to refuse) then costs one
    /// wait per batch, not one per message.
    async fn connect(&self) -> Result<AsyncSmtpConnection, RelayError> {
        if let Some(reason) = self.still_down() {
            return Err(RelayError::Down { reason });
        }
        let result = match tokio::time::timeout(CONNECT_TIMEOUT, self.open_session()).await {
            Ok(result) => result,
            Err(_) => Err(RelayError::Timeout { what: "connect" }),
        };
        if let Err(e) = &result {
            let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            *down = Some((Instant::now(), e.reply()));
        }
        result
    }

    /// The last connect failure's reason, if it is recent.
    fn still_down(&self) -> Option<String> {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        down.as_ref()
            .filter(|(at, _)| at.elapsed() < DOWN_FOR)
            .map(|(_, reason)| reason.clone())
    }

    async fn open_session(&self) -> Result<AsyncSmtpConnection, RelayError> {
        let server = &self.server;
        let addr = format!("{}:{}", server.host, server.port);
        let host = server.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, server.port))
            .await
            .map_err(|source| RelayError::Connect {
                addr: addr.clone(),
                source,
            })?;
        tcp.set_nodelay(true)
            .map_err(|source| RelayError::Connect { addr, source })?;
        let mut conn = match server.tls {
            TlsMode::Implicit => {
                let stream = tls::connect(server.ca_file.as_deref(), &server.host, tcp)
                    .await
                    .map_err(|e| self.handshake_error(e))?;
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello).await
            }
            _ => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await,
        }
        .map_err(RelayError::Session)?;
        if let Some(params) = &self.starttls {
            // lettre refuses when the server does not offer STARTTLS.
            conn.starttls(params.clone(), &self.hello)
                .await
                .map_err(RelayError::Session)?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(RelayError::Session)?;
        }
        if let Some(source) = &self.oauth {
            self.oauth_auth(&mut conn, source).await?;
        }
        Ok(conn)
    }

    /// AUTH XOAUTH2; a refused token is refreshed once and tried again.
    async fn oauth_auth(
        &self,
        conn: &mut AsyncSmtpConnection,
        source: &TokenSource,
    ) -> Result<(), RelayError> {
        let user = self.server.user.clone().unwrap_or_default();
        let token = source.token("relay").await?;
        let credentials = Credentials::new(user.clone(), token.expose().to_owned());
        let refused = match conn.auth(&[Mechanism::Xoauth2], &credentials).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_permanent() => e,
            Err(e) if e.is_client() && e.to_string().contains("challenge") => {
                // Gmail refuses with an error challenge (334), which lettre
                // does not answer: this session is lost, so the new token
                // serves the next one.
                tracing::warn!(
                    host = %self.server.host,
                    "smtp relay refused the oauth2 access token; refreshing it once"
                );
                source.refresh_after("relay", &token).await?;
                return Err(RelayError::Session(e));
            }
            Err(e) => return Err(RelayError::Session(e)),
        };
        tracing::warn!(
            host = %self.server.host,
            reply = %reply_of(&refused),
            "smtp relay refused the oauth2 access token; refreshing it once"
        );
        let token = source.refresh_after("relay", &token).await?;
        let credentials = Credentials::new(user, token.expose().to_owned());
        conn.auth(&[Mechanism::Xoauth2], &credentials)
            .await
            .map(|_| ())
            .map_err(RelayError::Session)
    }

    fn handshake_error(&self, e: tls::ConnectError) -> RelayError {
        match e {
            tls::ConnectError::Setup(e) => RelayError::Tls(e),
            tls::ConnectError::Handshake(source) => RelayError::Handshake {
                host: self.server.host.clone(),
                source,
            },
            tls::ConnectError::Io(source) => RelayError::Connect {
                addr: format!("{}:{}", self.server.host, self.server.port),
                source,
            },
        }
    }

    /// Whether the relay answers now: opens a session (greeting, EHLO,
    /// STARTTLS, AUTH as configured) and closes it with QUIT. Counts as
    /// one of the `relay.connections`; a connect that failed within the
    /// last few seconds is not tried again (the same breaker as sends).
    pub async fn check(&self) -> Result<(), RelayError> {
        let _slot = self.slots.acquire().await.ok();
        let mut conn = self.connect().await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.quit()).await;
        Ok(())
    }

    /// Closes the idle connections with QUIT.
    pub async fn shutdown(&self) {
        let idle: Vec<Parked> =
            std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for mut parked in idle {
            let _ = tokio::time::timeout(Duration::from_secs(5), parked.conn.quit()).await;
        }
    }
}

/// lettre's STARTTLS settings: system roots plus `ca_file`, name checked.
fn starttls_parameters(server: &Server) -> Result<TlsParameters, RelayError> {
    let mut builder = TlsParameters::builder(server.host.clone());
    if let Some(path) = &server.ca_file {
        tls::read_ca_certs(path)?;
        let pem = tls::read_ca_pem(path)?;
        let cert = Certificate::from_pem(&pem).map_err(RelayError::Session)?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build_rustls().map_err(RelayError::Session)
}

/// The EHLO name: this machine's host name when it can be read, else
/// `[127.0.0.1]`.
fn hello_name() -> ClientId {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty() && !name.contains(char::is_whitespace))
        .map_or_else(ClientId::default, ClientId::Domain)
}

/// Parses an addr-spec for the envelope.
fn parse_address(text: &str) -> Result<Address, RelayError> {
    text.parse()
        .map_err(|e: lettre::address::AddressError| RelayError::Address {
            address: text.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FromMode, Server};

    fn config(host: &str, tls: TlsMode) -> RelayConfig {
        RelayConfig {
            server: Server {
                host: host.to_owned(),
                port: 25,
                tls,
                ca_file: None,
                user: None,
                password: None,
                auth: crate::config::Auth::Password,
            },
            from: "support@vendor.example".to_owned(),
            from_mode: FromMode::Rewrite,
            connections: 2,
        }
    }

    #[tokio::test]
    async fn plaintext_is_refused_off_loopback() {
        let err = Relay::new(&config("smtp.vendor.example", TlsMode::None)).unwrap_err();
        assert!(
            matches!(err, RelayError::PlaintextNotLoopback { .. }),
            "{err}"
        );
        assert!(err.is_setup_problem());
        Relay::new(&config("127.0.0.1", TlsMode::None)).unwrap();
    }

    #[tokio::test]
    async fn a_bad_from_is_refused() {
        let mut c = config("127.0.0.1", TlsMode::None);
        c.from = "not an address".to_owned();
        assert!(matches!(Relay::new(&c), Err(RelayError::Address { .. })));
    }

    #[tokio::test]
    async fn nothing_listening_is_a_temporary_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut c = config("127.0.0.1", TlsMode::None);
        c.server.port = port;
        let relay = Relay::new(&c).unwrap();
        let rcpts = vec!["ana@vendor.example".to_owned()];
        let out = relay
            .deliver(
                b"Subject: x\r\n\r\nbody\r\n",
                &rcpts,
                |_, _| Ok::<_, ()>(()),
            )
            .await
            .unwrap();
        let Delivery::Deferred { error } = out else {
            panic!("expected a deferral, got {out:?}");
        };
        assert!(!error.is_permanent());
        assert!(
            matches!(error, RelayError::Down { .. }),
            "the retry hit the breaker: {error}"
        );

        // The next message does not wait for another connect.
        let out = relay
            .deliver(MESSAGE, &rcpts, |_, _| Ok::<_, ()>(()))
            .await
            .unwrap();
        assert!(
            matches!(
                out,
                Delivery::Deferred {
                    error: RelayError::Down { .. }
                }
            ),
            "{out:?}"
        );
    }

    /// A tiny SMTP server: refuses RCPT for local parts starting with
    /// `bad`, answers DATA with `data_reply`.
    async fn fake_smtp(data_reply: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(fake_session(stream, data_reply));
            }
        });
        port
    }

    async fn fake_session(stream: tokio::net::TcpStream, data_reply: &'static str) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let _ = write.write_all(b"220 fake ESMTP\r\n").await;
        let mut in_data = false;
        while let Ok(Some(line)) = lines.next_line().await {
            let reply: &str = if in_data {
                if line != "." {
                    continue;
                }
                in_data = false;
                data_reply
            } else if line.starts_with("EHLO") {
                "250-fake\r\n250 8BITMIME"
            } else if line.starts_with("RCPT TO:<bad") {
                "550 5.1.1 no such user"
            } else if line == "DATA" {
                in_data = true;
                "354 go ahead"
            } else if line == "QUIT" {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            } else {
                "250 ok"
            };
            let _ = write.write_all(format!("{reply}\r\n").as_bytes()).await;
        }
    }

    fn relay_to(port: u16) -> Relay {
        let mut c = config("127.0.0.1", TlsMode::None);
        c.server.port = port;
        Relay::new(&c).unwrap()
    }

    const MESSAGE: &[u8] = b"Subject: x\r\n\r\nbody\r\n";

    #[tokio::test]
    async fn a_refused_recipient_falls_back_to_one_transaction_each() {
        let relay = relay_to(fake_smtp("250 2.0.0 queued").await);
        let rcpts: Vec<String> = [
            "ana@vendor.example",
            "bad@vendor.example",
            "ben@vendor.example",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut reported = Vec::new();
        let out = relay
            .deliver(MESSAGE, &rcpts, |r, _| {
                reported.push(r.to_owned());
                Ok::<_, ()>(())
            })
            .await
            .unwrap();
        let Delivery::Accepted {
            accepted,
            refused,
            reply,
        } = out
        else {
            panic!("expected a partial delivery, got {out:?}");
        };
        assert_eq!(accepted, ["ana@vendor.example", "ben@vendor.example"]);
        assert_eq!(reported, accepted);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, "bad@vendor.example");
        assert!(refused[0].1.starts_with("550"), "{}", refused[0].1);
        assert_eq!(reply, "250 2.0.0 queued");
    }

    #[tokio::test]
    async fn all_refused_is_permanent() {
        let relay = relay_to(fake_smtp("250 queued").await);
        let rcpts = vec![
            "bad1@vendor.example".to_owned(),
            "bad2@vendor.example".to_owned(),
        ];
        let out = relay
            .deliver(MESSAGE, &rcpts, |_, _| Ok::<_, ()>(()))
            .await
            .unwrap();
        assert!(matches!(out, Delivery::Refused { ref refused, .. } if refused.len() == 2));
    }

    #[tokio::test]
    async fn a_4xx_at_data_is_deferred() {
        let relay = relay_to(fake_smtp("451 4.3.0 try later").await);
        let rcpts = vec!["ana@vendor.example".to_owned()];
        let out = relay
            .deliver(MESSAGE, &rcpts, |_, _| Ok::<_, ()>(()))
            .await
            .unwrap();
        let Delivery::Deferred { error } = out else {
            panic!("expected a deferral, got {out:?}");
        };
        assert!(error.reply().starts_with("451"), "{}", error.reply());
    }

    #[tokio::test]
    async fn a_callback_error_stops_the_delivery() {
        let relay = relay_to(fake_smtp("250 queued").await);
        let rcpts = vec![
            "ana@vendor.example".to_owned(),
            "bad@vendor.example".to_owned(),
        ];
        let out = relay
            .deliver(MESSAGE, &rcpts, |_, _| Err("journal full"))
            .await;
        assert_eq!(out.unwrap_err(), "journal full");
    }

    /// A relay that offers no STARTTLS must not see a message.
    #[tokio::test]
    async fn starttls_is_never_downgraded() {
        let port = fake_smtp("250 queued").await;
        let mut c = config("127.0.0.1", TlsMode::Starttls);
        c.server.port = port;
        let relay = Relay::new(&c).unwrap();
        let rcpts = vec!["ana@vendor.example".to_owned()];
        let out = relay
            .deliver(MESSAGE, &rcpts, |_, _| Ok::<_, ()>(()))
            .await
            .unwrap();
        let Delivery::Deferred { error } = out else {
            panic!("expected a refusal to go on, got {out:?}");
        };
        assert!(error.is_setup_problem(), "{error}");
        assert!(error.to_string().contains("STARTTLS"), "{error}");
    }
}
