//! Migrations that rebuild or re-constrain a table, applied to a database that already holds
//! rows: the rows survive, and what the rebuilt table enforced it still enforces.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use sqlx::Connection;

use crate::both_backends;
use crate::common::{Backend, TestDb};

both_backends!(
    migration_0021_keeps_the_vouchers_and_what_refers_to_them,
    migration_0028_salts_the_lotteries_made_before_it,
    migration_0030_keeps_the_settlements_made_before_it,
    migration_0032_gives_each_redemption_its_citizen
);

const VOUCHER: &str = "0190f5a2000070008000000000000001";

async fn migration_0021_keeps_the_vouchers_and_what_refers_to_them(backend: Backend) {
    let db = TestDb::new(backend).await;
    match backend {
        Backend::Sqlite => sqlite_0021(&db).await,
        Backend::Postgres => postgres_0021(&db).await,
    }
}

/// SQLite rebuilds `vouchers` (a CHECK cannot change in place), with foreign keys off while
/// the old table is dropped: `redemptions.voucher_id` must name the rebuilt table afterwards.
async fn sqlite_0021(db: &TestDb) {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url)
        .expect("url")
        .create_if_missing(true)
        .foreign_keys(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("connect");
    let migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.run_to(20, &mut conn).await.expect("up to 0020");
    // A redeemed voucher and its redemption; the redemption's other parents are not the point,
    // so the rows go in with foreign keys off.
    let rows = format!(
        "PRAGMA foreign_keys = OFF; \
         INSERT INTO vouchers (id, batch_id, season_id, citizen_id, slot, status, value_fen, claimed_at_us, expires_at_us) \
         VALUES (X'{VOUCHER}', X'02', X'03', X'04', 1, 'redeemed', 1000, 1, 2); \
         INSERT INTO redemptions (id, voucher_id, merchant_id, terminal_id, season_id, batch_id, order_ref, order_slot, \
         order_amount_fen, discount_fen, funders, redeemed_at_us) \
         VALUES (X'05', X'{VOUCHER}', X'06', X'07', X'03', X'02', 'A-1', 'any', 5000, 1000, '[]', 1); \
         PRAGMA foreign_keys = ON;"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(rows)).execute(&mut conn).await.expect("rows");
    migrator.run(&mut conn).await.expect("0021");

    let kept: (String, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT status, value_fen, slot FROM vouchers WHERE id = X'{VOUCHER}'"
    )))
    .fetch_one(&mut conn)
    .await
    .expect("the voucher is kept");
    assert_eq!(kept, ("redeemed".to_owned(), 1000, 1));
    let foreign_keys: i64 =
        sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&mut conn).await.expect("pragma");
    assert_eq!(foreign_keys, 1, "the migration switches foreign keys back on");
    let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DELETE FROM vouchers WHERE id = X'{VOUCHER}'")))
        .execute(&mut conn)
        .await
        .expect_err("the redemption still refers to the voucher, in the rebuilt table");
    assert!(refused.to_string().contains("FOREIGN KEY"), "{refused}");
    check_statuses(&mut conn, &format!("X'{VOUCHER}'")).await;
    let second_live = "INSERT INTO vouchers (id, batch_id, season_id, citizen_id, slot, status, value_fen, \
                       claimed_at_us, expires_at_us) VALUES (X'08', X'02', X'03', X'04', 1, 'active', 1000, 1, 2)";
    let refused =
        sqlx::raw_sql(second_live).execute(&mut conn).await.expect_err("the live-slot index is back");
    assert!(refused.to_string().contains("UNIQUE"), "{refused}");
}

