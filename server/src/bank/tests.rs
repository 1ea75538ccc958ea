//! Tests of the HTTP bank gateway against an in-process sandbox bank: every outcome the top-up
//! engine must handle, each test with its own bank, database and port.

use std::path::PathBuf;
use std::time::Duration;

use cardbridge_sandbox_bank::{Endpoint, Fault, FaultPlan, FaultRule, SandboxBank, SandboxConfig, SeedCustomer, SeedSettlement};
use protocol::bank::signing::BankKey;

use super::*;

const SETTLEMENT: &str = "issuer-settlement-1";
const ALICE_ACCOUNT: &str = "cust-alice";
const ALICE_CARD: &str = "6200000000000005";
const ALICE_PHONE: &str = "+8613800000001";
const BOB_ACCOUNT: &str = "cust-bob";
const BOB_CARD: &str = "6205500000000000004";
const BOB_PHONE: &str = "+8613800000002";

struct Env {
    bank: SandboxBank,
    gateway: HttpBankGateway,
    dir: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir() -> PathBuf {
    use rand::RngCore;
    let dir = std::env::temp_dir().join(format!("cardbridge-bank-{}-{:016x}", std::process::id(), rand::rngs::OsRng.next_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn client_config(base_url: &str, key: BankKey) -> BankClientConfig {
    BankClientConfig {
        base_url: base_url.to_string(),
        key,
        request_timeout: Duration::from_millis(700),
        connect_timeout: Duration::from_millis(500),
        read_attempts: 3,
        retry_backoff: Duration::from_millis(20),
    }
}

/// A fresh sandbox bank (Alice 100.00, Bob 3.00, settlement 0) and a gateway pointed at it.
async fn env() -> Env {
    let dir = temp_dir();
    let key = BankKey::generate("test-key");
    let mut config = SandboxConfig::new("127.0.0.1:0".parse().unwrap(), format!("sqlite://{}", dir.join("bank.db").display()), key.clone());
    config.settlement_accounts.push(SeedSettlement { account_id: SETTLEMENT.into(), holder_name: "Issuer".into(), currency: "CNY".into() });
    for (account_id, card_number, phone, balance_minor) in [(ALICE_ACCOUNT, ALICE_CARD, ALICE_PHONE, 10_000), (BOB_ACCOUNT, BOB_CARD, BOB_PHONE, 300)] {
        config.customers.push(SeedCustomer {
            account_id: account_id.into(),
            holder_name: account_id.into(),
            card_number: card_number.into(),
            phone: phone.into(),
            currency: "CNY".into(),
            balance_minor,
        });
    }
    let bank = SandboxBank::spawn(config).await.unwrap();
    let gateway = HttpBankGateway::new(client_config(&bank.base_url(), key)).unwrap();
    Env { bank, gateway, dir }
}

impl Env {
    async fn bind(&self, card: &str, phone: &str) -> BindingToken {
        self.gateway.create_binding(&Pan::parse(card).unwrap(), phone).await.unwrap().token
    }

    async fn balance(&self, account: &str) -> i64 {
        self.bank.balance(account).await.unwrap().unwrap()
    }
}

fn order(key: &str, binding: &BindingToken, amount_minor: i64) -> TransferOrder {
    TransferOrder {
        idempotency_key: key.into(),
        binding: binding.clone(),
        amount_minor,
        currency: "CNY".into(),
        to_account: SETTLEMENT.into(),
        reference: "campus card top-up".into(),
    }
}

fn today() -> String {
    cardbridge_sandbox_bank::ledger::date_of(cardbridge_sandbox_bank::ledger::now_ms())
}

#[tokio::test]
async fn bank_binding_with_the_registered_phone_returns_a_token() {
    let env = env().await;

    let bound = env.gateway.create_binding(&Pan::parse(ALICE_CARD).unwrap(), ALICE_PHONE).await.unwrap();

    assert_eq!(bound.card_last4, "0005");
    assert!(!bound.token.as_str().is_empty());
    assert!(!format!("{:?}", bound.token).contains(bound.token.as_str()), "Debug must not show the whole token");
}

#[tokio::test]
async fn bank_binding_with_the_wrong_phone_or_an_unknown_card_is_refused_alike() {
    let env = env().await;

    let wrong_phone = env.gateway.create_binding(&Pan::parse(ALICE_CARD).unwrap(), BOB_PHONE).await;
    let unknown_card = env.gateway.create_binding(&Pan::parse("4111111111111111").unwrap(), ALICE_PHONE).await;

    for result in [wrong_phone, unknown_card] {
        match result {
            Err(BankError::Rejected { status: 422, code: RejectCode::BindingRefused, .. }) => {}
            other => panic!("expected binding_refused, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn bank_a_deleted_binding_declines_transfers_and_deleting_twice_is_fine() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;

    env.gateway.delete_binding(&token).await.unwrap();
    env.gateway.delete_binding(&token).await.unwrap();
    let outcome = env.gateway.transfer(&order("t-deleted", &token, 100)).await.unwrap();

    assert!(matches!(outcome, TransferOutcome::Declined { reason: DeclineReason::BindingNotFound, .. }), "{outcome:?}");
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 10_000);
    let never = env.gateway.delete_binding(&BindingToken::new("bt_never_issued")).await;
    assert!(matches!(never, Err(BankError::Rejected { status: 404, .. })), "{never:?}");
}

#[tokio::test]
async fn bank_a_transfer_completes_and_moves_the_money() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;

    let outcome = env.gateway.transfer(&order("t-1", &token, 2_500)).await.unwrap();

    assert!(matches!(outcome, TransferOutcome::Completed { .. }), "{outcome:?}");
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 7_500);
    assert_eq!(env.balance(SETTLEMENT).await, 2_500);
    let status = env.gateway.transfer_status("t-1").await.unwrap();
    assert!(matches!(status, TransferStatus::Completed { amount_minor: 2_500, .. }), "{status:?}");
}

#[tokio::test]
async fn bank_the_same_key_twice_debits_once_and_returns_the_same_outcome() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    let first = env.gateway.transfer(&order("t-twice", &token, 1_000)).await.unwrap();

    let second = env.gateway.transfer(&order("t-twice", &token, 1_000)).await.unwrap();

    assert_eq!(first, second);
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 9_000);
    assert_eq!(env.balance(SETTLEMENT).await, 1_000);
}

#[tokio::test]
async fn bank_a_different_body_under_a_used_key_is_a_conflict_and_moves_nothing() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    env.gateway.transfer(&order("t-reused", &token, 1_000)).await.unwrap();

    let reused = env.gateway.transfer(&order("t-reused", &token, 5_000)).await;

    assert!(matches!(reused, Err(BankError::Rejected { status: 409, code: RejectCode::IdempotencyConflict, .. })), "{reused:?}");
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 9_000);
}

