//! The file as written: serde structs that refuse unknown keys and keep
//! the span of every value that validation may need to point at.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// The keys a section may have, for reporting every unknown key at once.
pub trait Keys {
    /// Every key serde accepts in the section.
    const KEYS: &'static [&'static str];
}

/// `tls = "..."` as written.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    Implicit,
    Starttls,
    None,
}

/// `from_mode = "..."` as written.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FromMode {
    Rewrite,
    Keep,
}

/// `auth = "..."` as written.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    Password,
    Oauth2,
}

/// `provider = "..."` in an `[oauth2]` table, as written.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Microsoft,
    Google,
}

/// `[oauth2]`, `[inbox.oauth2]` or `[relay.oauth2]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    pub provider: Option<Spanned<Provider>>,
    pub tenant: Option<Spanned<String>>,
    pub token_url: Option<Spanned<String>>,
    pub client_id: Option<Spanned<String>>,
    pub client_secret_file: Option<Spanned<PathBuf>>,
    pub refresh_token_file: Option<Spanned<PathBuf>>,
    pub scopes: Option<Vec<String>>,
}

/// `[inbox]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbox {
    pub server: Spanned<String>,
    pub auth: Option<Spanned<Auth>>,
    pub oauth2: Option<OAuth2>,
    pub port: Option<u16>,
    pub tls: Option<Spanned<Tls>>,
    pub ca_file: Option<Spanned<PathBuf>>,
    pub user: Option<String>,
    pub password: Option<Spanned<String>>,
    pub password_file: Option<Spanned<PathBuf>>,
    pub password_env: Option<Spanned<String>>,
    pub folder: Option<String>,
    pub done_folder: Option<String>,
    pub hold_folder: Option<String>,
    pub poll_interval: Option<Spanned<String>>,
}

/// `[relay]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    pub server: Spanned<String>,
    pub auth: Option<Spanned<Auth>>,
    pub oauth2: Option<OAuth2>,
    pub port: Option<u16>,
    pub tls: Option<Spanned<Tls>>,
    pub ca_file: Option<Spanned<PathBuf>>,
    pub user: Option<String>,
    pub password: Option<Spanned<String>>,
    pub password_file: Option<Spanned<PathBuf>>,
    pub password_env: Option<Spanned<String>>,
    pub from: Spanned<String>,
    pub from_mode: Option<FromMode>,
    pub connections: Option<Spanned<usize>>,
}

/// `[daemon]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daemon {
    pub state_dir: Option<PathBuf>,
}

/// `[http]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub enabled: Option<bool>,
    pub listen: Option<Spanned<String>>,
}

/// `[routing]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    pub default_pod: Option<Spanned<String>>,
    pub default_region: Option<Spanned<String>>,
    pub storm_limit: Option<usize>,
    pub storm_window: Option<Spanned<String>>,
    pub ack_interval: Option<Spanned<String>>,
}

/// `[pods.KEY]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    pub name: Option<String>,
    pub members: Spanned<Vec<Spanned<String>>>,
    pub phone: Option<Spanned<String>>,
    pub ack: Option<bool>,
    pub ack_template: Option<Spanned<String>>,
    pub ack_interval: Option<Spanned<String>>,
    pub respond_within: Option<Spanned<String>>,
    pub business_hours: Option<Spanned<String>>,
    pub time_zone: Option<Spanned<String>>,
    pub escalate_to: Option<Spanned<String>>,
}

/// `[voicemail]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Voicemail {
    #[serde(default)]
    pub senders: Vec<Spanned<String>>,
    pub pattern: Option<Spanned<String>>,
    pub field: Option<Spanned<String>>,
}

/// `[clients.KEY]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    pub name: Option<String>,
    pub pod: Spanned<String>,
    #[serde(default)]
    pub domains: Vec<Spanned<String>>,
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
    #[serde(default)]
    pub phones: Vec<Spanned<String>>,
}

impl Keys for Inbox {
    const KEYS: &'static [&'static str] = &[
        "server",
        "port",
        "tls",
        "ca_file",
        "user",
        "password",
        "password_file",
        "password_env",
        "auth",
        "oauth2",
        "folder",
        "done_folder",
        "hold_folder",
        "poll_interval",
    ];
}

impl Keys for Relay {
    const KEYS: &'static [&'static str] = &[
        "server",
        "port",
        "tls",
        "ca_file",
        "user",
        "password",
        "password_file",
        "password_env",
        "auth",
        "oauth2",
        "from",
        "from_mode",
        "connections",
    ];
}

impl Keys for OAuth2 {
    const KEYS: &'static [&'static str] = &[
        "provider",
        "tenant",
        "token_url",
        "client_id",
        "client_secret_file",
        "refresh_token_file",
        "scopes",
    ];
}

impl Keys for Daemon {
    const KEYS: &'static [&'static str] = &["state_dir"];
}

impl Keys for Http {
    const KEYS: &'static [&'static str] = &["enabled", "listen"];
}

impl Keys for Routing {
    const KEYS: &'static [&'static str] = &[
        "default_pod",
        "default_region",
        "storm_limit",
        "storm_window",
        "ack_interval",
    ];
}

impl Keys for Pod {
    const KEYS: &'static [&'static str] = &[
        "name",
        "members",
        "phone",
        "ack",
        "ack_template",
        "ack_interval",
        "respond_within",
        "business_hours",
        "time_zone",
        "escalate_to",
    ];
}

impl Keys for Voicemail {
    const KEYS: &'static [&'static str] = &["senders", "pattern", "field"];
}

impl Keys for Client {
    const KEYS: &'static [&'static str] = &["name", "pod", "domains", "addresses", "phones"];
}
