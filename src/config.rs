//! `routing.toml`: raw TOML first, then validation into a [`Config`].
//!
//! Loading has two stages. [`raw`] mirrors the file with serde, refusing
//! unknown keys and remembering where each value sat. [`validate`] then
//! checks it as a whole and builds the routing index. Every problem found
//! is reported, each with `file:line:column`, so one run of
//! `podrouter check` shows all of them. The same [`load`] serves `check`,
//! start-up and reload.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;

use crate::route::RoutingTable;

mod raw;
mod validate;

pub use validate::endpoint_allowed;

pub(crate) use validate::read_secret_file;

/// How a connection to a mail server is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Implicit,
    /// Plaintext greeting, then STARTTLS; refused if the server lacks it.
    Starttls,
    /// No encryption at all; only allowed to a loopback server.
    None,
}

/// Which From a relayed message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FromMode {
    /// From becomes `"<sender> via <pod>" <relay.from>`; Reply-To keeps the client.
    Rewrite,
    /// The original bytes go out unchanged (apart from trace headers and CRLF).
    Keep,
}

/// A password or token. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it to a server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How podrouter signs in to a server (`auth = "..."`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `auth = "password"` (the default): LOGIN on IMAP, PLAIN or LOGIN on
    /// SMTP, with `password*`; on SMTP without a user, no AUTH at all.
    Password,
    /// `auth = "oauth2"`: XOAUTH2 or OAUTHBEARER with an access token.
    OAuth2(OAuth2Config),
}

/// An OAuth2 client: where access tokens come from, for one side or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuth2Config {
    /// The preset the table names, if any; `authorize` uses its device URL.
    pub provider: Option<crate::oauth::Provider>,
    /// The token endpoint (`token_url`, or the preset's).
    pub token_url: String,
    /// The registered application's id (`client_id`).
    pub client_id: String,
    /// `client_secret_file`'s content; `None` for a public client.
    pub client_secret: Option<Secret>,
    /// Holds the refresh token; rewritten when the provider rotates it.
    pub refresh_token_file: PathBuf,
    /// Scopes asked for at each refresh (`scopes`, or the preset's).
    pub scopes: Vec<String>,
}

/// One mail server connection (`[inbox]` or `[relay]`), as both share these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// Host name (also the name checked in the server's certificate).
    pub host: String,
    /// TCP port; the default follows `tls`.
    pub port: u16,
    /// How the connection is secured.
    pub tls: TlsMode,
    /// An extra trust anchor (PEM) added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Login name; `None` for a relay without AUTH.
    pub user: Option<String>,
    /// Password read from `password_file`, `password_env` or inline.
    pub password: Option<Secret>,
    /// Password or OAuth2 (`auth`).
    pub auth: Auth,
}

/// `[inbox]`: the shared support mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxConfig {
    /// Where and how to connect.
    pub server: Server,
    /// The folder watched for new mail.
    pub folder: String,
    /// Where relayed and skipped mail is filed.
    pub done_folder: String,
    /// Where mail a person must look at is filed.
    pub hold_folder: String,
    /// How often to poll when the server has no IDLE.
    pub poll_interval: Duration,
}

/// `[relay]`: the SMTP server podrouter relays through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    /// Where and how to connect.
    pub server: Server,
    /// Envelope sender, and the From of rewritten mail (addr-spec).
    pub from: String,
    /// Whether From is rewritten or kept.
    pub from_mode: FromMode,
    /// How many SMTP connections to keep open at once.
    pub connections: usize,
}

/// `routing.storm_limit` and `routing.storm_window`: how many messages one
/// sender may have relayed within the window before the rest are held
/// (an auto-responder storm). A limit of 0 turns the check off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StormConfig {
    /// Messages relayed per sender within `window`; 0 means no limit.
    pub limit: usize,
    /// The sliding window the messages are counted in.
    pub window: Duration,
}

impl Default for StormConfig {
    fn default() -> Self {
        StormConfig {
            limit: 20,
            window: Duration::from_secs(600),
        }
    }
}

/// `[daemon]`: where the service keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Folder holding the journal (SQLite); overridden by `--state-dir`.
    pub state_dir: PathBuf,
}

/// `[http]`: the metrics, health and status endpoint of `podrouter run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Whether the daemon listens at all (`enabled`, default true).
    pub enabled: bool,
    /// Where it listens (`listen`, default `127.0.0.1:9187`); port 0 takes
    /// any free port, which the daemon logs.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9187)),
        }
    }
}

/// One pod member: a technician or a distribution list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Display name, when the entry had one.
    pub name: Option<String>,
    /// Mail address (addr-spec, domain in A-label form).
    pub address: String,
}