#[tokio::test]
async fn bank_insufficient_funds_are_declined_durably_and_nothing_moves() {
    let env = env().await;
    let token = env.bind(BOB_CARD, BOB_PHONE).await;

    let outcome = env.gateway.transfer(&order("t-poor", &token, 301)).await.unwrap();

    assert!(matches!(outcome, TransferOutcome::Declined { reason: DeclineReason::InsufficientFunds, .. }), "{outcome:?}");
    assert_eq!(env.balance(BOB_ACCOUNT).await, 300);
    assert_eq!(env.balance(SETTLEMENT).await, 0);
    let status = env.gateway.transfer_status("t-poor").await.unwrap();
    assert!(matches!(status, TransferStatus::Declined { reason: DeclineReason::InsufficientFunds, .. }), "{status:?}");
}

#[tokio::test]
async fn bank_an_injected_decline_is_typed_and_recorded() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    env.bank.set_faults(FaultPlan::once(Endpoint::Transfer, Fault::Decline { reason: protocol::bank::DeclineReason::RiskRefused }));

    let outcome = env.gateway.transfer(&order("t-risk", &token, 100)).await.unwrap();

    assert!(matches!(outcome, TransferOutcome::Declined { reason: DeclineReason::RiskRefused, .. }), "{outcome:?}");
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 10_000);
}

