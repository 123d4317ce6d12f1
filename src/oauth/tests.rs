//! The token source against a token endpoint on loopback, and the
//! `[oauth2]` validation.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::post;

use super::*;
use crate::config::Auth;

/// A token endpoint: each refresh returns `access-N` and rotates the
/// refresh token to `refresh-N`; the refresh token `revoked` is refused.
async fn endpoint() -> (String, Arc<AtomicUsize>) {
    let (url, count, _) = recording_endpoint().await;
    (url, count)
}

/// [`endpoint`], also keeping the body of the last request.
async fn recording_endpoint() -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<String>>) {
    let count = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(std::sync::Mutex::new(String::new()));
    let seen = Arc::clone(&count);
    let kept = Arc::clone(&last);
    let app = axum::Router::new().route(
        "/token",
        post(move |body: String| {
            let seen = Arc::clone(&seen);
            *kept.lock().unwrap() = body.clone();
            async move {
                let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                let json = if body.contains("refresh_token=revoked") {
                    (400, r#"{"error":"invalid_grant","error_description":"revoked"}"#.to_owned())
                } else {
                    (
                        200,
                        format!(
                            r#"{{"access_token":"access-{n}","token_type":"Bearer","expires_in":3600,"refresh_token":"refresh-{n}"}}"#
                        ),
                    )
                };
                (
                    axum::http::StatusCode::from_u16(json.0).unwrap_or_default(),
                    [("content-type", "application/json")],
                    json.1,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/token"), count, last)
}

fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn config(token_url: String, refresh_token_file: PathBuf) -> OAuth2Config {
    OAuth2Config {
        provider: None,
        token_url,
        client_id: "podrouter-test".into(),
        client_secret: None,
        refresh_token_file,
        scopes: vec!["mail".into()],
    }
}

#[tokio::test]
async fn oauth_refresh_rotates_and_saves_the_refresh_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "refresh", "first");
    let (url, count) = endpoint().await;
    let source = TokenSource::new(config(url, file.clone())).unwrap();

    let token = source.token("inbox").await.unwrap();
    assert_eq!(token.expose(), "access-1");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "refresh-1\n");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Fresh: no second grant.
    assert_eq!(source.token("inbox").await.unwrap().expose(), "access-1");
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // Refused by a server: refreshed once, with the rotated token.
    let again = source.refresh_after("inbox", &token).await.unwrap();
    assert_eq!(again.expose(), "access-2");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "refresh-2\n");
    // A second task refused the same old token: it gets the new one.
    let shared = source.refresh_after("relay", &token).await.unwrap();
    assert_eq!(shared.expose(), "access-2");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 1, "no temp file is left behind");
}

#[tokio::test]
async fn oauth_a_rotated_token_that_cannot_be_saved_is_kept_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "refresh", "first");
    // Where the temp file would go there is a folder: the save fails.
    let blocker = dir
        .path()
        .join(format!(".refresh.tmp{}", std::process::id()));
    std::fs::create_dir(&blocker).unwrap();
    let (url, _, last) = recording_endpoint().await;
    let source = TokenSource::new(config(url, file.clone())).unwrap();

    // Mail keeps flowing on the new access token; the file is unchanged.
    let token = source.token("inbox").await.unwrap();
    assert_eq!(token.expose(), "access-1");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "first\n");

    // The next refresh uses the unsaved token, and saves its successor.
    std::fs::remove_dir(&blocker).unwrap();
    let again = source.refresh_after("inbox", &token).await.unwrap();
    assert_eq!(again.expose(), "access-2");
    assert!(last.lock().unwrap().contains("refresh_token=refresh-1"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "refresh-2\n");
}