/// `[pods.KEY]`: a team of technicians.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// The table key.
    pub key: String,
    /// Human name, e.g. "POD 1: Alberta towns".
    pub name: String,
    /// Who receives the pod's mail.
    pub members: Vec<Member>,
    /// The pod's hunt group in E.164, the number a PBX rings for callers
    /// of the pod's clients (`phone = "..."`).
    pub phone: Option<String>,
    /// `ack = true`: a client writing to this pod gets an acknowledgement
    /// naming the pod and its people ([`crate::ack`]).
    pub ack: bool,
    /// `ack_template`, or [`crate::ack::DEFAULT_TEMPLATE`].
    pub ack_template: String,
    /// At most one acknowledgement per sender within this long: the pod's
    /// `ack_interval`, else `routing.ack_interval`, else one day.
    pub ack_interval: Duration,
    /// `respond_within` and its calendar; `None`: threads never escalate.
    pub respond: Option<Respond>,
}

impl Pod {
    /// Whether `address` (normalised) is one of the pod's members.
    pub fn has_member(&self, address: &str) -> bool {
        self.members.iter().any(|m| m.address == address)
    }
}

/// When a pod's unanswered threads are escalated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Respond {
    /// `respond_within`: business time a thread may wait for a first reply.
    pub within: Duration,
    /// `business_hours`; `None` counts every hour of every day.
    pub hours: Option<crate::escalation::BusinessHours>,
    /// `time_zone` the business hours are read in (UTC when not given).
    pub time_zone: jiff::tz::TimeZone,
    /// `escalate_to`: an address that also gets the escalated copy.
    pub escalate_to: Option<String>,
}

/// Where a configured voicemail `pattern` looks for the caller's number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoicemailField {
    /// The decoded Subject.
    Subject,
    /// The first text part, its first 64 KiB.
    Body,
    /// One top-level header, decoded; holds its name.
    Header(String),
}

/// `[voicemail]`: how voicemail notifications are told apart and where
/// their caller's number is read.
#[derive(Clone, Debug)]
pub struct VoicemailConfig {
    /// Normalised From addresses whose mail is voicemail (the PBXs).
    pub senders: Vec<String>,
    /// Normalised domains whose mail is voicemail, subdomains included
    /// (`senders` entries without `@`: FreeSWITCH writes the caller's
    /// number as the local part).
    pub sender_domains: Vec<String>,
    /// A site's own pattern for the caller's number: the capture group
    /// `number`, else the first group. Tried before the built-in formats.
    pub pattern: Option<Regex>,
    /// Where `pattern` looks.
    pub field: VoicemailField,
}

/// `[clients.KEY]`: one customer and the pod that serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// The table key.
    pub key: String,
    /// Human name, e.g. "Town of Sunnyvale".
    pub name: String,
    /// The pod's key.
    pub pod: String,
    /// Normalised domains (A-label, lowercase); each covers its subdomains.
    pub domains: Vec<String>,
    /// Normalised exact addresses.
    pub addresses: Vec<String>,
    /// Phone numbers in E.164.
    pub phones: Vec<String>,
}

/// A validated `routing.toml`.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[inbox]`; required by `run`, optional for offline commands.
    pub inbox: Option<InboxConfig>,
    /// `[relay]`; required by `run`, optional for offline commands.
    pub relay: Option<RelayConfig>,
    /// `[daemon]` settings.
    pub daemon: DaemonConfig,
    /// `[http]` settings.
    pub http: HttpConfig,
    /// `routing.default_pod`: where unmatched mail goes; hold without it.
    pub default_pod: Option<String>,
    /// `routing.default_region`: how national phone numbers are read.
    pub default_region: Option<String>,
    /// `routing.storm_limit` and `routing.storm_window`.
    pub storm: StormConfig,
    /// `[voicemail]`, when the table has one. Without it, only mail with
    /// Asterisk's or Exchange's voicemail headers is read as voicemail.
    pub voicemail: Option<VoicemailConfig>,
    /// `routing.ack_interval`: the default of every pod's `ack_interval`.
    pub ack_interval: Duration,
    /// Pods by key.
    pub pods: BTreeMap<String, Pod>,
    /// Clients by key.
    pub clients: BTreeMap<String, Client>,
    /// The lookup index built from `clients`.
    pub table: RoutingTable,
    /// Non-fatal findings (e.g. an inline password), for `check` to print.
    pub warnings: Vec<String>,
}

/// One problem in a config file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// 1-based line and column, when known.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, in one sentence.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Everything wrong with a config file; never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![Problem {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    validate::from_str(&text, path)
}

/// Validates config text as if it had been read from `path` (for tests and
/// for checking a table before it is written).
pub fn from_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    validate::from_str(text, path)
}

impl Config {
    /// The pod a client belongs to.
    pub fn pod(&self, key: &str) -> Option<&Pod> {
        self.pods.get(key)
    }

    /// The pods `address` (normalised) is a member of, in key order.
    pub fn member_pods(&self, address: &str) -> Vec<&Pod> {
        self.pods
            .values()
            .filter(|p| p.has_member(address))
            .collect()
    }

    /// Whether any pod escalates unanswered threads.
    pub fn escalates(&self) -> bool {
        self.pods.values().any(|p| p.respond.is_some())
    }
}
