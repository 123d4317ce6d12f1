//! Checks a parsed `routing.toml` as a whole and builds the [`Config`].
//!
//! Every problem is collected rather than returned at the first, so one
//! run shows the operator all of them, each at its file:line:column.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::raw;
use super::{
    Auth, Client, Config, ConfigError, DaemonConfig, FromMode, HttpConfig, InboxConfig, Member,
    OAuth2Config, Pod, Problem, RelayConfig, Respond, Secret, Server, StormConfig, TlsMode,
    VoicemailConfig, VoicemailField,
};
use crate::address::{normalize_address, normalize_domain, split_mailbox};
use crate::oauth::Provider;
use crate::phone;
use crate::route::{Claimed, RoutingTable};

/// Where the journal lives when `[daemon] state_dir` is not set.
const DEFAULT_STATE_DIR: &str = "/var/lib/podrouter";

/// `ack_interval` when neither the pod nor `[routing]` sets one.
const DEFAULT_ACK_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// How many SMTP connections the relay opens when not told.
const DEFAULT_CONNECTIONS: usize = 4;

/// The longest duration a table may give (storm windows and intervals
/// beyond a year are typing mistakes, and reach back before 1970).
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// The most memory a compiled voicemail `pattern` may take, in bytes.
/// The `regex` crate matches in linear time whatever the pattern; this
/// bounds its size as well.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Parses and validates config text read from `path`.
pub fn from_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut v = Validator {
        text,
        path,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let sections = v.parse_sections();
    let config = v.build(sections);
    if v.problems.is_empty() {
        let mut config = config;
        config.warnings = v.warnings;
        return Ok(config);
    }
    v.problems.sort_by_key(|p| (p.line, p.column));
    v.problems.dedup();
    Err(ConfigError {
        problems: v.problems,
    })
}

/// The sections of the file, each deserialized on its own so that an error
/// in one does not hide the errors in the others.
#[derive(Default)]
struct Sections {
    inbox: Option<raw::Inbox>,
    relay: Option<raw::Relay>,
    daemon: raw::Daemon,
    http: raw::Http,
    routing: raw::Routing,
    voicemail: Option<raw::Voicemail>,
    /// `[oauth2]`: the OAuth2 client both sides use unless they have their own.
    oauth2: Option<raw::OAuth2>,
    /// Pods in file order.
    pods: Vec<Keyed<raw::Pod>>,
    /// Clients in file order.
    clients: Vec<Keyed<raw::Client>>,
}

/// One `[pods.KEY]` or `[clients.KEY]` entry as written.
struct Keyed<T> {
    key: String,
    /// Where the key is written.
    span: Range<usize>,
    /// The key's place in sorted order, so that a map of 100,000 results is
    /// built without comparing keys again.
    rank: usize,
    value: T,
}

