//! One way to run SQL on either backend, in plain Rust.
//!
//! The storage logic is written once against these types: a [`Pool`], a [`Tx`] (a write
//! transaction) or a [`Conn`] (one pooled connection) is an enum over the two backends, and a
//! statement ([`query`], [`query_as`], [`QueryBuilder`]) keeps its bound values as [`Arg`]s until
//! it runs, when they are encoded for the backend it runs on. Both backends accept the same SQL
//! text with `$N` placeholders; what differs between them is behind
//! [`SqlBackend`](super::backend::SqlBackend).
//!
//! Why not `sqlx::Any`: it has no UUIDs and no arrays. Why not code generic over
//! `sqlx::Database`: the higher-ranked `Executor` bounds it needs do not survive `async` code
//! that must be `Send`. The price here is one `match` per statement.

use std::marker::PhantomData;

use futures_util::future::Either;
use futures_util::stream::{BoxStream, StreamExt};
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{Arguments, FromRow, Postgres, SqlSafeStr, SqlStr, Sqlite, Transaction};
use uuid::Uuid;

use crate::domain::ids::Id;

/// A connection pool of either backend.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

impl Pool {
    /// One connection, held until the [`Conn`] is dropped.
    pub async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Pool::Pg(pool) => Conn::Pg(pool.acquire().await?),
            Pool::Sqlite(pool) => Conn::Sqlite(pool.acquire().await?),
        })
    }
}

/// A transaction of either backend. Dropped without [`Tx::commit`], it rolls back.
#[derive(Debug)]
pub(crate) enum Tx {
    Pg(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// Transactions committed by this process: the public reads' snapshots rebuild when it moves
/// (`app::public_reads`).
static COMMITTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many transactions this process has committed (any store): something may have changed.
pub fn committed_writes() -> u64 {
    COMMITTED.load(std::sync::atomic::Ordering::Acquire)
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let committed = match self {
            Tx::Pg(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit().await,
        };
        COMMITTED.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        committed
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Pg(tx) => tx.rollback().await,
            Tx::Sqlite(tx) => tx.rollback().await,
        }
    }
}

/// One pooled connection of either backend.
#[derive(Debug)]
pub(crate) enum Conn {
    Pg(PoolConnection<Postgres>),
    Sqlite(PoolConnection<Sqlite>),
}

/// Where a statement runs: a pool, or a connection (a transaction's or a pooled one).
pub(crate) enum Exec<'e> {
    PgPool(&'e PgPool),
    PgConn(&'e mut PgConnection),
    SqlitePool(&'e SqlitePool),
    SqliteConn(&'e mut SqliteConnection),
}

impl<'e> From<&'e Pool> for Exec<'e> {
    fn from(pool: &'e Pool) -> Self {
        match pool {
            Pool::Pg(pool) => Exec::PgPool(pool),
            Pool::Sqlite(pool) => Exec::SqlitePool(pool),
        }
    }
}

/// Something a statement can run on more than once: a transaction or a held connection.
pub(crate) trait AsExec: Send {
    fn as_exec(&mut self) -> Exec<'_>;
}

impl AsExec for Tx {
    fn as_exec(&mut self) -> Exec<'_> {
        match self {
            Tx::Pg(tx) => Exec::PgConn(tx),
            Tx::Sqlite(tx) => Exec::SqliteConn(tx),
        }
    }
}

impl AsExec for Conn {
    fn as_exec(&mut self) -> Exec<'_> {
        match self {
            Conn::Pg(conn) => Exec::PgConn(conn),
            Conn::Sqlite(conn) => Exec::SqliteConn(conn),
        }
    }
}

impl<'e, T: AsExec> From<&'e mut T> for Exec<'e> {
    fn from(on: &'e mut T) -> Self {
        on.as_exec()
    }
}

impl Tx {
    /// The PostgreSQL connection under a transaction the PostgreSQL backend began.
    pub fn pg(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        match self {
            Tx::Pg(tx) => Ok(tx),
            Tx::Sqlite(_) => Err(wrong_backend()),
        }
    }
}

