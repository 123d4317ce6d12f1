//! IMAP in: the shared support mailbox, watched with async-imap.
//!
//! [`Inbox::connect`] opens the connection (implicit TLS, STARTTLS, or
//! plaintext to loopback only), logs in, creates `done_folder` and
//! `hold_folder` when they are missing and selects `folder`. The daemon
//! then lists UIDs, fetches raw messages in batches with `BODY.PEEK[]`
//! (nothing is marked seen), files them with `UID MOVE`, and waits for
//! new mail with IDLE, or by polling when the server has no IDLE.
//!
//! STARTTLS is never downgraded: a server that does not offer it is
//! refused. Without MOVE, a message is filed with COPY, `\Deleted` and
//! `UID EXPUNGE` of exactly those UIDs (UIDPLUS). A server with neither
//! MOVE nor UIDPLUS gets COPY and `\Deleted` only: a plain EXPUNGE would
//! also remove mail other people marked deleted, so the copies stay
//! flagged until someone expunges them; [`Inbox::uids`] skips them. In
//! that fallback a crash between COPY and EXPUNGE leaves the message in
//! both folders; the journal files it again without relaying it, so the
//! destination may hold a second copy.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::time::Duration;

use async_imap::imap_proto::{Capability, Response, Status};
use async_imap::{Client, Session};
use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Auth, InboxConfig, OAuth2Config, Secret, Server, TlsMode};
use crate::oauth;
use crate::tls::{self, TlsError};

/// How long connecting, logging in or one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long fetching one batch may take (bodies can be large).
const FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// Why the inbox could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// What the OS said.
        source: io::Error,
    },
    /// A step took longer than its bound.
    #[error("imap {what} timed out")]
    Timeout {
        /// The step.
        what: &'static str,
    },
    /// The trust anchors could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The TLS handshake failed (e.g. the certificate was not trusted).
    #[error("tls handshake with {host} failed: {source}")]
    Handshake {
        /// The host.
        host: String,
        /// What rustls said.
        source: io::Error,
    },
    /// `tls = "none"` names a host that is not this machine.
    #[error("refusing plaintext IMAP to {host}: tls = \"none\" is only allowed to loopback")]
    PlaintextNotLoopback {
        /// The host.
        host: String,
    },
    /// `tls = "starttls"` but the server does not offer STARTTLS.
    #[error("{host} does not offer STARTTLS; refusing to log in without TLS")]
    NoStartTls {
        /// The host.
        host: String,
    },
    /// The server refused the login.
    #[error("{host} refused the login of {user}: {reason}")]
    Login {
        /// The host.
        host: String,
        /// The login name.
        user: String,
        /// The server's answer.
        reason: String,
        /// The server called it temporary (`[UNAVAILABLE]`).
        temporary: bool,
    },
    /// A folder could not be selected or created.
    #[error("folder {folder:?}: {reason}")]
    Folder {
        /// The folder.
        folder: String,
        /// What went wrong.
        reason: String,
    },
    /// The server's greeting was not OK, or a reply made no sense.
    #[error("imap server: {0}")]
    Protocol(String),
    /// No OAuth2 access token could be had (logged by the token source).
    #[error("oauth2: {0}")]
    OAuth(#[from] crate::oauth::OAuthError),
    /// Any other IMAP failure (lost connection, NO or BAD to a command).
    #[error("imap: {0}")]
    Imap(#[from] async_imap::error::Error),
}

impl InboxError {
    /// Whether retrying cannot help until a person changes something:
    /// trust, TLS, credentials or folders.
    pub fn is_permanent(&self) -> bool {
        match self {
            InboxError::Tls(_)
            | InboxError::Handshake { .. }
            | InboxError::PlaintextNotLoopback { .. }
            | InboxError::NoStartTls { .. }
            | InboxError::Folder { .. } => true,
            InboxError::Login { temporary, .. } => !temporary,
            _ => false,
        }
    }
}

/// A byte stream IMAP can run over: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> Io for T {}

/// The connection type, whatever the TLS mode.
type Stream = Box<dyn Io>;

/// Why [`Inbox::wait`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The server reported a change in the folder.
    Changed,
    /// The wait's bound passed (IDLE refresh, poll interval, a retry due).
    Timeout,
    /// The caller's interrupt fired (reload or shutdown).
    Interrupted,
}

