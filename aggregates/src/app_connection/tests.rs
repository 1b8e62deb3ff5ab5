//! Given/when/then tests of the app connection rules, with no database.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;
use crate::Slug;

type AppTest = TestFramework<AppConnection>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn app_id() -> Uuid {
    Uuid::from_u128(7)
}

fn registered() -> AppConnectionEvent {
    AppConnectionEvent::AppRegistered {
        app_id: app_id(),
        slug: "total-typescript".into(),
        name: "Total TypeScript".into(),
    }
}

fn started(fingerprint: &str) -> AppConnectionEvent {
    AppConnectionEvent::ConnectStarted {
        state_fingerprint: fingerprint.into(),
        expires_at: t0() + Duration::minutes(STATE_TTL_MINUTES),
    }
}

fn consumed(fingerprint: &str) -> AppConnectionEvent {
    AppConnectionEvent::ConnectStateConsumed {
        state_fingerprint: fingerprint.into(),
    }
}

fn connected(account: &str) -> AppConnectionEvent {
    AppConnectionEvent::AppConnected {
        stripe_account_id: account.into(),
        livemode: false,
        scope: "read_write".into(),
        connected_at: t0(),
    }
}

#[test]
fn registers_once() {
    let cmd = AppConnectionCommand::Register {
        app_id: app_id(),
        slug: Slug::parse("total-typescript").expect("slug"),
        name: "  Total TypeScript ".into(),
    };
    AppTest::with(())
        .given_no_previous_events()
        .when(cmd.clone())
        .then_expect_events(vec![registered()]);
    AppTest::with(())
        .given(vec![registered()])
        .when(cmd)
        .then_expect_error(AppConnectionError::SlugTaken);
}

#[test]
fn refuses_blank_names() {
    AppTest::with(())
        .given_no_previous_events()
        .when(AppConnectionCommand::Register {
            app_id: app_id(),
            slug: Slug::parse("a").expect("slug"),
            name: "   ".into(),
        })
        .then_expect_error(AppConnectionError::InvalidName);
}

#[test]
fn commands_on_an_unknown_app_are_refused() {
    AppTest::with(())
        .given_no_previous_events()
        .when(AppConnectionCommand::StartConnect {
            state_fingerprint: "s".into(),
            now: t0(),
        })
        .then_expect_error(AppConnectionError::AppNotFound);
}

#[test]
fn a_state_is_consumed_once_and_then_the_code_completes_the_connection() {
    AppTest::with(())
        .given(vec![registered(), started("s1")])
        .when(AppConnectionCommand::ConsumeConnectState {
            state_fingerprint: "s1".into(),
            now: t0() + Duration::minutes(9),
        })
        .then_expect_events(vec![consumed("s1")]);
    AppTest::with(())
        .given(vec![registered(), started("s1"), consumed("s1")])
        .when(AppConnectionCommand::ConsumeConnectState {
            state_fingerprint: "s1".into(),
            now: t0(),
        })
        .then_expect_error(AppConnectionError::InvalidState);
    AppTest::with(())
        .given(vec![registered(), started("s1"), consumed("s1")])
        .when(AppConnectionCommand::CompleteConnect {
            stripe_account_id: "acct_1".into(),
            livemode: false,
            scope: "read_write".into(),
            now: t0(),
        })
        .then_expect_events(vec![connected("acct_1")]);
}

#[test]
fn expired_unknown_and_foreign_states_are_invalid() {
    for (fingerprint, now) in [
        ("s1", t0() + Duration::minutes(STATE_TTL_MINUTES)),
        ("other", t0()),
    ] {
        AppTest::with(())
            .given(vec![registered(), started("s1")])
            .when(AppConnectionCommand::ConsumeConnectState {
                state_fingerprint: fingerprint.into(),
                now,
            })
            .then_expect_error(AppConnectionError::InvalidState);
    }
}

