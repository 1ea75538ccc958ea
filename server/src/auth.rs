//! S100: passwords (argon2id), sessions, the session extractor, login throttling, and the
//! pairing cookie.

use std::net::IpAddr;
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};

use crate::config::LoginThrottle;
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::{Role, Store, StoreError, StoreResult, User};
use crate::util::sha256_hex;

pub const SESSION_COOKIE: &str = "cb_session";
pub const PAIRING_COOKIE: &str = "cb_terminal";

/// The pairing cookie's lifetime: 400 days, the most browsers keep a cookie (RFC 6265bis); it is
/// renewed whenever the paired browser loads a page (`/api/me`), so a browser in use stays paired.
pub const PAIRING_COOKIE_MAX_AGE_DAYS: i64 = 400;

/// The pairing cookie binding this browser to a terminal.
pub fn pairing_cookie(binding: String, secure: bool) -> Cookie<'static> {
    Cookie::build((PAIRING_COOKIE, binding))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .path("/")
        .max_age(cookie::time::Duration::days(PAIRING_COOKIE_MAX_AGE_DAYS))
        .build()
}

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

/// User names are at most this many characters; longer ones are refused before any other work.
pub const MAX_USERNAME_CHARS: usize = 64;

/// Login throttling after NIST SP 800-63B 5.2.2 and OWASP: nothing is ever locked. Failures are
/// counted per user name and, with a higher allowance, per client address; once a key has used its
/// free failures, each further failure makes its next attempt wait twice as long (capped). The
/// counts live in the database (`login_throttle`), so every instance applies the same limits.
#[derive(Debug, Clone)]
pub struct LoginLimiter {
    policy: LoginThrottle,
    trusted_proxies: Vec<IpAddr>,
}

/// The two throttling keys of one login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginKeys {
    pub account: String,
    pub address: String,
}

impl LoginKeys {
    pub fn new(username: &str, client: IpAddr) -> LoginKeys {
        LoginKeys { account: format!("user:{username}"), address: format!("addr:{client}") }
    }
}

/// The throttling key of enrolment attempts from one address.
fn enrol_key(client: IpAddr) -> String {
    format!("enrol:{client}")
}

/// How long the next attempt must wait after `failures` failures of a key allowed `free` of them.
pub fn delay_after(failures: i64, free: u32, base_ms: u64, max_ms: u64) -> u64 {
    let Some(over) = failures.checked_sub(i64::from(free)).filter(|over| *over >= 0) else { return 0 };
    let doublings = u32::try_from(over).unwrap_or(u32::MAX).min(40);
    base_ms.saturating_mul(1u64 << doublings).min(max_ms)
}

