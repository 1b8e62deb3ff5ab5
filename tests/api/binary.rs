//! The real binary: start-up checks and the embedded default database.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_connect-ledger");

fn base_command() -> Command {
    let mut command = Command::new(BIN);
    for var in [
        "DATABASE_URL",
        "STRIPE_SECRET_KEY",
        "LEDGER_ENV",
        "LEDGER_TOKENS",
        "LEDGER_LISTEN",
    ] {
        command.env_remove(var);
    }
    command
}

#[test]
fn production_refuses_a_test_key_with_a_clear_message() {
    let output = base_command()
        .args(["migrate"])
        .env("LEDGER_ENV", "production")
        .env("STRIPE_SECRET_KEY", "sk_test_123")
        .env(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .output()
        .expect("run the binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LEDGER_ENV=production refuses"), "{stderr}");
    assert!(
        !stderr.contains("sk_test_123"),
        "the key must not be echoed: {stderr}"
    );
}

#[test]
fn serve_runs_on_an_embedded_database_when_database_url_is_unset() {
    let data_dir =
        std::env::temp_dir().join(format!("cl-embedded-{}", uuid::Uuid::new_v4().simple()));
    // First `migrate` creates the cluster; running it again is harmless.
    for _ in 0..2 {
        let status = base_command()
            .arg("migrate")
            .env("LEDGER_DATA_DIR", &data_dir)
            .status()
            .expect("run migrate");
        assert!(status.success());
    }
    let mut child = base_command()
        .arg("serve")
        .env("LEDGER_DATA_DIR", &data_dir)
        .env("LEDGER_LISTEN", "127.0.0.1:0")
        .env("LEDGER_TOKENS", "operator:embedded-op-token")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stdout = child.stdout.take().expect("stdout");
    let address = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split("listening on ")
                .nth(1)
                .map(|a| a.trim().to_owned())
        })
        .expect("logs `listening on <addr>`");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let ready = client
            .get(format!("http://{address}/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 200);
        let created = client
            .post(format!("http://{address}/v1/apps"))
            .bearer_auth("embedded-op-token")
            .json(&serde_json::json!({"slug": "embedded", "name": "Embedded"}))
            .send()
            .await
            .expect("create");
        assert_eq!(created.status(), 201);
    });
    // SIGTERM: a graceful stop that also stops the private cluster.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let mut stopped = false;
    for _ in 0..100 {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "{status}");
            stopped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(stopped, "serve stops on SIGTERM");
    assert!(
        !data_dir.join("pgdata/postmaster.pid").exists(),
        "cluster stopped"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn the_webhooks_cli_retries_dead_letters_and_backfills() {
    use connect_ledger::fake_stripe::{FakeStripe, FAKE_SECRET_KEY};
    let database_url = crate::helpers::fresh_database().await;
    let stripe = FakeStripe::start().await.expect("fake");
    let cli = |args: &[&str]| {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(args)
            .env("DATABASE_URL", &database_url)
            .env("STRIPE_SECRET_KEY", FAKE_SECRET_KEY)
            .env("STRIPE_API_BASE", stripe.base_url())
            .env_remove("LEDGER_ENV");
        command
    };
    assert!(cli(&["migrate"]).status().await.expect("migrate").success());
    let pool = sqlx::PgPool::connect(&database_url).await.expect("pool");
    sqlx::query(
        "INSERT INTO webhook_events (event_id, event_type, livemode, payload, status, attempts) \
         VALUES ('evt_dead', 'refund.updated', false, '{}', 'dead', 8)",
    )
    .execute(&pool)
    .await
    .expect("plant a dead letter");
    let retry = cli(&["webhooks", "retry"]).output().await.expect("retry");
    assert!(retry.status.success());
    assert!(String::from_utf8_lossy(&retry.stdout).contains("1 event(s) queued again"));
    let status: String =
        sqlx::query_scalar("SELECT status FROM webhook_events WHERE event_id = 'evt_dead'")
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(status, "pending");

    stripe.push_event(
        "refund.created",
        Some("acct_cli"),
        serde_json::json!({"id": "re_cli", "object": "refund", "amount": 5, "charge": "ch_cli"}),
    );
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let backfill = cli(&[
        "webhooks",
        "backfill",
        "--since",
        &since,
        "--account",
        "acct_cli",
    ])
    .output()
    .await
    .expect("backfill");
    let stdout = String::from_utf8_lossy(&backfill.stdout);
    assert!(backfill.status.success(), "{stdout}");
    assert!(stdout.contains("1 listed, 1 new"), "{stdout}");
    assert!(
        stdout.contains("· listed 1 · new 1"),
        "page progress: {stdout}"
    );
    let via: String = sqlx::query_scalar(
        "SELECT received_via FROM webhook_events WHERE event_type = 'refund.created'",
    )
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_eq!(via, "backfill");
}

#[tokio::test]
async fn the_cli_rebuilds_every_projection_side_by_side_and_verifies_the_audit_chain() {
    let database_url = crate::helpers::fresh_database().await;
    let cli = |args: &[&str]| {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(args)
            .env("DATABASE_URL", &database_url)
            .env_remove("LEDGER_ENV");
        command
    };
    assert!(cli(&["migrate"]).status().await.expect("migrate").success());
    let pool = sqlx::PgPool::connect(&database_url).await.expect("pool");
    // Ten refund lifecycles written straight into the log, as if by an older deployment.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT 'ChargeLedger', 'ch_' || c, s.seq, s.kind, '1.0', \
           CASE s.seq \
             WHEN 1 THEN json_build_object('ChargeObserved', json_build_object('charge', json_build_object('app', 'cli', \
               'stripe_account_id', 'acct_cli', 'amount', 1000, 'currency', 'usd', 'amount_refunded', 0, 'disputed', false))) \
             WHEN 2 THEN json_build_object('RefundRequested', json_build_object('refund_id', 'rf_' || c, \
               'idempotency_key', 'refund:p' || c || ':a', 'purchase_id', 'p' || c, 'approval_id', 'a', \
               'requested_amount', 400, 'amount', 400, 'currency', 'usd', 'reason', 'requested_by_customer', 'requested_by', 'cli')) \
             WHEN 3 THEN json_build_object('RefundSubmitted', json_build_object('refund_id', 'rf_' || c, 'attempt', 1)) \
             ELSE json_build_object('RefundStatusChanged', json_build_object('refund_id', 'rf_' || c, \
               'stripe_refund_id', 're_' || c, 'status', 'succeeded', 'failure_reason', null)) END, \
           json_build_object('actor', 'cli', 'source', 'system') \
         FROM generate_series(1, 10) c, \
           (VALUES (1, 'ChargeObserved'), (2, 'RefundRequested'), (3, 'RefundSubmitted'), (4, 'RefundStatusChanged')) s(seq, kind)",
    )
    .execute(&pool)
    .await
    .expect("seed the log");

    let rebuilt = cli(&["projections", "rebuild"])
        .output()
        .await
        .expect("rebuild");
    let stdout = String::from_utf8_lossy(&rebuilt.stdout);
    assert!(rebuilt.status.success(), "{stdout}");
    for line in [
        // Progress while it works, then the outcome.
        "  refunds: 40 events replayed",
        "  audit: 40 events replayed",
        "apps: rebuilt from 0 events, swapped in",
        "refunds: rebuilt from 40 events, swapped in",
        "audit: rebuilt from 40 events, swapped in",
    ] {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }
    let (refunded, refunds): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(refunded)::bigint FROM charges), (SELECT count(*) FROM refunds WHERE status = 'succeeded')",
    )
    .fetch_one(&pool)
    .await
    .expect("read models");
    assert_eq!((refunded, refunds), (4000, 10));
    // The rebuilt tables carry the indexes under the names the migrations gave them.
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'refunds'::regclass ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("indexes");
    assert_eq!(
        names,
        [
            "refunds_app_created",
            "refunds_charge",
            "refunds_idempotency_key_key",
            "refunds_pkey",
            "refunds_purchase",
            "refunds_requested"
        ]
    );
    // A second rebuild works on the rebuilt tables.
    let again = cli(&["projections", "rebuild", "refunds"])
        .output()
        .await
        .expect("rebuild");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let verified = cli(&["audit", "verify"]).output().await.expect("verify");
    let report: serde_json::Value =
        serde_json::from_slice(&verified.stdout).expect("verify prints JSON");
    assert!(verified.status.success());
    assert_eq!(report["ok"], true);
    assert_eq!(report["checked"], 40);

    // Tampering with a sealed event is found, and the command says so by its exit status.
    sqlx::query("UPDATE events SET payload = replace(payload::text, '400', '401')::json WHERE event_type = 'RefundRequested' AND aggregate_id = 'ch_3'")
        .execute(&pool)
        .await
        .expect("tamper");
    let verified = cli(&["audit", "verify"]).output().await.expect("verify");
    assert!(!verified.status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&verified.stdout).expect("verify prints JSON");
    assert_eq!(report["ok"], false);
}

