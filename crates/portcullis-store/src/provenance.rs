//! What untrusted actions returned to each agent session, as SHA-256s of normalized values,
//! so that a later intent in the same session can be told apart when its input carries one.
//!
//! The store never holds the values themselves, only their hashes (the engine normalizes
//! and hashes them), which action returned them and when. Everything is bounded: rows
//! expire, a session holds at most `per_session` of them and the table at most `total`;
//! the oldest make room. Rows belong to one agent's session, and every read and write
//! names the agent, so no agent can read or extend another's session. All of it lives in
//! the store, so every gateway instance sharing it sees the same sessions.

use sqlx::AssertSqlSafe;

use crate::{Pool, Store, StoreError};

/// How much provenance the store keeps, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvenanceLimits {
    /// Seconds a recorded value keeps marking inputs.
    pub ttl_secs: i64,
    /// The most values one session keeps; the oldest make room.
    pub per_session: i64,
    /// The most values kept over all sessions; the oldest make room.
    pub total: i64,
}

/// Values one untrusted result gave an agent in a session.
#[derive(Debug, Clone, Copy)]
pub struct NewValues<'a> {
    /// The agent.
    pub agent: &'a str,
    /// The agent's session.
    pub session: &'a str,
    /// The action whose result held them.
    pub source: &'a str,
    /// The intent that read them.
    pub intent_id: &'a str,
    /// When the result was returned, Unix seconds.
    pub read_unix: i64,
    /// SHA-256 (hex) of each normalized value.
    pub hashes: &'a [String],
}

/// A recorded value found again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenValue {
    /// SHA-256 (hex) of the normalized value.
    pub value_sha256: String,
    /// The action whose result held it.
    pub source: String,
    /// When it was first returned in this session, Unix seconds.
    pub read_unix: i64,
}

/// Rows per `INSERT` (eight parameters each).
const INSERT_CHUNK: usize = 200;
/// Hashes per lookup query.
const LOOKUP_CHUNK: usize = 500;

const RECORD_CONTEXT: &str = "recording untrusted values";
const READ_CONTEXT: &str = "reading untrusted values";

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO provenance_values \
         (agent, session, scope, value_sha256, source, intent_id, read_unix, expires_unix) VALUES ",
    );
    for r in 0..rows {
        let b = r * 8;
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for i in 1..=8 {
            if i > 1 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", b + i));
        }
        sql.push(')');
    }
    // A value read again keeps its first read time and lives on from now.
    sql.push_str(
        " ON CONFLICT (agent, session, value_sha256, source) \
         DO UPDATE SET expires_unix = excluded.expires_unix",
    );
    sql
}

const DROP_EXPIRED: &str = "DELETE FROM provenance_values WHERE expires_unix <= $1";
const TRIM_SESSION: &str = "DELETE FROM provenance_values WHERE scope = $1 AND id <= \
     (SELECT id FROM provenance_values WHERE scope = $2 ORDER BY id DESC LIMIT 1 OFFSET $3)";

/// One key for an agent's session, unambiguous whatever the two strings hold.
fn scope(agent: &str, session: &str) -> String {
    format!("{}:{agent}{session}", agent.len())
}
const TRIM_TOTAL: &str = "DELETE FROM provenance_values WHERE id <= (SELECT MAX(id) FROM provenance_values) - $1";

/// Runs the statements of one recording on `$conn` (a connection or transaction).
macro_rules! record_on {
    ($conn:expr, $v:expr, $hashes:expr, $limits:expr) => {{
        let expires = $v.read_unix.saturating_add($limits.ttl_secs);
        let scope = scope($v.agent, $v.session);
        for chunk in $hashes.chunks(INSERT_CHUNK) {
            let sql = insert_sql(chunk.len());
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for hash in chunk {
                query = query
                    .bind($v.agent.to_owned())
                    .bind($v.session.to_owned())
                    .bind(scope.clone())
                    .bind(hash.clone())
                    .bind($v.source.to_owned())
                    .bind($v.intent_id.to_owned())
                    .bind($v.read_unix)
                    .bind(expires);
            }
            query.execute(&mut *$conn).await?;
        }
        sqlx::query(DROP_EXPIRED)
            .bind($v.read_unix)
            .execute(&mut *$conn)
            .await?;
        sqlx::query(TRIM_SESSION)
            .bind(scope.clone())
            .bind(scope.clone())
            .bind($limits.per_session.max(1))
            .execute(&mut *$conn)
            .await?;
        sqlx::query(TRIM_TOTAL)
            .bind($limits.total.max(1))
            .execute(&mut *$conn)
            .await?;
        Ok::<u64, sqlx::Error>(0)
    }};
}

/// [`record_on!`] for the SQLite writer's connection, called directly.
fn record_direct(
    conn: &rusqlite::Connection,
    v: &NewValues<'_>,
    hashes: &[String],
    limits: ProvenanceLimits,
) -> rusqlite::Result<u64> {
    use rusqlite::ToSql;
    let expires = v.read_unix.saturating_add(limits.ttl_secs);
    let scope = scope(v.agent, v.session);
    for chunk in hashes.chunks(INSERT_CHUNK) {
        let sql = insert_sql(chunk.len());
        let mut args: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 8);
        for hash in chunk {
            args.extend([
                &v.agent as &dyn ToSql,
                &v.session,
                &scope,
                hash,
                &v.source,
                &v.intent_id,
                &v.read_unix,
                &expires,
            ]);
        }
        crate::direct::execute(conn, &sql, &args)?;
    }
    crate::direct::execute(conn, DROP_EXPIRED, &[&v.read_unix])?;
    crate::direct::execute(conn, TRIM_SESSION, &[&scope, &scope, &limits.per_session.max(1)])?;
    crate::direct::execute(conn, TRIM_TOTAL, &[&limits.total.max(1)])?;
    Ok(0)
}

