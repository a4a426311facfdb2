//! The seam between the one store implementation ([`super::sql_store`]) and the two databases.
//! Shared code builds a [`Query`] from SQL text ([`super::sql`]) and dialect-neutral [`Arg`]s,
//! runs it through [`Db`] or a [`Tx`], and reads [`Row`]s; each dialect binds the arguments to
//! its own column types and decodes them back ([`Encoding`]): times are `timestamptz` on
//! PostgreSQL and epoch milliseconds on SQLite, JSON is `jsonb` or text, and the clock is
//! PostgreSQL's `now()` or this process's (SQLite has one attestd process).

use std::borrow::Cow;
use std::time::Duration;

use serde::de::DeserializeOwned;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{ColumnIndex, Database, Decode, Encode, PgPool, Postgres, Sqlite, SqlitePool, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use super::sql::Statements;
use super::{NewExecution, PoolStats, StoreError, postgres, sqlite};

/// One bound value, in no dialect's encoding yet.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Int32(Option<i32>),
    Bool(bool),
    Uuid(Uuid),
    /// A PostgreSQL array (`= ANY($n)`); SQLite lists the ids one by one instead ([`Db::push_in`]).
    Uuids(&'a [Uuid]),
    Bytes(Option<&'a [u8]>),
    /// A stored time: `timestamptz`, or epoch milliseconds.
    Time(Option<OffsetDateTime>),
    /// `jsonb`, or JSON text.
    Json(&'a serde_json::Value),
    /// The clock, for the `{now…}` markers of [`super::sql`].
    Clock(Clock),
}

/// A time the database reads on its own clock (PostgreSQL) or is given (SQLite, `now` here).
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// `{now $n}`: nothing is bound on PostgreSQL.
    Now(OffsetDateTime),
    /// `{now+ $n}`: the milliseconds on PostgreSQL, `now` plus them on SQLite; NULL for `None`.
    Later(OffsetDateTime, Option<Duration>),
    /// `{now- $n}`: the milliseconds on PostgreSQL, `now` minus them on SQLite.
    Earlier(OffsetDateTime, Duration),
}

macro_rules! arg_from {
    ($($t:ty => $variant:ident($e:expr)),* $(,)?) => {
        $(impl<'a> From<$t> for Arg<'a> {
            fn from(v: $t) -> Self {
                Arg::$variant($e(v))
            }
        })*
    };
}

arg_from! {
    &'a str => Text(Some),
    &'a String => Text(|v: &'a String| Some(v.as_str())),
    Option<&'a str> => Text(std::convert::identity),
    i64 => Int(Some),
    Option<i64> => Int(std::convert::identity),
    i32 => Int32(Some),
    Option<i32> => Int32(std::convert::identity),
    bool => Bool(std::convert::identity),
    Uuid => Uuid(std::convert::identity),
    &'a [u8] => Bytes(Some),
    Option<&'a [u8]> => Bytes(std::convert::identity),
    OffsetDateTime => Time(Some),
    Option<OffsetDateTime> => Time(std::convert::identity),
    &'a serde_json::Value => Json(std::convert::identity),
    Clock => Clock(std::convert::identity),
}

/// Milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// SQL text with its arguments, in `$n` order.
pub struct Query<'a> {
    sql: Cow<'static, str>,
    args: Vec<Arg<'a>>,
}

impl<'a> Query<'a> {
    pub fn new(sql: &'static str) -> Self {
        Self {
            sql: Cow::Borrowed(sql),
            args: Vec::new(),
        }
    }

    /// SQL assembled at run time (filters, id lists); it never contains a value.
    pub fn dynamic(sql: String) -> Self {
        Self {
            sql: Cow::Owned(sql),
            args: Vec::new(),
        }
    }

    pub fn bind(mut self, v: impl Into<Arg<'a>>) -> Self {
        self.args.push(v.into());
        self
    }

    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.to_mut().push_str(sql);
        self
    }

    /// Append the next `$n` and bind `v` to it.
    pub fn push_bind(&mut self, v: impl Into<Arg<'a>>) -> &mut Self {
        self.args.push(v.into());
        let n = format!("${}", self.args.len());
        self.push(&n)
    }
}

