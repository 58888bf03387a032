//! Direct calls into SQLite for the store's hot paths: the audit writer's transactions and
//! the reads every intent makes (its agent's token, its credential's secret).
//!
//! sqlx runs each SQLite statement on a thread of the connection's own and hands it there
//! and back over channels: two thread wake-ups per statement, which under load cost more CPU
//! than the statements themselves (docs/performance.md). Here the audit writer is one
//! thread that owns its connection and runs a whole batch with plain calls, and the hot
//! reads run in place on a small set of read connections. Everything else (migrations, the
//! web UI's queries, approvals) still goes through sqlx's pool; both open the same file
//! through the same SQLite library, so they lock and see each other's commits as any two
//! connections do.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{CachedStatement, Connection, OpenFlags, ToSql};
use sqlx::error::{DatabaseError, ErrorKind};

/// Read connections kept open between reads; more are opened while this many are busy and
/// closed afterwards.
const IDLE_READERS: usize = 4;

/// The name sqlx gives the shared-cache database of a `sqlite::memory:` URL: connections
/// opened on it see the same in-memory database (tests only).
const SQLX_IN_MEMORY: &str = "file:sqlx-in-memory-";

/// Opens a connection on the database sqlx opened as `filename`, with the store's settings:
/// `synchronous=FULL` (a commit is on disk before it returns), foreign keys on, and a busy
/// timeout of `busy` for another process's write lock.
pub(crate) fn open(filename: &Path, busy: Duration) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if filename.to_string_lossy().starts_with(SQLX_IN_MEMORY) {
        flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
    } else {
        flags |= OpenFlags::SQLITE_OPEN_PRIVATE_CACHE;
    }
    let conn = Connection::open_with_flags(filename, flags)?;
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// `sql` (with parameters `$1`, `$2`, …) prepared once per connection, with `args` bound.
fn prepared<'c>(conn: &'c Connection, sql: &str, args: &[&dyn ToSql]) -> rusqlite::Result<CachedStatement<'c>> {
    let mut statement = conn.prepare_cached(sql)?;
    if statement.parameter_count() != args.len() {
        return Err(rusqlite::Error::InvalidParameterCount(
            args.len(),
            statement.parameter_count(),
        ));
    }
    for (i, arg) in args.iter().enumerate() {
        let number = i + 1;
        // SQLite numbers named parameters in the order they first appear, so `$N` is
        // usually parameter N; looking a name up costs an allocation, so only when not.
        let index = if statement
            .parameter_name(number)
            .is_some_and(|name| name.strip_prefix('$').and_then(|n| n.parse().ok()) == Some(number))
        {
            number
        } else {
            let name = format!("${number}");
            statement
                .parameter_index(&name)?
                .ok_or(rusqlite::Error::InvalidParameterName(name))?
        };
        statement.raw_bind_parameter(index, arg)?;
    }
    Ok(statement)
}

/// Runs `sql` with `args`; returns how many rows it changed.
pub(crate) fn execute(conn: &Connection, sql: &str, args: &[&dyn ToSql]) -> rusqlite::Result<u64> {
    let changed = prepared(conn, sql, args)?.raw_execute()?;
    Ok(u64::try_from(changed).unwrap_or(u64::MAX))
}

/// The first row of `sql` with `args`, read by `row`, if there is one.
pub(crate) fn query_optional<T>(
    conn: &Connection,
    sql: &str,
    args: &[&dyn ToSql],
    row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let mut statement = prepared(conn, sql, args)?;
    let mut rows = statement.raw_query();
    rows.next()?.map(row).transpose()
}

/// Read connections for the hot-path reads, used in place (a point lookup by a unique
/// index takes microseconds; in WAL mode a reader never waits for the writer).
#[derive(Debug)]
pub(crate) struct Readers {
    filename: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(crate) fn new(filename: PathBuf) -> Self {
        Self {
            filename,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on a read connection. A reader never waits on a lock: when SQLite
    /// answers "busy" (another connection is recovering the write-ahead log, say), the
    /// error says so ([`is_busy`]) and the caller reads through the pool instead, which
    /// waits.
    pub(crate) fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open(&self.filename, Duration::ZERO)?,
        };
        let out = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        out
    }
}

/// Whether `e` is SQLite saying a lock is held (`SQLITE_BUSY` or `SQLITE_LOCKED`).
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// A SQLite error from a direct call as the store's other code sees driver errors: a
/// [`sqlx::Error::Database`] that tells constraint violations apart.
pub(crate) fn to_sqlx(e: rusqlite::Error) -> sqlx::Error {
    sqlx::Error::Database(Box::new(SqliteError {
        message: e.to_string(),
        extended_code: e.sqlite_error().map(|f| f.extended_code),
    }))
}

/// A SQLite error as a [`DatabaseError`].
#[derive(Debug)]
struct SqliteError {
    message: String,
    /// SQLite's extended result code, when SQLite gave one.
    extended_code: Option<std::ffi::c_int>,
}

impl std::fmt::Display for SqliteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SqliteError {}

impl DatabaseError for SqliteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.extended_code.map(|c| std::borrow::Cow::Owned(c.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        match self.extended_code {
            Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                ErrorKind::UniqueViolation
            }
            Some(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => ErrorKind::ForeignKeyViolation,
            Some(rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL) => ErrorKind::NotNullViolation,
            Some(rusqlite::ffi::SQLITE_CONSTRAINT_CHECK) => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_violations_keep_their_kind() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE CHECK (name <> ''));")
            .unwrap();
        execute(&conn, "INSERT INTO t (id, name) VALUES ($1, $2)", &[&1, &"a"]).unwrap();
        let kind = |sql: &str, args: &[&dyn ToSql]| match to_sqlx(execute(&conn, sql, args).unwrap_err()) {
            sqlx::Error::Database(db) => db.kind(),
            other => panic!("not a database error: {other}"),
        };
        let insert = "INSERT INTO t (id, name) VALUES ($1, $2)";
        assert!(matches!(kind(insert, &[&2, &"a"]), ErrorKind::UniqueViolation));
        assert!(matches!(kind(insert, &[&1, &"b"]), ErrorKind::UniqueViolation));
        assert!(matches!(kind(insert, &[&3, &""]), ErrorKind::CheckViolation));
        assert!(matches!(
            kind(insert, &[&3, &Option::<String>::None]),
            ErrorKind::NotNullViolation
        ));
    }

    #[test]
    fn parameters_bind_by_number_whatever_their_order_and_count_is_checked() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT, b TEXT);").unwrap();
        execute(&conn, "INSERT INTO t (b, a) VALUES ($2, $1)", &[&"first", &"second"]).unwrap();
        let row = query_optional(&conn, "SELECT a, b FROM t WHERE a = $1", &[&"first"], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .unwrap();
        assert_eq!(row, Some(("first".to_owned(), "second".to_owned())));
        assert!(
            query_optional(&conn, "SELECT a FROM t WHERE a = $1", &[&"none"], |r| r
                .get::<_, String>(0))
            .unwrap()
            .is_none()
        );
        assert!(matches!(
            execute(&conn, "INSERT INTO t (a) VALUES ($1)", &[&"x", &"y"]),
            Err(rusqlite::Error::InvalidParameterCount(2, 1))
        ));
    }
}
