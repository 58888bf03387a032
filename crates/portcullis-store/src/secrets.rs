//! Sealed secrets: the store holds ciphertext only and never sees the master key.

use portcullis_core::now_rfc3339;
use portcullis_secrets::SealedSecret;
use serde::Serialize;

use crate::{Store, StoreError};

/// What may be listed about a secret: its name and dates, never its value or ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretMeta {
    /// The secret's name.
    pub name: String,
    /// When it was first stored, RFC 3339 UTC.
    pub created_at: String,
    /// When it was last replaced.
    pub updated_at: String,
}

impl Store {
    /// Stores a sealed secret, replacing one of the same name (its `created_at` is kept,
    /// `updated_at` is set to now).
    ///
    /// # Errors
    /// When the statement fails.
    pub async fn put_secret(&self, sealed: &SealedSecret) -> Result<(), StoreError> {
        let now = now_rfc3339();
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO secrets (name, nonce, ciphertext, key_version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
             key_version = excluded.key_version, updated_at = excluded.updated_at",
        )
        .bind(sealed.name.as_str())
        .bind(sealed.nonce.as_slice())
        .bind(sealed.ciphertext.as_slice())
        .bind(i64::from(sealed.key_version))
        .bind(now.as_str())
        .bind(now.as_str())
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))
        .map_err(StoreError::db("storing a secret"))?;
        Ok(())
    }

    /// The sealed secret of this name, if any.
    ///
    /// # Errors
    /// When the query fails or the stored key version is out of range.
    pub async fn get_secret(&self, name: &str) -> Result<Option<SealedSecret>, StoreError> {
        const CONTEXT: &str = "reading a secret";
        const SQL: &str = "SELECT nonce, ciphertext, key_version FROM secrets WHERE name = $1";
        // On every intent with a stored credential: on SQLite a direct read.
        let direct = self
            .read_direct(|conn| {
                crate::direct::query_optional(conn, SQL, &[&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            })
            .map_err(StoreError::db(CONTEXT))?;
        let row: Option<(Vec<u8>, Vec<u8>, i64)> = match direct {
            Some(row) => row,
            None => on_pool!(self, |pool| sqlx::query_as(SQL).bind(name).fetch_optional(pool).await)
                .map_err(StoreError::db(CONTEXT))?,
        };
        row.map(|(nonce, ciphertext, version)| {
            let key_version = u32::try_from(version)
                .map_err(|e| StoreError::corrupt(CONTEXT, format!("key version of secret `{name}`"), e))?;
            Ok(SealedSecret {
                name: name.to_owned(),
                nonce,
                ciphertext,
                key_version,
            })
        })
        .transpose()
    }

    /// Names and dates of every secret, ordered by name.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn list_secrets(&self) -> Result<Vec<SecretMeta>, StoreError> {
        let rows: Vec<(String, String, String)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT name, created_at, updated_at FROM secrets ORDER BY name"
        )
        .fetch_all(pool)
        .await)
        .map_err(StoreError::db("listing secrets"))?;
        Ok(rows
            .into_iter()
            .map(|(name, created_at, updated_at)| SecretMeta {
                name,
                created_at,
                updated_at,
            })
            .collect())
    }

    /// Removes a secret; returns whether it existed.
    ///
    /// # Errors
    /// When the statement fails.
    pub async fn remove_secret(&self, name: &str) -> Result<bool, StoreError> {
        let done = on_pool!(self, |pool| sqlx::query("DELETE FROM secrets WHERE name = $1")
            .bind(name)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(StoreError::db("removing a secret"))?;
        Ok(done > 0)
    }

    /// Replaces a secret's ciphertext with `resealed` only if it still is `current` (same
    /// nonce, so nobody stored a new value meanwhile); returns whether it did. One
    /// statement per secret: a rotation interrupted at any point leaves each secret sealed
    /// either by the old key or by the new one, never half-written.
    ///
    /// # Errors
    /// When the names differ or the database can't be written.
    pub async fn reseal_secret(&self, current: &SealedSecret, resealed: &SealedSecret) -> Result<bool, StoreError> {
        if current.name != resealed.name {
            return Err(StoreError::Invalid {
                what: "resealed secret",
                reason: "it must keep the secret's name",
            });
        }
        let done = on_pool!(self, |pool| sqlx::query(
            "UPDATE secrets SET nonce = $1, ciphertext = $2, key_version = $3, updated_at = $4 \
             WHERE name = $5 AND nonce = $6"
        )
        .bind(resealed.nonce.as_slice())
        .bind(resealed.ciphertext.as_slice())
        .bind(i64::from(resealed.key_version))
        .bind(now_rfc3339())
        .bind(resealed.name.as_str())
        .bind(current.nonce.as_slice())
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))
        .map_err(StoreError::db("re-encrypting a secret"))?;
        Ok(done == 1)
    }
}