#[tokio::test]
async fn oauth_revoked_refresh_token_is_refused_not_retried_as_ok() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "refresh", "revoked");
    let (url, _) = endpoint().await;
    let source = TokenSource::new(config(url, file)).unwrap();
    match source.token("inbox").await {
        Err(OAuthError::Refused {
            revoked, reason, ..
        }) => {
            assert!(revoked);
            assert!(reason.contains("invalid_grant"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn oauth_unreachable_endpoint_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "refresh", "first");
    let source = TokenSource::new(config("http://127.0.0.1:1/token".into(), file)).unwrap();
    assert!(matches!(
        source.token("relay").await,
        Err(OAuthError::Unreachable { .. })
    ));
}

#[test]
fn oauth_debug_never_shows_a_secret() {
    let mut c = config("http://127.0.0.1:1/token".into(), "/nonexistent".into());
    c.client_secret = Some(Secret::new("client-secret-value"));
    let text = format!("{c:?} {:?}", TokenSource::new(c.clone()).unwrap());
    assert!(!text.contains("client-secret-value"), "{text}");
}

#[test]
fn oauth_sasl_initial_responses() {
    let t = Secret::new("tok");
    assert_eq!(xoauth2("a@b", &t), "user=a@b\x01auth=Bearer tok\x01\x01");
    assert_eq!(
        oauthbearer("a,=b", "h", 993, &t),
        "n,a=a=2C=3Db,\x01host=h\x01port=993\x01auth=Bearer tok\x01\x01"
    );
}

#[test]
fn oauth_presets() {
    assert_eq!(
        Provider::Microsoft.token_url("contoso.example"),
        "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token"
    );
    assert!(Provider::Google.default_scopes()[0].starts_with("https://mail.google.com"));
    assert_eq!(Provider::parse("google"), Some(Provider::Google));
}

/// A table with `[inbox]` and `[relay]` signing in per `extra`.
fn table(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[inbox]
server = "imap.vendor.example"
user = "support@vendor.example"
auth = "oauth2"

[relay]
server = "smtp.vendor.example"
user = "support@vendor.example"
from = "support@vendor.example"
auth = "oauth2"

{extra}
"#
    )
    .replace("DIR", &dir.display().to_string())
}

fn check(text: &str) -> Result<crate::config::Config, String> {
    crate::config::from_str(text, Path::new("t.toml")).map_err(|e| e.to_string())
}

#[test]
fn oauth_config_presets_fill_in_endpoints_and_scopes() {
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), "refresh", "r");
    secret_file(dir.path(), "secret", "s");
    let ms = table(
        dir.path(),
        "[oauth2]\nprovider = \"microsoft\"\ntenant = \"contoso.example\"\n\
         client_id = \"id\"\nrefresh_token_file = \"DIR/refresh\"\n",
    );
    let c = check(&ms).unwrap();
    let Auth::OAuth2(o) = &c.inbox.unwrap().server.auth else {
        panic!("inbox signs in with oauth2")
    };
    assert!(o.token_url.contains("/contoso.example/oauth2/v2.0/token"));
    assert!(o
        .scopes
        .iter()
        .any(|s| s.ends_with("IMAP.AccessAsUser.All")));
    assert!(o.client_secret.is_none());

    let google = table(
        dir.path(),
        "[relay.oauth2]\nprovider = \"google\"\nclient_id = \"id\"\n\
         client_secret_file = \"DIR/secret\"\nrefresh_token_file = \"DIR/refresh\"\n\
         [inbox.oauth2]\nprovider = \"google\"\nclient_id = \"id\"\n\
         client_secret_file = \"DIR/secret\"\nrefresh_token_file = \"DIR/refresh\"\n",
    );
    let c = check(&google).unwrap();
    let Auth::OAuth2(o) = &c.relay.unwrap().server.auth else {
        panic!("relay signs in with oauth2")
    };
    assert_eq!(o.token_url, "https://oauth2.googleapis.com/token");
    assert_eq!(o.client_secret.as_ref().map(Secret::expose), Some("s"));
}

#[test]
fn oauth_config_problems_are_reported_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let open = secret_file(dir.path(), "open", "r");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bad = table(
        dir.path(),
        "[oauth2]\nprovider = \"microsoft\"\nclient_id = \"id\"\n\
         refresh_token_file = \"DIR/open\"\ncolour = \"blue\"\n",
    );
    let e = check(&bad).unwrap_err();
    assert!(e.contains("needs a `tenant`"), "{e}");
    assert!(e.contains("readable by group or others"), "{e}");
    assert!(e.contains("unknown key `colour`"), "{e}");
    assert!(e.contains("t.toml:"), "{e}");

    let no_table = table(dir.path(), "").replace("auth = \"oauth2\"", "auth = \"oauth3\"");
    assert!(check(&no_table).unwrap_err().contains("oauth3"));
    let missing = table(dir.path(), "");
    assert!(check(&missing)
        .unwrap_err()
        .contains("needs an [oauth2] or [inbox.oauth2] table"));
    let http = table(
        dir.path(),
        "[oauth2]\ntoken_url = \"http://login.example/token\"\nclient_id = \"id\"\n\
         refresh_token_file = \"DIR/missing\"\n",
    );
    let e = check(&http).unwrap_err();
    assert!(e.contains("must be https://"), "{e}");
    assert!(e.contains("refresh_token_file"), "{e}");
}
