//! Given/when/then tests of the refund rules, and a property test of the money invariant.

use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use proptest::prelude::*;

use super::*;

type LedgerTest = TestFramework<ChargeLedger>;

fn facts(amount_refunded: i64) -> ChargeFacts {
    ChargeFacts {
        app: "total-typescript".into(),
        stripe_account_id: "acct_1".into(),
        amount: 1000,
        currency: "usd".into(),
        amount_refunded,
        disputed: false,
    }
}

fn new_refund(id: &str, amount: Option<i64>) -> NewRefund {
    NewRefund {
        refund_id: id.into(),
        idempotency_key: idempotency_key("pur_1", id),
        purchase_id: "pur_1".into(),
        approval_id: id.into(),
        amount,
        reason: RefundReason::RequestedByCustomer,
        requested_by: "agent@support".into(),
    }
}

fn requested(id: &str, requested_amount: Option<i64>, amount: i64) -> ChargeLedgerEvent {
    ChargeLedgerEvent::RefundRequested {
        refund_id: id.into(),
        idempotency_key: idempotency_key("pur_1", id),
        purchase_id: "pur_1".into(),
        approval_id: id.into(),
        requested_amount,
        amount,
        currency: "usd".into(),
        reason: RefundReason::RequestedByCustomer,
        requested_by: "agent@support".into(),
    }
}

fn observed(amount_refunded: i64) -> ChargeLedgerEvent {
    ChargeLedgerEvent::ChargeObserved {
        charge: facts(amount_refunded),
    }
}

fn status(id: &str, re: Option<&str>, status: RefundStatus) -> ChargeLedgerEvent {
    ChargeLedgerEvent::RefundStatusChanged {
        refund_id: id.into(),
        stripe_refund_id: re.map(Into::into),
        status,
        failure_reason: None,
    }
}

fn answer(re: &str, status: RefundStatus) -> StripeRefundAnswer {
    StripeRefundAnswer {
        stripe_refund_id: re.into(),
        status,
        failure_reason: None,
    }
}

#[test]
fn a_first_refund_records_the_charge_then_the_intent() {
    LedgerTest::with(())
        .given_no_previous_events()
        .when(ChargeLedgerCommand::RequestRefund {
            charge: facts(0),
            refund: new_refund("a1", Some(300)),
        })
        .then_expect_events(vec![observed(0), requested("a1", Some(300), 300)]);
}

#[test]
fn an_omitted_amount_means_all_that_is_refundable() {
    LedgerTest::with(())
        .given(vec![observed(0), requested("a1", Some(300), 300)])
        .when(ChargeLedgerCommand::RequestRefund {
            charge: facts(0),
            refund: new_refund("a2", None),
        })
        .then_expect_events(vec![requested("a2", None, 700)]);
}

#[test]
fn more_than_refundable_is_refused_counting_in_flight_and_stripe_refunds() {
    LedgerTest::with(())
        .given(vec![observed(0), requested("a1", Some(600), 600)])
        .when(ChargeLedgerCommand::RequestRefund {
            charge: facts(0),
            refund: new_refund("a2", Some(401)),
        })
        .then_expect_error(ChargeLedgerError::ExceedsRefundable { refundable: 400 });
    // A Dashboard refund Stripe knows about and we do not.
    LedgerTest::with(())
        .given(vec![observed(0)])
        .when(ChargeLedgerCommand::RequestRefund {
            charge: facts(900),
            refund: new_refund("a2", Some(101)),
        })
        .then_expect_error(ChargeLedgerError::ExceedsRefundable { refundable: 100 });
}

#[test]
fn the_same_key_is_a_replay_or_a_conflict() {
    let history = vec![observed(0), requested("a1", Some(300), 300)];
    LedgerTest::with(())
        .given(history.clone())
        .when(ChargeLedgerCommand::RequestRefund {
            charge: facts(0),
            refund: NewRefund {
                refund_id: "other-id".into(),
                ..new_refund("a1", Some(300))
            },
        })
        .then_expect_error(ChargeLedgerError::AlreadyRequested {
            refund_id: "a1".into(),
        });
    LedgerTest::with(())
        .given(history)
        .when(ChargeLedgerCommand::RequestRefund {
            charge: facts(0),
            refund: new_refund("a1", Some(200)),
        })
        .then_expect_error(ChargeLedgerError::IdempotencyKeyReused);
}