/// What each dialect binds and decodes its own way: times, JSON, the clock, id arrays.
pub trait Encoding: Database {
    fn bind_time(q: SqlxQuery<Self>, t: Option<OffsetDateTime>) -> SqlxQuery<Self>;
    fn bind_json(q: SqlxQuery<Self>, v: &serde_json::Value) -> SqlxQuery<Self>;
    fn bind_clock(q: SqlxQuery<Self>, c: Clock) -> SqlxQuery<Self>;
    /// An id array; SQLite has none and refuses (its ids are listed by [`Db::push_in`]).
    fn bind_uuids(q: SqlxQuery<Self>, ids: &[Uuid]) -> Result<SqlxQuery<Self>, StoreError>;
    fn time<I: Column>(row: &Self::Row, col: I) -> Result<Option<OffsetDateTime>, sqlx::Error>;
    fn json<T: DeserializeOwned, I: Column>(row: &Self::Row, col: I) -> Result<T, sqlx::Error>;
}

pub type SqlxQuery<DB> = sqlx::query::Query<'static, DB, <DB as Database>::Arguments>;

/// The sqlx query for `q`, its arguments bound in the dialect's encoding.
fn prepare<DB>(q: Query<'_>) -> Result<SqlxQuery<DB>, StoreError>
where
    DB: Encoding,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t [u8]>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i32>: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'t> Uuid: Encode<'t, DB> + Type<DB>,
{
    let mut query = sqlx::query(sqlx::AssertSqlSafe(q.sql));
    for arg in q.args {
        query = match arg {
            Arg::Text(v) => query.bind(v),
            Arg::Int(v) => query.bind(v),
            Arg::Int32(v) => query.bind(v),
            Arg::Bool(v) => query.bind(v),
            Arg::Uuid(v) => query.bind(v),
            Arg::Bytes(v) => query.bind(v),
            Arg::Uuids(ids) => DB::bind_uuids(query, ids)?,
            Arg::Time(t) => DB::bind_time(query, t),
            Arg::Json(v) => DB::bind_json(query, v),
            Arg::Clock(c) => DB::bind_clock(query, c),
        };
    }
    Ok(query)
}

/// A column of a row of either dialect: its name, or its position in the select list (cheaper
/// for the wide rows of a page: no lookup of the name per value).
pub trait Column: ColumnIndex<PgRow> + ColumnIndex<SqliteRow> + std::fmt::Display + Copy {}

impl<I: ColumnIndex<PgRow> + ColumnIndex<SqliteRow> + std::fmt::Display + Copy> Column for I {}

/// A row of either dialect.
pub enum Row {
    Postgres(PgRow),
    Sqlite(SqliteRow),
}

impl Row {
    /// A column whose type both dialects store alike (text, integers, booleans, uuids, bytes).
    pub fn get<T, I>(&self, col: I) -> Result<T, sqlx::Error>
    where
        T: for<'r> Decode<'r, Postgres>
            + Type<Postgres>
            + for<'r> Decode<'r, Sqlite>
            + Type<Sqlite>,
        I: Column,
    {
        use sqlx::Row as _;
        match self {
            Self::Postgres(r) => r.try_get(col),
            Self::Sqlite(r) => r.try_get(col),
        }
    }

    pub fn opt_time(&self, col: impl Column) -> Result<Option<OffsetDateTime>, sqlx::Error> {
        match self {
            Self::Postgres(r) => Postgres::time(r, col),
            Self::Sqlite(r) => Sqlite::time(r, col),
        }
    }

    pub fn time(&self, col: impl Column) -> Result<OffsetDateTime, sqlx::Error> {
        self.opt_time(col)?
            .ok_or_else(|| sqlx::Error::ColumnDecode {
                index: col.to_string(),
                source: Box::new(sqlx::error::UnexpectedNullError),
            })
    }

    pub fn json<T: DeserializeOwned>(&self, col: impl Column) -> Result<T, sqlx::Error> {
        match self {
            Self::Postgres(r) => Postgres::json(r, col),
            Self::Sqlite(r) => Sqlite::json(r, col),
        }
    }
}

/// Which SQLite pool a statement runs on: the read-only pool, or the single writer connection
/// (for writes, and for reads that must see the latest write). PostgreSQL has one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Read,
    Write,
}

/// The connection pools of one database.
pub enum Db {
    Postgres(Pg),
    /// One writer connection serializes writes (SQLite allows one writer at a time anyway, and
    /// this avoids busy errors); reads use a separate pool and see committed data through WAL.
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
    },
}

/// PostgreSQL's pool, and for a session ([`Pg::session`]) the connection kept between its
/// statements.
pub struct Pg {
    pool: PgPool,
    kept: Option<std::sync::Mutex<Option<PoolConnection<Postgres>>>>,
}