#[tokio::test]
async fn token_create_prints_a_token_and_the_hashed_entry_that_admits_it() {
    let output = base_command()
        .args(["token", "create", "--role", "auditor", "--no-store"])
        .output()
        .expect("token create");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(prefix).map(|(_, v)| v.trim().to_owned()))
            .expect("printed")
    };
    let token = field("give it to its holder): ");
    let entry = field("only its SHA-256): ");
    assert!(entry.starts_with("auditor:sha256:"), "{entry}");
    assert!(!entry.contains(&token));

    let stripe = connect_ledger::fake_stripe::FakeStripe::start()
        .await
        .expect("fake");
    let database_url = crate::helpers::fresh_database().await;
    let mut settings = crate::helpers::settings(&database_url, &stripe);
    settings.ledger_tokens = Some(entry);
    let app = crate::helpers::spawn_app_with(settings, stripe).await;
    let read = app
        .http
        .get(format!("{}/v1/apps", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), 200);
    let write = app
        .http
        .post(format!("{}/v1/apps", app.address))
        .bearer_auth(&token)
        .json(&serde_json::json!({"slug": "shop", "name": "Shop"}))
        .send()
        .await
        .expect("write");
    assert_eq!(write.status(), 403);
}

#[tokio::test]
async fn stored_tokens_are_admitted_listed_and_revoked() {
    let stripe = connect_ledger::fake_stripe::FakeStripe::start()
        .await
        .expect("fake");
    let database_url = crate::helpers::fresh_database().await;
    let settings = crate::helpers::settings(&database_url, &stripe);
    let app = crate::helpers::spawn_app_with(settings, stripe).await;
    let cli = |args: &[&str]| {
        base_command()
            .args(args)
            .env("DATABASE_URL", &database_url)
            .output()
            .expect("cli")
    };
    let created = cli(&[
        "token",
        "create",
        "--role",
        "auditor",
        "--label",
        "auditor bot",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let stdout = String::from_utf8_lossy(&created.stdout).to_string();
    let token = stdout
        .lines()
        .find_map(|l| {
            l.split_once("give it to its holder): ")
                .map(|(_, t)| t.trim().to_owned())
        })
        .expect("token printed");
    let stored: Vec<(String, String)> = sqlx::query_as("SELECT fingerprint, role FROM api_tokens")
        .fetch_all(&app.pool)
        .await
        .expect("stored");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].0,
        ledger_aggregates::secret_token::fingerprint(&token)
    );
    assert_eq!(stored[0].1, "auditor");
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, '') FROM api_tokens t")
        .fetch_one(&app.pool)
        .await
        .expect("dump");
    assert!(!dump.contains(&token), "the token itself is never stored");

    let status = |method: reqwest::Method| {
        app.http
            .request(method, format!("{}/v1/apps", app.address))
            .bearer_auth(&token)
            .json(&serde_json::json!({"slug": "shop", "name": "Shop"}))
            .send()
    };
    let read = status(reqwest::Method::GET)
        .await
        .expect("read")
        .status()
        .as_u16();
    let write = status(reqwest::Method::POST)
        .await
        .expect("write")
        .status()
        .as_u16();
    assert_eq!(
        (read, write),
        (200, 403),
        "an auditor reads and may not write"
    );

    let listed = cli(&["token", "list"]);
    let listing = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        listing.contains(&stored[0].0[..12])
            && listing.contains("auditor bot")
            && listing.contains("active"),
        "{listing}"
    );
    assert!(
        !cli(&["token", "revoke", "abc"]).status.success(),
        "too short a prefix"
    );
    let revoked = cli(&["token", "revoke", &stored[0].0[..10]]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let read = status(reqwest::Method::GET)
        .await
        .expect("read")
        .status()
        .as_u16();
    assert_eq!(read, 401, "revoked");
    assert!(String::from_utf8_lossy(&cli(&["token", "list"]).stdout).contains("revoked"));
}

