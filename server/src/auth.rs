//! S100: passwords (argon2id), sessions, the session extractor, and login rate limiting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum_extra::extract::cookie::CookieJar;

use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::{Role, StoreError, User};
use crate::util::sha256_hex;

pub const SESSION_COOKIE: &str = "cb_session";
pub const PAIRING_COOKIE: &str = "cb_terminal";

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash that no password matches, verified against when the user does not exist, so that a
/// login takes as long for an unknown name as for a wrong password.
pub fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("cardbridge-no-such-user").unwrap_or_default())
}

/// Failed logins per key (user name, and client address) in a sliding window.
#[derive(Debug)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
    max_failures: usize,
    window: Duration,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::new(5, Duration::from_secs(15 * 60))
    }
}

impl LoginLimiter {
    pub fn new(max_failures: usize, window: Duration) -> Self {
        LoginLimiter { failures: Mutex::new(HashMap::new()), max_failures, window }
    }

    /// Whether any of `keys` has used up its failures.
    pub fn is_blocked(&self, keys: &[String]) -> bool {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        keys.iter().any(|k| {
            map.get_mut(k).is_some_and(|times| {
                times.retain(|t| now.duration_since(*t) < self.window);
                times.len() >= self.max_failures
            })
        })
    }

    pub fn record_failure(&self, keys: &[String]) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        for k in keys {
            map.entry(k.clone()).or_default().push(now);
        }
    }

    pub fn clear(&self, keys: &[String]) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            map.remove(k);
        }
    }
}

/// The logged-in user of a request, from the session cookie.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: User,
    pub session_hash: String,
}

impl AuthUser {
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.user.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        let token = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()).ok_or(ApiError::Unauthorized)?;
        let session_hash = sha256_hex(&token);
        match state.store.session_user(&session_hash).await {
            Ok(user) => Ok(AuthUser { user, session_hash }),
            Err(StoreError::NotFound) => Err(ApiError::Unauthorized),
            Err(e) => Err(e.into()),
        }
    }
}

/// The terminal this browser is paired with, from the pairing cookie (if any, and not revoked).
pub async fn paired_terminal(state: &AppState, jar: &CookieJar) -> Result<Option<String>, StoreError> {
    let Some(binding) = jar.get(PAIRING_COOKIE) else { return Ok(None) };
    match state.store.pairing_by_binding(binding.value()).await {
        Ok(p) => Ok(Some(p.terminal_id)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_wrong_ones_do_not() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("anything", "not a hash"));
    }

    #[test]
    fn the_limiter_blocks_after_the_allowed_failures() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let keys = vec!["user:alice".to_string()];
        for _ in 0..3 {
            assert!(!limiter.is_blocked(&keys));
            limiter.record_failure(&keys);
        }
        assert!(limiter.is_blocked(&keys));
        assert!(!limiter.is_blocked(&["user:bob".to_string()]));
        limiter.clear(&keys);
        assert!(!limiter.is_blocked(&keys));
    }
}
