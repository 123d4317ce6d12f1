//! `podrouter oauth2 authorize` against a device authorization and token
//! endpoint on loopback: the code and URL are printed, the grant is
//! awaited (one `authorization_pending` first), the refresh token file is
//! written with mode 0600, and no token is printed.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const REFRESH: &str = "deviceREFRESHsecret";
const ACCESS: &str = "deviceACCESSsecret";

fn json(status: u16, body: &str) -> axum::response::Response {
    axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_owned()))
        .unwrap()
}

/// The two endpoints; returns their base URL.
fn endpoint(runtime: &tokio::runtime::Runtime) -> String {
    let polls = Arc::new(AtomicUsize::new(0));
    runtime.block_on(async move {
        let app = axum::Router::new()
            .route(
                "/device",
                axum::routing::post(|body: String| async move {
                    assert!(body.contains("client_id=podrouter-app"), "{body}");
                    json(
                        200,
                        r#"{"device_code":"dev-1","user_code":"WDJB-MJHT",
                            "verification_uri":"http://127.0.0.1/device-login",
                            "expires_in":600,"interval":1}"#,
                    )
                }),
            )
            .route(
                "/token",
                axum::routing::post(move |body: String| {
                    let polls = Arc::clone(&polls);
                    async move {
                        assert!(body.contains("device_code=dev-1"), "{body}");
                        if polls.fetch_add(1, Ordering::SeqCst) == 0 {
                            return json(400, r#"{"error":"authorization_pending"}"#);
                        }
                        json(
                            200,
                            &format!(
                                r#"{{"access_token":"{ACCESS}","token_type":"Bearer",
                                    "expires_in":3600,"refresh_token":"{REFRESH}"}}"#
                            ),
                        )
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    })
}

#[test]
fn authorize_runs_the_device_flow_and_writes_the_refresh_token() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let base = endpoint(&runtime);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("refresh.token");
    let table = dir.path().join("routing.toml");
    std::fs::write(
        &table,
        format!(
            "[oauth2]\nprovider = \"microsoft\"\ntenant = \"contoso.example\"\n\
             client_id = \"podrouter-app\"\nrefresh_token_file = \"{}\"\n",
            out.display()
        ),
    )
    .unwrap();

    let run = Command::new(env!("CARGO_BIN_EXE_podrouter"))
        .args(["oauth2", "authorize", "-c"])
        .arg(&table)
        .args(["--device-url", &format!("{base}/device")])
        .args(["--token-url", &format!("{base}/token")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("WDJB-MJHT"), "{stdout}");
    assert!(stdout.contains("http://127.0.0.1/device-login"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("{REFRESH}\n")
    );
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    for secret in [REFRESH, ACCESS] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }
}

#[test]
fn authorize_without_a_provider_or_urls_is_a_usage_error() {
    let run = Command::new(env!("CARGO_BIN_EXE_podrouter"))
        .args([
            "oauth2",
            "authorize",
            "--client-id",
            "x",
            "--out",
            "/nonexistent/x",
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--provider"));
}

/// The endpoints follow `check`'s rule (https, or http to loopback only),
/// and `--out` is checked before anyone signs in. Neither call reaches a
/// network.
#[test]
fn authorize_refuses_plain_http_and_a_missing_out_folder_up_front() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_podrouter"))
            .args(["oauth2", "authorize", "--client-id", "x"])
            .args(args)
            .output()
            .unwrap()
    };
    let http = run(&[
        "--device-url",
        "http://example.com/dev",
        "--token-url",
        "https://example.com/tok",
        "--out",
        "/tmp/podrouter-never-written",
    ]);
    assert_eq!(http.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&http.stderr).contains("must be https://"));
    let out = run(&[
        "--device-url",
        "http://127.0.0.1:9/dev",
        "--token-url",
        "http://127.0.0.1:9/tok",
        "--out",
        "/nonexistent-podrouter-dir/token",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the folder must exist"));
}