/// What the server can do, from CAPABILITY after login.
#[derive(Clone, Copy, Debug, Default)]
struct Caps {
    idle: bool,
    mv: bool,
    uidplus: bool,
}

/// A logged-in connection with `folder` selected.
pub struct Inbox {
    /// The session; `None` only while IDLE holds it, or after it broke.
    session: Option<Session<Stream>>,
    /// The settings it was opened with.
    config: InboxConfig,
    /// What the server supports.
    caps: Caps,
    /// The selected folder's UIDVALIDITY.
    uidvalidity: u32,
    /// `user@host/folder`, naming this inbox in the journal.
    label: String,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("label", &self.label)
            .field("uidvalidity", &self.uidvalidity)
            .finish()
    }
}

/// Runs an IMAP step with a time bound.
async fn bounded<T, E>(
    what: &'static str,
    limit: Duration,
    step: impl Future<Output = Result<T, E>>,
) -> Result<T, InboxError>
where
    InboxError: From<E>,
{
    match tokio::time::timeout(limit, step).await {
        Ok(result) => result.map_err(InboxError::from),
        Err(_) => Err(InboxError::Timeout { what }),
    }
}

/// Formats UIDs as an IMAP sequence set, joining runs: `1:3,7,9:10`.
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// One body per requested UID, in UID order. Some servers (Gmail) send a
/// FETCH response twice for one message, one copy possibly empty; the
/// longest body wins, and UIDs not asked for are ignored.
fn one_body_per_uid<'a>(
    bodies: impl Iterator<Item = (u32, &'a [u8])>,
    asked: &[u32],
) -> Vec<(u32, Vec<u8>)> {
    let mut best: BTreeMap<u32, &[u8]> = BTreeMap::new();
    for (uid, body) in bodies.filter(|(uid, _)| asked.contains(uid)) {
        let slot = best.entry(uid).or_default();
        if body.len() > slot.len() {
            *slot = body;
        }
    }
    best.into_iter()
        .map(|(uid, body)| (uid, body.to_vec()))
        .collect()
}

/// A NO or BAD to a folder command is about the folder (a person must
/// look); anything else (a lost connection) stays as it is.
fn refused(e: InboxError, folder: &str, what: &str) -> InboxError {
    use async_imap::error::Error;
    match e {
        InboxError::Imap(Error::No(reply) | Error::Bad(reply)) => InboxError::Folder {
            folder: folder.to_owned(),
            reason: format!("{what}: {reply}"),
        },
        other => other,
    }
}