/// A PostgreSQL statement given a SQLite transaction: a programmer's error, answered as a
/// database error rather than a panic on a request path.
fn wrong_backend() -> sqlx::Error {
    sqlx::Error::Configuration("a PostgreSQL statement was given a SQLite transaction".into())
}

/// Runs `sql` (one or more statements, no parameters) with the simple query protocol: for
/// settings such as `SET LOCAL`, which are not prepared.
pub(crate) async fn execute_raw<'e>(sql: &'static str, on: impl Into<Exec<'e>>) -> Result<(), sqlx::Error> {
    match on.into() {
        Exec::PgPool(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        Exec::PgConn(conn) => sqlx::raw_sql(sql).execute(conn).await.map(drop),
        Exec::SqlitePool(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        Exec::SqliteConn(conn) => sqlx::raw_sql(sql).execute(conn).await.map(drop),
    }
}

/// A value bound to a statement, kept until the statement runs. Every kind of value the
/// storage binds has a variant; `None` binds SQL NULL.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    I64(Option<i64>),
    I32(Option<i32>),
    Bool(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Uuid(Option<Uuid>),
}

/// A Rust value the storage binds to a statement.
pub(crate) trait Bind {
    fn into_arg(self) -> Arg;
}

/// A bindable value whose `None` binds SQL NULL of its kind.
pub(crate) trait Nullable: Bind {
    const NULL: Arg;
}

impl<T: Nullable> Bind for Option<T> {
    fn into_arg(self) -> Arg {
        match self {
            Some(value) => value.into_arg(),
            None => T::NULL,
        }
    }
}

impl Bind for Arg {
    fn into_arg(self) -> Arg {
        self
    }
}

impl Bind for i64 {
    fn into_arg(self) -> Arg {
        Arg::I64(Some(self))
    }
}

impl Nullable for i64 {
    const NULL: Arg = Arg::I64(None);
}

impl Bind for &i64 {
    fn into_arg(self) -> Arg {
        Arg::I64(Some(*self))
    }
}

impl Nullable for &i64 {
    const NULL: Arg = Arg::I64(None);
}

impl Bind for i32 {
    fn into_arg(self) -> Arg {
        Arg::I32(Some(self))
    }
}

impl Nullable for i32 {
    const NULL: Arg = Arg::I32(None);
}

impl Bind for &i32 {
    fn into_arg(self) -> Arg {
        Arg::I32(Some(*self))
    }
}

impl Nullable for &i32 {
    const NULL: Arg = Arg::I32(None);
}

impl Bind for bool {
    fn into_arg(self) -> Arg {
        Arg::Bool(Some(self))
    }
}

impl Nullable for bool {
    const NULL: Arg = Arg::Bool(None);
}

impl Bind for String {
    fn into_arg(self) -> Arg {
        Arg::Text(Some(self))
    }
}

impl Nullable for String {
    const NULL: Arg = Arg::Text(None);
}

impl Bind for &String {
    fn into_arg(self) -> Arg {
        Arg::Text(Some(self.clone()))
    }
}

impl Nullable for &String {
    const NULL: Arg = Arg::Text(None);
}

impl Bind for &str {
    fn into_arg(self) -> Arg {
        Arg::Text(Some(self.to_owned()))
    }
}

impl Nullable for &str {
    const NULL: Arg = Arg::Text(None);
}

impl Bind for Vec<u8> {
    fn into_arg(self) -> Arg {
        Arg::Bytes(Some(self))
    }
}

impl Nullable for Vec<u8> {
    const NULL: Arg = Arg::Bytes(None);
}

impl Bind for &Vec<u8> {
    fn into_arg(self) -> Arg {
        Arg::Bytes(Some(self.clone()))
    }
}

impl Nullable for &Vec<u8> {
    const NULL: Arg = Arg::Bytes(None);
}

impl Bind for &[u8] {
    fn into_arg(self) -> Arg {
        Arg::Bytes(Some(self.to_vec()))
    }
}

impl Nullable for &[u8] {
    const NULL: Arg = Arg::Bytes(None);
}

impl Bind for Uuid {
    fn into_arg(self) -> Arg {
        Arg::Uuid(Some(self))
    }
}

impl Nullable for Uuid {
    const NULL: Arg = Arg::Uuid(None);
}

impl Bind for &Uuid {
    fn into_arg(self) -> Arg {
        Arg::Uuid(Some(*self))
    }
}

impl Nullable for &Uuid {
    const NULL: Arg = Arg::Uuid(None);
}

impl<K> Bind for Id<K> {
    fn into_arg(self) -> Arg {
        Arg::Uuid(Some(self.as_uuid()))
    }
}

impl<K> Nullable for Id<K> {
    const NULL: Arg = Arg::Uuid(None);
}

impl<K> Bind for &Id<K> {
    fn into_arg(self) -> Arg {
        Arg::Uuid(Some(self.as_uuid()))
    }
}

// A typed id is its UUID in the database, on either backend: rows decode straight into it.
impl<K, DB: sqlx::Database> sqlx::Type<DB> for Id<K>
where
    Uuid: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <Uuid as sqlx::Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <Uuid as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'q, K, DB: sqlx::Database> sqlx::Encode<'q, DB> for Id<K>
where
    Uuid: sqlx::Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<sqlx::encode::IsNull, BoxDynError> {
        self.as_uuid().encode_by_ref(buf)
    }
}