#[tokio::test]
async fn bank_a_timeout_is_unknown_and_the_status_query_resolves_it_as_never_seen() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    env.bank.set_faults(FaultPlan::once(Endpoint::Transfer, Fault::Timeout));

    let outcome = env.gateway.transfer(&order("t-timeout", &token, 700)).await.unwrap();
    let status = env.gateway.transfer_status("t-timeout").await.unwrap();
    let resent = env.gateway.transfer(&order("t-timeout", &token, 700)).await.unwrap();

    assert_eq!(outcome, TransferOutcome::Unknown(UnknownCause::Timeout));
    assert_eq!(status, TransferStatus::NeverSeen);
    assert!(matches!(resent, TransferOutcome::Completed { .. }), "{resent:?}");
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 9_300);
}

#[tokio::test]
async fn bank_a_timeout_after_commit_is_unknown_and_the_status_says_completed() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    env.bank.set_faults(FaultPlan::once(Endpoint::Transfer, Fault::TimeoutAfterCommit));

    let outcome = env.gateway.transfer(&order("t-slow", &token, 400)).await.unwrap();
    let status = env.gateway.transfer_status("t-slow").await.unwrap();

    assert_eq!(outcome, TransferOutcome::Unknown(UnknownCause::Timeout));
    assert!(matches!(status, TransferStatus::Completed { amount_minor: 400, .. }), "{status:?}");
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 9_600);
}

#[tokio::test]
async fn bank_a_reply_lost_after_commit_is_unknown_the_status_says_completed_and_a_resend_does_not_debit_again() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    env.bank.set_faults(FaultPlan::once(Endpoint::Transfer, Fault::ReplyLostAfterCommit));

    let outcome = env.gateway.transfer(&order("t-lost", &token, 1_200)).await.unwrap();
    let status = env.gateway.transfer_status("t-lost").await.unwrap();
    let resent = env.gateway.transfer(&order("t-lost", &token, 1_200)).await.unwrap();

    assert_eq!(outcome, TransferOutcome::Unknown(UnknownCause::ConnectionLost));
    assert!(matches!(status, TransferStatus::Completed { amount_minor: 1_200, .. }), "{status:?}");
    assert!(matches!(resent, TransferOutcome::Completed { .. }), "{resent:?}");
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 8_800);
    assert_eq!(env.balance(SETTLEMENT).await, 1_200);
}

#[tokio::test]
async fn bank_a_5xx_before_commit_is_unknown_and_the_bank_never_saw_the_transfer() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    env.bank.set_faults(FaultPlan::once(Endpoint::Transfer, Fault::ErrorBeforeCommit));

    let outcome = env.gateway.transfer(&order("t-500", &token, 900)).await.unwrap();
    let status = env.gateway.transfer_status("t-500").await.unwrap();

    assert_eq!(outcome, TransferOutcome::Unknown(UnknownCause::ServerError(500)));
    assert_eq!(status, TransferStatus::NeverSeen);
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 10_000);
}

#[tokio::test]
async fn bank_status_reads_are_retried_past_a_5xx() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    env.gateway.transfer(&order("t-read", &token, 100)).await.unwrap();
    env.bank.set_faults(FaultPlan {
        latency_ms: 0,
        rules: vec![FaultRule { endpoint: Endpoint::TransferStatus, fault: Fault::ErrorBeforeCommit, times: 2 }],
        statement: Vec::new(),
    });

    let status = env.gateway.transfer_status("t-read").await.unwrap();

    assert!(matches!(status, TransferStatus::Completed { .. }), "{status:?}");
    assert!(env.bank.faults().rules.is_empty(), "both injected errors were used by the retries");
}