#[test]
fn every_subcommand_has_help() {
    for path in [
        vec![],
        vec!["serve"],
        vec!["migrate"],
        vec!["demo"],
        vec!["projections"],
        vec!["projections", "rebuild"],
        vec!["audit"],
        vec!["audit", "verify"],
        vec!["reconcile"],
        vec!["webhooks"],
        vec!["webhooks", "retry"],
        vec!["webhooks", "backfill"],
        vec!["token"],
        vec!["token", "create"],
        vec!["token", "list"],
        vec!["token", "revoke"],
    ] {
        let output = base_command()
            .args(&path)
            .arg("--help")
            .output()
            .expect("help");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{path:?} --help failed");
        assert!(text.contains("Usage: connect-ledger"), "{path:?}: {text}");
        // A description above the usage line: the subcommand explains itself.
        let about = text.lines().next().unwrap_or_default();
        assert!(
            about.len() > 10 && !about.starts_with("Usage"),
            "{path:?}: {text}"
        );
    }
}

#[tokio::test]
async fn the_demo_tells_the_whole_story_and_says_where_to_look() {
    let database_url = crate::helpers::fresh_database().await;
    let output = tokio::process::Command::new(BIN)
        .args(["demo", "--once"])
        .env_remove("LEDGER_TOKENS")
        .env_remove("STRIPE_SECRET_KEY")
        .env("DATABASE_URL", &database_url)
        .env("LEDGER_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "connected to acct_",
        "full refund",
        "partial refund",
        "never twice",
        "422 amount_exceeds_refundable",
        "Stripe Dashboard): 200",
        "refunded 3500",
        "audit chain: ok true",
        "/dashboard",
        "/v1/audit/verify",
    ] {
        assert!(
            stdout.contains(expected),
            "demo output lacks {expected:?}:\n{stdout}"
        );
    }
    let pool = sqlx::PgPool::connect(&database_url).await.expect("pool");
    let (apps, refunds, external): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM apps WHERE status = 'connected'), \
           (SELECT count(*) FROM refunds WHERE status = 'succeeded'), \
           (SELECT count(*) FROM external_refunds)",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    assert_eq!((apps, refunds, external), (1, 2, 1));
}

