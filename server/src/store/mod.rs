//! The store facade: every database access of the server, over SQLite or PostgreSQL through sqlx.
//!
//! One `AnyPool`, runtime queries with `$n` placeholders (understood by both dialects), and one
//! migrations folder per dialect. Rows are read into internal types here; `RowNotFound` becomes
//! [`StoreError::NotFound`] and violated constraints become [`StoreError::Conflict`],
//! [`StoreError::Reference`] or [`StoreError::Invalid`] by the driver's error *kind*, the same on
//! both dialects (SQLite reports no constraint name, only a message naming the columns).

mod alarms;
mod audit;
mod bindings;
mod bank;
mod checkpoint;
mod purse_cards;
mod settlement;
mod terminals;
mod throttle;
mod topups;
mod users;

pub use alarms::{AckError, StoredAlarm};
pub use bindings::{BankBinding, BindingRequest};
pub use audit::{AuditEvent, ChainHead, ChainWalk, MAX_AUDIT_FIELD_BYTES};
pub use bank::{BankCard, CardTransaction};
pub use checkpoint::AuditCheckpoint;
pub use purse_cards::{PurseCardListing, PurseCardRecord, PurseCardStatus, TopUpTotals};
pub use topups::StoredTopUp;
pub use terminals::{BrowserPairing, CardRead, ReadAudit, Terminal};
pub use users::{Access, Role, StoredConsent, User};

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use std::str::FromStr;

/// Which database engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique or primary key constraint; the constraint's name (PostgreSQL) or the
    /// `table.column` list SQLite reports.
    #[error("constraint {0} violated")]
    Conflict(String),
    /// A foreign key points at a row that does not exist (or a referenced row is still in use).
    #[error("foreign key {0} violated")]
    Reference(String),
    /// A check or not-null constraint.
    #[error("check {0} violated")]
    Invalid(String),
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// A stored row that does not decode (a value no version of the server writes).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) => {
                let name = constraint_name(db.constraint(), db.message());
                match db.kind() {
                    ErrorKind::UniqueViolation => StoreError::Conflict(name),
                    ErrorKind::ForeignKeyViolation => StoreError::Reference(name),
                    ErrorKind::CheckViolation | ErrorKind::NotNullViolation => StoreError::Invalid(name),
                    _ => StoreError::Database(sqlx::Error::Database(db)),
                }
            }
            other => StoreError::Database(other),
        }
    }
}

/// The constraint's name where the driver gives one (PostgreSQL), else what SQLite's message
/// names: `UNIQUE constraint failed: app_user.username` gives `app_user.username`,
/// `FOREIGN KEY constraint failed` gives `foreign key`.
fn constraint_name(constraint: Option<&str>, message: &str) -> String {
    if let Some(name) = constraint {
        return name.to_string();
    }
    match message.split_once("constraint failed") {
        Some((kind, rest)) => {
            let named = rest.trim_start_matches(':').trim();
            if named.is_empty() { kind.trim().to_lowercase() } else { named.to_string() }
        }
        None => "unnamed".to_string(),
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One database transaction of the facade: a state change, its ledger postings and its audit
/// event commit together or not at all, on both dialects. SQLite transactions begin `immediate`
/// (the write lock up front, so two writers never deadlock upgrading a read lock); PostgreSQL ones
/// `begin`. Dropped without [`StoreTx::commit`], it rolls back.
pub struct StoreTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    dialect: Dialect,
    /// PostgreSQL: this transaction holds the audit chain's advisory lock.
    audit_locked: bool,
}

impl std::fmt::Debug for StoreTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTx").field("dialect", &self.dialect).finish_non_exhaustive()
    }
}