#[tokio::test]
async fn bank_a_read_that_keeps_failing_is_unavailable_after_its_attempts() {
    let env = env().await;
    env.bank.set_faults(FaultPlan {
        latency_ms: 0,
        rules: vec![FaultRule { endpoint: Endpoint::TransferStatus, fault: Fault::ErrorBeforeCommit, times: 0 }],
        statement: Vec::new(),
    });

    let status = env.gateway.transfer_status("t-any").await;

    assert!(matches!(status, Err(BankError::Unavailable(_))), "{status:?}");
}

#[tokio::test]
async fn bank_a_pending_transfer_is_typed_and_settles_later() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    env.bank.set_faults(FaultPlan::once(Endpoint::Transfer, Fault::Pending));

    let outcome = env.gateway.transfer(&order("t-pending", &token, 500)).await.unwrap();
    let before = env.gateway.transfer_status("t-pending").await.unwrap();
    let settled = env.bank.settle_pending().await.unwrap();
    let after = env.gateway.transfer_status("t-pending").await.unwrap();

    assert!(matches!(outcome, TransferOutcome::Pending { .. }), "{outcome:?}");
    assert!(matches!(before, TransferStatus::Pending { .. }), "{before:?}");
    assert_eq!(settled, 1);
    assert!(matches!(after, TransferStatus::Completed { amount_minor: 500, .. }), "{after:?}");
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 9_500);
}

#[tokio::test]
async fn bank_a_crash_and_restart_keeps_committed_transfers_and_their_keys() {
    let mut env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    env.gateway.transfer(&order("t-before-crash", &token, 3_000)).await.unwrap();
    let base_url = env.bank.base_url();

    env.bank.stop().await;
    let while_down = env.gateway.transfer_status("t-before-crash").await;
    env.bank.restart().await.unwrap();
    let status = env.gateway.transfer_status("t-before-crash").await.unwrap();
    let resent = env.gateway.transfer(&order("t-before-crash", &token, 3_000)).await.unwrap();

    assert!(matches!(while_down, Err(BankError::Unavailable(_))), "{while_down:?}");
    assert_eq!(env.bank.base_url(), base_url);
    assert!(matches!(status, TransferStatus::Completed { amount_minor: 3_000, .. }), "{status:?}");
    assert!(matches!(resent, TransferOutcome::Completed { .. }), "{resent:?}");
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 7_000);
}

#[tokio::test]
async fn bank_a_transfer_to_a_stopped_bank_was_not_sent() {
    let mut env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    env.bank.stop().await;

    let outcome = env.gateway.transfer(&order("t-down", &token, 100)).await;

    assert!(matches!(outcome, Err(BankError::Unavailable(_))), "{outcome:?}");
}

#[tokio::test]
async fn bank_a_client_with_the_wrong_key_is_refused_and_trusts_no_reply() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    let wrong = HttpBankGateway::new(client_config(&env.bank.base_url(), BankKey::new("test-key", vec![9u8; 32]).unwrap())).unwrap();

    let outcome = wrong.transfer(&order("t-wrong-key", &token, 100)).await.unwrap();
    let status = wrong.transfer_status("t-wrong-key").await;

    // The bank's 401 is signed with the real key, which this client cannot verify: not trusted.
    assert_eq!(outcome, TransferOutcome::Unknown(UnknownCause::BadReplySignature));
    assert!(matches!(status, Err(BankError::BadReplySignature)), "{status:?}");
    assert_eq!(env.gateway.transfer_status("t-wrong-key").await.unwrap(), TransferStatus::NeverSeen);
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 10_000);
}