#[test]
fn another_app_cannot_refund_this_charge() {
    LedgerTest::with(())
        .given(vec![observed(0)])
        .when(ChargeLedgerCommand::RequestRefund {
            charge: ChargeFacts {
                app: "other".into(),
                ..facts(0)
            },
            refund: new_refund("a1", Some(1)),
        })
        .then_expect_error(ChargeLedgerError::ChargeBelongsToAnotherApp);
}

#[test]
fn disputed_and_non_positive_amounts_are_refused() {
    LedgerTest::with(())
        .given_no_previous_events()
        .when(ChargeLedgerCommand::RequestRefund {
            charge: ChargeFacts {
                disputed: true,
                ..facts(0)
            },
            refund: new_refund("a1", None),
        })
        .then_expect_error(ChargeLedgerError::ChargeDisputed);
    LedgerTest::with(())
        .given_no_previous_events()
        .when(ChargeLedgerCommand::RequestRefund {
            charge: facts(0),
            refund: new_refund("a1", Some(0)),
        })
        .then_expect_error(ChargeLedgerError::InvalidAmount);
}

#[test]
fn asking_everything_of_a_fully_refunded_charge_is_void_not_an_error() {
    LedgerTest::with(())
        .given(vec![observed(0)])
        .when(ChargeLedgerCommand::RequestRefund {
            charge: facts(1000),
            refund: new_refund("a9", None),
        })
        .then_expect_events(vec![
            observed(1000),
            requested("a9", None, 0),
            ChargeLedgerEvent::RefundStatusChanged {
                refund_id: "a9".into(),
                stripe_refund_id: None,
                status: RefundStatus::Canceled,
                failure_reason: Some(CHARGE_ALREADY_REFUNDED.into()),
            },
        ]);
}

#[test]
fn charge_already_refunded_from_stripe_voids_the_refund_and_fills_the_charge() {
    LedgerTest::with(())
        .given(vec![observed(0), requested("a1", None, 1000)])
        .when(ChargeLedgerCommand::RecordAlreadyRefunded {
            refund_id: "a1".into(),
        })
        .then_expect_events(vec![
            observed(1000),
            ChargeLedgerEvent::RefundStatusChanged {
                refund_id: "a1".into(),
                stripe_refund_id: None,
                status: RefundStatus::Canceled,
                failure_reason: Some(CHARGE_ALREADY_REFUNDED.into()),
            },
        ]);
}