/// Collects problems and warnings while checking one file.
struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Validator<'_> {
    /// Records a problem at a byte range of the file.
    fn problem(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.problems.push(Problem {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        });
    }

    /// Records a warning at a byte range of the file.
    fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        let at = format!("{}:{line}:{column}", self.path.display());
        self.warnings.push(format!("{at}: {}", message.into()));
    }

    /// Records a TOML or serde error, which carries its own span.
    fn toml_error(&mut self, error: &toml::de::Error) {
        let span = error.span().unwrap_or(0..0);
        let message = error.message().trim().to_string();
        self.problem(span, message);
    }

    /// Deserializes one section, recording a problem when it does not fit.
    ///
    /// Unknown keys are reported one by one and then left out, so that a
    /// misspelt key does not hide the problems in the rest of the section.
    /// The value is moved out of the parsed document rather than cloned:
    /// with 100,000 clients the copies cost as much as the parse.
    fn section<T: DeserializeOwned + raw::Keys>(
        &mut self,
        mut value: Spanned<DeValue<'_>>,
    ) -> Option<T> {
        if let DeValue::Table(table) = value.get_mut() {
            let unknown: Vec<_> = table
                .keys()
                .filter(|k| !T::KEYS.contains(&k.get_ref().as_ref()))
                .cloned()
                .collect();
            for key in unknown {
                let msg = format!(
                    "unknown key `{}`, expected one of {}",
                    key.get_ref(),
                    T::KEYS
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.problem(key.span(), msg);
                table.remove(&key);
            }
        }
        T::deserialize(ValueDeserializer::from(value))
            .map_err(|e| self.toml_error(&e))
            .ok()
    }

    /// Splits the document into its sections.
    fn parse_sections(&mut self) -> Sections {
        let (root, errors) = DeTable::parse_recoverable(self.text);
        for e in &errors {
            self.toml_error(e);
        }
        let mut s = Sections::default();
        for (key, value) in root.into_inner() {
            match key.get_ref().as_ref() {
                "inbox" => s.inbox = self.section(value),
                "relay" => s.relay = self.section(value),
                "daemon" => s.daemon = self.section(value).unwrap_or_default(),
                "http" => s.http = self.section(value).unwrap_or_default(),
                "routing" => s.routing = self.section(value).unwrap_or_default(),
                "voicemail" => s.voicemail = Some(self.section(value).unwrap_or_default()),
                "oauth2" => s.oauth2 = self.section(value),
                "pods" => s.pods = self.keyed("pods", value),
                "clients" => s.clients = self.keyed("clients", value),
                other => self.problem(
                    key.span(),
                    format!(
                        "unknown section `{other}`, expected one of `inbox`, `relay`, \
                         `daemon`, `http`, `routing`, `voicemail`, `oauth2`, `pods`, `clients`"
                    ),
                ),
            }
        }
        s
    }

    /// Deserializes the entries of `[pods.*]` or `[clients.*]` in file order.
    fn keyed<T: DeserializeOwned + raw::Keys>(
        &mut self,
        what: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Vec<Keyed<T>> {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            self.problem(span, format!("`{what}` must be a table of tables"));
            return Vec::new();
        };
        let mut entries: Vec<_> = table
            .into_iter()
            .filter_map(|(k, v)| {
                let span = k.span();
                let value = self.section(v)?;
                Some((k.into_inner().into_owned(), span, value))
            })
            // The table iterates in key order. (Were it not, the clients'
            // map would still come out right, only slower to build.)
            .enumerate()
            .map(|(rank, (key, span, value))| Keyed {
                key,
                span,
                rank,
                value,
            })
            .collect();
        entries.sort_by_key(|e| e.span.start);
        entries
    }

    /// Checks the sections against each other and builds the config.
    fn build(&mut self, s: Sections) -> Config {
        let shared = s.oauth2.as_ref();
        let inbox = s.inbox.map(|i| self.inbox(i, shared));
        let relay = s.relay.map(|r| self.relay(r, shared));
        let used = |a: Option<&Server>| a.is_some_and(|s| matches!(s.auth, Auth::OAuth2(_)));
        if shared.is_some()
            && !used(inbox.as_ref().map(|i| &i.server))
            && !used(relay.as_ref().map(|r| &r.server))
        {
            self.warnings.push(format!(
                "{}: [oauth2] is not used: neither side has auth = \"oauth2\"",
                self.path.display()
            ));
        }
        let default_region = s.routing.default_region.and_then(|r| {
            let span = r.span();
            let region = r.into_inner().to_ascii_uppercase();
            match phone::normalize("+1 403 555 0100", Some(&region)) {
                Ok(_) => Some(region),
                Err(_) => {
                    self.problem(
                        span,
                        format!("unknown region {region:?}; use a code like \"CA\""),
                    );
                    None
                }
            }
        });
        let ack_interval = s
            .routing
            .ack_interval
            .as_ref()
            .and_then(|d| self.duration(d))
            .unwrap_or(DEFAULT_ACK_INTERVAL);
        let pods = self.pods(s.pods, default_region.as_deref(), ack_interval);
        let voicemail = s.voicemail.map(|v| self.voicemail(v));
        let default_pod = s.routing.default_pod.and_then(|p| {
            let known = pods.contains_key(p.get_ref());
            if !known {
                let msg = format!(
                    "default_pod {:?} is not a pod{}",
                    p.get_ref(),
                    known_pods(&pods)
                );
                self.problem(p.span(), msg);
            }
            known.then(|| p.into_inner())
        });
        let storm = self.storm(s.routing.storm_limit, s.routing.storm_window.as_ref());
        let http = self.http(s.http);
        let mut table = RoutingTable::default();
        let clients = self.clients(s.clients, &pods, default_region.as_deref(), &mut table);
        for (name, missing) in [("[inbox]", inbox.is_none()), ("[relay]", relay.is_none())] {
            if missing {
                self.warnings.push(format!(
                    "{}: no {name} section: `podrouter run` needs one",
                    self.path.display()
                ));
            }
        }
        Config {
            path: self.path.to_path_buf(),
            inbox,
            relay,
            daemon: DaemonConfig {
                state_dir: s
                    .daemon
                    .state_dir
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            },
            http,
            default_pod,
            default_region,
            storm,
            voicemail,
            ack_interval,
            pods,
            clients,
            table,
            warnings: Vec::new(),
        }
    }

    /// `routing.storm_limit` and `routing.storm_window`, defaults filled in.
    fn storm(&mut self, limit: Option<usize>, window: Option<&Spanned<String>>) -> StormConfig {
        let default = StormConfig::default();
        StormConfig {
            limit: limit.unwrap_or(default.limit),
            window: window
                .and_then(|w| self.duration(w))
                .unwrap_or(default.window),
        }
    }

    /// `[http]`, defaults filled in. A listen address off loopback is
    /// allowed with a warning: `/status` shows sender addresses.
    fn http(&mut self, h: raw::Http) -> HttpConfig {
        let default = HttpConfig::default();
        let enabled = h.enabled.unwrap_or(default.enabled);
        let Some(listen) = h.listen else {
            return HttpConfig { enabled, ..default };
        };
        let text = listen.get_ref().trim();
        let Ok(addr) = text.parse::<SocketAddr>() else {
            let msg = format!(
                "http.listen {text:?} is not an address and port like \"127.0.0.1:9187\" \
                 or \"[::1]:9187\""
            );
            self.problem(listen.span(), msg);
            return HttpConfig { enabled, ..default };
        };
        if enabled && !addr.ip().is_loopback() {
            let msg = format!(
                "http.listen {addr} is not loopback: anyone who can reach it sees \
                 /status, which shows sender addresses and subjects"
            );
            self.warn(listen.span(), msg);
        }
        HttpConfig {
            enabled,
            listen: addr,
        }
    }

    fn inbox(&mut self, i: raw::Inbox, shared: Option<&raw::OAuth2>) -> InboxConfig {
        let tls = tls_mode(i.tls.as_ref());
        let port = i.port.unwrap_or(match tls {
            TlsMode::Implicit => 993,
            _ => 143,
        });
        if i.user.is_none() {
            self.problem(i.server.span(), "[inbox] needs a `user` to log in as");
        }
        let secret = Secrets {
            inline: i.password,
            file: i.password_file,
            env: i.password_env,
        };
        let auth = self.auth("inbox", &i.server, i.auth, i.oauth2, shared, &secret);
        let mut server = self.server("inbox", i.server, port, i.tls, i.ca_file, i.user, secret);
        server.auth = auth;
        let poll_interval = match i.poll_interval {
            Some(p) => self.duration(&p).unwrap_or(Duration::from_secs(60)),
            None => Duration::from_secs(60),
        };
        let folder = i.folder.unwrap_or_else(|| "INBOX".into());
        let done_folder = i.done_folder.unwrap_or_else(|| "Routed".into());
        let hold_folder = i.hold_folder.unwrap_or_else(|| "Held".into());
        let names = [&folder, &done_folder, &hold_folder];
        if names.iter().any(|n| n.trim().is_empty()) {
            self.problem(0..0, "[inbox] folder names must not be empty");
        } else if folder == done_folder || folder == hold_folder || done_folder == hold_folder {
            self.problem(
                0..0,
                "[inbox] folder, done_folder and hold_folder must be three different folders",
            );
        }
        InboxConfig {
            server,
            folder,
            done_folder,
            hold_folder,
            poll_interval,
        }
    }

    fn relay(&mut self, r: raw::Relay, shared: Option<&raw::OAuth2>) -> RelayConfig {
        let tls = tls_mode(r.tls.as_ref());
        let port = r.port.unwrap_or(match tls {
            TlsMode::Implicit => 465,
            TlsMode::Starttls => 587,
            TlsMode::None => 25,
        });
        let secret = Secrets {
            inline: r.password,
            file: r.password_file,
            env: r.password_env,
        };
        let auth = self.auth("relay", &r.server, r.auth, r.oauth2, shared, &secret);
        if matches!(auth, Auth::OAuth2(_)) && r.user.is_none() {
            self.problem(
                r.server.span(),
                "relay: auth = \"oauth2\" needs a `user` to sign in as",
            );
        }
        let mut server = self.server("relay", r.server, port, r.tls, r.ca_file, r.user, secret);
        server.auth = auth;
        let from = match normalize_address(r.from.get_ref()) {
            Ok(a) => a,
            Err(e) => {
                self.problem(r.from.span(), format!("relay.from: {e}"));
                String::new()
            }
        };
        let connections = match r.connections {
            Some(c) if !(1..=64).contains(c.get_ref()) => {
                self.problem(c.span(), "relay.connections must be between 1 and 64");
                DEFAULT_CONNECTIONS
            }
            Some(c) => c.into_inner(),
            None => DEFAULT_CONNECTIONS,
        };
        RelayConfig {
            server,
            from,
            from_mode: match r.from_mode {
                Some(raw::FromMode::Keep) => FromMode::Keep,
                _ => FromMode::Rewrite,
            },
            connections,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn server(
        &mut self,
        section: &str,
        host: Spanned<String>,
        port: u16,
        tls: Option<Spanned<raw::Tls>>,
        ca_file: Option<Spanned<PathBuf>>,
        user: Option<String>,
        secret: Secrets,
    ) -> Server {
        let mode = tls_mode(tls.as_ref());
        let host_span = host.span();
        let host = host.into_inner().trim().to_string();
        if host.is_empty() {
            self.problem(
                host_span.clone(),
                format!("{section}.server must not be empty"),
            );
        }
        if mode == TlsMode::None && !is_loopback(&host) {
            let span = tls.as_ref().map_or(host_span, |t| t.span());
            self.problem(
                span,
                format!(
                    "{section}: tls = \"none\" sends passwords and mail in the clear; \
                     it is only allowed to a loopback server, not {host:?}"
                ),
            );
        }
        if let Some(ca) = &ca_file {
            if let Err(e) = std::fs::metadata(ca.get_ref()) {
                let msg = format!("{section}.ca_file {}: {e}", ca.get_ref().display());
                self.problem(ca.span(), msg);
            }
        }
        let password = self.secret(section, secret);
        Server {
            host,
            port,
            tls: mode,
            ca_file: ca_file.map(Spanned::into_inner),
            user,
            password,
            auth: Auth::Password,
        }
    }

    /// `auth` and the OAuth2 table it uses: the side's own, else `[oauth2]`.
    fn auth(
        &mut self,
        section: &str,
        server: &Spanned<String>,
        auth: Option<Spanned<raw::Auth>>,
        own: Option<raw::OAuth2>,
        shared: Option<&raw::OAuth2>,
        secret: &Secrets,
    ) -> Auth {
        let oauth2 = matches!(auth.as_ref().map(|a| *a.get_ref()), Some(raw::Auth::Oauth2));
        if !oauth2 {
            if own.is_some() {
                self.problem(
                    server.span(),
                    format!("[{section}.oauth2] is only used with auth = \"oauth2\""),
                );
            }
            return Auth::Password;
        }
        let span = auth.map_or(server.span(), |a| a.span());
        if secret.inline.is_some() || secret.file.is_some() || secret.env.is_some() {
            self.problem(
                span.clone(),
                format!(
                    "{section}: auth = \"oauth2\" takes no password, password_file or password_env"
                ),
            );
        }
        let Some(table) = own.as_ref().or(shared) else {
            self.problem(
                span,
                format!(
                    "{section}: auth = \"oauth2\" needs an [oauth2] or [{section}.oauth2] table"
                ),
            );
            return Auth::Password;
        };
        match self.oauth2(section, span, table) {
            Some(c) => Auth::OAuth2(c),
            None => Auth::Password,
        }
    }

    /// Checks one OAuth2 table and fills in its provider's preset.
    fn oauth2(&mut self, section: &str, at: Range<usize>, t: &raw::OAuth2) -> Option<OAuth2Config> {
        let provider = t.provider.as_ref().map(|p| match p.get_ref() {
            raw::Provider::Microsoft => Provider::Microsoft,
            raw::Provider::Google => Provider::Google,
        });
        let tenant = t.tenant.as_ref().map(|t| t.get_ref().trim().to_owned());
        if provider == Some(Provider::Microsoft) && tenant.as_deref().is_none_or(str::is_empty) {
            let span = t.provider.as_ref().map_or(at.clone(), |p| p.span());
            self.problem(
                span,
                "oauth2: provider = \"microsoft\" needs a `tenant` (the directory id or domain, \
                 or \"organizations\")",
            );
        }
        if let (Some(tn), Some(p)) = (&t.tenant, provider) {
            if p != Provider::Microsoft {
                self.problem(
                    tn.span(),
                    "oauth2.tenant is only for provider = \"microsoft\"",
                );
            }
        }
        let token_url = match (&t.token_url, provider) {
            (Some(u), _) => {
                let url = u.get_ref().trim().to_owned();
                if !endpoint_allowed(&url) {
                    self.problem(
                        u.span(),
                        format!(
                            "oauth2.token_url {url:?} must be https:// (http:// only to loopback)"
                        ),
                    );
                }
                url
            }
            (None, Some(p)) => p.token_url(tenant.as_deref().unwrap_or("organizations")),
            (None, None) => {
                self.problem(
                    at.clone(),
                    format!("{section}: oauth2 needs a `provider` or a `token_url`"),
                );
                String::new()
            }
        };
        let client_id = match &t.client_id {
            Some(c) if !c.get_ref().trim().is_empty() => c.get_ref().trim().to_owned(),
            Some(c) => {
                self.problem(c.span(), "oauth2.client_id must not be empty");
                String::new()
            }
            None => {
                self.problem(at.clone(), format!("{section}: oauth2 needs a `client_id`"));
                String::new()
            }
        };
        let client_secret = t.client_secret_file.as_ref().and_then(|f| {
            read_secret_file(f.get_ref())
                .map_err(|e| self.problem(f.span(), format!("oauth2.client_secret_file {e}")))
                .ok()
        });
        if provider == Some(Provider::Google) && t.client_secret_file.is_none() {
            self.problem(
                at.clone(),
                "oauth2: provider = \"google\" needs a `client_secret_file` (Google's device \
                 clients have a secret)",
            );
        }
        let refresh_token_file = match &t.refresh_token_file {
            Some(f) => {
                if let Err(e) = read_secret_file(f.get_ref()) {
                    let msg = format!(
                        "oauth2.refresh_token_file {e} (podrouter oauth2 authorize writes it)"
                    );
                    self.problem(f.span(), msg);
                }
                f.get_ref().clone()
            }
            None => {
                self.problem(
                    at,
                    format!("{section}: oauth2 needs a `refresh_token_file`"),
                );
                PathBuf::new()
            }
        };
        let scopes = match (&t.scopes, provider) {
            (Some(s), _) => s.clone(),
            (None, Some(p)) => p.default_scopes(),
            (None, None) => Vec::new(),
        };
        Some(OAuth2Config {
            provider,
            token_url,
            client_id,
            client_secret,
            refresh_token_file,
            scopes,
        })
    }

    /// Resolves the one password source a server section may have.
    fn secret(&mut self, section: &str, s: Secrets) -> Option<Secret> {
        let given = [s.inline.is_some(), s.file.is_some(), s.env.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            let span = s.file.as_ref().map(|f| f.span()).unwrap_or(0..0);
            self.problem(
                span,
                format!("{section}: use only one of password, password_file and password_env"),
            );
            return None;
        }
        if let Some(p) = s.inline {
            self.warn(
                p.span(),
                format!(
                    "{section}.password is written in the config; \
                     prefer password_file (mode 0600) or password_env"
                ),
            );
            return Some(Secret::new(p.into_inner()));
        }
        if let Some(f) = s.file {
            return match read_secret_file(f.get_ref()) {
                Ok(secret) => Some(secret),
                Err(e) => {
                    self.problem(f.span(), format!("{section}.password_file {e}"));
                    None
                }
            };
        }
        if let Some(var) = s.env {
            return match std::env::var(var.get_ref()) {
                Ok(v) if !v.is_empty() => Some(Secret::new(v)),
                _ => {
                    let msg = format!(
                        "{section}.password_env: {} is not set in this environment",
                        var.get_ref()
                    );
                    self.warn(var.span(), msg);
                    None
                }
            };
        }
        None
    }

    fn duration(&mut self, value: &Spanned<String>) -> Option<Duration> {
        match humantime::parse_duration(value.get_ref().trim()) {
            Ok(d) if d < Duration::from_secs(1) => {
                self.problem(value.span(), "a duration must be at least 1s");
                None
            }
            Ok(d) if d > MAX_DURATION => {
                self.problem(value.span(), "a duration must be at most 366d");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                let msg = format!(
                    "{:?} is not a duration like \"90s\" or \"10m\": {e}",
                    value.get_ref()
                );
                self.problem(value.span(), msg);
                None
            }
        }
    }

    fn pods(
        &mut self,
        raw: Vec<Keyed<raw::Pod>>,
        region: Option<&str>,
        ack_interval: Duration,
    ) -> BTreeMap<String, Pod> {
        let mut pods = BTreeMap::new();
        for Keyed {
            key,
            span: key_span,
            value: pod,
            ..
        } in raw
        {
            let respond = self.respond(&key, key_span.clone(), &pod);
            let members = self.members(&key, pod.members);
            let name = pod.name.unwrap_or_else(|| key.clone());
            if name.chars().any(char::is_control) {
                self.problem(
                    key_span,
                    format!("pod {key:?}: name has control characters"),
                );
            }
            let phone = pod.phone.and_then(|p| {
                phone::normalize(p.get_ref(), region)
                    .map_err(|e| self.problem(p.span(), format!("pod {key:?}: phone {e}")))
                    .ok()
            });
            let ack_template = match pod.ack_template {
                Some(t) => {
                    if let Err(e) = crate::ack::check_template(t.get_ref()) {
                        self.problem(t.span(), format!("pod {key:?}: ack_template {e}"));
                    }
                    t.into_inner()
                }
                None => crate::ack::DEFAULT_TEMPLATE.to_owned(),
            };
            let ack_interval = pod
                .ack_interval
                .as_ref()
                .and_then(|d| self.duration(d))
                .unwrap_or(ack_interval);
            pods.insert(
                key.clone(),
                Pod {
                    key,
                    name,
                    members,
                    phone,
                    ack: pod.ack.unwrap_or(false),
                    ack_template,
                    ack_interval,
                    respond,
                },
            );
        }
        pods
    }

    /// A pod's `respond_within`, `business_hours`, `time_zone` and
    /// `escalate_to`.
    fn respond(&mut self, key: &str, key_span: Range<usize>, pod: &raw::Pod) -> Option<Respond> {
        let hours = pod.business_hours.as_ref().and_then(|h| {
            crate::escalation::BusinessHours::parse(h.get_ref())
                .map_err(|e| self.problem(h.span(), format!("pod {key:?}: business_hours {e}")))
                .ok()
        });
        let time_zone = pod.time_zone.as_ref().and_then(|z| {
            crate::escalation::time_zone(z.get_ref())
                .map_err(|e| {
                    let msg = format!(
                        "pod {key:?}: time_zone {:?} is not a time zone like \"America/Edmonton\": {e}",
                        z.get_ref()
                    );
                    self.problem(z.span(), msg)
                })
                .ok()
        });
        let escalate_to = pod.escalate_to.as_ref().and_then(|a| {
            normalize_address(a.get_ref())
                .map_err(|e| self.problem(a.span(), format!("pod {key:?}: escalate_to {e}")))
                .ok()
        });
        let Some(within) = pod.respond_within.as_ref() else {
            let stray = pod.business_hours.is_some()
                || pod.time_zone.is_some()
                || pod.escalate_to.is_some();
            if stray {
                self.problem(
                    key_span,
                    format!(
                        "pod {key:?}: business_hours, time_zone and escalate_to need respond_within"
                    ),
                );
            }
            return None;
        };
        let within = self.duration(within)?;
        Some(Respond {
            within,
            hours,
            time_zone: time_zone.unwrap_or(jiff::tz::TimeZone::UTC),
            escalate_to,
        })
    }

    fn members(&mut self, pod: &str, members: Spanned<Vec<Spanned<String>>>) -> Vec<Member> {
        if members.get_ref().is_empty() {
            self.problem(members.span(), format!("pod {pod:?} has no members"));
        }
        let mut out: Vec<Member> = Vec::new();
        for entry in members.into_inner() {
            match split_mailbox(entry.get_ref()) {
                Ok((name, address)) if !out.iter().any(|m| m.address == address) => {
                    out.push(Member { name, address })
                }
                Ok((_, address)) => {
                    self.problem(entry.span(), format!("pod {pod:?} lists {address} twice"))
                }
                Err(e) => self.problem(entry.span(), format!("pod {pod:?}: member {e}")),
            }
        }
        out
    }

    fn clients(
        &mut self,
        raw: Vec<Keyed<raw::Client>>,
        pods: &BTreeMap<String, Pod>,
        region: Option<&str>,
        table: &mut RoutingTable,
    ) -> BTreeMap<String, Client> {
        reserve(table, &raw);
        // Results go in key order, which makes the map a bulk build.
        let mut sorted: Vec<Option<(String, Client)>> = raw.iter().map(|_| None).collect();
        for Keyed {
            key,
            span: key_span,
            rank,
            value: c,
        } in raw
        {
            if !pods.contains_key(c.pod.get_ref()) {
                let msg = format!(
                    "client {key:?} names pod {:?}, which is not defined{}",
                    c.pod.get_ref(),
                    known_pods(pods)
                );
                self.problem(c.pod.span(), msg);
            }
            if c.domains.is_empty() && c.addresses.is_empty() && c.phones.is_empty() {
                self.warn(
                    key_span,
                    format!("client {key:?} has no domains, addresses or phones"),
                );
            }
            let n = table.add_client(&key, c.pod.get_ref());
            let domains = self.claim_all(&key, "domain", c.domains, normalize_domain, |k| {
                table.insert_domain(k, n)
            });
            let addresses = self.claim_all(&key, "address", c.addresses, normalize_address, |k| {
                table.insert_address(k, n)
            });
            let phones = self.claim_all(
                &key,
                "phone",
                c.phones,
                |p| phone::normalize(p, region),
                |k| table.insert_phone(k, n),
            );
            let name = c.name.unwrap_or_else(|| key.clone());
            let pod = c.pod.into_inner();
            sorted[rank] = Some((
                key.clone(),
                Client {
                    key,
                    name,
                    pod,
                    domains,
                    addresses,
                    phones,
                },
            ));
        }
        sorted.into_iter().flatten().collect()
    }
}

impl Validator<'_> {
    /// `[voicemail]`: the PBX senders, and the site's own pattern and the
    /// field it reads.
    fn voicemail(&mut self, v: raw::Voicemail) -> VoicemailConfig {
        let (mut senders, mut sender_domains) = (Vec::new(), Vec::new());
        for s in v.senders {
            let (list, normalized) = if s.get_ref().contains('@') {
                (&mut senders, normalize_address(s.get_ref()))
            } else {
                (&mut sender_domains, normalize_domain(s.get_ref()))
            };
            match normalized {
                Ok(a) if !list.contains(&a) => list.push(a),
                Ok(_) => {}
                Err(e) => self.problem(s.span(), format!("voicemail.senders: {e}")),
            }
        }
        let field = match &v.field {
            Some(f) => self.voicemail_field(f),
            None => VoicemailField::Subject,
        };
        if let (Some(f), None) = (&v.field, &v.pattern) {
            self.problem(f.span(), "voicemail.field needs a `pattern` to apply");
        }
        let pattern = v.pattern.and_then(|p| self.voicemail_pattern(&p));
        VoicemailConfig {
            senders,
            sender_domains,
            pattern,
            field,
        }
    }

    /// `field = "subject" | "body" | "header:X-Name"`.
    fn voicemail_field(&mut self, f: &Spanned<String>) -> VoicemailField {
        let text = f.get_ref().trim();
        if text.eq_ignore_ascii_case("subject") {
            return VoicemailField::Subject;
        }
        if text.eq_ignore_ascii_case("body") {
            return VoicemailField::Body;
        }
        let header = text
            .split_once(':')
            .filter(|(kind, _)| kind.trim().eq_ignore_ascii_case("header"))
            .map(|(_, name)| name.trim());
        match header {
            Some(name) if is_header_name(name) => VoicemailField::Header(name.to_string()),
            _ => {
                self.problem(
                    f.span(),
                    format!(
                        "voicemail.field {text:?} is not \"subject\", \"body\" or \
                         \"header:X-Name\""
                    ),
                );
                VoicemailField::Subject
            }
        }
    }

    /// Compiles `pattern`: it must have a group named `number` or exactly
    /// one capture group.
    fn voicemail_pattern(&mut self, p: &Spanned<String>) -> Option<regex::Regex> {
        let compiled = regex::RegexBuilder::new(p.get_ref())
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(PATTERN_SIZE_LIMIT)
            .build();
        let re = match compiled {
            Ok(re) => re,
            Err(e) => {
                let first = e.to_string();
                let msg = first.lines().last().unwrap_or_default().trim().to_string();
                self.problem(
                    p.span(),
                    format!("voicemail.pattern does not compile: {msg}"),
                );
                return None;
            }
        };
        let named = re.capture_names().any(|n| n == Some("number"));
        if !named && re.captures_len() != 2 {
            self.problem(
                p.span(),
                format!(
                    "voicemail.pattern needs a group named `number` or exactly one capture \
                     group; it has {}",
                    re.captures_len() - 1
                ),
            );
            return None;
        }
        Some(re)
    }
}

/// Whether a header name is one token of printable ASCII without a colon.
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Sizes the table for every entry the clients list, so that a large
/// table is built without rehashing.
fn reserve(table: &mut RoutingTable, raw: &[Keyed<raw::Client>]) {
    let count = |f: fn(&raw::Client) -> usize| raw.iter().map(|c| f(&c.value)).sum();
    table.reserve(
        raw.len(),
        count(|c| c.addresses.len()),
        count(|c| c.domains.len()),
        count(|c| c.phones.len()),
    );
}

impl Validator<'_> {
    /// Normalises a client's entries of one kind and claims each in the
    /// table, reporting entries that do not parse or that another client
    /// holds already.
    fn claim_all(
        &mut self,
        client: &str,
        kind: &str,
        entries: Vec<Spanned<String>>,
        normalize: impl Fn(&str) -> Result<String, String>,
        mut claim: impl FnMut(String) -> Result<(), Claimed>,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for entry in entries {
            let key = match normalize(entry.get_ref()) {
                Ok(k) => k,
                Err(e) => {
                    self.problem(entry.span(), format!("client {client:?}: {kind} {e}"));
                    continue;
                }
            };
            if let Err(Claimed(other)) = claim(key.clone()) {
                let msg = format!("{kind} {key} is claimed by client {other:?} too");
                self.problem(entry.span(), format!("client {client:?}: {msg}"));
            } else if !out.contains(&key) {
                out.push(key);
            }
        }
        out
    }
}