/// A man in the middle that rewrites `"declined"` into `"completed"` in the bank's replies and
/// keeps the bank's signature.
async fn tampering_proxy(upstream: String) -> String {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method as AxMethod, StatusCode, Uri};
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |method: AxMethod, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (http, upstream) = (http.clone(), upstream.clone());
        async move {
            let mut request = http.request(reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(), format!("{upstream}{uri}"));
            for (name, value) in headers.iter().filter(|(n, _)| n.as_str().starts_with("x-bank-") || *n == "content-type") {
                request = request.header(name.as_str(), value.as_bytes());
            }
            let reply = request.body(body.to_vec()).send().await.unwrap();
            let status = StatusCode::from_u16(reply.status().as_u16()).unwrap();
            let mut out = HeaderMap::new();
            for (name, value) in reply.headers().iter().filter(|(n, _)| n.as_str().starts_with("x-bank-") || *n == "content-type") {
                out.insert(axum::http::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(), axum::http::HeaderValue::from_bytes(value.as_bytes()).unwrap());
            }
            let text = String::from_utf8(reply.bytes().await.unwrap().to_vec()).unwrap().replace("\"declined\"", "\"completed\"");
            (status, out, text)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn bank_a_tampered_reply_is_refused_even_when_it_says_completed() {
    let env = env().await;
    let token = env.bind(BOB_CARD, BOB_PHONE).await;
    let proxy = tampering_proxy(env.bank.base_url()).await;
    let through_proxy = HttpBankGateway::new(client_config(&proxy, env.bank.key().clone())).unwrap();

    let outcome = through_proxy.transfer(&order("t-tampered", &token, 5_000)).await.unwrap();
    let status = through_proxy.transfer_status("t-tampered").await;

    assert_eq!(outcome, TransferOutcome::Unknown(UnknownCause::BadReplySignature));
    assert!(matches!(status, Err(BankError::BadReplySignature)), "{status:?}");
    let direct = env.gateway.transfer_status("t-tampered").await.unwrap();
    assert!(matches!(direct, TransferStatus::Declined { reason: DeclineReason::InsufficientFunds, .. }), "{direct:?}");
}

#[tokio::test]
async fn bank_refunds_are_idempotent_and_capped_at_the_transferred_amount() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    env.gateway.transfer(&order("t-refunded", &token, 2_000)).await.unwrap();
    let refund = |key: &str, amount_minor| RefundOrder { idempotency_key: key.into(), transfer_key: "t-refunded".into(), amount_minor };

    let first = env.gateway.refund(&refund("r-1", 1_500)).await.unwrap();
    let again = env.gateway.refund(&refund("r-1", 1_500)).await.unwrap();
    let over = env.gateway.refund(&refund("r-2", 501)).await;
    let rest = env.gateway.refund(&refund("r-3", 500)).await.unwrap();
    let reused = env.gateway.refund(&refund("r-1", 100)).await;
    let unknown = env.gateway.refund(&RefundOrder { idempotency_key: "r-4".into(), transfer_key: "t-never".into(), amount_minor: 1 }).await;

    assert!(matches!(first, RefundOutcome::Completed { amount_minor: 1_500, .. }), "{first:?}");
    assert_eq!(first, again);
    assert!(matches!(over, Err(BankError::Rejected { status: 422, code: RejectCode::RefundRefused, .. })), "{over:?}");
    assert!(matches!(rest, RefundOutcome::Completed { amount_minor: 500, .. }), "{rest:?}");
    assert!(matches!(reused, Err(BankError::Rejected { status: 409, code: RejectCode::IdempotencyConflict, .. })), "{reused:?}");
    assert!(matches!(unknown, Err(BankError::Rejected { status: 404, .. })), "{unknown:?}");
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 10_000);
    assert_eq!(env.balance(SETTLEMENT).await, 0);
}

#[tokio::test]
async fn bank_a_declined_transfer_cannot_be_refunded() {
    let env = env().await;
    let token = env.bind(BOB_CARD, BOB_PHONE).await;
    env.gateway.transfer(&order("t-declined", &token, 1_000)).await.unwrap();

    let refund = env.gateway.refund(&RefundOrder { idempotency_key: "r-d".into(), transfer_key: "t-declined".into(), amount_minor: 1 }).await;

    assert!(matches!(refund, Err(BankError::Rejected { status: 422, code: RejectCode::RefundRefused, .. })), "{refund:?}");
    assert_eq!(env.balance(BOB_ACCOUNT).await, 300);
}

