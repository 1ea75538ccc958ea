//! Users, their sessions, and their per-terminal consent.

use super::{Store, StoreResult, StoreTx};
use crate::util::now_ms;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Cardholder,
    Staff,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Cardholder => "cardholder",
            Role::Staff => "staff",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "cardholder" => Some(Role::Cardholder),
            "staff" => Some(Role::Staff),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    pub username: String,
    pub role: Role,
    pub password_hash: String,
}

type UserRow = (String, String, String, String);

fn user_from(row: UserRow) -> User {
    User {
        user_id: row.0,
        username: row.1,
        // The column has a check constraint; an unknown value cannot be stored.
        role: Role::parse(&row.2).unwrap_or(Role::Cardholder),
        password_hash: row.3,
    }
}

/// A persisted consent decision of a user for a terminal ("allow once" is per session: `consent_once`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredConsent {
    Always,
    Deny,
}

/// What [`Store::access`] read, as of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The user of the session, if it is live.
    pub session_user: Option<String>,
    /// The pairing's terminal and whether it was revoked, if the pairing exists.
    pub pairing: Option<(String, bool)>,
    /// Whether the terminal is permitted and whether it was revoked, if it exists.
    pub terminal: Option<(bool, bool)>,
    /// The user's stored consent for the terminal.
    pub consent: Option<StoredConsent>,
    /// An "allow once" of the session for the terminal waits to be spent.
    pub consent_once: bool,
}

impl Store {
    pub async fn create_user(&self, username: &str, password_hash: &str, role: Role) -> StoreResult<User> {
        let user_id = crate::util::new_id("u");
        sqlx::query("insert into app_user (user_id, username, password_hash, role, created_at) values ($1, $2, $3, $4, $5)")
            .bind(&user_id)
            .bind(username)
            .bind(password_hash)
            .bind(role.as_str())
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(User { user_id, username: username.into(), role, password_hash: password_hash.into() })
    }