#[tokio::test]
async fn reconcile_shows_its_progress_and_prints_the_report() {
    let app = crate::helpers::spawn_app().await;
    app.connected_app("alpha", "acct_cli_reconcile").await;
    let charge = app.stripe.create_charge("acct_cli_reconcile", 5_000, "usd");
    assert_eq!(
        app.refund("alpha", &charge, "appr_cli", Some(1_200))
            .await
            .status(),
        201
    );
    app.projections_settled().await;
    let output = tokio::process::Command::new(BIN)
        .args(["reconcile", "--app", "alpha"])
        .env_remove("LEDGER_TOKENS")
        .env("DATABASE_URL", &app.database_url)
        .env(
            "STRIPE_SECRET_KEY",
            connect_ledger::fake_stripe::FAKE_SECRET_KEY,
        )
        .env("STRIPE_API_BASE", app.stripe.base_url())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("reconcile");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    for step in [
        "listing the refunds on acct_cli_reconcile",
        "1 refunds listed",
        "comparing 1 refunds at Stripe with 1 in the ledger",
    ] {
        assert!(stderr.contains(step), "progress lacks {step:?}: {stderr}");
    }
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("the report, JSON");
    assert_eq!(report["checked"], 1, "{report}");
    assert_eq!(report["differences"].as_array().map(Vec::len), Some(0));
}