#[tokio::test]
async fn bank_a_lost_refund_reply_is_unknown_and_the_resend_does_not_refund_twice() {
    let env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    env.gateway.transfer(&order("t-r-lost", &token, 1_000)).await.unwrap();
    env.bank.set_faults(FaultPlan::once(Endpoint::Refund, Fault::ReplyLostAfterCommit));
    let refund = RefundOrder { idempotency_key: "r-lost".into(), transfer_key: "t-r-lost".into(), amount_minor: 1_000 };

    let lost = env.gateway.refund(&refund).await.unwrap();
    let resent = env.gateway.refund(&refund).await.unwrap();

    assert_eq!(lost, RefundOutcome::Unknown(UnknownCause::ConnectionLost));
    assert!(matches!(resent, RefundOutcome::Completed { amount_minor: 1_000, .. }), "{resent:?}");
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 10_000);
    assert_eq!(env.balance(SETTLEMENT).await, 0);
}

#[tokio::test]
async fn bank_the_statement_lists_the_days_movements_and_the_balances_add_up() {
    let env = env().await;
    let alice = env.bind(ALICE_CARD, ALICE_PHONE).await;
    let bob = env.bind(BOB_CARD, BOB_PHONE).await;
    env.gateway.transfer(&order("s-1", &alice, 1_000)).await.unwrap();
    env.gateway.transfer(&order("s-2", &alice, 2_000)).await.unwrap();
    env.gateway.transfer(&order("s-3", &bob, 200)).await.unwrap();
    env.gateway.transfer(&order("s-4", &bob, 200)).await.unwrap(); // declined: Bob has 100 left
    env.gateway.refund(&RefundOrder { idempotency_key: "s-r1".into(), transfer_key: "s-2".into(), amount_minor: 700 }).await.unwrap();

    let statement = env.gateway.statement(&today()).await.unwrap();

    let keys: Vec<_> = statement.lines.iter().map(|l| l.idempotency_key.as_str()).collect();
    assert_eq!(keys, ["s-1", "s-2", "s-3", "s-4", "s-r1"]);
    assert!(matches!(statement.lines[3].transfer_status, Some(TransferStatus::Declined { reason: DeclineReason::InsufficientFunds, .. })));
    assert_eq!(statement.lines[4].kind, MovementKind::Refund);
    assert_eq!(statement.lines[4].transfer_key.as_deref(), Some("s-2"));
    assert_eq!(statement.totals, vec![("CNY".to_string(), 3_200, 700)]);
    let customer_debits = (10_000 - env.balance(ALICE_ACCOUNT).await) + (300 - env.balance(BOB_ACCOUNT).await);
    let settlement_credit = env.balance(SETTLEMENT).await;
    assert_eq!(customer_debits, 3_200 - 700);
    assert_eq!(settlement_credit, 3_200 - 700, "Σ customer debits = settlement credits − refunds");
    let other_day = env.gateway.statement("2000-01-01").await.unwrap();
    assert!(other_day.lines.is_empty() && other_day.totals.is_empty());
    let bad_date = env.gateway.statement("2000-02-30").await;
    assert!(matches!(bad_date, Err(BankError::Rejected { status: 400, .. })), "{bad_date:?}");
}

#[tokio::test]
async fn bank_ids_that_would_change_the_path_are_refused_before_sending() {
    let env = env().await;

    let status = env.gateway.transfer_status("../statements/2000-01-01").await;

    assert!(matches!(status, Err(BankError::InvalidRequest(_))), "{status:?}");
}

