//! `podrouter oauth2 authorize`: the first refresh token, by the device
//! code flow (RFC 8628). It prints a code and a URL, waits while a person
//! signs in there with the mailbox's account, and writes the refresh token
//! file the daemon then keeps fresh.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, ClientId, ClientSecret, DeviceAuthorizationUrl, Scope,
    StandardDeviceAuthorizationResponse, TokenResponse, TokenUrl,
};

use super::{save_refresh_token, Provider};

/// How long to wait for the person to sign in at most.
const GRANT_TIMEOUT: Duration = Duration::from_secs(900);

/// What `authorize` was told, by flags or the `-c` table's `[oauth2]`.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// `--provider`, or the table's `provider`.
    pub provider: Option<Provider>,
    /// `--tenant` (Microsoft).
    pub tenant: Option<String>,
    /// `--client-id`.
    pub client_id: Option<String>,
    /// `--client-secret-file` (Google's device clients have one).
    pub client_secret_file: Option<PathBuf>,
    /// `--out`, or the table's `refresh_token_file`.
    pub out: Option<PathBuf>,
    /// `--device-url`: overrides the provider's device endpoint.
    pub device_url: Option<String>,
    /// `--token-url`: overrides the provider's token endpoint.
    pub token_url: Option<String>,
    /// `--scope`, repeated: overrides the provider's scopes.
    pub scopes: Vec<String>,
}

impl Request {
    /// Fills what the flags left open from the `[oauth2]` table of a
    /// routing table (or `[inbox.oauth2]`, then `[relay.oauth2]`). The
    /// table is read leniently: its refresh token file may not exist yet.
    pub fn fill_from_table(&mut self, path: &Path) -> anyhow::Result<()> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let side = |s: &str| doc.get(s).and_then(|t| t.get("oauth2"));
        let Some(t) = doc
            .get("oauth2")
            .or_else(|| side("inbox"))
            .or_else(|| side("relay"))
        else {
            bail!("{} has no [oauth2] table", path.display());
        };
        let text = |k: &str| t.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        if self.provider.is_none() {
            self.provider = text("provider").as_deref().and_then(Provider::parse);
        }
        self.tenant = self.tenant.take().or_else(|| text("tenant"));
        self.client_id = self.client_id.take().or_else(|| text("client_id"));
        self.token_url = self.token_url.take().or_else(|| text("token_url"));
        let file = |k: &str| text(k).map(PathBuf::from);
        self.client_secret_file = self
            .client_secret_file
            .take()
            .or_else(|| file("client_secret_file"));
        self.out = self.out.take().or_else(|| file("refresh_token_file"));
        if self.scopes.is_empty() {
            if let Some(list) = t.get("scopes").and_then(|v| v.as_array()) {
                self.scopes = list
                    .iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect();
            }
        }
        Ok(())
    }
}

/// Runs the device flow and writes the refresh token; `out` receives what
/// the person must do. Never prints a token.
pub async fn authorize(r: &Request, out: &mut impl Write) -> anyhow::Result<PathBuf> {
    let tenant = r.tenant.as_deref().unwrap_or("organizations");
    let device_url = match (&r.device_url, r.provider) {
        (Some(u), _) => u.clone(),
        (None, Some(p)) => p.device_url(tenant),
        (None, None) => bail!("give --provider microsoft|google, or --device-url and --token-url"),
    };
    let token_url = match (&r.token_url, r.provider) {
        (Some(u), _) => u.clone(),
        (None, Some(p)) => p.token_url(tenant),
        (None, None) => bail!("give --provider microsoft|google, or --token-url"),
    };
    for (flag, url) in [("--device-url", &device_url), ("--token-url", &token_url)] {
        if !crate::config::endpoint_allowed(url) {
            bail!("{flag} {url:?} must be https:// (http:// only to loopback)");
        }
    }
    let client_id = r
        .client_id
        .clone()
        .ok_or_else(|| anyhow!("give --client-id (the application registered for podrouter)"))?;
    let path = r
        .out
        .clone()
        .ok_or_else(|| anyhow!("give --out FILE, or -c with a refresh_token_file"))?;
    // Checked before the person signs in, so a sign-in is never wasted.
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !folder.is_dir() || path.is_dir() {
        bail!(
            "--out {}: the folder must exist and the name must not be a folder",
            path.display()
        );
    }
    let scopes = match (r.scopes.is_empty(), r.provider) {
        (false, _) | (true, None) => r.scopes.clone(),
        (true, Some(p)) => p.default_scopes(),
    };

    let mut client = BasicClient::new(ClientId::new(client_id))
        .set_auth_type(AuthType::RequestBody)
        .set_device_authorization_url(DeviceAuthorizationUrl::new(device_url)?)
        .set_token_uri(TokenUrl::new(token_url)?);
    if let Some(file) = &r.client_secret_file {
        let secret = crate::config::read_secret_file(file)
            .map_err(|e| anyhow!("--client-secret-file {e}"))?;
        client = client.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
    }
    let http = oauth2::reqwest::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;

    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(scopes.into_iter().map(Scope::new))
        .request_async(&http)
        .await
        .map_err(|e| anyhow!("the device authorization endpoint refused: {e}"))?;
    writeln!(
        out,
        "To let podrouter read and send this mailbox's mail, open\n\n    {}\n\n\
         and enter the code\n\n    {}\n\nwaiting for the grant...",
        details.verification_uri().as_str(),
        details.user_code().secret()
    )?;
    out.flush()?;

    let token = client
        .exchange_device_access_token(&details)
        .request_async(&http, tokio::time::sleep, Some(GRANT_TIMEOUT))
        .await
        .map_err(|e| anyhow!("no grant: {e}"))?;
    let refresh = token.refresh_token().ok_or_else(|| {
        anyhow!("the provider sent no refresh token (ask for the offline_access scope)")
    })?;
    save_refresh_token(&path, refresh.secret())?;
    writeln!(out, "granted; the refresh token is in {}", path.display())?;
    Ok(path)
}