impl LoginLimiter {
    pub fn new(policy: LoginThrottle, trusted_proxies: Vec<IpAddr>) -> LoginLimiter {
        LoginLimiter { policy, trusted_proxies: trusted_proxies.into_iter().map(|ip| ip.to_canonical()).collect() }
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy, in which case the
    /// right-most `X-Forwarded-For` entry that is not itself a trusted proxy. Entries left of that
    /// were written by the client and are never believed.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) else { break };
            client = ip;
            if !self.trusted_proxies.contains(&ip) {
                break;
            }
        }
        client
    }

    /// How long `client` must still wait before trying another enrolment code, if at all.
    /// Enrolment codes are guessed from an address: its wrong codes are held like an address's
    /// failed logins, in the database, so every instance applies the same limit.
    pub async fn enrol_wait(&self, store: &Store, client: IpAddr, now_ms: i64) -> StoreResult<Option<Duration>> {
        let until = store.login_blocked_until(&[&enrol_key(client)]).await?;
        let left = until - now_ms;
        Ok((left > 0).then(|| Duration::from_millis(left as u64)))
    }

    /// Count a wrong enrolment code from `client` at `now`.
    pub async fn record_enrol_failure(&self, store: &Store, client: IpAddr, now: i64) -> StoreResult<()> {
        let p = &self.policy;
        let key = enrol_key(client);
        let window_start = now - i64::try_from(p.failure_window_ms).unwrap_or(i64::MAX);
        let failures = store.record_login_failure(&key, now, window_start).await?;
        let delay = delay_after(failures, p.address_free_failures, p.base_delay_ms, p.max_delay_ms);
        if delay > 0 {
            store.hold_login(&key, now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX))).await?;
        }
        Ok(())
    }

    /// How long `keys` must still wait at `now_ms` before trying, if at all.
    pub async fn wait(&self, store: &Store, keys: &LoginKeys, now_ms: i64) -> StoreResult<Option<Duration>> {
        let until = store.login_blocked_until(&[&keys.account, &keys.address]).await?;
        let left = until - now_ms;
        Ok((left > 0).then(|| Duration::from_millis(left as u64)))
    }

    /// Count a failed attempt at `now` (unix ms) and hold the keys that used their free failures.
    pub async fn record_failure(&self, store: &Store, keys: &LoginKeys, now: i64) -> StoreResult<()> {
        let p = &self.policy;
        let window_start = now - i64::try_from(p.failure_window_ms).unwrap_or(i64::MAX);
        for (key, free) in [(&keys.account, p.account_free_failures), (&keys.address, p.address_free_failures)] {
            let failures = store.record_login_failure(key, now, window_start).await?;
            let delay = delay_after(failures, free, p.base_delay_ms, p.max_delay_ms);
            if delay > 0 {
                store.hold_login(key, now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX))).await?;
            }
        }
        Ok(())
    }

    /// A right password forgets the account's failures (not the address's: an attacker with an
    /// account of their own must not reset the count of the address they guess from).
    pub async fn record_success(&self, store: &Store, keys: &LoginKeys) -> StoreResult<()> {
        store.clear_login_failures(&keys.account).await
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
        match state.store.session_user(&session_hash, state.now_ms()).await {
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
    fn delays_double_after_the_free_failures_and_stop_at_the_cap() {
        let delays: Vec<u64> = (0..=9).map(|n| delay_after(n, 5, 1_000, 10_000)).collect();
        assert_eq!(delays, [0, 0, 0, 0, 0, 1_000, 2_000, 4_000, 8_000, 10_000]);
        assert_eq!(delay_after(i64::MAX, 5, 1_000, 300_000), 300_000);
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let none = LoginLimiter::new(LoginThrottle::default(), vec![]);
        let behind_proxy = LoginLimiter::new(LoginThrottle::default(), vec![proxy]);

        assert_eq!(none.client_ip(proxy, &headers(&["198.51.100.1"])), proxy);
        assert_eq!(behind_proxy.client_ip(stranger, &headers(&["198.51.100.1"])), stranger);
        assert_eq!(behind_proxy.client_ip(proxy, &headers(&["198.51.100.1"])), "198.51.100.1".parse::<IpAddr>().unwrap());
        // The client wrote the left entry itself; the proxy appended what it saw.
        assert_eq!(behind_proxy.client_ip(proxy, &headers(&["1.2.3.4, 198.51.100.1"])), "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(behind_proxy.client_ip(proxy, &headers(&["1.2.3.4", "198.51.100.1, 10.0.0.5"])), "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(behind_proxy.client_ip(proxy, &headers(&["garbage"])), proxy);
        assert_eq!(behind_proxy.client_ip(proxy, &headers(&[])), proxy);
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        assert_eq!(behind_proxy.client_ip(mapped, &headers(&["198.51.100.1"])), "198.51.100.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_pairing_cookie_is_bounded() {
        let cookie = pairing_cookie("b".into(), true);
        assert_eq!(cookie.max_age(), Some(cookie::time::Duration::days(400)));
        assert!(cookie.expires().is_none());
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.http_only(), Some(true));
    }
}