/// The password sources a server section may give.
struct Secrets {
    inline: Option<Spanned<String>>,
    file: Option<Spanned<PathBuf>>,
    env: Option<Spanned<String>>,
}

/// Whether a token or device endpoint may be used: `https://`, or
/// `http://` to loopback only (a test endpoint).
pub fn endpoint_allowed(url: &str) -> bool {
    let url = url.trim();
    url.starts_with("https://") || (url.starts_with("http://") && is_loopback(url_host(url)))
}

/// The host of an `http(s)://host[:port]/...` URL.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

/// Reads a password file, refusing one that others could read.
pub(crate) fn read_secret_file(path: &Path) -> Result<Secret, String> {
    use std::os::unix::fs::PermissionsExt;

    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {mode:04o}); run chmod 600 on it",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(value))
}

fn tls_mode(tls: Option<&Spanned<raw::Tls>>) -> TlsMode {
    match tls.map(|t| *t.get_ref()) {
        Some(raw::Tls::Starttls) => TlsMode::Starttls,
        Some(raw::Tls::None) => TlsMode::None,
        Some(raw::Tls::Implicit) | None => TlsMode::Implicit,
    }
}

/// Whether a host name or address is on this machine's loopback.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// ", known pods: a, b" for error messages.
fn known_pods(pods: &BTreeMap<String, Pod>) -> String {
    if pods.is_empty() {
        return " (no pods are defined)".into();
    }
    let keys: Vec<&str> = pods.keys().map(String::as_str).collect();
    format!("; known pods: {}", keys.join(", "))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