impl Pg {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, kept: None }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The same pool, for one caller whose statements run one after another (a worker's job):
    /// the connection the first one takes is kept for the next, and goes back to the pool when
    /// the session is dropped. sqlx pings every connection it takes back (a round trip, and a
    /// wake-up on both sides), so a job's five statements pay that once instead of five times.
    pub fn session(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            kept: Some(std::sync::Mutex::new(None)),
        }
    }

    /// The kept connection, or one from the pool.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        let kept = self
            .kept
            .as_ref()
            .and_then(|k| k.lock().ok().and_then(|mut c| c.take()));
        match kept {
            Some(conn) => Ok(conn),
            None => Ok(self.pool.acquire().await?),
        }
    }

    /// Hand back a connection [`Pg::acquire`] gave, after a statement that ended in `outcome`.
    /// A session keeps it unless the statement failed in the database or on the way there (it
    /// then goes back to the pool, whose ping closes it if it is broken); outside a session it
    /// goes back to the pool. A statement cancelled midway never gets here: its connection is
    /// dropped with it, and so also goes back through the ping.
    pub fn give_back<T>(&self, conn: PoolConnection<Postgres>, outcome: &Result<T, StoreError>) {
        if matches!(outcome, Err(StoreError::Database(_))) {
            return;
        }
        if let Some(Ok(mut kept)) = self.kept.as_ref().map(|k| k.lock()) {
            kept.get_or_insert(conn);
        }
    }
}

/// Evaluate `$body` (a `Result<_, StoreError>`) with `$conn` a connection of the [`Pg`] `$pg`
/// ([`Pg::acquire`]), then give the connection back ([`Pg::give_back`]).
macro_rules! with_conn {
    ($pg:expr, |$conn:ident| $body:expr) => {{
        let pg: &$crate::store::dialect::Pg = $pg;
        let mut $conn = pg.acquire().await?;
        let outcome = $body;
        pg.give_back($conn, &outcome);
        outcome
    }};
}
pub(super) use with_conn;