/// Quotes a mailbox name as an IMAP quoted string.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Inbox {
    /// Connects, logs in, makes sure the folders exist and selects `folder`.
    pub async fn connect(config: &InboxConfig) -> Result<Inbox, InboxError> {
        let server = &config.server;
        let client = bounded("connect", COMMAND_TIMEOUT, open(server)).await?;
        let session = bounded("login", COMMAND_TIMEOUT, login(client, server)).await?;
        let user = server.user.as_deref().unwrap_or("");
        let mut inbox = Inbox {
            session: Some(session),
            config: config.clone(),
            caps: Caps::default(),
            uidvalidity: 0,
            label: format!("{user}@{}/{}", server.host, config.folder),
        };
        inbox.caps = inbox.capabilities().await?;
        inbox.ensure_folder(&config.done_folder).await?;
        inbox.ensure_folder(&config.hold_folder).await?;
        inbox.select().await?;
        Ok(inbox)
    }

    /// The settings this connection was opened with.
    pub fn config(&self) -> &InboxConfig {
        &self.config
    }

    /// The selected folder's UIDVALIDITY.
    pub fn uidvalidity(&self) -> u32 {
        self.uidvalidity
    }

    /// `user@host/folder`: which inbox this is, for the journal.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the server supports IDLE (otherwise the daemon polls).
    pub fn has_idle(&self) -> bool {
        self.caps.idle
    }

    /// The session, unless IDLE failed and took it with it.
    fn session(&mut self) -> Result<&mut Session<Stream>, InboxError> {
        self.session
            .as_mut()
            .ok_or_else(|| InboxError::Protocol("the connection was lost during IDLE".into()))
    }

    async fn capabilities(&mut self) -> Result<Caps, InboxError> {
        let session = self.session()?;
        let caps = bounded("capability", COMMAND_TIMEOUT, session.capabilities()).await?;
        Ok(Caps {
            idle: caps.has_str("IDLE"),
            mv: caps.has_str("MOVE"),
            uidplus: caps.has_str("UIDPLUS"),
        })
    }

    /// Creates `folder` unless LIST shows it.
    async fn ensure_folder(&mut self, folder: &str) -> Result<(), InboxError> {
        let session = self.session()?;
        let pattern = quoted(folder);
        let listed = bounded("list", COMMAND_TIMEOUT, async {
            let names = session.list(Some(""), Some(&pattern)).await?;
            names.try_collect::<Vec<_>>().await
        })
        .await?;
        if !listed.is_empty() {
            return Ok(());
        }
        bounded("create", COMMAND_TIMEOUT, session.create(folder))
            .await
            .map_err(|e| refused(e, folder, "cannot create it"))?;
        tracing::info!(folder, "created folder");
        Ok(())
    }

    /// Selects `folder` and reads its UIDVALIDITY.
    async fn select(&mut self) -> Result<(), InboxError> {
        let folder = self.config.folder.clone();
        let session = self.session()?;
        let mailbox = bounded("select", COMMAND_TIMEOUT, session.select(&folder))
            .await
            .map_err(|e| refused(e, &folder, "cannot select it"))?;
        self.uidvalidity = mailbox.uid_validity.ok_or_else(|| InboxError::Folder {
            folder,
            reason: "the server gave no UIDVALIDITY".into(),
        })?;
        Ok(())
    }

    /// The UIDs in `folder` not marked `\Deleted`, in ascending order.
    pub async fn uids(&mut self) -> Result<Vec<u32>, InboxError> {
        let session = self.session()?;
        let found = bounded("search", COMMAND_TIMEOUT, session.uid_search("UNDELETED")).await?;
        let mut uids: Vec<u32> = found.into_iter().collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// Asks the server for news (NOOP). Dovecot reports new mail at once on
    /// NOOP, where its IDLE push waits half a second to gather changes.
    pub async fn check(&mut self) -> Result<(), InboxError> {
        let session = self.session()?;
        bounded("noop", COMMAND_TIMEOUT, session.noop()).await
    }

    /// Fetches the raw bytes of these UIDs, without marking them seen.
    /// Messages that vanished meanwhile are simply missing; a server that
    /// answers twice for one UID yields one body, the longest.
    pub async fn fetch(&mut self, uids: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, InboxError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let set = uid_set(uids);
        let session = self.session()?;
        let fetches = bounded("fetch", FETCH_TIMEOUT, async {
            let stream = session.uid_fetch(&set, "(UID BODY.PEEK[])").await?;
            stream.try_collect::<Vec<_>>().await
        })
        .await?;
        Ok(one_body_per_uid(
            fetches.iter().filter_map(|f| Some((f.uid?, f.body()?))),
            uids,
        ))
    }

    /// Moves these UIDs to `folder`.
    pub async fn file(&mut self, uids: &[u32], folder: &str) -> Result<(), InboxError> {
        if uids.is_empty() {
            return Ok(());
        }
        let set = uid_set(uids);
        let caps = self.caps;
        let session = self.session()?;
        if caps.mv {
            return bounded("move", COMMAND_TIMEOUT, session.uid_mv(&set, folder)).await;
        }
        bounded("copy", COMMAND_TIMEOUT, session.uid_copy(&set, folder)).await?;
        bounded("store", COMMAND_TIMEOUT, async {
            let updates = session.uid_store(&set, "+FLAGS.SILENT (\\Deleted)").await?;
            updates.try_collect::<Vec<_>>().await
        })
        .await?;
        if caps.uidplus {
            bounded("expunge", COMMAND_TIMEOUT, async {
                let gone = session.uid_expunge(&set).await?;
                gone.try_collect::<Vec<_>>().await
            })
            .await?;
        }
        Ok(())
    }

    /// Waits until the folder changes, `max` passes, or `interrupt` fires.
    ///
    /// With IDLE the server reports changes at once; without it this
    /// sleeps for `poll_interval` (or `max`, if shorter). A server that
    /// drops the connection during IDLE leaves the inbox unusable: the
    /// error says so and the caller reconnects.
    pub async fn wait(
        &mut self,
        max: Duration,
        interrupt: impl Future<Output = ()>,
    ) -> Result<Wake, InboxError> {
        if !self.caps.idle {
            let nap = max.min(self.config.poll_interval);
            return Ok(tokio::select! {
                () = tokio::time::sleep(nap) => Wake::Timeout,
                () = interrupt => Wake::Interrupted,
            });
        }
        let session = self
            .session
            .take()
            .ok_or_else(|| InboxError::Protocol("the connection was lost during IDLE".into()))?;
        let mut idle = session.idle();
        bounded("idle", COMMAND_TIMEOUT, idle.init()).await?;
        let wake = {
            // The server's keep-alives restart async-imap's own timeout, so
            // the bound is a separate sleep.
            let (changes, _stop) = idle.wait_with_timeout(max + COMMAND_TIMEOUT);
            tokio::select! {
                r = changes => match r? {
                    async_imap::extensions::idle::IdleResponse::NewData(_) => Wake::Changed,
                    _ => Wake::Timeout,
                },
                () = tokio::time::sleep(max) => Wake::Timeout,
                () = interrupt => Wake::Interrupted,
            }
        };
        let session = bounded("idle done", COMMAND_TIMEOUT, idle.done()).await?;
        self.session = Some(session);
        Ok(wake)
    }

    /// Says goodbye to the server (best effort, bounded).
    pub async fn logout(mut self) {
        if let Some(session) = self.session.as_mut() {
            if let Err(e) = bounded("logout", COMMAND_TIMEOUT, session.logout()).await {
                tracing::debug!(error = %e, "logout failed");
            }
        }
    }
}