impl<'r, K, DB: sqlx::Database> sqlx::Decode<'r, DB> for Id<K>
where
    Uuid: sqlx::Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Uuid::decode(value).map(Id::from_uuid)
    }
}

// A list of typed ids binds as PostgreSQL's `uuid[]`, as a list of UUIDs does.
impl<K> sqlx::postgres::PgHasArrayType for Id<K> {
    fn array_type_info() -> sqlx::postgres::PgTypeInfo {
        <Uuid as sqlx::postgres::PgHasArrayType>::array_type_info()
    }
}

/// The values, encoded for backend `DB` in order.
fn arguments<DB: sqlx::Database>(args: Vec<Arg>) -> Result<DB::Arguments, BoxDynError>
where
    Option<i64>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<i32>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<bool>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<String>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<Vec<u8>>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Option<Uuid>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut out = DB::Arguments::default();
    out.reserve(args.len(), 0);
    for arg in args {
        match arg {
            Arg::I64(v) => out.add(v)?,
            Arg::I32(v) => out.add(v)?,
            Arg::Bool(v) => out.add(v)?,
            Arg::Text(v) => out.add(v)?,
            Arg::Bytes(v) => out.add(v)?,
            Arg::Uuid(v) => out.add(v)?,
        }
    }
    Ok(out)
}

fn pg_arguments(args: Vec<Arg>) -> Result<PgArguments, BoxDynError> {
    arguments::<Postgres>(args)
}

fn sqlite_arguments(args: Vec<Arg>) -> Result<SqliteArguments, BoxDynError> {
    arguments::<Sqlite>(args)
}

/// What a statement that returns no rows did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Done {
    rows_affected: u64,
}

impl Done {
    pub fn rows_affected(&self) -> u64 {
        self.rows_affected
    }
}

/// A statement's text: one for both backends (`$N` placeholders, which SQLite also reads), or
/// one per backend, as [`QueryBuilder`] writes it.
enum SqlText {
    Shared(SqlStr),
    PerBackend { pg: String, sqlite: String },
}

impl SqlText {
    fn pg(self) -> SqlStr {
        match self {
            SqlText::Shared(sql) => sql,
            SqlText::PerBackend { pg, .. } => sqlx::AssertSqlSafe(pg).into_sql_str(),
        }
    }