impl Db {
    /// `"postgres"` or `"sqlite"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite { .. } => "sqlite",
        }
    }

    /// This dialect's rendering of the statements that differ.
    pub fn sql(&self) -> &'static Statements {
        match self {
            Self::Postgres(_) => &postgres::STATEMENTS,
            Self::Sqlite { .. } => &sqlite::STATEMENTS,
        }
    }

    fn sqlite_pool<'p>(writer: &'p SqlitePool, reader: &'p SqlitePool, on: On) -> &'p SqlitePool {
        match on {
            On::Read => reader,
            On::Write => writer,
        }
    }

    /// Append `column` is one of `ids`: `= ANY($n)` on PostgreSQL, an `IN` list on SQLite.
    pub fn push_in<'a>(&self, q: &mut Query<'a>, column: &str, ids: &'a [Uuid]) {
        q.push(column);
        match self {
            Self::Postgres(_) => {
                q.push(" = ANY(").push_bind(Arg::Uuids(ids)).push(")");
            }
            Self::Sqlite { .. } => {
                q.push(" IN (");
                for (i, id) in ids.iter().enumerate() {
                    q.push(if i == 0 { "" } else { ", " }).push_bind(*id);
                }
                q.push(")");
            }
        }
    }

    /// Ingest's insert, the one use case written per dialect: PostgreSQL's is one statement of
    /// data-modifying CTEs, SQLite's a transaction of several. `Some((id, request hash))` of the
    /// execution already recorded under the idempotency key, or `None` once the new one is.
    pub async fn insert_build(
        &self,
        new: &NewExecution,
    ) -> Result<Option<(Uuid, String)>, StoreError> {
        match self {
            Self::Postgres(pg) => postgres::insert_build(pg.pool(), new).await,
            Self::Sqlite { writer, .. } => sqlite::insert_build(writer, new).await,
        }
    }

    /// [`Db::insert_build`] for a batch with one commit (group commit at ingest): per item, in
    /// input order, what `insert_build` returns for it. `Err` when the batch as a whole failed
    /// and nothing of it was written.
    pub async fn insert_builds(
        &self,
        batch: &[NewExecution],
    ) -> Result<Vec<Result<Option<(Uuid, String)>, StoreError>>, StoreError> {
        match self {
            Self::Postgres(pg) => postgres::insert_builds(pg.pool(), batch).await,
            Self::Sqlite { writer, .. } => sqlite::insert_builds(writer, batch).await,
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(pg) => super::migrations::POSTGRES.run(pg.pool()).await?,
            Self::Sqlite { writer, .. } => super::migrations::SQLITE.run(writer).await?,
        }
        Ok(())
    }

    /// Rows affected.
    pub async fn execute(&self, on: On, q: Query<'_>) -> Result<u64, StoreError> {
        Ok(match self {
            Self::Postgres(pg) => {
                let q = prepare::<Postgres>(q)?;
                with_conn!(pg, |conn| Ok(q.execute(&mut *conn).await?))?.rows_affected()
            }
            Self::Sqlite { writer, reader } => prepare::<Sqlite>(q)?
                .execute(Self::sqlite_pool(writer, reader, on))
                .await?
                .rows_affected(),
        })
    }

    pub async fn fetch_all(&self, on: On, q: Query<'_>) -> Result<Vec<Row>, StoreError> {
        Ok(match self {
            Self::Postgres(pg) => {
                let q = prepare::<Postgres>(q)?;
                let rows = with_conn!(pg, |conn| Ok(q.fetch_all(&mut *conn).await?))?;
                rows.into_iter().map(Row::Postgres).collect()
            }
            Self::Sqlite { writer, reader } => {
                let pool = Self::sqlite_pool(writer, reader, on);
                let rows = prepare::<Sqlite>(q)?.fetch_all(pool).await?;
                rows.into_iter().map(Row::Sqlite).collect()
            }
        })
    }

    pub async fn fetch_optional(&self, on: On, q: Query<'_>) -> Result<Option<Row>, StoreError> {
        Ok(match self {
            Self::Postgres(pg) => {
                let q = prepare::<Postgres>(q)?;
                with_conn!(pg, |conn| Ok(q.fetch_optional(&mut *conn).await?))?.map(Row::Postgres)
            }
            Self::Sqlite { writer, reader } => prepare::<Sqlite>(q)?
                .fetch_optional(Self::sqlite_pool(writer, reader, on))
                .await?
                .map(Row::Sqlite),
        })
    }

    pub async fn fetch_one(&self, on: On, q: Query<'_>) -> Result<Row, StoreError> {
        self.fetch_optional(on, q)
            .await?
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// A transaction; on SQLite, on the writer connection.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match self {
            Self::Postgres(pg) => Tx::Postgres(pg.pool().begin().await?),
            Self::Sqlite { writer, .. } => Tx::Sqlite(writer.begin().await?),
        })
    }

    pub fn pool_stats(&self) -> Vec<PoolStats> {
        match self {
            Self::Postgres(pg) => vec![pool_stats("main", pg.pool())],
            Self::Sqlite { writer, reader } => {
                vec![pool_stats("writer", writer), pool_stats("reader", reader)]
            }
        }
    }
}

/// A pool's connections as sqlx counts them.
fn pool_stats<DB: Database>(name: &'static str, pool: &sqlx::Pool<DB>) -> PoolStats {
    let size = pool.size();
    // sqlx counts idle connections in a counter of its own, raised only after a returned
    // connection is back in the idle queue: a connection taken from the queue in that moment
    // lowers the counter first, and it wraps below zero until the raise lands (sqlx-core 0.9,
    // `PoolInner::release`). No more connections are idle than the pool has.
    let idle = u32::try_from(pool.num_idle()).map_or(size, |idle| idle.min(size));
    PoolStats {
        name,
        size,
        idle,
        max: pool.options().get_max_connections(),
    }
}

/// An open transaction of either dialect; dropped without [`Tx::commit`], it rolls back.
pub enum Tx {
    Postgres(sqlx::Transaction<'static, Postgres>),
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

impl Tx {
    /// Rows affected.
    pub async fn execute(&mut self, q: Query<'_>) -> Result<u64, StoreError> {
        Ok(match self {
            Self::Postgres(tx) => prepare::<Postgres>(q)?
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Self::Sqlite(tx) => prepare::<Sqlite>(q)?
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        })
    }

    pub async fn fetch_optional(&mut self, q: Query<'_>) -> Result<Option<Row>, StoreError> {
        Ok(match self {
            Self::Postgres(tx) => prepare::<Postgres>(q)?
                .fetch_optional(&mut **tx)
                .await?
                .map(Row::Postgres),
            Self::Sqlite(tx) => prepare::<Sqlite>(q)?
                .fetch_optional(&mut **tx)
                .await?
                .map(Row::Sqlite),
        })
    }

    pub async fn fetch_one(&mut self, q: Query<'_>) -> Result<Row, StoreError> {
        self.fetch_optional(q)
            .await?
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(tx) => tx.commit().await?,
            Self::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }
}