impl StoreTx {
    pub(crate) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }

    pub async fn rollback(self) -> StoreResult<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// The one handle to the database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl Store {
    /// Connect to `database_url` (`sqlite://…` or `postgres://…`). For SQLite the file and its
    /// directory are created, and WAL with `synchronous=FULL` is set on every connection and
    /// asserted here.
    pub async fn connect(database_url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let dialect = if database_url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            anyhow::bail!("unsupported database URL scheme (use sqlite:// or postgres://)");
        };
        let url = match dialect {
            Dialect::Sqlite => prepare_sqlite_url(database_url)?,
            Dialect::Postgres => database_url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url).context("parsing the database URL")?;
        let pool = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 4 } else { 10 })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        conn.execute("pragma journal_mode = wal").await?;
                        conn.execute("pragma synchronous = full").await?;
                        conn.execute("pragma foreign_keys = on").await?;
                        conn.execute("pragma busy_timeout = 5000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .context("connecting to the database")?;
        let store = Store { pool, dialect };
        if dialect == Dialect::Sqlite {
            store.assert_sqlite_durability().await?;
        }
        Ok(store)
    }

    /// Begin a transaction (see [`StoreTx`]).
    pub async fn begin(&self) -> StoreResult<StoreTx> {
        let tx = match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("begin immediate").await?,
            Dialect::Postgres => self.pool.begin().await?,
        };
        Ok(StoreTx { tx, dialect: self.dialect, audit_locked: false })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Apply the pending migrations of this dialect.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATOR,
            Dialect::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator.run(&self.pool).await.context("applying migrations")?;
        Ok(())
    }

    async fn assert_sqlite_durability(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        let (mode,): (String,) = sqlx::query_as("pragma journal_mode").fetch_one(&mut *conn).await?;
        let (sync,): (i64,) = sqlx::query_as("pragma synchronous").fetch_one(&mut *conn).await?;
        anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "SQLite journal_mode is {mode}, expected wal");
        anyhow::ensure!(sync == 2, "SQLite synchronous is {sync}, expected 2 (FULL)");
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Make sure the SQLite file may be created, and its directory exists. The file is created
/// readable by its owner only (0600, like the keys) and an existing one is narrowed to that; SQLite
/// gives its `-wal` and `-shm` files the database file's mode, and existing ones are narrowed too.
/// SQLite serves one instance: take an exclusive lock on `<database>.instance-lock` for as long
/// as the returned file lives, or refuse to start when another instance holds it.
pub fn sqlite_instance_lock(url: &str) -> anyhow::Result<Option<std::fs::File>> {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(None);
    }
    let lock_path = format!("{path}.instance-lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {lock_path}"))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another cardbridge instance is serving the SQLite database {path}: SQLite serves one instance; \
             to run several, put them on PostgreSQL (README, \"Running many instances\")"
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {lock_path}")),
    }
}

fn prepare_sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        anyhow::bail!("an in-memory SQLite database loses everything: give a file path");
    }
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating the database directory {}", parent.display()))?;
        }
    }
    restrict_sqlite_files(std::path::Path::new(path))?;
    let mut out = url.to_string();
    if !out.contains("mode=") {
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str("mode=rwc");
    }
    Ok(out)
}

#[cfg(unix)]
fn restrict_sqlite_files(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating the database file {}", path.display()))?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("narrowing the permissions of {}", file.display()))?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_sqlite_files(_path: &std::path::Path) -> anyhow::Result<()> {
    Ok(())
}

pub(crate) fn flag(v: bool) -> i64 {
    i64::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_messages_name_the_columns() {
        assert_eq!(constraint_name(None, "UNIQUE constraint failed: app_user.username"), "app_user.username");
        assert_eq!(constraint_name(None, "FOREIGN KEY constraint failed"), "foreign key");
        assert_eq!(constraint_name(None, "CHECK constraint failed: app_user_role_check"), "app_user_role_check");
        assert_eq!(constraint_name(Some("terminal_name_key"), "duplicate key value"), "terminal_name_key");
        assert_eq!(constraint_name(None, "something else"), "unnamed");
    }
}
