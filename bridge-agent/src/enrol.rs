//! Enrolment (`POST /api/agent/enrol`) and pairing links (`POST /api/agent/pairing`).
//!
//! Enrolment generates the terminal key, registers its public half with a one-time code, and pins
//! the server key the server answers with. The key is generated and the state directory checked
//! *before* the code is spent, and written only after the server accepted it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use ed25519_dalek::VerifyingKey;
use protocol::api::{ApiError, EnrolRequest, EnrolResponse, PairingLink, PairingRequest};
use serde::{de::DeserializeOwned, Serialize};

use crate::config::{endpoint, parse_server_url, AgentConfig};
use crate::state::{self, TerminalRecord};

/// A completed enrolment.
#[derive(Debug, Clone)]
pub struct Enrolment {
    pub terminal_id: String,
    pub terminal_name: String,
    pub server_url: String,
    /// The terminal's public key, as registered.
    pub public_key: VerifyingKey,
    /// The server key now pinned in `terminal.toml`.
    pub server_public_key: VerifyingKey,
    pub state_dir: PathBuf,
}

/// Enrol this terminal with `server` using the one-time `code`; writes `terminal.key` and
/// `terminal.toml` into `state_dir`. Refuses to replace an existing enrolment unless `force`.
pub async fn enrol(server: &str, code: &str, state_dir: &Path, force: bool) -> anyhow::Result<Enrolment> {
    let server_url = parse_server_url(server)?;
    let code = code.trim();
    if code.is_empty() {
        bail!("the enrolment code is empty");
    }
    if state::is_enrolled(state_dir) && !force {
        bail!(
            "{} already holds an enrolment; pass --force to replace it (the old terminal key is lost)",
            state_dir.display()
        );
    }
    state::ensure_dir(state_dir)?;

    let key = protocol::envelope::generate_key();
    let request =
        EnrolRequest { enrolment_code: code.to_string(), public_key: key.verifying_key().to_bytes().to_vec().into() };
    let response: EnrolResponse =
        post(&endpoint(&server_url, "api/agent/enrol"), &request).await.context("enrolment failed")?;
    let server_public_key = protocol::envelope::verifying_key(response.server_public_key.as_slice())
        .context("the server answered with an invalid public key")?;

    state::save_key(state_dir, &key)?;
    let record = TerminalRecord {
        server_url: server_url.to_string(),
        terminal_id: response.terminal_id.clone(),
        terminal_name: response.terminal_name.clone(),
        server_public_key: hex::encode(server_public_key.to_bytes()),
    };
    state::save_record(state_dir, &record)?;
    tracing::info!(terminal_id = %record.terminal_id, "enrolled");

    Ok(Enrolment {
        terminal_id: response.terminal_id,
        terminal_name: response.terminal_name,
        server_url: record.server_url,
        public_key: key.verifying_key(),
        server_public_key,
        state_dir: state_dir.to_path_buf(),
    })
}

/// Ask the server for a one-time link that binds the browser opening it to this terminal.
pub async fn request_pairing(state_dir: &Path) -> anyhow::Result<PairingLink> {
    let config = AgentConfig::load(state_dir)?;
    let issued_at_ms = crate::now_ms();
    let request = PairingRequest {
        terminal_id: config.terminal_id.clone(),
        issued_at_ms,
        signature: protocol::envelope::sign_pairing(&config.terminal_id, issued_at_ms, &config.signing_key),
    };
    post(&endpoint(&config.server_url, "api/agent/pairing"), &request).await.context("the pairing request failed")
}

/// POST a JSON body; on a non-2xx answer, the server's `ApiError.message` becomes the error.
async fn post<B: Serialize, R: DeserializeOwned>(url: &url::Url, body: &B) -> anyhow::Result<R> {
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).build().context("cannot build the HTTP client")?;
    let response = client
        .post(url.clone())
        .json(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", url.origin().ascii_serialization()))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ApiError>(&text) {
            Ok(error) => bail!("the server said: {} ({})", error.message, status.as_u16()),
            Err(_) => bail!("the server answered {status}"),
        }
    }
    response.json::<R>().await.context("the server's answer is not what this agent expects")
}