#[test]
fn submissions_count_attempts_until_stripe_answers() {
    let history = vec![observed(0), requested("a1", None, 1000)];
    LedgerTest::with(())
        .given(history.clone())
        .when(ChargeLedgerCommand::MarkSubmitted {
            refund_id: "a1".into(),
        })
        .then_expect_events(vec![ChargeLedgerEvent::RefundSubmitted {
            refund_id: "a1".into(),
            attempt: 1,
        }]);
    let mut answered = history;
    answered.push(status("a1", Some("re_1"), RefundStatus::Succeeded));
    LedgerTest::with(())
        .given(answered)
        .when(ChargeLedgerCommand::MarkSubmitted {
            refund_id: "a1".into(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn late_and_repeated_news_never_moves_a_refund_backwards() {
    let base = vec![observed(0), requested("a1", None, 1000)];
    let mut succeeded = base.clone();
    succeeded.push(status("a1", Some("re_1"), RefundStatus::Succeeded));
    for late in [
        RefundStatus::Pending,
        RefundStatus::Succeeded,
        RefundStatus::Requested,
    ] {
        LedgerTest::with(())
            .given(succeeded.clone())
            .when(ChargeLedgerCommand::RecordStripeAnswer {
                refund_id: "a1".into(),
                answer: answer("re_1", late),
            })
            .then_expect_events(vec![]);
    }
    // succeeded → failed is real (e.g. an expired card).
    LedgerTest::with(())
        .given(succeeded)
        .when(ChargeLedgerCommand::RecordStripeAnswer {
            refund_id: "a1".into(),
            answer: StripeRefundAnswer {
                failure_reason: Some("expired_or_canceled_card".into()),
                ..answer("re_1", RefundStatus::Failed)
            },
        })
        .then_expect_events(vec![ChargeLedgerEvent::RefundStatusChanged {
            refund_id: "a1".into(),
            stripe_refund_id: Some("re_1".into()),
            status: RefundStatus::Failed,
            failure_reason: Some("expired_or_canceled_card".into()),
        }]);
    // A rejection after an answer changes nothing.
    let mut pending = base;
    pending.push(status("a1", Some("re_1"), RefundStatus::Pending));
    LedgerTest::with(())
        .given(pending)
        .when(ChargeLedgerCommand::RecordRejection {
            refund_id: "a1".into(),
            code: "amount_too_large".into(),
            message: "x".into(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_rejected_refund_frees_its_amount() {
    let mut ledger = ChargeLedger::default();
    for event in [
        observed(0),
        requested("a1", None, 1000),
        ChargeLedgerEvent::RefundRejected {
            refund_id: "a1".into(),
            code: "amount_too_large".into(),
            message: "too much".into(),
        },
    ] {
        ledger.apply(event);
    }
    assert_eq!(ledger.balance().refundable(), 1000);
    assert_eq!(
        ledger.refund("a1").map(|r| r.status),
        Some(RefundStatus::Failed)
    );
}

#[derive(Debug, Clone)]
enum Step {
    Request(Option<i64>),
    Answer(usize, RefundStatus),
    Reject(usize),
    StripeSees(i64),
}

fn step() -> impl Strategy<Value = Step> {
    let status = prop_oneof![
        Just(RefundStatus::Pending),
        Just(RefundStatus::Succeeded),
        Just(RefundStatus::Failed),
        Just(RefundStatus::Canceled),
        Just(RefundStatus::RequiresAction),
    ];
    prop_oneof![
        proptest::option::of(1i64..700).prop_map(Step::Request),
        (0usize..20, status).prop_map(|(i, s)| Step::Answer(i, s)),
        (0usize..20).prop_map(Step::Reject),
        (0i64..1000).prop_map(Step::StripeSees),
    ]
}

proptest! {
    /// Whatever happens, money held by refunds never exceeds the charge.
    #[test]
    fn refunds_never_exceed_the_charge(steps in proptest::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let mut ledger = ChargeLedger::default();
        let mut stripe_refunded = 0;
        for (n, step) in steps.into_iter().enumerate() {
            let ids: Vec<String> = ledger.refunds().iter().map(|r| r.refund_id.clone()).collect();
            let command = match step {
                Step::Request(amount) => ChargeLedgerCommand::RequestRefund {
                    charge: facts(stripe_refunded),
                    refund: new_refund(&format!("r{n}"), amount),
                },
                Step::Answer(i, s) if !ids.is_empty() => ChargeLedgerCommand::RecordStripeAnswer {
                    refund_id: ids[i % ids.len()].clone(),
                    answer: answer(&format!("re_{i}"), s),
                },
                Step::Reject(i) if !ids.is_empty() => ChargeLedgerCommand::RecordRejection {
                    refund_id: ids[i % ids.len()].clone(),
                    code: "declined".into(),
                    message: "no".into(),
                },
                Step::StripeSees(v) => {
                    stripe_refunded = stripe_refunded.max(v);
                    ChargeLedgerCommand::ObserveCharge { charge: facts(stripe_refunded) }
                }
                _ => continue,
            };
            let sink = cqrs_es::event_sink::EventSink::default();
            let _ = runtime.block_on(ledger.handle(command, &(), &sink));
            let held: i64 = ledger
                .refunds()
                .iter()
                .filter(|r| r.status.holds_money())
                .map(|r| r.amount)
                .sum();
            prop_assert!(held <= 1000, "held {held}");
            prop_assert!(ledger.balance().refundable() >= 0);
        }
    }
}
