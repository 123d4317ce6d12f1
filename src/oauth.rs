//! OAuth2 access tokens for signing in with XOAUTH2 or OAUTHBEARER.
//!
//! A [`TokenSource`] turns the refresh token kept in `refresh_token_file`
//! into short-lived access tokens through the provider's token endpoint
//! (the `oauth2` crate does the exchange). It refreshes ahead of expiry,
//! and again when a server refuses a token; when the provider rotates the
//! refresh token, the new one replaces the file atomically (mode 0600).
//! Tokens are [`Secret`]s: no `Debug` or log line shows one.
//!
//! Sources are shared per `[oauth2]` table ([`source`]), so the inbox and
//! the relay of one account use one refresh token and never race on its
//! rotation. Refreshes report to the daemon's metrics ([`report_to`]).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, ClientId, ClientSecret, RefreshToken, RequestTokenError, Scope, TokenResponse,
    TokenUrl,
};

use crate::config::{OAuth2Config, Secret};
use crate::metrics::Metrics;

pub mod authorize;

/// How long a token endpoint may take to answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The lifetime assumed when the provider does not say (`expires_in`).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// A refresh happens this long before expiry at most (a fifth of the
/// lifetime for short-lived tokens).
const REFRESH_AHEAD: Duration = Duration::from_secs(300);

/// A provider whose endpoints and scopes podrouter knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Microsoft 365 (Entra ID), per tenant.
    Microsoft,
    /// Google Workspace and Gmail.
    Google,
}

impl Provider {
    /// The name written in `provider = "..."` and `--provider`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Microsoft => "microsoft",
            Provider::Google => "google",
        }
    }

    /// Reads a `--provider` value.
    pub fn parse(name: &str) -> Option<Provider> {
        match name {
            "microsoft" => Some(Provider::Microsoft),
            "google" => Some(Provider::Google),
            _ => None,
        }
    }

    /// The token endpoint; `tenant` matters for Microsoft only.
    pub fn token_url(self, tenant: &str) -> String {
        match self {
            Provider::Microsoft => {
                format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token")
            }
            Provider::Google => "https://oauth2.googleapis.com/token".to_owned(),
        }
    }

    /// The device authorization endpoint, for `podrouter oauth2 authorize`.
    pub fn device_url(self, tenant: &str) -> String {
        match self {
            Provider::Microsoft => {
                format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode")
            }
            Provider::Google => "https://oauth2.googleapis.com/device/code".to_owned(),
        }
    }

    /// The scopes IMAP and SMTP sign-in need, and a refresh token.
    pub fn default_scopes(self) -> Vec<String> {
        match self {
            Provider::Microsoft => vec![
                "https://outlook.office.com/IMAP.AccessAsUser.All".to_owned(),
                "https://outlook.office.com/SMTP.Send".to_owned(),
                "offline_access".to_owned(),
            ],
            Provider::Google => vec!["https://mail.google.com/".to_owned()],
        }
    }
}

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The refresh token file could not be read.
    #[error("cannot read the refresh token: {0}")]
    RefreshTokenFile(String),
    /// The token endpoint answered with an OAuth2 error.
    #[error("token endpoint {url} refused the refresh: {reason}")]
    Refused {
        /// The token endpoint.
        url: String,
        /// The provider's error code and description.
        reason: String,
        /// `invalid_grant`: the refresh token was revoked or has expired;
        /// run `podrouter oauth2 authorize` again.
        revoked: bool,
    },
    /// The token endpoint could not be reached or answered nonsense.
    #[error("token endpoint {url} failed: {reason}")]
    Unreachable {
        /// The token endpoint.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The rotated refresh token could not be saved.
    #[error("cannot save the rotated refresh token to {path}: {reason}")]
    Save {
        /// The refresh token file.
        path: String,
        /// What the OS said.
        reason: String,
    },
}

/// An access token and when it stops working.
struct Access {
    token: Secret,
    /// When to refresh it: ahead of its expiry.
    refresh_at: Instant,
    /// When the provider says it expires.
    expires_at: SystemTime,
}

/// Hands out access tokens for one OAuth2 client and refresh token.
pub struct TokenSource {
    /// The client and where its refresh token lives.
    config: OAuth2Config,
    /// The HTTP client for the token endpoint (no redirects).
    http: oauth2::reqwest::Client,
    /// The current access token; the lock also makes refreshes one at a time.
    access: tokio::sync::Mutex<Option<Access>>,
    /// `inbox` and `relay`, as they ask: the metric labels to report to.
    sides: Mutex<BTreeSet<&'static str>>,
    /// A rotated refresh token that could not be saved: used instead of
    /// the file (which holds a dead one) until a save works.
    unsaved: Mutex<Option<Secret>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.config.token_url)
            .field("client_id", &self.config.client_id)
            .finish()
    }
}

