//! The sandbox's own admin wire format (`/sandbox/…`): the fault plan. Not part of the bank-gateway
//! API (that is `protocol::bank`); a real gateway has nothing like it.
//!
//! The library's [`crate::SandboxBank::set_faults`] takes the same [`FaultPlan`] the endpoint
//! accepts, so a test and a script inject faults in the same words.

use protocol::bank::DeclineReason;
use serde::{Deserialize, Serialize};

/// Which requests a fault rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /v1/bindings`
    CreateBinding,
    /// `POST /v1/transfers`
    Transfer,
    /// `GET /v1/transfers/{key}`
    TransferStatus,
    /// `POST /v1/refunds`
    Refund,
    /// `GET /v1/statements/{date}`
    Statement,
    /// `GET /v1/health`
    Health,
    /// Every `/v1` request.
    Any,
}

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Never answer, and do nothing (the request is lost on the way in).
    Timeout,
    /// Process and commit, then never answer (the bank is slow past the client's patience).
    TimeoutAfterCommit,
    /// Answer 500 without processing anything.
    ErrorBeforeCommit,
    /// Process and commit, then drop the connection without a reply.
    ReplyLostAfterCommit,
    /// Decline a new transfer with this reason (recorded like a real decline).
    Decline { reason: DeclineReason },
    /// Record a new transfer as pending; `POST /sandbox/settle` settles it later.
    Pending,
}

/// One rule: `fault` for the next `times` requests to `endpoint` (`times: 0` = every one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    pub endpoint: Endpoint,
    pub fault: Fault,
    #[serde(default)]
    pub times: u32,
}

/// How the daily statement misstates what the bank did, so that it disagrees with the client's
/// books (reconciliation tests, R3.7). The ledger itself is untouched: only the statement lies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StatementFault {
    /// Leave the transfer with this key off the statement.
    Drop { idempotency_key: String },
    /// List the transfer with this key twice (the copy with its own bank reference).
    Duplicate { idempotency_key: String },
    /// State another amount for the transfer with this key.
    Amount { idempotency_key: String, amount_minor: i64 },
}

/// The whole plan: added latency on every `/v1` request, the rules (first match wins), and the
/// statement's misstatements (applied to every statement while the plan stands).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultPlan {
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub rules: Vec<FaultRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statement: Vec<StatementFault>,
}

impl FaultPlan {
    /// A plan with one rule for the next request to `endpoint`.
    pub fn once(endpoint: Endpoint, fault: Fault) -> FaultPlan {
        FaultPlan { latency_ms: 0, rules: vec![FaultRule { endpoint, fault, times: 1 }], statement: Vec::new() }
    }

    /// A plan whose only fault is that the statement misstates these transfers.
    pub fn misstating(statement: Vec<StatementFault>) -> FaultPlan {
        FaultPlan { statement, ..FaultPlan::default() }
    }

    /// Take the fault for a request to `endpoint`, counting it down.
    pub(crate) fn take(&mut self, endpoint: Endpoint) -> Option<Fault> {
        let i = self.rules.iter().position(|r| r.endpoint == endpoint || r.endpoint == Endpoint::Any)?;
        let fault = self.rules[i].fault;
        match self.rules[i].times {
            0 => {}
            1 => {
                self.rules.remove(i);
            }
            n => self.rules[i].times = n - 1,
        }
        Some(fault)
    }
}

/// Reply to `POST /sandbox/settle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    pub settled: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_rule_runs_out_and_an_unlimited_one_does_not() {
        let mut plan = FaultPlan {
            latency_ms: 0,
            rules: vec![
                FaultRule { endpoint: Endpoint::Transfer, fault: Fault::ErrorBeforeCommit, times: 1 },
                FaultRule { endpoint: Endpoint::Any, fault: Fault::Timeout, times: 0 },
            ],
            statement: Vec::new(),
        };
        assert_eq!(plan.take(Endpoint::Transfer), Some(Fault::ErrorBeforeCommit));
        assert_eq!(plan.take(Endpoint::Transfer), Some(Fault::Timeout));
        assert_eq!(plan.take(Endpoint::Statement), Some(Fault::Timeout));
        assert_eq!(plan.rules.len(), 1);
        assert_eq!(FaultPlan::default().take(Endpoint::Transfer), None);
    }

    #[test]
    fn the_plan_reads_from_the_documented_json() {
        let plan: FaultPlan = serde_json::from_str(
            r#"{"latency_ms": 50, "rules": [{"endpoint": "transfer", "fault": {"kind": "decline", "reason": "insufficient_funds"}, "times": 2}]}"#,
        )
        .unwrap();
        assert_eq!(plan.rules[0].fault, Fault::Decline { reason: DeclineReason::InsufficientFunds });
        assert_eq!(plan.latency_ms, 50);
        let misstating: FaultPlan = serde_json::from_str(
            r#"{"statement": [{"kind": "drop", "idempotency_key": "tu_1"}, {"kind": "amount", "idempotency_key": "tu_2", "amount_minor": 1}]}"#,
        )
        .unwrap();
        assert_eq!(misstating.statement[1], StatementFault::Amount { idempotency_key: "tu_2".into(), amount_minor: 1 });
    }
}