    pub async fn user_by_id(&self, user_id: &str) -> StoreResult<User> {
        let row: UserRow = sqlx::query_as("select user_id, username, role, password_hash from app_user where user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(user_from(row))
    }

    pub async fn user_by_name(&self, username: &str) -> StoreResult<User> {
        let row: UserRow = sqlx::query_as("select user_id, username, role, password_hash from app_user where username = $1")
            .bind(username)
            .fetch_one(&self.pool)
            .await?;
        Ok(user_from(row))
    }

    /// A session created at `now` (unix ms), live for `ttl_ms`.
    pub async fn create_session(&self, session_hash: &str, user_id: &str, ttl_ms: i64, now: i64) -> StoreResult<()> {
        sqlx::query("insert into session (session_id, user_id, created_at, expires_at) values ($1, $2, $3, $4)")
            .bind(session_hash)
            .bind(user_id)
            .bind(now)
            .bind(now + ttl_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The user behind a session live at `now` (unix ms).
    pub async fn session_user(&self, session_hash: &str, now: i64) -> StoreResult<User> {
        let row: UserRow = sqlx::query_as(
            "select u.user_id, u.username, u.role, u.password_hash from session s \
             join app_user u on u.user_id = s.user_id where s.session_id = $1 and s.expires_at > $2",
        )
        .bind(session_hash)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(user_from(row))
    }

    pub async fn delete_session(&self, session_hash: &str) -> StoreResult<()> {
        sqlx::query("delete from session where session_id = $1").bind(session_hash).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn consent(&self, user_id: &str, terminal_id: &str) -> StoreResult<Option<StoredConsent>> {
        let row: Option<(String,)> =
            sqlx::query_as("select decision from consent where user_id = $1 and terminal_id = $2")
                .bind(user_id)
                .bind(terminal_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(d,)| if d == "always" { StoredConsent::Always } else { StoredConsent::Deny }))
    }

    /// Everything S200 checks before a command may reach a terminal's agent, read in one
    /// statement (one snapshot, one trip to the database on the tap's path): the live session's
    /// user, the browser pairing, the terminal, and the consents. The same rules as
    /// [`Store::session_user`], [`Store::pairing`], [`Store::terminal`], [`Store::consent`] and
    /// [`Store::has_consent_once`].
    pub async fn access(&self, session_hash: &str, now: i64, pairing_id: &str, terminal_id: &str, user_id: &str) -> StoreResult<Access> {
        type Row = (Option<String>, Option<String>, Option<i64>, Option<i64>, Option<i64>, Option<String>, Option<i64>);
        let row: Row = sqlx::query_as(
            "select \
               (select u.user_id from session s join app_user u on u.user_id = s.user_id \
                 where s.session_id = $1 and s.expires_at > $2), \
               (select terminal_id from browser_pairing where pairing_id = $3), \
               (select revoked_at from browser_pairing where pairing_id = $3), \
               (select permitted from terminal where terminal_id = $4), \
               (select revoked_at from terminal where terminal_id = $4), \
               (select decision from consent where user_id = $5 and terminal_id = $4), \
               (select created_at from consent_once where session_hash = $1 and terminal_id = $4)",
        )
        .bind(session_hash)
        .bind(now)
        .bind(pairing_id)
        .bind(terminal_id)
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        let (session_user, pairing_terminal, pairing_revoked_at, permitted, terminal_revoked_at, decision, once) = row;
        Ok(Access {
            session_user,
            pairing: pairing_terminal.map(|terminal_id| (terminal_id, pairing_revoked_at.is_some())),
            terminal: permitted.map(|p| (p != 0, terminal_revoked_at.is_some())),
            consent: decision.map(|d| if d == "always" { StoredConsent::Always } else { StoredConsent::Deny }),
            consent_once: once.is_some(),
        })
    }

    /// Whether an "allow once" consent of this session for this terminal waits to be spent.
    pub async fn has_consent_once(&self, session_hash: &str, terminal_id: &str) -> StoreResult<bool> {
        let row: Option<(i64,)> = sqlx::query_as("select created_at from consent_once where session_hash = $1 and terminal_id = $2")
            .bind(session_hash)
            .bind(terminal_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Give (`true`) or spend (`false`) the session's "allow once" for a terminal. Spending
    /// returns whether there was one to spend: of two reads racing for one consent on two
    /// instances, only one spends it.
    pub async fn set_consent_once(&self, session_hash: &str, terminal_id: &str, allowed: bool, now_ms: i64) -> StoreResult<bool> {
        let done = if allowed {
            sqlx::query(
                "insert into consent_once (session_hash, terminal_id, created_at) values ($1, $2, $3) \
                 on conflict (session_hash, terminal_id) do update set created_at = excluded.created_at",
            )
            .bind(session_hash)
            .bind(terminal_id)
            .bind(now_ms)
            .execute(&self.pool)
            .await?
        } else {
            sqlx::query("delete from consent_once where session_hash = $1 and terminal_id = $2")
                .bind(session_hash)
                .bind(terminal_id)
                .execute(&self.pool)
                .await?
        };
        Ok(done.rows_affected() > 0)
    }

    /// Replace the user's stored consent for a terminal (none: forget it).
    pub async fn set_consent(&self, user_id: &str, terminal_id: &str, decision: Option<StoredConsent>) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        tx.set_consent(user_id, terminal_id, decision).await?;
        tx.commit().await
    }
}

impl StoreTx {
    /// Replace the user's stored consent for a terminal (none: forget it): the delete and the
    /// insert commit together.
    pub async fn set_consent(&mut self, user_id: &str, terminal_id: &str, decision: Option<StoredConsent>) -> StoreResult<()> {
        sqlx::query("delete from consent where user_id = $1 and terminal_id = $2")
            .bind(user_id)
            .bind(terminal_id)
            .execute(self.conn())
            .await?;
        if let Some(decision) = decision {
            let text = match decision {
                StoredConsent::Always => "always",
                StoredConsent::Deny => "deny",
            };
            sqlx::query("insert into consent (user_id, terminal_id, decision, decided_at) values ($1, $2, $3, $4)")
                .bind(user_id)
                .bind(terminal_id)
                .bind(text)
                .bind(now_ms())
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }
}