/// PostgreSQL swaps the CHECK on `vouchers.status`.
async fn postgres_0021(db: &TestDb) {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let migrator = sqlx::migrate!("./migrations/postgres");
    migrator.run_to(20, &mut conn).await.expect("up to 0020");
    let id = uuid::Uuid::parse_str(VOUCHER).expect("uuid");
    sqlx::query(
        "INSERT INTO vouchers (id, batch_id, season_id, citizen_id, slot, status, value_fen, claimed_at_us, expires_at_us) \
         VALUES ($1, $2, $2, $2, 1, 'redeemed', 1000, 1, 2)",
    )
    .bind(id)
    .bind(uuid::Uuid::now_v7())
    .execute(&mut conn)
    .await
    .expect("a voucher");
    migrator.run(&mut conn).await.expect("0021");
    let kept: (String, i64) = sqlx::query_as("SELECT status, value_fen FROM vouchers WHERE id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .expect("the voucher is kept");
    assert_eq!(kept, ("redeemed".to_owned(), 1000));
    check_statuses(&mut conn, &format!("'{id}'::uuid")).await;
}

/// Lottery batches made before 0028 get a salt each (32 random bytes, a different one each) and
/// a commitment time; those drawn already are marked as drawn by algorithm 1; a rush batch gets
/// none of it.
async fn migration_0028_salts_the_lotteries_made_before_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let id = |n: u8| match backend {
        Backend::Sqlite => format!("X'{n:032x}'"),
        Backend::Postgres => format!("'{}'::uuid", uuid::Uuid::from_u128(u128::from(n))),
    };
    let (off, salt_len) = match backend {
        Backend::Sqlite => ("PRAGMA foreign_keys = OFF;", "length(lottery_salt)"),
        Backend::Postgres => ("SET session_replication_role = replica;", "octet_length(lottery_salt)"),
    };
    // (batch, its commitment, drawn at): a rush, two lotteries waiting for their draw, one drawn.
    let batches =
        [(1u8, None, None), (2, Some("'ab'"), None), (3, Some("'cd'"), None), (4, Some("'ef'"), Some(5))];
    let rows: Vec<String> = batches
        .iter()
        .map(|(n, sha, drawn)| {
            format!(
                "INSERT INTO batches (id, season_id, name, issuer, kind, face_value_fen, min_spend_fen, max_value_fen, \
                 stock, per_citizen_limit, valid_hours, claim_opens_at_us, claim_closes_at_us, categories, funding, \
                 releases, created_at_us, lottery_seed_sha256, drawn_at_us) VALUES ({}, {}, 'b', '370000', \
                 'threshold', 1000, 0, 1000, 1, 1, 24, 1, 2, 'bookstore', '[]', '[]', 1, {}, {});",
                id(*n),
                id(99),
                sha.unwrap_or("NULL"),
                drawn.map_or("NULL".to_owned(), |d: i64| d.to_string())
            )
        })
        .collect();
    let sql = format!("{off} {}", rows.concat());
    let (url, rows) = (db.url.clone(), sqlx::AssertSqlSafe(sql));
    let read = format!(
        "SELECT {salt_len}, lottery_committed_at_us, lottery_algorithm, lottery_salt FROM batches ORDER BY id"
    );
    let read = sqlx::AssertSqlSafe(read);
    type Row = (Option<i64>, Option<i64>, Option<i32>, Option<Vec<u8>>);
    type PgRow = (Option<i32>, Option<i64>, Option<i32>, Option<Vec<u8>>);
    let found: Vec<Row> = match backend {
        Backend::Sqlite => {
            let options =
                sqlx::sqlite::SqliteConnectOptions::from_str(&url).expect("url").create_if_missing(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("connect");
            let migrator = sqlx::migrate!("./migrations/sqlite");
            migrator.run_to(27, &mut conn).await.expect("up to 0027");
            sqlx::raw_sql(rows).execute(&mut conn).await.expect("rows");
            migrator.run(&mut conn).await.expect("0028");
            sqlx::query_as(read).fetch_all(&mut conn).await.expect("read")
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            let migrator = sqlx::migrate!("./migrations/postgres");
            migrator.run_to(27, &mut conn).await.expect("up to 0027");
            sqlx::raw_sql(rows).execute(&mut conn).await.expect("rows");
            migrator.run(&mut conn).await.expect("0028");
            let found: Vec<PgRow> = sqlx::query_as(read).fetch_all(&mut conn).await.expect("read");
            found
                .into_iter()
                .map(|(len, at, algorithm, salt)| (len.map(i64::from), at, algorithm, salt))
                .collect()
        }
    };
    let shape: Vec<(Option<i64>, bool, Option<i32>)> = found
        .iter()
        .map(|(len, at, algorithm, _)| (*len, at.is_some_and(|at| at > 1_700_000_000_000_000), *algorithm))
        .collect();
    assert_eq!(
        shape,
        [
            (None, false, None),
            (Some(32), true, Some(2)),
            (Some(32), true, Some(2)),
            (Some(32), true, Some(1))
        ]
    );
    assert_ne!(found[1].3, found[2].3, "each batch its own salt");
}

/// 'forfeited' is a voucher status now; a made-up one still is not.
async fn check_statuses<C>(conn: &mut C, id_sql: &str)
where
    for<'c> &'c mut C: sqlx::Executor<'c>,
{
    let set = |status: &str| format!("UPDATE vouchers SET status = '{status}' WHERE id = {id_sql}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(set("forfeited")))
        .execute(&mut *conn)
        .await
        .expect("forfeited is allowed");
    match sqlx::raw_sql(sqlx::AssertSqlSafe(set("lost"))).execute(&mut *conn).await {
        Ok(_) => panic!("a made-up status was stored"),
        Err(refused) => assert!(refused.to_string().to_lowercase().contains("check"), "{refused}"),
    }
}

/// The two migration folders hold the same migrations: the same version under the same name.
#[test]
fn both_migration_folders_hold_the_same_versions_and_names() {
    let postgres = migration_file_names("postgres");
    let sqlite = migration_file_names("sqlite");
    assert!(!postgres.is_empty(), "no migrations found");
    assert_eq!(postgres, sqlite, "migrations/postgres and migrations/sqlite differ");
    for name in &postgres {
        let (version, rest) = name.split_once('_').unwrap_or_else(|| panic!("{name}: no version"));
        assert!(version.len() == 4 && version.bytes().all(|b| b.is_ascii_digit()), "{name}: version");
        assert!(rest.ends_with(".sql") && !rest.ends_with(".down.sql"), "{name}: not an up migration");
    }
}

fn migration_file_names(backend: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").file_name().into_string().expect("a UTF-8 name"))
        .collect();
    names.sort();
    names
}

/// Table name to its column names.
type Schema = BTreeMap<String, BTreeSet<String>>;

/// Known differences between the migrated schemas, each `(table, column)` present on one
/// backend only, with the reason. Empty: the two schemas have the same tables and columns.
const ONLY_ON_POSTGRES: &[(&str, &str)] = &[];
const ONLY_ON_SQLITE: &[(&str, &str)] = &[];

/// Migrated, both backends have the same tables with the same columns (names only: types,
/// constraints and indexes are each backend's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_migrated_schemas_have_the_same_tables_and_columns() {
    let postgres_db = TestDb::new(Backend::Postgres).await;
    let sqlite_db = TestDb::new(Backend::Sqlite).await;
    postgres_db.store().await;
    sqlite_db.store().await;
    let postgres = postgres_schema(&postgres_db).await;
    let sqlite = sqlite_schema(&sqlite_db).await;
    for schema in [&postgres, &sqlite] {
        let postings = schema.get("postings").expect("the ledger's postings table");
        assert!(postings.contains("amount_fen") && schema.len() > 20, "{schema:?}");
    }

    let only_on_postgres = difference(&postgres, &sqlite);
    let only_on_sqlite = difference(&sqlite, &postgres);
    assert_eq!(only_on_postgres, allowed(ONLY_ON_POSTGRES), "tables or columns only PostgreSQL has");
    assert_eq!(only_on_sqlite, allowed(ONLY_ON_SQLITE), "tables or columns only SQLite has");
}

async fn postgres_schema(db: &TestDb) -> Schema {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("columns");
    schema(rows)
}

async fn sqlite_schema(db: &TestDb) -> Schema {
    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.expect("connect");
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, p.name FROM sqlite_master AS m, pragma_table_info(m.name) AS p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND m.name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("columns");
    schema(rows)
}

fn schema(rows: Vec<(String, String)>) -> Schema {
    let mut schema = Schema::new();
    for (table, column) in rows {
        schema.entry(table).or_default().insert(column);
    }
    schema
}

/// `(table, column)` pairs of `a` that `b` lacks; a missing table shows as all its columns.
fn difference(a: &Schema, b: &Schema) -> BTreeSet<(String, String)> {
    a.iter()
        .flat_map(|(table, columns)| columns.iter().map(move |column| (table.clone(), column.clone())))
        .filter(|(table, column)| !b.get(table).is_some_and(|columns| columns.contains(column)))
        .collect()
}

fn allowed(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs.iter().map(|(table, column)| ((*table).to_owned(), (*column).to_owned())).collect()
}

/// 0030 (settlement holds) rebuilds `settlements` on SQLite to let a settlement hold every line
/// or carry only released ones (totals may be 0): a settlement and its line made before it
/// survive, paid normally, nothing held; `settlement_lines` still refers to the rebuilt table;
/// a negative total is still refused.
async fn migration_0030_keeps_the_settlements_made_before_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let id = |n: u8| match backend {
        Backend::Sqlite => format!("X'{n:032x}'"),
        Backend::Postgres => format!("'{}'::uuid", uuid::Uuid::from_u128(u128::from(n))),
    };
    let off = match backend {
        Backend::Sqlite => "PRAGMA foreign_keys = OFF;",
        Backend::Postgres => "SET session_replication_role = replica;",
    };
    let rows = format!(
        "{off} INSERT INTO settlements (id, season_id, cut_off_us, total_fen, line_count, created_at_us, completed_at_us, \
         paid_at_us, payout_ref) VALUES ({s}, {season}, 10, 1500, 1, 11, 12, 13, 'BANK-1'); \
         INSERT INTO settlement_lines (settlement_id, merchant_id, redemption_count, amount_fen, funders, bank, account_no, \
         account_name) VALUES ({s}, {m}, 2, 1500, '[]', 'b', '62220000', 'n');",
        s = id(1),
        season = id(2),
        m = id(3)
    );
    let rows = sqlx::AssertSqlSafe(rows);
    let read = "SELECT s.total_fen, s.line_count, s.paid_at_us, s.payout_ref, s.held_count, s.released_fen, l.hold_status \
                FROM settlements s JOIN settlement_lines l ON l.settlement_id = s.id";
    let zero = format!(
        "INSERT INTO settlements (id, season_id, cut_off_us, total_fen, line_count, created_at_us) VALUES ({}, {}, 1, 0, 0, 1)",
        id(4),
        id(2)
    );
    let negative = format!(
        "INSERT INTO settlements (id, season_id, cut_off_us, total_fen, line_count, created_at_us) VALUES ({}, {}, 1, -1, 0, 1)",
        id(5),
        id(2)
    );
    type Row = (i64, i64, Option<i64>, Option<String>, i64, i64, String);
    let (found, zero_ok, negative_ok): (Vec<Row>, bool, bool) = match backend {
        Backend::Sqlite => {
            let options =
                sqlx::sqlite::SqliteConnectOptions::from_str(&db.url).expect("url").create_if_missing(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("connect");
            let migrator = sqlx::migrate!("./migrations/sqlite");
            migrator.run_to(29, &mut conn).await.expect("up to 0029");
            sqlx::raw_sql(rows).execute(&mut conn).await.expect("rows");
            migrator.run(&mut conn).await.expect("0030");
            let found = sqlx::query_as(read).fetch_all(&mut conn).await.expect("read");
            let table: (String,) = sqlx::query_as(
                "SELECT \"table\" FROM pragma_foreign_key_list('settlement_lines') WHERE \"from\" = 'settlement_id'",
            )
            .fetch_one(&mut conn)
            .await
            .expect("the line's reference");
            assert_eq!(table.0, "settlements", "settlement_lines refers to the rebuilt table");
            sqlx::raw_sql("PRAGMA foreign_keys = OFF").execute(&mut conn).await.expect("off");
            let zero_ok = sqlx::raw_sql(sqlx::AssertSqlSafe(zero)).execute(&mut conn).await.is_ok();
            let negative_ok = sqlx::raw_sql(sqlx::AssertSqlSafe(negative)).execute(&mut conn).await.is_ok();
            (found, zero_ok, negative_ok)
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
            let migrator = sqlx::migrate!("./migrations/postgres");
            migrator.run_to(29, &mut conn).await.expect("up to 0029");
            sqlx::raw_sql(rows).execute(&mut conn).await.expect("rows");
            migrator.run(&mut conn).await.expect("0030");
            type PgRow = (i64, i32, Option<i64>, Option<String>, i64, i64, String);
            let found: Vec<PgRow> = sqlx::query_as(read).fetch_all(&mut conn).await.expect("read");
            let found =
                found.into_iter().map(|(t, n, p, r, h, f, st)| (t, i64::from(n), p, r, h, f, st)).collect();
            sqlx::raw_sql("SET session_replication_role = replica").execute(&mut conn).await.expect("off");
            let zero_ok = sqlx::raw_sql(sqlx::AssertSqlSafe(zero)).execute(&mut conn).await.is_ok();
            let negative_ok = sqlx::raw_sql(sqlx::AssertSqlSafe(negative)).execute(&mut conn).await.is_ok();
            (found, zero_ok, negative_ok)
        }
    };
    assert_eq!(found, [(1500, 1, Some(13), Some("BANK-1".to_owned()), 0, 0, "none".to_owned())]);
    assert!(zero_ok, "a settlement of held or released lines only may total 0");
    assert!(!negative_ok, "a negative total is still refused");
}

/// 0032 copies each redemption's citizen and claim time from its voucher, and the citizen's home
/// digits from their masked ID number, onto the redemption (what cash-out scoring reads); a
/// redemption without a citizen is refused afterwards (NOT NULL on PostgreSQL, a trigger on
/// SQLite, where a column added to a table with rows cannot be NOT NULL).
async fn migration_0032_gives_each_redemption_its_citizen(backend: Backend) {
    let db = TestDb::new(backend).await;
    let id = |n: u8| match backend {
        Backend::Sqlite => format!("X'{n:032x}'"),
        Backend::Postgres => format!("'{}'::uuid", uuid::Uuid::from_u128(u128::from(n))),
    };
    let off = match backend {
        Backend::Sqlite => "PRAGMA foreign_keys = OFF;",
        Backend::Postgres => "SET session_replication_role = replica;",
    };
    let redemption = |n: u8, voucher: u8| {
        format!(
            "INSERT INTO redemptions (id, voucher_id, merchant_id, terminal_id, season_id, batch_id, order_ref, order_slot, \
             order_amount_fen, discount_fen, funders, redeemed_at_us) \
             VALUES ({}, {}, {m}, {m}, {m}, {m}, 'A-{n}', 'any', 5000, 1000, '[]', 9);",
            id(n),
            id(voucher),
            m = id(50)
        )
    };
    let rows = format!(
        "{off} INSERT INTO citizens (id, id_hash, id_masked, name_masked, phone_hash, phone_masked, created_at_us) \
         VALUES ({c}, {c_hash}, '3702**********123X', '张*', {c_hash}, '138****0000', 1); \
         INSERT INTO vouchers (id, batch_id, season_id, citizen_id, slot, status, value_fen, claimed_at_us, expires_at_us) \
         VALUES ({v1}, {m}, {m}, {c}, 1, 'redeemed', 1000, 7, 100), ({v2}, {m}, {m}, {gone}, 1, 'redeemed', 1000, 8, 100); \
         {r1} {r2}",
        c = id(1),
        c_hash = match backend {
            Backend::Sqlite => "X'01'".to_owned(),
            Backend::Postgres => "'\\x01'::bytea".to_owned(),
        },
        v1 = id(11),
        v2 = id(12),
        gone = id(2),
        m = id(50),
        r1 = redemption(21, 11),
        r2 = redemption(22, 12),
    );
    let read = "SELECT order_ref, claimed_at_us, citizen_home_digits FROM redemptions ORDER BY order_ref";
    let citizens = format!("SELECT count(*) FROM redemptions WHERE citizen_id IN ({}, {})", id(1), id(2));
    let (rows, citizens) = (sqlx::AssertSqlSafe(rows), sqlx::AssertSqlSafe(citizens));
    let without = sqlx::AssertSqlSafe(format!("{off} {}", redemption(23, 13)));
    type Row = (String, Option<i64>, Option<String>);
    let (found, with_citizen, refused): (Vec<Row>, i64, Result<_, sqlx::Error>) = match backend {
        Backend::Sqlite => {
            let options =
                sqlx::sqlite::SqliteConnectOptions::from_str(&db.url).expect("url").create_if_missing(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("connect");
            let migrator = sqlx::migrate!("./migrations/sqlite");
            migrator.run_to(31, &mut conn).await.expect("up to 0031");
            sqlx::raw_sql(rows).execute(&mut conn).await.expect("rows");
            migrator.run(&mut conn).await.expect("0032");
            let found = sqlx::query_as(read).fetch_all(&mut conn).await.expect("read");
            let with_citizen = sqlx::query_scalar(citizens).fetch_one(&mut conn).await.expect("count");
            (found, with_citizen, sqlx::raw_sql(without).execute(&mut conn).await.map(drop))
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
            let migrator = sqlx::migrate!("./migrations/postgres");
            migrator.run_to(31, &mut conn).await.expect("up to 0031");
            sqlx::raw_sql(rows).execute(&mut conn).await.expect("rows");
            migrator.run(&mut conn).await.expect("0032");
            let found = sqlx::query_as(read).fetch_all(&mut conn).await.expect("read");
            let with_citizen = sqlx::query_scalar(citizens).fetch_one(&mut conn).await.expect("count");
            (found, with_citizen, sqlx::raw_sql(without).execute(&mut conn).await.map(drop))
        }
    };
    assert_eq!(
        found,
        [("A-21".to_owned(), Some(7), Some("3702".to_owned())), ("A-22".to_owned(), Some(8), None)],
        "claim times from the vouchers; home digits where the citizen's row is there"
    );
    assert_eq!(with_citizen, 2, "each redemption names its voucher's citizen");
    let refused = refused.expect_err("a redemption without its citizen is refused");
    assert!(refused.to_string().contains("citizen_id"), "{refused}");
}