/// Opens the connection in the configured TLS mode and reads the greeting.
async fn open(server: &Server) -> Result<Client<Stream>, InboxError> {
    let tcp = tcp_connect(server).await?;
    let stream: Stream = match server.tls {
        TlsMode::Implicit => Box::new(tls_connect(server, tcp).await?),
        TlsMode::Starttls => {
            let plain = starttls(server, tcp).await?;
            return Ok(Client::new(Box::new(tls_connect(server, plain).await?)));
        }
        TlsMode::None if tls::is_loopback_host(&server.host) => Box::new(tcp),
        TlsMode::None => {
            return Err(InboxError::PlaintextNotLoopback {
                host: server.host.clone(),
            })
        }
    };
    let mut client = Client::new(stream);
    read_greeting(&mut client).await?;
    Ok(client)
}

async fn tcp_connect(server: &Server) -> Result<TcpStream, InboxError> {
    if server.tls == TlsMode::None && !tls::is_loopback_host(&server.host) {
        return Err(InboxError::PlaintextNotLoopback {
            host: server.host.clone(),
        });
    }
    let addr = format!("{}:{}", server.host, server.port);
    let host = server.host.trim_start_matches('[').trim_end_matches(']');
    TcpStream::connect((host, server.port))
        .await
        .map_err(|source| InboxError::Connect { addr, source })
}

async fn tls_connect(server: &Server, tcp: TcpStream) -> Result<tls::TlsStream, InboxError> {
    tls::connect(server.ca_file.as_deref(), &server.host, tcp)
        .await
        .map_err(|e| match e {
            tls::ConnectError::Setup(e) => InboxError::Tls(e),
            tls::ConnectError::Handshake(source) => InboxError::Handshake {
                host: server.host.clone(),
                source,
            },
            tls::ConnectError::Io(source) => InboxError::Connect {
                addr: format!("{}:{}", server.host, server.port),
                source,
            },
        })
}

/// The greeting must be `* OK`; anything else ends the attempt.
async fn read_greeting<T: Io>(client: &mut Client<T>) -> Result<(), InboxError> {
    let greeting = client
        .read_response()
        .await
        .map_err(|e| InboxError::Imap(e.into()))?
        .ok_or(InboxError::Imap(async_imap::error::Error::ConnectionLost))?;
    match greeting.parsed() {
        Response::Data {
            status: Status::Ok, ..
        } => Ok(()),
        other => Err(InboxError::Protocol(format!(
            "unexpected greeting: {other:?}"
        ))),
    }
}