    fn sqlite(self) -> SqlStr {
        match self {
            SqlText::Shared(sql) => sql,
            SqlText::PerBackend { sqlite, .. } => sqlx::AssertSqlSafe(sqlite).into_sql_str(),
        }
    }
}

/// A statement whose rows, if any, are not read.
#[must_use = "a query does nothing until it is executed"]
pub(crate) struct Query {
    sql: SqlText,
    args: Vec<Arg>,
}

/// A statement with `$N` placeholders.
pub(crate) fn query(sql: impl SqlSafeStr) -> Query {
    Query { sql: SqlText::Shared(sql.into_sql_str()), args: Vec::new() }
}

impl Query {
    pub fn bind(mut self, value: impl Bind) -> Self {
        self.args.push(value.into_arg());
        self
    }

    pub async fn execute<'e>(self, on: impl Into<Exec<'e>>) -> Result<Done, sqlx::Error> {
        let Query { sql, args } = self;
        let done = match on.into() {
            Exec::PgPool(pool) => pg_query(sql.pg(), args)?.execute(pool).await?.rows_affected(),
            Exec::PgConn(conn) => pg_query(sql.pg(), args)?.execute(conn).await?.rows_affected(),
            Exec::SqlitePool(pool) => sqlite_query(sql.sqlite(), args)?.execute(pool).await?.rows_affected(),
            Exec::SqliteConn(conn) => sqlite_query(sql.sqlite(), args)?.execute(conn).await?.rows_affected(),
        };
        Ok(Done { rows_affected: done })
    }
}

type Built<Q> = Result<Q, sqlx::Error>;

fn pg_query(sql: SqlStr, args: Vec<Arg>) -> Built<sqlx::query::Query<'static, Postgres, PgArguments>> {
    Ok(sqlx::query_with(sql, pg_arguments(args).map_err(sqlx::Error::Encode)?))
}

fn sqlite_query(sql: SqlStr, args: Vec<Arg>) -> Built<sqlx::query::Query<'static, Sqlite, SqliteArguments>> {
    Ok(sqlx::query_with(sql, sqlite_arguments(args).map_err(sqlx::Error::Encode)?))
}

/// A row type both backends can decode: a tuple, or a struct deriving `sqlx::FromRow`.
pub(crate) trait Record:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin + 'static
{
}

impl<T> Record for T where
    T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin + 'static
{
}

/// A statement whose rows are read as `O`.
#[must_use = "a query does nothing until it is fetched"]
pub(crate) struct QueryAs<O> {
    sql: SqlText,
    args: Vec<Arg>,
    rows: PhantomData<fn() -> O>,
}

/// A statement with `$N` placeholders whose rows are read as `O`.
pub(crate) fn query_as<O: Record>(sql: impl SqlSafeStr) -> QueryAs<O> {
    QueryAs { sql: SqlText::Shared(sql.into_sql_str()), args: Vec::new(), rows: PhantomData }
}

impl<O: Record> QueryAs<O> {
    pub fn bind(mut self, value: impl Bind) -> Self {
        self.args.push(value.into_arg());
        self
    }

