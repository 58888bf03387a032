//! Agents, identified by the SHA-256 of their bearer token.

use portcullis_core::{AgentId, now_rfc3339};
use serde::Serialize;

use crate::error::is_unique_violation;
use crate::{Store, StoreError};

/// An agent known to the store. The token hash is deliberately not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRecord {
    /// The agent's id.
    pub id: AgentId,
    /// When it was added, RFC 3339 UTC.
    pub created_at: String,
}

impl Store {
    /// Adds an agent with the SHA-256 (64 lowercase hex characters) of its token. The
    /// token itself is never stored; requiring the hash form keeps a caller from storing
    /// it by mistake.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the id, or an agent with the same token, exists;
    /// [`StoreError::Invalid`] when `token_sha256` is not a SHA-256 hex digest.
    pub async fn add_agent(&self, id: &AgentId, token_sha256: &str) -> Result<(), StoreError> {
        const CONTEXT: &str = "adding an agent";
        check_token_hash(token_sha256)?;
        let inserted = on_pool!(self, |pool| sqlx::query(
            "INSERT INTO agents (id, token_sha256, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(token_sha256)
        .bind(now_rfc3339())
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))
        .map_err(|e| {
            // The id conflict is handled above, so a violation here is the token's.
            if is_unique_violation(&e) {
                StoreError::AlreadyExists {
                    what: "an agent with the same token".into(),
                }
            } else {
                StoreError::db(CONTEXT)(e)
            }
        })?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists {
                what: format!("agent `{id}`"),
            });
        }
        Ok(())
    }

    /// Every agent, ordered by id.
    ///
    /// # Errors
    /// When the query fails or a stored id is invalid.
    pub async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        const CONTEXT: &str = "listing agents";
        let rows: Vec<(String, String)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, created_at FROM agents ORDER BY id"
        )
        .fetch_all(pool)
        .await)
        .map_err(StoreError::db(CONTEXT))?;
        rows.into_iter()
            .map(|(id, created_at)| {
                Ok(AgentRecord {
                    id: agent_id(CONTEXT, id)?,
                    created_at,
                })
            })
            .collect()
    }

    /// Removes an agent; returns whether it existed.
    ///
    /// # Errors
    /// When the statement fails.
    pub async fn remove_agent(&self, id: &AgentId) -> Result<bool, StoreError> {
        let done = on_pool!(self, |pool| sqlx::query("DELETE FROM agents WHERE id = $1")
            .bind(id.as_str())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(StoreError::db("removing an agent"))?;
        Ok(done > 0)
    }

    /// The agent whose token has this SHA-256, if any.
    ///
    /// # Errors
    /// When the query fails or the stored id is invalid.
    pub async fn agent_for_token_hash(&self, token_sha256: &str) -> Result<Option<AgentId>, StoreError> {
        const CONTEXT: &str = "authenticating an agent";
        const SQL: &str = "SELECT id FROM agents WHERE token_sha256 = $1";
        // Every intent starts here: on SQLite a direct read, without a hand-off to a
        // connection thread.
        let direct = self
            .read_direct(|conn| crate::direct::query_optional(conn, SQL, &[&token_sha256], |r| r.get::<_, String>(0)))
            .map_err(StoreError::db(CONTEXT))?;
        let id: Option<String> = match direct {
            Some(id) => id,
            None => on_pool!(self, |pool| sqlx::query_scalar(SQL)
                .bind(token_sha256)
                .fetch_optional(pool)
                .await)
            .map_err(StoreError::db(CONTEXT))?,
        };
        id.map(|id| agent_id(CONTEXT, id)).transpose()
    }
}

pub(crate) fn check_token_hash(hash: &str) -> Result<(), StoreError> {
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            what: "token hash",
            reason: "must be 64 lowercase hex characters (a SHA-256)",
        })
    }
}

pub(crate) fn agent_id(context: &'static str, id: String) -> Result<AgentId, StoreError> {
    AgentId::new(id).map_err(|e| StoreError::corrupt(context, "agent id", e))
}