/// Runs STARTTLS on a plaintext connection and hands the TCP stream back.
///
/// async-imap has no STARTTLS, so the two commands are written here with
/// their own tags, before the client's tags start.
async fn starttls(server: &Server, tcp: TcpStream) -> Result<TcpStream, InboxError> {
    let mut client = Client::new(tcp);
    read_greeting(&mut client).await?;
    let caps = raw_command(&mut client, "P1", "CAPABILITY").await?;
    if !caps.iter().any(|c| c.eq_ignore_ascii_case("STARTTLS")) {
        return Err(InboxError::NoStartTls {
            host: server.host.clone(),
        });
    }
    raw_command(&mut client, "P2", "STARTTLS").await?;
    Ok(client.into_inner())
}

/// Sends one tagged command and reads to its completion; returns the
/// capabilities announced on the way, if any.
async fn raw_command<T: Io>(
    client: &mut Client<T>,
    tag: &str,
    command: &str,
) -> Result<Vec<String>, InboxError> {
    let line = format!("{tag} {command}\r\n");
    let stream = client.get_mut();
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(async_imap::error::Error::Io)?;
    stream.flush().await.map_err(async_imap::error::Error::Io)?;
    let mut caps = Vec::new();
    loop {
        let Some(reply) = client
            .read_response()
            .await
            .map_err(async_imap::error::Error::Io)?
        else {
            return Err(async_imap::error::Error::ConnectionLost.into());
        };
        match reply.parsed() {
            Response::Capabilities(list) => caps.extend(list.iter().map(capability_name)),
            Response::Done { tag: t, status, .. } if t.0 == tag => {
                return match status {
                    Status::Ok => Ok(caps),
                    other => Err(InboxError::Protocol(format!(
                        "{command} answered {other:?}"
                    ))),
                };
            }
            _ => {}
        }
    }
}

fn capability_name(c: &Capability<'_>) -> String {
    match c {
        Capability::Imap4rev1 => "IMAP4rev1".to_owned(),
        Capability::Auth(mech) => format!("AUTH={mech}"),
        Capability::Atom(atom) => atom.to_string(),
    }
}

/// Logs in as configured; the error names the user, never the secret.
async fn login(client: Client<Stream>, server: &Server) -> Result<Session<Stream>, InboxError> {
    match &server.auth {
        Auth::Password => password_login(client, server).await,
        Auth::OAuth2(oauth2) => oauth_login(client, server, oauth2).await,
    }
}

/// LOGIN with the password.
async fn password_login(
    client: Client<Stream>,
    server: &Server,
) -> Result<Session<Stream>, InboxError> {
    let user = server.user.clone().unwrap_or_default();
    let password = server.password.as_ref().map(|p| p.expose()).unwrap_or("");
    client
        .login(&user, password)
        .await
        .map_err(|(e, _)| login_error(e, server))
}

/// AUTHENTICATE OAUTHBEARER where the server offers it, else XOAUTH2.
/// A refused token is refreshed once and tried again.
async fn oauth_login(
    mut client: Client<Stream>,
    server: &Server,
    oauth2: &OAuth2Config,
) -> Result<Session<Stream>, InboxError> {
    let source = oauth::source(oauth2)?;
    let caps = raw_command(&mut client, "P3", "CAPABILITY").await?;
    let bearer = caps
        .iter()
        .any(|c| c.eq_ignore_ascii_case("AUTH=OAUTHBEARER"));
    let token = source.token("inbox").await?;
    let (e, client) = match authenticate(client, server, bearer, &token).await {
        Ok(session) => return Ok(session),
        Err(refused) => refused,
    };
    if !matches!(e, async_imap::error::Error::No(_)) {
        return Err(login_error(e, server));
    }
    tracing::warn!(
        host = %server.host,
        reason = %e,
        "imap server refused the oauth2 access token; refreshing it once"
    );
    let token = source.refresh_after("inbox", &token).await?;
    authenticate(client, server, bearer, &token)
        .await
        .map_err(|(e, _)| login_error(e, server))
}

