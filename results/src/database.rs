//! Which Postgres to use: `DATABASE_URL` when set, otherwise loadlab's private cluster.

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, PgConnection};

use crate::data_dir::default_data_dir;
use crate::private_postgres::{self, PrivatePostgres};
use crate::{Error, Store};

#[derive(Debug, Clone)]
pub enum Database {
    /// A server the user named in `DATABASE_URL`.
    Url(String),
    /// loadlab's own Postgres under the data directory.
    Private(PrivatePostgres),
}

impl Database {
    /// `DATABASE_URL` if set and not empty, else the private cluster in the default data dir.
    pub fn from_env() -> Self {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => Database::Url(url),
            _ => Database::Private(PrivatePostgres::in_data_dir(&default_data_dir())),
        }
    }

    /// Where results go, for messages (never includes a password).
    pub fn describe(&self) -> String {
        match self {
            Database::Url(url) => match PgConnectOptions::from_str(url) {
                Ok(options) => format!(
                    "postgres {}:{} database {}",
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or("(default)")
                ),
                Err(_) => "DATABASE_URL".into(),
            },
            Database::Private(cluster) => {
                format!("private postgres in {}", cluster.data_dir().display())
            }
        }
    }

    /// A URL for this database, suitable for `DATABASE_URL`.
    pub async fn url(&self) -> Result<String, Error> {
        match self {
            Database::Url(url) => Ok(url.clone()),
            Database::Private(cluster) => {
                self.prepare_private(cluster).await?;
                Ok(cluster.url())
            }
        }
    }

    fn options(&self) -> Result<PgConnectOptions, Error> {
        match self {
            Database::Url(url) => {
                PgConnectOptions::from_str(url).map_err(|e| Error::BadUrl(e.to_string()))
            }
            Database::Private(cluster) => Ok(cluster.connect_options(private_postgres::DATABASE)),
        }
    }

    async fn prepare_private(&self, cluster: &PrivatePostgres) -> Result<(), Error> {
        let starting = cluster.clone();
        tokio::task::spawn_blocking(move || starting.ensure_running())
            .await
            .map_err(|e| Error::Cluster(format!("starting postgres: {e}")))??;
        let mut admin = PgConnection::connect_with(&cluster.connect_options("postgres"))
            .await
            .map_err(Error::Connect)?;
        create_database_if_missing(&mut admin, private_postgres::DATABASE).await
    }

    /// Opens the store, starting the private cluster if that is the database, and migrates it.
    pub async fn open(&self) -> Result<Store, Error> {
        if let Database::Private(cluster) = self {
            self.prepare_private(cluster).await?;
        }
        Store::connect(self.options()?).await
    }

    /// A new, empty database on the same server, for tests and benchmarks. Scratch databases
    /// older than an hour are dropped on the way.
    pub async fn scratch(&self) -> Result<Store, Error> {
        let options = self.scratch_options().await?;
        Store::connect(options).await
    }

    /// Like [`Database::scratch`], as a URL (for a child process's `DATABASE_URL`).
    pub async fn scratch_url(&self) -> Result<String, Error> {
        Ok(self.scratch_options().await?.to_url_lossy().to_string())
    }

    /// A scratch database both as a URL, for a child process, and opened here, to read what it
    /// stored.
    pub async fn scratch_with_url(&self) -> Result<(String, Store), Error> {
        let options = self.scratch_options().await?;
        let url = options.to_url_lossy().to_string();
        Ok((url, Store::connect(options).await?))
    }

    async fn scratch_options(&self) -> Result<PgConnectOptions, Error> {
        if let Database::Private(cluster) = self {
            self.prepare_private(cluster).await?;
        }
        let options = self.options()?;
        let mut admin = PgConnection::connect_with(&options.clone().database("postgres"))
            .await
            .map_err(Error::Connect)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        drop_stale_scratch(&mut admin, now).await?;
        let name = format!(
            "scratch_{now}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        create_database_if_missing(&mut admin, &name).await?;
        Ok(options.database(&name))
    }
}

async fn create_database_if_missing(admin: &mut PgConnection, name: &str) -> Result<(), Error> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut *admin)
        .await?;
    if exists.is_none() {
        // Names here are ours (a constant or scratch_<digits>_<hex>), never user input.
        match admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
        {
            Ok(_) => {}
            // Another process created it between our check and our CREATE.
            // (42P04 duplicate_database, or 23505 when both CREATEs raced in the catalog).
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn drop_stale_scratch(admin: &mut PgConnection, now: u64) -> Result<(), Error> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'scratch\\_%'")
            .fetch_all(&mut *admin)
            .await?;
    for name in names {
        let created: Option<u64> = name.split('_').nth(1).and_then(|s| s.parse().ok());
        if created.is_some_and(|t| now.saturating_sub(t) > 3600) {
            let _ = admin
                .execute(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .await;
        }
    }
    Ok(())
}
