//! The read-only dashboard: its sign-in, what it shows, that it escapes what it shows, and the
//! whole of it driven in headless Chromium (Debian's `chromium`, with playwright-core), with
//! screenshots checked for the rows they must show.

use std::path::Path;

use connect_ledger::fake_stripe::Fault;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, AUDITOR_TOKEN, OPERATOR_TOKEN};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn sign_in(app: &TestApp, token: &str) -> reqwest::Response {
    client()
        .post(format!("{}/dashboard/login", app.address))
        .form(&[("token", token)])
        .send()
        .await
        .expect("login")
}

async fn page(app: &TestApp, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut request = client().get(format!("{}{path}", app.address));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.expect("page");
    let status = response.status().as_u16();
    (status, response.text().await.expect("html"))
}

/// Two apps (one connected), three refunds on one charge: two succeeded, one refused by Stripe.
async fn seeded() -> (TestApp, String) {
    let app = spawn_app().await;
    app.connected_app("total-typescript", "acct_tt").await;
    app.create_app("epic-react").await;
    let charge = app.stripe.create_charge("acct_tt", 10_000, "usd");
    for (approval, amount) in [("appr_1", 1_500), ("appr_2", 2_500)] {
        let refund = app
            .refund("total-typescript", &charge, approval, Some(amount))
            .await;
        assert_eq!(refund.status(), 201);
    }
    app.stripe.inject("refunds.create", Fault::Status(400));
    // Answered as refused; the ledger keeps the refund, failed.
    let refused = app
        .refund("total-typescript", &charge, "appr_3", Some(100))
        .await;
    assert_eq!(refused.status(), 422);
    app.projections_settled().await;
    (app, charge)
}

#[tokio::test]
async fn the_dashboard_asks_for_a_token_and_shows_the_ledger_escaped() {
    let (app, charge) = seeded().await;
    let hostile = app
        .post(
            "/v1/apps",
            json!({"slug": "hostile", "name": "<script>alert(1)</script>"}),
        )
        .await;
    assert_eq!(hostile.status(), 201);
    app.projections_settled().await;

    let (status, html) = page(&app, "/dashboard", None).await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"name="token""#) && !html.contains("total-typescript"));
    let (status, _) = page(&app, "/dashboard/audit", None).await;
    assert_eq!(status, 401, "every page needs the token");

    assert_eq!(sign_in(&app, "not-a-token").await.status(), 401);
    let signed = sign_in(&app, AUDITOR_TOKEN).await;
    assert_eq!(signed.status(), 303);
    let set_cookie = signed.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().expect("pair").to_owned();

    let overview = client()
        .get(format!("{}/dashboard", app.address))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("overview");
    let csp = overview.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = overview.text().await.expect("html");
    for expected in [
        "total-typescript",
        "acct_tt",
        "epic-react",
        "disconnected",
        "succeeded",
        "failed",
        &charge,
    ] {
        assert!(html.contains(expected), "overview lacks {expected}");
    }
    assert!(!html.contains("<script>"), "a name was not escaped");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    let (status, ledger) = page(&app, &format!("/dashboard/charges/{charge}"), Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(ledger.contains("4000"), "refunded 1,500 + 2,500: {ledger}");
    assert!(ledger.contains("6000"), "still refundable");
    let (status, trail) = page(
        &app,
        &format!("/dashboard/audit?charge_id={charge}"),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 200);
    for event in ["RefundRequested", "RefundSubmitted", "RefundStatusChanged"] {
        assert!(trail.contains(event), "audit trail lacks {event}");
    }
    assert_eq!(
        page(&app, "/dashboard/audit?source=nope", Some(&cookie))
            .await
            .0,
        422
    );
    assert_eq!(
        page(&app, "/dashboard/audit?after=x", Some(&cookie))
            .await
            .0,
        400
    );
    let (_, verified) = page(&app, "/dashboard/verify", Some(&cookie)).await;
    assert!(verified.contains("Intact"), "{verified}");

    // An operator's token signs in too; signing out clears the cookie.
    assert_eq!(sign_in(&app, OPERATOR_TOKEN).await.status(), 303);
    let out = client()
        .post(format!("{}/dashboard/logout", app.address))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("logout");
    assert!(out.headers()["set-cookie"]
        .to_str()
        .expect("c")
        .contains("Max-Age=0"));
}

/// Pixels of exactly this colour in a PNG.
fn count_colour(path: &Path, rgb: [u8; 3]) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(path).expect("screenshot"));
    let mut reader = decoder.read_info().expect("png");
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).expect("frame");
    let channels = info.color_type.samples();
    let count = buffer[..info.buffer_size()]
        .chunks(channels)
        .filter(|px| px[..3] == rgb)
        .count();
    (info.width, info.height, count)
}