    pub async fn fetch_all<'e>(self, on: impl Into<Exec<'e>>) -> Result<Vec<O>, sqlx::Error> {
        let QueryAs { sql, args, .. } = self;
        match on.into() {
            Exec::PgPool(pool) => pg_query_as(sql.pg(), args)?.fetch_all(pool).await,
            Exec::PgConn(conn) => pg_query_as(sql.pg(), args)?.fetch_all(conn).await,
            Exec::SqlitePool(pool) => sqlite_query_as(sql.sqlite(), args)?.fetch_all(pool).await,
            Exec::SqliteConn(conn) => sqlite_query_as(sql.sqlite(), args)?.fetch_all(conn).await,
        }
    }

    pub async fn fetch_optional<'e>(self, on: impl Into<Exec<'e>>) -> Result<Option<O>, sqlx::Error> {
        let QueryAs { sql, args, .. } = self;
        match on.into() {
            Exec::PgPool(pool) => pg_query_as(sql.pg(), args)?.fetch_optional(pool).await,
            Exec::PgConn(conn) => pg_query_as(sql.pg(), args)?.fetch_optional(conn).await,
            Exec::SqlitePool(pool) => sqlite_query_as(sql.sqlite(), args)?.fetch_optional(pool).await,
            Exec::SqliteConn(conn) => sqlite_query_as(sql.sqlite(), args)?.fetch_optional(conn).await,
        }
    }

    pub async fn fetch_one<'e>(self, on: impl Into<Exec<'e>>) -> Result<O, sqlx::Error> {
        self.fetch_optional(on).await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// The rows one at a time, as the database returns them.
    pub fn fetch<'e>(self, on: impl Into<Exec<'e>>) -> BoxStream<'e, Result<O, sqlx::Error>> {
        let QueryAs { sql, args, .. } = self;
        let on = on.into();
        let built = match &on {
            Exec::PgPool(_) | Exec::PgConn(_) => pg_query_as(sql.pg(), args).map(Either::Left),
            Exec::SqlitePool(_) | Exec::SqliteConn(_) => {
                sqlite_query_as(sql.sqlite(), args).map(Either::Right)
            }
        };
        match (built, on) {
            (Err(error), _) => futures_util::stream::once(async { Err(error) }).boxed(),
            (Ok(Either::Left(q)), Exec::PgPool(pool)) => q.fetch(pool).boxed(),
            (Ok(Either::Left(q)), Exec::PgConn(conn)) => q.fetch(conn).boxed(),
            (Ok(Either::Right(q)), Exec::SqlitePool(pool)) => q.fetch(pool).boxed(),
            (Ok(Either::Right(q)), Exec::SqliteConn(conn)) => q.fetch(conn).boxed(),
            (Ok(_), _) => futures_util::stream::once(async { Err(wrong_backend()) }).boxed(),
        }
    }
}

fn pg_query_as<O: Record>(
    sql: SqlStr,
    args: Vec<Arg>,
) -> Built<sqlx::query::QueryAs<'static, Postgres, O, PgArguments>> {
    Ok(sqlx::query_as_with(sql, pg_arguments(args).map_err(sqlx::Error::Encode)?))
}

fn sqlite_query_as<O: Record>(
    sql: SqlStr,
    args: Vec<Arg>,
) -> Built<sqlx::query::QueryAs<'static, Sqlite, O, SqliteArguments>> {
    Ok(sqlx::query_as_with(sql, sqlite_arguments(args).map_err(sqlx::Error::Encode)?))
}

/// Builds a statement of a size known only at run time (multi-row `VALUES`, `IN` lists). It
/// writes the text twice as values are pushed: with `$N` placeholders for PostgreSQL, and with
/// anonymous `?` for SQLite, whose parser looks every named parameter (`$N` is one) up in a
/// list, so that a statement with thousands of them costs quadratic time to prepare. Mirrors
/// the parts of `sqlx::QueryBuilder` the storage uses.
#[derive(Debug, Default)]
pub(crate) struct QueryBuilder {
    pg: String,
    sqlite: String,
    args: Vec<Arg>,
}

impl QueryBuilder {
    pub fn new(init: impl Into<String>) -> QueryBuilder {
        let pg = init.into();
        QueryBuilder { sqlite: pg.clone(), pg, args: Vec::new() }
    }