#[test]
fn completing_without_a_consumed_state_is_refused() {
    AppTest::with(())
        .given(vec![registered(), started("s1")])
        .when(AppConnectionCommand::CompleteConnect {
            stripe_account_id: "acct_1".into(),
            livemode: false,
            scope: "read_write".into(),
            now: t0(),
        })
        .then_expect_error(AppConnectionError::NoExchangeInProgress);
}

#[test]
fn a_denial_uses_up_the_state_and_records_the_failure() {
    AppTest::with(())
        .given(vec![registered(), started("s1")])
        .when(AppConnectionCommand::DeclineConnect {
            state_fingerprint: "s1".into(),
            now: t0(),
            error: "access_denied".into(),
            description: None,
        })
        .then_expect_events(vec![
            consumed("s1"),
            AppConnectionEvent::ConnectFailed {
                error: "access_denied".into(),
                description: None,
            },
        ]);
}

#[test]
fn connecting_twice_requires_a_disconnect_and_states_die_with_the_connection() {
    let history = vec![
        registered(),
        started("s1"),
        started("s2"),
        consumed("s1"),
        connected("acct_1"),
    ];
    AppTest::with(())
        .given(history.clone())
        .when(AppConnectionCommand::StartConnect {
            state_fingerprint: "s3".into(),
            now: t0(),
        })
        .then_expect_error(AppConnectionError::AlreadyConnected);
    let mut after_disconnect = history;
    after_disconnect.push(AppConnectionEvent::AppDisconnected {
        stripe_account_id: "acct_1".into(),
        initiated_by: DisconnectInitiator::Platform,
    });
    AppTest::with(())
        .given(after_disconnect)
        .when(AppConnectionCommand::ConsumeConnectState {
            state_fingerprint: "s2".into(),
            now: t0(),
        })
        .then_expect_error(AppConnectionError::InvalidState);
}

#[test]
fn disconnect_rules() {
    let history = vec![
        registered(),
        started("s1"),
        consumed("s1"),
        connected("acct_1"),
    ];
    AppTest::with(())
        .given(history.clone())
        .when(AppConnectionCommand::Disconnect {
            stripe_account_id: None,
            initiated_by: DisconnectInitiator::Platform,
        })
        .then_expect_events(vec![AppConnectionEvent::AppDisconnected {
            stripe_account_id: "acct_1".into(),
            initiated_by: DisconnectInitiator::Platform,
        }]);
    // A deauthorization about another account changes nothing.
    AppTest::with(())
        .given(history)
        .when(AppConnectionCommand::Disconnect {
            stripe_account_id: Some("acct_old".into()),
            initiated_by: DisconnectInitiator::StripeAccount,
        })
        .then_expect_events(vec![]);
    AppTest::with(())
        .given(vec![registered()])
        .when(AppConnectionCommand::Disconnect {
            stripe_account_id: None,
            initiated_by: DisconnectInitiator::Platform,
        })
        .then_expect_error(AppConnectionError::NotConnected);
    AppTest::with(())
        .given(vec![registered()])
        .when(AppConnectionCommand::Disconnect {
            stripe_account_id: Some("acct_1".into()),
            initiated_by: DisconnectInitiator::StripeAccount,
        })
        .then_expect_events(vec![]);
}

#[test]
fn snapshot_follows_reconnection_to_another_account() {
    let mut app = AppConnection::default();
    for event in [
        registered(),
        started("s1"),
        consumed("s1"),
        connected("acct_1"),
        AppConnectionEvent::AppDisconnected {
            stripe_account_id: "acct_1".into(),
            initiated_by: DisconnectInitiator::StripeAccount,
        },
        started("s2"),
        consumed("s2"),
        connected("acct_2"),
    ] {
        cqrs_es::Aggregate::apply(&mut app, event);
    }
    let snap = app.snapshot().expect("registered");
    assert_eq!(snap.status, ConnectionStatus::Connected);
    assert_eq!(snap.stripe_account_id.as_deref(), Some("acct_2"));
}