#[tokio::test]
async fn the_dashboard_works_in_headless_chromium() {
    let (app, charge) = seeded().await;
    let shots =
        std::env::temp_dir().join(format!("cl_dashboard_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    // Not blocking: the service under test runs on this test's runtime.
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&app.address)
        .arg(AUDITOR_TOKEN)
        .arg(&charge)
        .arg(&shots)
        .output()
        .await
        .expect(
            "node (scripts/lib/ensure-fakes.sh installs it, with chromium and playwright-core)",
        );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(
        output
            .stdout
            .split(|b| *b == b'\n')
            .find(|l| l.starts_with(b"{"))
            .expect("json line"),
    )
    .expect("json");

    assert_eq!(seen["login"], true, "the sign-in form came first");
    let apps = seen["apps"].as_array().expect("apps");
    let app_rows: Vec<String> = apps.iter().map(|r| r.to_string()).collect();
    assert!(
        app_rows.iter().any(|r| r.contains("total-typescript")
            && r.contains("connected")
            && r.contains("acct_tt")),
        "{app_rows:?}"
    );
    assert!(
        app_rows
            .iter()
            .any(|r| r.contains("epic-react") && r.contains("disconnected")),
        "{app_rows:?}"
    );
    let refunds = seen["refunds"].as_array().expect("refunds");
    assert_eq!(refunds.len(), 3, "{refunds:?}");
    let statuses: Vec<String> = refunds.iter().map(|r| r[5].to_string()).collect();
    assert!(statuses[0].contains("failed"), "newest first: {statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| s.contains("succeeded")).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| s.contains("failed")).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(seen["refundsVisible"], true);
    let ledger = seen["ledger"].to_string();
    assert!(
        ledger.contains("4000") && ledger.contains("6000"),
        "{ledger}"
    );
    assert!(
        seen["audit"].as_array().expect("audit").len() >= 7,
        "{}",
        seen["audit"]
    );
    assert!(
        seen["verify"].as_str().unwrap_or("").starts_with("Intact"),
        "{}",
        seen["verify"]
    );

    // The screenshot shows the rows: the status badges' colours, as many as there are rows
    // (a badge is some hundreds of pixels), on a page of the browser's width.
    let overview = shots.join("overview.png");
    let (width, _, green) = count_colour(&overview, [0xd4, 0xf4, 0xdd]);
    let (_, _, red) = count_colour(&overview, [0xfb, 0xdc, 0xdc]);
    assert_eq!(width, 1280);
    // Green: two succeeded refunds and one connected app; red: one failed refund, one
    // disconnected app.
    assert!(green > 3 * 150, "green badge pixels: {green}");
    assert!(red > 2 * 150, "red badge pixels: {red}");
    for name in ["charge.png", "audit.png"] {
        let (width, height, _) = count_colour(&shots.join(name), [0, 0, 0]);
        assert!(width >= 1280 && height >= 300, "{name}: {width}×{height}");
    }
    if std::env::var_os("KEEP_SCREENSHOTS").is_some() {
        println!("screenshots kept in {}", shots.display());
    } else {
        let _ = std::fs::remove_dir_all(&shots);
    }
}