    /// Appends SQL text. A `&str`, not `impl Display`: a multi-row statement pushes a few
    /// separators per value, and the formatting machinery cost more than the statement's execution
    /// on SQLite (BENCHMARKS.md, the restructure).
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.pg.push_str(sql);
        self.sqlite.push_str(sql);
        self
    }

    pub fn push_bind(&mut self, value: impl Bind) -> &mut Self {
        self.args.push(value.into_arg());
        self.pg.push('$');
        self.pg.push_str(itoa::Buffer::new().format(self.args.len()));
        self.sqlite.push('?');
        self
    }

    /// Pushes that put `separator` between the items they write.
    pub fn separated(&mut self, separator: &'static str) -> Separated<'_> {
        Separated { builder: self, separator, push_separator: false }
    }

    /// `VALUES (..), (..)`: `push_tuple` writes the values of one row.
    pub fn push_values<I, F>(&mut self, tuples: I, mut push_tuple: F) -> &mut Self
    where
        I: IntoIterator,
        F: FnMut(Separated<'_>, I::Item),
    {
        self.push("VALUES ");
        let mut first = true;
        for tuple in tuples {
            self.push(if first { "(" } else { ", (" });
            first = false;
            push_tuple(self.separated(", "), tuple);
            self.push(")");
        }
        self
    }

    fn take(&mut self) -> (SqlText, Vec<Arg>) {
        let QueryBuilder { pg, sqlite, args } = std::mem::take(self);
        (SqlText::PerBackend { pg, sqlite }, args)
    }

    /// The statement built so far; the builder is left empty.
    pub fn build(&mut self) -> Query {
        let (sql, args) = self.take();
        Query { sql, args }
    }

    /// The statement built so far, its rows read as `O`; the builder is left empty.
    pub fn build_query_as<O: Record>(&mut self) -> QueryAs<O> {
        let (sql, args) = self.take();
        QueryAs { sql, args, rows: PhantomData }
    }
}

/// See [`QueryBuilder::separated`].
pub(crate) struct Separated<'b> {
    builder: &'b mut QueryBuilder,
    separator: &'static str,
    push_separator: bool,
}

impl Separated<'_> {
    fn separate(&mut self) {
        if self.push_separator {
            self.builder.push(self.separator);
        }
        self.push_separator = true;
    }

    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.separate();
        self.builder.push(sql);
        self
    }

    pub fn push_bind(&mut self, value: impl Bind) -> &mut Self {
        self.separate();
        self.builder.push_bind(value);
        self
    }

    pub fn push_unseparated(&mut self, sql: &str) -> &mut Self {
        self.builder.push(sql);
        self
    }

    pub fn push_bind_unseparated(&mut self, value: impl Bind) -> &mut Self {
        self.builder.push_bind(value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_numbered_in_the_order_they_are_pushed() {
        let mut q = QueryBuilder::new("INSERT INTO t (a, b) ");
        q.push_values([(1_i64, "x"), (2, "y")], |mut row, (a, b)| {
            row.push_bind(a).push_bind(b);
        });
        q.push(" ON CONFLICT DO NOTHING");
        assert_eq!(q.pg, "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING");
        assert_eq!(q.sqlite, "INSERT INTO t (a, b) VALUES (?, ?), (?, ?) ON CONFLICT DO NOTHING");
        assert_eq!(q.args.len(), 4);
    }

    #[test]
    fn a_separated_list_puts_the_separator_between_items_only() {
        let mut q = QueryBuilder::new("SELECT * FROM t WHERE id IN (");
        let mut list = q.separated(", ");
        for id in [7_i64, 8, 9] {
            list.push_bind(id);
        }
        list.push_unseparated(")");
        assert_eq!(q.pg, "SELECT * FROM t WHERE id IN ($1, $2, $3)");
        let built = q.build();
        assert_eq!(built.sql.sqlite().as_str(), "SELECT * FROM t WHERE id IN (?, ?, ?)");
        assert!(
            q.pg.is_empty() && q.sqlite.is_empty() && q.args.is_empty(),
            "build leaves the builder empty"
        );
    }

    #[test]
    fn none_binds_null_of_the_right_kind() {
        assert!(matches!(None::<i64>.into_arg(), Arg::I64(None)));
        assert!(matches!(None::<&str>.into_arg(), Arg::Text(None)));
        assert!(matches!(Some("a").into_arg(), Arg::Text(Some(ref s)) if s == "a"));
        assert!(matches!((&[1_u8, 2][..]).into_arg(), Arg::Bytes(Some(ref b)) if b == &[1, 2]));
    }
}
