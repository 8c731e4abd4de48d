//! Fresh databases for each test and a direct connection to them for assertions.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, PgConnection};

use crate::helpers::Backend;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_string())
}

async fn admin_connection(admin_url: &str) -> PgConnection {
    match PgConnection::connect(admin_url).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "cannot reach PostgreSQL at {admin_url}: {e}\n\
             The API tests run every case against a real PostgreSQL and create one database per test. \
             Start one (`scripts/test --setup` installs and starts one), or set TEST_DATABASE_URL to a \
             PostgreSQL URL whose user may CREATE DATABASE (default {DEFAULT_ADMIN_URL})."
        ),
    }
}

/// A database made for one test, before (or without) the daemon. Dropping it removes it.
pub enum TestDatabase {
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Postgres => {
                let admin_url = admin_url();
                let name = format!("clerk_sync_test_{:016x}", rand::random::<u64>());
                let mut conn = admin_connection(&admin_url).await;
                sqlx::raw_sql(&format!(r#"CREATE DATABASE "{name}""#))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("cannot create database {name} via TEST_DATABASE_URL={admin_url}: {e}"));
                let _ = conn.close().await;
                let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is not a URL");
                url.set_path(&format!("/{name}"));
                TestDatabase::Postgres {
                    admin_url,
                    name,
                    url: url.to_string(),
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::TempDir::new().expect("cannot create a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("clerk-sync.db").display());
                TestDatabase::Sqlite { _dir: dir, url }
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDatabase::Postgres { url, .. } | TestDatabase::Sqlite { url, .. } => url,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            TestDatabase::Postgres { .. } => Backend::Postgres,
            TestDatabase::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// A direct pool to this database (independent of the daemon's).
    pub async fn connect(&self) -> TestDb {
        match self {
            TestDatabase::Postgres { url, .. } => {
                let options = PgConnectOptions::from_str(url).expect("bad postgres URL");
                let pool = PgPoolOptions::new()
                    .max_connections(3)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .expect("test pool cannot connect to the test database");
                TestDb::Postgres(pool)
            }
            TestDatabase::Sqlite { url, .. } => {
                let pool = SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_with(sqlite_options(url))
                    .await
                    .expect("test pool cannot open the SQLite file");
                TestDb::Sqlite(pool)
            }
        }
    }

    /// Makes the database unusable for the daemon until [`DbBlock::release`].
    pub async fn block(&self) -> DbBlock {
        match self {
            TestDatabase::Postgres { admin_url, name, .. } => {
                let mut conn = admin_connection(admin_url).await;
                sqlx::raw_sql(&format!(r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS false"#))
                    .execute(&mut conn)
                    .await
                    .expect("ALTER DATABASE ... ALLOW_CONNECTIONS false failed");
                sqlx::raw_sql(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                ))
                .execute(&mut conn)
                .await
                .expect("pg_terminate_backend failed");
                let _ = conn.close().await;
                DbBlock::Postgres {
                    admin_url: admin_url.clone(),
                    name: name.clone(),
                }
            }
            TestDatabase::Sqlite { url, .. } => {
                let mut conn = SqliteConnection::connect_with(&sqlite_options(url))
                    .await
                    .expect("cannot open a second SQLite connection");
                sqlx::raw_sql("BEGIN EXCLUSIVE")
                    .execute(&mut conn)
                    .await
                    .expect("BEGIN EXCLUSIVE failed");
                DbBlock::Sqlite(conn)
            }
        }
    }
}

fn sqlite_options(url: &str) -> SqliteConnectOptions {
    SqliteConnectOptions::from_str(url)
        .expect("bad sqlite URL")
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(5))
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let TestDatabase::Postgres { admin_url, name, .. } = self else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Best effort, on a thread of its own: Drop cannot await, and a panic here would abort.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin_url).await {
                    let _ = sqlx::raw_sql(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// What keeps the database unavailable: dropped or released, it is available again.
pub enum DbBlock {
    Postgres { admin_url: String, name: String },
    Sqlite(SqliteConnection),
}

impl DbBlock {
    pub async fn release(self) {
        match self {
            DbBlock::Postgres { admin_url, name } => {
                let mut conn = admin_connection(&admin_url).await;
                sqlx::raw_sql(&format!(r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS true"#))
                    .execute(&mut conn)
                    .await
                    .expect("ALTER DATABASE ... ALLOW_CONNECTIONS true failed");
                let _ = conn.close().await;
            }
            DbBlock::Sqlite(mut conn) => {
                sqlx::raw_sql("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("ROLLBACK failed");
                let _ = conn.close().await;
            }
        }
    }
}

/// One row of `users`, timestamps as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: Option<String>,
    pub clerk_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub created_via: String,
    pub updated_via: Option<String>,
    pub clerk_updated_at: Option<i64>,
    pub deleted_at: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

type UserTuple = (
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A delivery record: event type, clerk id, outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub event_type: String,
    pub clerk_id: Option<String>,
    pub outcome: String,
}

/// A direct pool to the test database, for arranging and asserting.
pub enum TestDb {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl TestDb {
    /// Runs one or more statements.
    pub async fn execute(&self, sql: &str) {
        let result = match self {
            TestDb::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
            TestDb::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
        };
        result.unwrap_or_else(|e| panic!("test SQL failed: {sql}: {e}"));
    }

    /// The first column of every row, which must be text (cast with `CAST(x AS TEXT)`).
    pub async fn strings(&self, sql: &str) -> Vec<Option<String>> {
        let result = match self {
            TestDb::Postgres(pool) => sqlx::query_scalar::<_, Option<String>>(sql).fetch_all(pool).await,
            TestDb::Sqlite(pool) => sqlx::query_scalar::<_, Option<String>>(sql).fetch_all(pool).await,
        };
        result.unwrap_or_else(|e| panic!("test query failed: {sql}: {e}"))
    }

    /// The first column of the first row (None when there is no row or it is NULL).
    pub async fn string(&self, sql: &str) -> Option<String> {
        self.strings(sql).await.into_iter().next().flatten()
    }

    /// A single integer, e.g. `SELECT count(*) ...`.
    pub async fn int(&self, sql: &str) -> i64 {
        let result = match self {
            TestDb::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
            TestDb::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
        };
        result.unwrap_or_else(|e| panic!("test query failed: {sql}: {e}"))
    }

    pub async fn user(&self, clerk_id: &str) -> Option<UserRow> {
        let result: Result<Option<UserTuple>, sqlx::Error> = match self {
            TestDb::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT id::text, clerk_id, email, first_name, last_name, name, username, image_url, \
                     created_via, updated_via, clerk_updated_at, deleted_at::text, created_at::text, \
                     updated_at::text FROM users WHERE clerk_id = $1",
                )
                .bind(clerk_id)
                .fetch_optional(pool)
                .await
            }
            TestDb::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT CAST(id AS TEXT), clerk_id, email, first_name, last_name, name, username, image_url, \
                     created_via, updated_via, clerk_updated_at, CAST(deleted_at AS TEXT), \
                     CAST(created_at AS TEXT), CAST(updated_at AS TEXT) FROM users WHERE clerk_id = ?",
                )
                .bind(clerk_id)
                .fetch_optional(pool)
                .await
            }
        };
        let row = result.unwrap_or_else(|e| panic!("cannot read user {clerk_id}: {e}"))?;
        Some(UserRow {
            id: row.0,
            clerk_id: row.1,
            email: row.2,
            first_name: row.3,
            last_name: row.4,
            name: row.5,
            username: row.6,
            image_url: row.7,
            created_via: row.8,
            updated_via: row.9,
            clerk_updated_at: row.10,
            deleted_at: row.11,
            created_at: row.12,
            updated_at: row.13,
        })
    }

    pub async fn count_users(&self, clerk_id: &str) -> i64 {
        self.int(&format!("SELECT count(*) FROM users WHERE clerk_id = '{clerk_id}'"))
            .await
    }

    pub async fn count_all_users(&self) -> i64 {
        self.int("SELECT count(*) FROM users").await
    }

    pub async fn delivery(&self, svix_id: &str) -> Option<Delivery> {
        let result: Result<Option<(String, Option<String>, String)>, sqlx::Error> = match self {
            TestDb::Postgres(pool) => {
                sqlx::query_as("SELECT event_type, clerk_id, outcome FROM clerk_sync_deliveries WHERE svix_id = $1")
                    .bind(svix_id)
                    .fetch_optional(pool)
                    .await
            }
            TestDb::Sqlite(pool) => {
                sqlx::query_as("SELECT event_type, clerk_id, outcome FROM clerk_sync_deliveries WHERE svix_id = ?")
                    .bind(svix_id)
                    .fetch_optional(pool)
                    .await
            }
        };
        result
            .unwrap_or_else(|e| panic!("cannot read delivery {svix_id}: {e}"))
            .map(|(event_type, clerk_id, outcome)| Delivery {
                event_type,
                clerk_id,
                outcome,
            })
    }

    pub async fn count_deliveries(&self) -> i64 {
        self.int("SELECT count(*) FROM clerk_sync_deliveries").await
    }

    /// `deleted_at_ms` of the user's tombstone, if any.
    pub async fn tombstone(&self, clerk_id: &str) -> Option<i64> {
        let sql = format!("SELECT deleted_at_ms FROM clerk_sync_tombstones WHERE clerk_id = '{clerk_id}'");
        let result = match self {
            TestDb::Postgres(pool) => sqlx::query_scalar::<_, i64>(&sql).fetch_optional(pool).await,
            TestDb::Sqlite(pool) => sqlx::query_scalar::<_, i64>(&sql).fetch_optional(pool).await,
        };
        result.unwrap_or_else(|e| panic!("cannot read tombstone of {clerk_id}: {e}"))
    }

    /// `name:type` of every column of `users`, in order.
    pub async fn users_columns(&self) -> Vec<String> {
        let sql = match self {
            TestDb::Postgres(_) => {
                "SELECT column_name || ':' || data_type || ':' || is_nullable FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = 'users' ORDER BY ordinal_position"
            }
            TestDb::Sqlite(_) => {
                "SELECT name || ':' || type || ':' || \"notnull\" FROM pragma_table_info('users') ORDER BY cid"
            }
        };
        self.strings(sql).await.into_iter().flatten().collect()
    }

    pub async fn close(&self) {
        match self {
            TestDb::Postgres(pool) => pool.close().await,
            TestDb::Sqlite(pool) => pool.close().await,
        }
    }
}
