//! schemathesis (PyPI) generates requests from `/openapi.json` against a running service: no
//! answer may be a server error, whatever it sends (with an operator token, so every endpoint is
//! reached past authentication).

use std::process::Command;

use crate::helpers::{spawn_app, OPERATOR_TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_never_get_a_server_error() {
    let app = spawn_app().await;
    app.connected_app("shop", "acct_schema").await;
    let schema = format!("{}/openapi.json", app.address);
    let auth = format!("Authorization: Bearer {OPERATOR_TOKEN}");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([
                "-m",
                "schemathesis.cli",
                "run",
                &schema,
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "25",
                "--header",
                &auth,
                "--no-color",
            ])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .output()
    })
    .await
    .expect("join")
    .expect("python3 runs (schemathesis is installed by scripts/test)");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
}