/// Every source made so far, one per `[oauth2]` table.
static SOURCES: Mutex<Vec<Arc<TokenSource>>> = Mutex::new(Vec::new());

/// Where refreshes are reported; set by the daemon.
static METRICS: Mutex<Option<Arc<Metrics>>> = Mutex::new(None);

/// The shared source for this client and refresh token.
pub fn source(config: &OAuth2Config) -> Result<Arc<TokenSource>, OAuthError> {
    let mut sources = SOURCES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = sources.iter().find(|s| &s.config == config) {
        return Ok(Arc::clone(s));
    }
    let source = Arc::new(TokenSource::new(config.clone())?);
    sources.push(Arc::clone(&source));
    Ok(source)
}

/// Sends refresh results to `metrics` from now on.
pub fn report_to(metrics: Arc<Metrics>) {
    *METRICS.lock().unwrap_or_else(|e| e.into_inner()) = Some(metrics);
}

fn metrics() -> Option<Arc<Metrics>> {
    METRICS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

impl TokenSource {
    /// A source with no access token yet; nothing is fetched until asked.
    pub fn new(config: OAuth2Config) -> Result<TokenSource, OAuthError> {
        let http = oauth2::reqwest::ClientBuilder::new()
            .redirect(oauth2::reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| OAuthError::Unreachable {
                url: config.token_url.clone(),
                reason: e.to_string(),
            })?;
        Ok(TokenSource {
            config,
            http,
            access: tokio::sync::Mutex::new(None),
            sides: Mutex::new(BTreeSet::new()),
            unsaved: Mutex::new(None),
        })
    }

    /// A valid access token for `side`, refreshed first when it is near
    /// its expiry.
    pub async fn token(&self, side: &'static str) -> Result<Secret, OAuthError> {
        self.note_side(side);
        let mut access = self.access.lock().await;
        if let Some(a) = access.as_ref().filter(|a| Instant::now() < a.refresh_at) {
            return Ok(a.token.clone());
        }
        self.refresh_locked(&mut access).await
    }

    /// A new access token after a server refused `rejected`. When another
    /// task has refreshed meanwhile, its token is returned instead.
    pub async fn refresh_after(
        &self,
        side: &'static str,
        rejected: &Secret,
    ) -> Result<Secret, OAuthError> {
        self.note_side(side);
        let mut access = self.access.lock().await;
        if let Some(a) = access.as_ref().filter(|a| &a.token != rejected) {
            if Instant::now() < a.refresh_at {
                return Ok(a.token.clone());
            }
        }
        self.refresh_locked(&mut access).await
    }

    /// When the current access token should be refreshed; `None` before
    /// the first.
    pub async fn refresh_at(&self) -> Option<Instant> {
        self.access.lock().await.as_ref().map(|a| a.refresh_at)
    }

    fn note_side(&self, side: &'static str) {
        self.sides
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(side);
    }

    fn sides(&self) -> Vec<&'static str> {
        let sides = self.sides.lock().unwrap_or_else(|e| e.into_inner());
        sides.iter().copied().collect()
    }

    /// Refreshes with the lock held, and reports the outcome.
    async fn refresh_locked(&self, access: &mut Option<Access>) -> Result<Secret, OAuthError> {
        match self.exchange().await {
            Ok((fresh, Some(e))) => {
                // Mail keeps flowing on the new access token, but a restart
                // would lose the grant: as loud as a failed refresh.
                self.report_failure(&e);
                let token = fresh.token.clone();
                *access = Some(fresh);
                Ok(token)
            }
            Ok((fresh, None)) => {
                let token = fresh.token.clone();
                if let Some(m) = metrics() {
                    for side in self.sides() {
                        m.oauth_refreshed(side, fresh.expires_at);
                    }
                }
                tracing::info!(
                    token_url = %self.config.token_url,
                    expires_in_s = fresh
                        .expires_at
                        .duration_since(SystemTime::now())
                        .map_or(0, |d| d.as_secs()),
                    "oauth2 access token refreshed"
                );
                *access = Some(fresh);
                Ok(token)
            }
            Err(e) => {
                self.report_failure(&e);
                Err(e)
            }
        }
    }

    /// Logs a failure as an error and counts it for every side.
    fn report_failure(&self, e: &OAuthError) {
        if let Some(m) = metrics() {
            for side in self.sides() {
                m.oauth_refresh_failed(side, e);
            }
        }
        tracing::error!(error = %e, "oauth2 token refresh failed");
    }

    /// One refresh grant at the token endpoint; saves a rotated refresh
    /// token before returning, or returns why it could not.
    async fn exchange(&self) -> Result<(Access, Option<OAuthError>), OAuthError> {
        let c = &self.config;
        let unsaved = self
            .unsaved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let refresh = match unsaved {
            Some(r) => r,
            None => crate::config::read_secret_file(&c.refresh_token_file)
                .map_err(OAuthError::RefreshTokenFile)?,
        };
        let unreachable = |reason: String| OAuthError::Unreachable {
            url: c.token_url.clone(),
            reason,
        };
        let token_url =
            TokenUrl::new(c.token_url.clone()).map_err(|e| unreachable(e.to_string()))?;
        let mut client = BasicClient::new(ClientId::new(c.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url);
        if let Some(secret) = &c.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
        }
        let started = Instant::now();
        let response = client
            .exchange_refresh_token(&RefreshToken::new(refresh.expose().to_owned()))
            .add_scopes(c.scopes.iter().map(|s| Scope::new(s.clone())))
            .request_async(&self.http)
            .await
            .map_err(|e| self.request_error(e))?;
        let mut save_error = None;
        let rotated = response
            .refresh_token()
            .map(|r| Secret::new(r.secret().clone()))
            .unwrap_or(refresh);
        if self.is_unsaved(&rotated) || !self.file_holds(&rotated) {
            match save_refresh_token(&c.refresh_token_file, rotated.expose()) {
                Ok(()) => {
                    *self.unsaved.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    tracing::info!(
                        file = %c.refresh_token_file.display(),
                        "oauth2 refresh token rotated and saved"
                    );
                }
                Err(e) => {
                    *self.unsaved.lock().unwrap_or_else(|e| e.into_inner()) = Some(rotated);
                    save_error = Some(e);
                }
            }
        }
        let lifetime = response.expires_in().unwrap_or(DEFAULT_LIFETIME);
        let ahead = (lifetime / 5).min(REFRESH_AHEAD);
        let access = Access {
            token: Secret::new(response.access_token().secret().clone()),
            refresh_at: started + lifetime.saturating_sub(ahead),
            expires_at: SystemTime::now() + lifetime,
        };
        Ok((access, save_error))
    }

    /// Whether `token` is the rotated one that could not be saved.
    fn is_unsaved(&self, token: &Secret) -> bool {
        let unsaved = self.unsaved.lock().unwrap_or_else(|e| e.into_inner());
        unsaved.as_ref() == Some(token)
    }

    /// Whether the refresh token file holds `token` now.
    fn file_holds(&self, token: &Secret) -> bool {
        crate::config::read_secret_file(&self.config.refresh_token_file).is_ok_and(|t| &t == token)
    }

    fn request_error<RE: std::error::Error + 'static>(
        &self,
        e: RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
    ) -> OAuthError {
        let url = self.config.token_url.clone();
        match e {
            RequestTokenError::ServerResponse(r) => OAuthError::Refused {
                url,
                revoked: *r.error() == BasicErrorResponseType::InvalidGrant,
                reason: match r.error_description() {
                    Some(d) => format!("{}: {d}", r.error()),
                    None => r.error().to_string(),
                },
            },
            RequestTokenError::Request(e) => OAuthError::Unreachable {
                url,
                reason: error_chain(&e),
            },
            RequestTokenError::Parse(e, _) => OAuthError::Unreachable {
                url,
                reason: format!("unreadable answer: {e}"),
            },
            RequestTokenError::Other(e) => OAuthError::Unreachable { url, reason: e },
        }
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Replaces the refresh token file atomically: a temp file in the same
/// folder (mode 0600), fsync, rename, fsync of the folder.
pub fn save_refresh_token(path: &Path, token: &str) -> Result<(), OAuthError> {
    write_atomically(path, token).map_err(|e| OAuthError::Save {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn write_atomically(path: &Path, token: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = file
        .write_all(token.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::File::open(dir)?.sync_all()
}

/// Keeps the source's access token fresh ahead of expiry, for as long as
/// the task runs; after a failure it tries again with backoff.
pub async fn keep_fresh(source: Arc<TokenSource>, side: &'static str) {
    let mut backoff = Duration::from_secs(2);
    loop {
        match source.token(side).await {
            Ok(_) => {
                backoff = Duration::from_secs(2);
                let wake = source
                    .refresh_at()
                    .await
                    .unwrap_or_else(|| Instant::now() + DEFAULT_LIFETIME);
                tokio::time::sleep_until(wake.into()).await;
            }
            Err(_) => {
                // Already logged and counted by the source.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
        }
    }
}

/// The XOAUTH2 initial response (Google's and Microsoft's SASL mechanism).
pub fn xoauth2(user: &str, token: &Secret) -> String {
    format!("user={user}\x01auth=Bearer {}\x01\x01", token.expose())
}

/// The OAUTHBEARER initial response (RFC 7628).
pub fn oauthbearer(user: &str, host: &str, port: u16, token: &Secret) -> String {
    let user = user.replace('=', "=3D").replace(',', "=2C");
    format!(
        "n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {}\x01\x01",
        token.expose()
    )
}

#[cfg(test)]
mod tests;