impl Store {
    /// Records the values an untrusted result gave an agent in a session, then drops
    /// expired values and makes room within the limits (oldest first). Duplicates are
    /// recorded once; a value already recorded from the same action keeps its first read
    /// time and gets a new expiry.
    ///
    /// # Errors
    /// When the database can't be written; then nothing of it was recorded.
    pub async fn record_provenance(&self, values: &NewValues<'_>, limits: ProvenanceLimits) -> Result<(), StoreError> {
        let mut hashes: Vec<String> = values.hashes.to_vec();
        hashes.sort_unstable();
        hashes.dedup();
        // Only the newest `per_session` can stay anyway.
        let keep = usize::try_from(limits.per_session.max(1)).unwrap_or(usize::MAX);
        if hashes.len() > keep {
            hashes.truncate(keep);
        }
        match &self.pool {
            Pool::Sqlite(_) => {
                let agent = values.agent.to_owned();
                let session = values.session.to_owned();
                let source = values.source.to_owned();
                let intent_id = values.intent_id.to_owned();
                let read_unix = values.read_unix;
                self.writer
                    .write(Box::new(move |conn| {
                        let v = NewValues {
                            agent: &agent,
                            session: &session,
                            source: &source,
                            intent_id: &intent_id,
                            read_unix,
                            hashes: &[],
                        };
                        record_direct(conn, &v, &hashes, limits).map_err(crate::direct::to_sqlx)
                    }))
                    .await?
                    .map_err(StoreError::db(RECORD_CONTEXT))?;
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(StoreError::db(RECORD_CONTEXT))?;
                let run = async { record_on!(tx, values, hashes, limits) };
                run.await.map_err(StoreError::db(RECORD_CONTEXT))?;
                tx.commit().await.map_err(StoreError::db(RECORD_CONTEXT))?;
            }
        }
        Ok(())
    }

    /// Which of `hashes` an untrusted result gave `agent` in `session` and are still live at
    /// `now_unix`: one row per value and source.
    ///
    /// # Errors
    /// When the database can't be read.
    pub async fn provenance(
        &self,
        agent: &str,
        session: &str,
        hashes: &[String],
        now_unix: i64,
    ) -> Result<Vec<SeenValue>, StoreError> {
        let rows: Vec<(String, String, i64)> = match &self.pool {
            // One lookup of the whole unique key per hash, whatever the planner believes
            // about the table: given `value_sha256 = ANY(…)`, or a join it may flatten, a
            // planner whose statistics are stale (a table just filled) scans the session's
            // every row. `OFFSET 0` keeps the subquery a per-hash index lookup.
            Pool::Postgres(pool) => sqlx::query_as(
                "SELECT p.value_sha256, p.source, p.read_unix FROM unnest($3::text[]) AS h(v) \
                 CROSS JOIN LATERAL (SELECT value_sha256, source, read_unix FROM provenance_values \
                 WHERE agent = $1 AND session = $2 AND value_sha256 = h.v AND expires_unix > $4 OFFSET 0) p",
            )
            .bind(agent)
            .bind(session)
            .bind(hashes)
            .bind(now_unix)
            .fetch_all(pool)
            .await
            .map_err(StoreError::db(READ_CONTEXT))?,
            // SQLite looks each value of an `IN` list up in the index.
            Pool::Sqlite(pool) => {
                let mut rows = Vec::new();
                for chunk in hashes.chunks(LOOKUP_CHUNK) {
                    let mut sql = String::from(
                        "SELECT value_sha256, source, read_unix FROM provenance_values \
                         WHERE agent = $1 AND session = $2 AND expires_unix > $3 AND value_sha256 IN (",
                    );
                    for i in 0..chunk.len() {
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        sql.push_str(&format!("${}", i + 4));
                    }
                    sql.push(')');
                    let mut query = sqlx::query_as(AssertSqlSafe(sql))
                        .bind(agent)
                        .bind(session)
                        .bind(now_unix);
                    for h in chunk {
                        query = query.bind(h.as_str());
                    }
                    rows.extend(query.fetch_all(pool).await.map_err(StoreError::db(READ_CONTEXT))?);
                }
                rows
            }
        };
        let seen = rows
            .into_iter()
            .map(|(value_sha256, source, read_unix)| SeenValue {
                value_sha256,
                source,
                read_unix,
            })
            .collect();
        Ok(seen)
    }

    /// How many live values `agent`'s `session` holds, given `Some((agent, session))`, or
    /// every session of every agent, given `None`.
    ///
    /// # Errors
    /// When the database can't be read.
    pub async fn provenance_count(&self, scope: Option<(&str, &str)>, now_unix: i64) -> Result<i64, StoreError> {
        match scope {
            Some((agent, session)) => on_pool!(self, |pool| sqlx::query_scalar(
                "SELECT COUNT(*) FROM provenance_values WHERE agent = $1 AND session = $2 AND expires_unix > $3"
            )
            .bind(agent)
            .bind(session)
            .bind(now_unix)
            .fetch_one(pool)
            .await),
            None => on_pool!(self, |pool| sqlx::query_scalar(
                "SELECT COUNT(*) FROM provenance_values WHERE expires_unix > $1"
            )
            .bind(now_unix)
            .fetch_one(pool)
            .await),
        }
        .map_err(StoreError::db(READ_CONTEXT))
    }
}
