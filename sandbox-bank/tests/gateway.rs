//! The sandbox bank over raw HTTP: request authentication (bad, stale, replayed signatures), the
//! documented JSON, signed replies, concurrency on one key, and the admin fault endpoint.

use std::path::PathBuf;

use cardbridge_sandbox_bank::{SandboxBank, SandboxConfig, SeedCustomer, SeedSettlement};
use protocol::bank::signing::{self, BankKey};
use serde_json::{json, Value};

struct Env {
    bank: SandboxBank,
    http: reqwest::Client,
    dir: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn env() -> Env {
    use rand::RngCore;
    let dir = std::env::temp_dir().join(format!("sandbox-bank-{}-{:016x}", std::process::id(), rand::rngs::OsRng.next_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = SandboxConfig::new("127.0.0.1:0".parse().unwrap(), format!("sqlite://{}", dir.join("bank.db").display()), BankKey::generate("k1"));
    config.settlement_accounts.push(SeedSettlement { account_id: "settle".into(), holder_name: "Issuer".into(), currency: "CNY".into() });
    config.customers.push(SeedCustomer {
        account_id: "alice".into(),
        holder_name: "Alice".into(),
        card_number: "6200000000000005".into(),
        phone: "+8613800000001".into(),
        currency: "CNY".into(),
        balance_minor: 10_000,
    });
    let bank = SandboxBank::spawn(config).await.unwrap();
    Env { bank, http: reqwest::Client::new(), dir }
}

/// A request as a client sends it, with every signature part under the test's control.
struct Signed<'a> {
    method: &'a str,
    path: &'a str,
    body: Vec<u8>,
    timestamp: i64,
    nonce: String,
    key: BankKey,
}

fn now_s() -> i64 {
    cardbridge_sandbox_bank::ledger::now_ms() / 1000
}

impl Env {
    fn signed<'a>(&self, method: &'a str, path: &'a str, body: Option<Value>) -> Signed<'a> {
        Signed {
            method,
            path,
            body: body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default(),
            timestamp: now_s(),
            nonce: signing::nonce(),
            key: self.bank.key().clone(),
        }
    }

    /// Send; returns status, body, and whether the reply's signature verified for this request.
    async fn send(&self, s: &Signed<'_>) -> (u16, Value, bool) {
        let signature = s.key.sign_request(s.method, s.path, s.timestamp, &s.nonce, &s.body);
        let reply = self
            .http
            .request(reqwest::Method::from_bytes(s.method.as_bytes()).unwrap(), format!("{}{}", self.bank.base_url(), s.path))
            .header(signing::HEADER_KEY_ID, &s.key.key_id)
            .header(signing::HEADER_TIMESTAMP, s.timestamp)
            .header(signing::HEADER_NONCE, &s.nonce)
            .header(signing::HEADER_SIGNATURE, &signature)
            .header("content-type", "application/json")
            .body(s.body.clone())
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let header = |n: &str| reply.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (key_id, ts, sig) = (header(signing::HEADER_KEY_ID), header(signing::HEADER_TIMESTAMP), header(signing::HEADER_SIGNATURE));
        let bytes = reply.bytes().await.unwrap();
        let verified = match (key_id, ts.and_then(|t| t.parse().ok()), sig) {
            (Some(k), Some(t), Some(sig)) => self.bank.key().verify_reply(&k, status, &signature, t, &bytes, &sig, now_s()).is_ok(),
            _ => false,
        };
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, body, verified)
    }

    async fn bind(&self) -> String {
        let (status, body, _) = self.send(&self.signed("POST", "/v1/bindings", Some(json!({"card_number": "6200000000000005", "phone": "+8613800000001"})))).await;
        assert_eq!(status, 201, "{body}");
        body["binding_token"].as_str().unwrap().to_string()
    }
}

fn transfer(key: &str, token: &str, amount: i64) -> Value {
    json!({"idempotency_key": key, "binding_token": token, "amount_minor": amount, "currency": "CNY", "to_account": "settle", "reference": "top-up"})
}

#[tokio::test]
async fn the_documented_transfer_json_completes_and_the_reply_is_signed() {
    let env = env().await;
    let token = env.bind().await;

    let (status, body, verified) = env.send(&env.signed("POST", "/v1/transfers", Some(transfer("k-1", &token, 1_000)))).await;

    assert_eq!(status, 200, "{body}");
    assert!(verified, "the reply carries a valid signature bound to the request");
    assert_eq!(body["idempotency_key"], "k-1");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["amount_minor"], 1_000);
    assert!(body["bank_ref"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(env.bank.balance("alice").await.unwrap(), Some(9_000));
}

#[tokio::test]
async fn a_bad_signature_is_401_and_nothing_happens() {
    let env = env().await;
    let token = env.bind().await;
    let mut request = env.signed("POST", "/v1/transfers", Some(transfer("k-bad", &token, 1_000)));
    request.key = BankKey::new("k1", vec![1u8; 32]).unwrap();

    let (status, body, verified) = env.send(&request).await;

    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthorized");
    assert!(verified, "the 401 itself is signed by the bank");
    let (status, body, _) = env.send(&env.signed("GET", "/v1/transfers/k-bad", None)).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert_eq!(env.bank.balance("alice").await.unwrap(), Some(10_000));
}

#[tokio::test]
async fn a_signature_over_another_body_or_path_is_401() {
    let env = env().await;
    let token = env.bind().await;
    let request = env.signed("POST", "/v1/transfers", Some(transfer("k-swap", &token, 1)));
    let signature = request.key.sign_request("POST", "/v1/transfers", request.timestamp, &request.nonce, &request.body);
    let bigger = serde_json::to_vec(&transfer("k-swap", &token, 9_999)).unwrap();

    let reply = env
        .http
        .post(format!("{}/v1/transfers", env.bank.base_url()))
        .header(signing::HEADER_KEY_ID, "k1")
        .header(signing::HEADER_TIMESTAMP, request.timestamp)
        .header(signing::HEADER_NONCE, &request.nonce)
        .header(signing::HEADER_SIGNATURE, &signature)
        .body(bigger)
        .send()
        .await
        .unwrap();

    assert_eq!(reply.status().as_u16(), 401);
    assert_eq!(env.bank.balance("alice").await.unwrap(), Some(10_000));
}

#[tokio::test]
async fn a_stale_timestamp_is_401() {
    let env = env().await;
    let mut request = env.signed("GET", "/v1/statements/2026-01-01", None);
    request.timestamp -= signing::MAX_SKEW_S + 5;

    let (status, body, _) = env.send(&request).await;

    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
}

#[tokio::test]
async fn a_replayed_request_is_401_even_after_a_restart() {
    let mut env = env().await;
    let request = env.signed("GET", "/v1/statements/2026-01-01", None);
    let (first, _, _) = env.send(&request).await;

    let (replayed, body, _) = env.send(&request).await;
    env.bank.restart().await.unwrap();
    let (after_restart, _, _) = env.send(&request).await;

    assert_eq!(first, 200);
    assert_eq!((replayed, body["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(after_restart, 401);
}

#[tokio::test]
async fn unsigned_requests_are_401_and_unknown_routes_404() {
    let env = env().await;

    let unsigned = env.http.get(format!("{}/v1/transfers/x", env.bank.base_url())).send().await.unwrap();
    let (unknown, body, verified) = env.send(&env.signed("GET", "/v1/nothing", None)).await;

    assert_eq!(unsigned.status().as_u16(), 401);
    assert_eq!((unknown, body["code"].as_str()), (404, Some("not_found")));
    assert!(verified);
}

#[tokio::test]
async fn a_malformed_body_is_400_and_a_used_key_with_another_body_409() {
    let env = env().await;
    let token = env.bind().await;
    env.send(&env.signed("POST", "/v1/transfers", Some(transfer("k-used", &token, 100)))).await;

    let (malformed, m_body, _) = env.send(&env.signed("POST", "/v1/transfers", Some(json!({"amount_minor": "ten"})))).await;
    let (negative, _, _) = env.send(&env.signed("POST", "/v1/transfers", Some(transfer("k-neg", &token, -5)))).await;
    let (conflict, c_body, _) = env.send(&env.signed("POST", "/v1/transfers", Some(transfer("k-used", &token, 101)))).await;

    assert_eq!((malformed, m_body["code"].as_str()), (400, Some("bad_request")));
    assert_eq!(negative, 400);
    assert_eq!((conflict, c_body["code"].as_str()), (409, Some("idempotency_conflict")));
    assert_eq!(env.bank.balance("alice").await.unwrap(), Some(9_900));
}

#[tokio::test]
async fn concurrent_requests_with_one_key_debit_once() {
    let env = env().await;
    let token = env.bind().await;

    let requests: Vec<_> = (0..6).map(|_| env.signed("POST", "/v1/transfers", Some(transfer("k-race", &token, 1_000)))).collect();
    let replies = futures_util::future::join_all(requests.iter().map(|r| env.send(r))).await;

    let refs: std::collections::HashSet<_> = replies.iter().map(|(s, b, _)| (*s, b["bank_ref"].as_str().unwrap().to_string())).collect();
    assert_eq!(refs.len(), 1, "every reply is the one outcome: {replies:?}");
    assert_eq!(env.bank.balance("alice").await.unwrap(), Some(9_000));
    assert_eq!(env.bank.balance("settle").await.unwrap(), Some(1_000));
}

#[tokio::test]
async fn the_admin_endpoint_sets_and_clears_faults() {
    let env = env().await;
    let token = env.bind().await;
    let plan = json!({"rules": [{"endpoint": "transfer", "fault": {"kind": "error_before_commit"}, "times": 1}]});

    let set = env.http.post(format!("{}/sandbox/faults", env.bank.base_url())).json(&plan).send().await.unwrap();
    let shown: Value = env.http.get(format!("{}/sandbox/faults", env.bank.base_url())).send().await.unwrap().json().await.unwrap();
    let (failed, f_body, verified) = env.send(&env.signed("POST", "/v1/transfers", Some(transfer("k-f", &token, 100)))).await;
    let (after, _, _) = env.send(&env.signed("POST", "/v1/transfers", Some(transfer("k-f", &token, 100)))).await;
    let bad_plan = env.http.post(format!("{}/sandbox/faults", env.bank.base_url())).body("{\"rules\": 3}").send().await.unwrap();

    assert_eq!(set.status().as_u16(), 204);
    assert_eq!(shown["rules"][0]["fault"]["kind"], "error_before_commit");
    assert_eq!((failed, f_body["code"].as_str()), (500, Some("internal")));
    assert!(verified, "error replies are signed too");
    assert_eq!(after, 200, "the rule was used up");
    assert_eq!(bad_plan.status().as_u16(), 400);
    assert_eq!(env.bank.balance("alice").await.unwrap(), Some(9_900));
}

#[tokio::test]
async fn injected_latency_delays_replies() {
    let env = env().await;
    env.bank.set_faults(cardbridge_sandbox_bank::FaultPlan { latency_ms: 300, ..Default::default() });
    let started = std::time::Instant::now();

    let (status, _, _) = env.send(&env.signed("GET", "/v1/statements/2026-01-01", None)).await;

    assert_eq!(status, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}

#[tokio::test]
async fn the_database_is_wal_with_synchronous_full_and_survives_a_restart() {
    let mut env = env().await;
    let token = env.bind().await;
    env.send(&env.signed("POST", "/v1/transfers", Some(transfer("k-durable", &token, 2_500)))).await;

    env.bank.restart().await.unwrap();
    let (status, body, _) = env.send(&env.signed("GET", "/v1/transfers/k-durable", None)).await;

    assert_eq!((status, body["status"].as_str()), (200, Some("completed")));
    assert_eq!(env.bank.balance("alice").await.unwrap(), Some(7_500));
    assert!(env.dir.join("bank.db-wal").exists(), "WAL journal in use");
}

#[tokio::test]
async fn the_health_check_is_signed_moves_nothing_and_takes_faults() {
    let env = env().await;

    let (status, body, verified) = env.send(&env.signed("GET", "/v1/health", None)).await;
    let mut unsigned = env.signed("GET", "/v1/health", None);
    unsigned.key = BankKey::generate("k1");
    let (forged, _, _) = env.send(&unsigned).await;
    env.bank.set_faults(cardbridge_sandbox_bank::FaultPlan::once(cardbridge_sandbox_bank::Endpoint::Health, cardbridge_sandbox_bank::Fault::ErrorBeforeCommit));
    let (failing, _, _) = env.send(&env.signed("GET", "/v1/health", None)).await;

    assert_eq!((status, body["status"].as_str(), verified), (200, Some("ok"), true));
    assert!(body["time"].as_i64().is_some_and(|t| (t / 1000 - now_s()).abs() < 60), "the bank's clock");
    assert_eq!(forged, 401, "a request signed with another key");
    assert_eq!(failing, 500);
    assert_eq!(env.bank.balance("alice").await.unwrap(), Some(10_000));
}