#[test]
fn bank_a_key_file_must_be_private_and_well_formed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let path = dir.join("bank.key");
    let key = BankKey::generate("k-file");
    std::fs::write(&path, key.to_file()).unwrap();

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let too_open = load_key_file(&path);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let loaded = load_key_file(&path).unwrap();
    std::fs::write(&path, "k-file:not-hex").unwrap();
    let garbled = load_key_file(&path);

    assert!(too_open.unwrap_err().to_string().contains("readable by others"));
    assert_eq!((loaded.key_id.as_str(), loaded.secret_hex()), ("k-file", key.secret_hex()));
    assert!(garbled.is_err());
    assert!(load_key_file(&dir.join("missing.key")).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Wait (polling, with a deadline) until the bank has taken every injected fault.
async fn until_faults_taken(bank: &SandboxBank) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !bank.faults().rules.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the request never reached the bank");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn bank_a_crash_keeps_a_transfer_committed_before_it_and_leaves_no_trace_of_one_that_was_not() {
    let mut env = env().await;
    let token = env.bind(ALICE_CARD, ALICE_PHONE).await;
    // Both requests hang at the bank: one after its commit, one before doing anything.
    env.bank.set_faults(FaultPlan::once(Endpoint::Transfer, Fault::TimeoutAfterCommit));
    let committed = tokio::spawn({
        let (gateway, order) = (env.gateway.clone(), order("t-crash-after", &token, 1_100));
        async move { gateway.transfer(&order).await }
    });
    until_faults_taken(&env.bank).await;
    env.bank.set_faults(FaultPlan::once(Endpoint::Transfer, Fault::Timeout));
    let lost = tokio::spawn({
        let (gateway, order) = (env.gateway.clone(), order("t-crash-before", &token, 2_200));
        async move { gateway.transfer(&order).await }
    });
    until_faults_taken(&env.bank).await;

    env.bank.stop().await;
    let outcomes = (committed.await.unwrap().unwrap(), lost.await.unwrap().unwrap());
    env.bank.start().await.unwrap();

    assert!(matches!(outcomes.0, TransferOutcome::Unknown(_)), "{outcomes:?}");
    assert!(matches!(outcomes.1, TransferOutcome::Unknown(_)), "{outcomes:?}");
    let after = env.gateway.transfer_status("t-crash-after").await.unwrap();
    assert!(matches!(after, TransferStatus::Completed { amount_minor: 1_100, .. }), "{after:?}");
    assert_eq!(env.gateway.transfer_status("t-crash-before").await.unwrap(), TransferStatus::NeverSeen);
    assert_eq!(env.balance(ALICE_ACCOUNT).await, 8_900);
    assert_eq!(env.balance(SETTLEMENT).await, 1_100);
}

#[tokio::test]
async fn bank_a_binding_whose_reply_is_lost_is_an_error_and_not_retried() {
    let env = env().await;
    env.bank.set_faults(FaultPlan {
        latency_ms: 0,
        rules: vec![FaultRule { endpoint: Endpoint::CreateBinding, fault: Fault::ReplyLostAfterCommit, times: 2 }],
        statement: Vec::new(),
    });

    let bound = env.gateway.create_binding(&Pan::parse(ALICE_CARD).unwrap(), ALICE_PHONE).await;

    assert!(matches!(bound, Err(BankError::Unavailable(_))), "{bound:?}");
    assert_eq!(env.bank.faults().rules[0].times, 1, "sent once, never retried");
}

#[tokio::test]
async fn bank_the_health_check_answers_while_the_bank_is_up_and_fails_when_it_is_not() {
    let mut env = env().await;
    assert!(env.gateway.health().await.is_ok());

    env.bank.set_faults(FaultPlan::once(Endpoint::Health, Fault::ErrorBeforeCommit));
    assert!(matches!(env.gateway.health().await, Err(BankError::Unavailable(_))), "a 5xx, not retried");
    assert!(env.gateway.health().await.is_ok());

    env.bank.stop().await;
    assert!(matches!(env.gateway.health().await, Err(BankError::Unavailable(_))));
    env.bank.start().await.unwrap();
    assert!(env.gateway.health().await.is_ok());
}