/// One AUTHENTICATE exchange with `token`.
async fn authenticate(
    client: Client<Stream>,
    server: &Server,
    bearer: bool,
    token: &Secret,
) -> Result<Session<Stream>, (async_imap::error::Error, Client<Stream>)> {
    let user = server.user.as_deref().unwrap_or("");
    let (mechanism, response) = if bearer {
        let r = oauth::oauthbearer(user, &server.host, server.port, token);
        ("OAUTHBEARER", r)
    } else {
        ("XOAUTH2", oauth::xoauth2(user, token))
    };
    let sasl = InitialResponse {
        response: Some(response),
    };
    client.authenticate(mechanism, sasl).await
}

/// Answers the first challenge with the SASL initial response, and any
/// later one (an error report) with an empty line, which ends the exchange.
struct InitialResponse {
    response: Option<String>,
}

impl async_imap::Authenticator for InitialResponse {
    type Response = String;

    fn process(&mut self, _challenge: &[u8]) -> String {
        self.response.take().unwrap_or_default()
    }
}

/// A refused login as [`InboxError::Login`], other failures as they are.
fn login_error(e: async_imap::error::Error, server: &Server) -> InboxError {
    let reason = e.to_string();
    match e {
        async_imap::error::Error::No(_) => InboxError::Login {
            host: server.host.clone(),
            temporary: reason.contains("Unavailable"),
            user: server.user.clone().unwrap_or_default(),
            reason,
        },
        other => InboxError::Imap(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_join_runs() {
        assert_eq!(uid_set(&[]), "");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[3, 1, 2, 7, 9, 10, 10]), "1:3,7,9:10");
    }

    #[test]
    fn mailbox_names_are_quoted() {
        assert_eq!(quoted("Routed"), "\"Routed\"");
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn permanent_errors() {
        let host = "imap.vendor.example".to_owned();
        assert!(InboxError::NoStartTls { host: host.clone() }.is_permanent());
        assert!(!InboxError::Timeout { what: "select" }.is_permanent());
        let login = |temporary| InboxError::Login {
            host: host.clone(),
            user: "support".into(),
            reason: "no".into(),
            temporary,
        };
        assert!(login(false).is_permanent());
        assert!(!login(true).is_permanent());
    }

    /// A server that offers no STARTTLS must not see a LOGIN.
    #[tokio::test]
    async fn starttls_is_never_downgraded() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"* OK fake ready\r\n").await.unwrap();
            let mut seen = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let tag = line.split(' ').next().unwrap_or("").to_owned();
                seen.push(line);
                let reply = format!("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n");
                let _ = write.write_all(reply.as_bytes()).await;
            }
            seen
        });
        let config = InboxConfig {
            server: Server {
                host: "127.0.0.1".into(),
                port,
                tls: TlsMode::Starttls,
                ca_file: None,
                user: Some("support".into()),
                password: Some(crate::config::Secret::new("secret")),
                auth: crate::config::Auth::Password,
            },
            folder: "INBOX".into(),
            done_folder: "Routed".into(),
            hold_folder: "Held".into(),
            poll_interval: Duration::from_secs(60),
        };
        let err = Inbox::connect(&config).await.unwrap_err();
        assert!(matches!(err, InboxError::NoStartTls { .. }), "{err}");
        assert!(err.is_permanent());
        let seen = server.await.unwrap();
        assert_eq!(seen, ["P1 CAPABILITY"]);
    }

    #[test]
    fn a_doubled_fetch_yields_one_full_body() {
        let responses: Vec<(u32, &[u8])> = vec![
            (1, b""),
            (1, b"From: a\r\n\r\nx"),
            (2, b"From: b\r\n\r\ny"),
            (2, b"From: b\r\n\r\ny"),
            (3, b"From: c\r\n\r\nz"),
            (3, b""),
            (9, b"not asked for"),
        ];
        let got = one_body_per_uid(responses.into_iter(), &[1, 2, 3]);
        let uids: Vec<u32> = got.iter().map(|(u, _)| *u).collect();
        assert_eq!(uids, [1, 2, 3]);
        assert!(got.iter().all(|(_, body)| body.starts_with(b"From: ")));
    }
}
