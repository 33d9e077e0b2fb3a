//! The broker's store (embedded SQLite): identities with their role, team, and either the
//! argon2 hash of a token (PLAIN) or a CURVE public key; per-service settings (algorithm,
//! timeout, owning team, visibility, shares) in `services`; teams in `teams`. Tokens are 32 random bytes shown once
//! as hex; only their hash is written. Because a token carries 256 bits of entropy, argon2
//! runs with light parameters (8 MiB, 1 pass): hashing is not what protects it, and the ZAP
//! handler verifies on every connection.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm as Argon2Algorithm, Argon2, Params, Version as Argon2Version};
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};

mod catalog;
mod services;
mod teams;
pub use catalog::{valid_path, CatalogChange, CatalogEntry, MAX_ENTRIES, MAX_PATH};
pub use services::{Algorithm, ServiceOverview, ServiceSettings};
pub use teams::{access, Access, DEFAULT_TEAM};

/// What an identity may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May register as a worker (and also send requests, e.g. the `forward` plugin).
    Worker,
    /// May only send requests.
    Client,
}

impl Role {
    /// The lowercase name used in the store and in ZAP user ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }
}

impl FromStr for Role {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Role, StoreError> {
        match s {
            "worker" => Ok(Role::Worker),
            "client" => Ok(Role::Client),
            other => Err(StoreError::Invalid(format!("unknown role {other:?}"))),
        }
    }
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Hashing failed.
    #[error("store: hashing: {0}")]
    Hash(String),
    /// A value is not valid.
    #[error("store: {0}")]
    Invalid(String),
    /// The named identity already exists.
    #[error("identity {0:?} already exists")]
    Exists(String),
}

/// An open store.
pub struct Store {
    conn: Connection,
}

fn argon2() -> Result<Argon2<'static>, StoreError> {
    let params = Params::new(8 * 1024, 1, 1, None).map_err(|e| StoreError::Hash(e.to_string()))?;
    Ok(Argon2::new(
        Argon2Algorithm::Argon2id,
        Argon2Version::V0x13,
        params,
    ))
}

fn valid_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "name {name:?}: use 1-128 of [A-Za-z0-9-_.@]"
        )))
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Invalid(format!("{}: {e}", dir.display())))?;
            }
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS identities (
                 name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS services (
                 name TEXT PRIMARY KEY, algorithm TEXT NOT NULL, timeout_ms INTEGER);
             CREATE TABLE IF NOT EXISTS live_workers (
                 worker TEXT PRIMARY KEY, service TEXT NOT NULL, identity TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS teams (name TEXT PRIMARY KEY);
             CREATE TABLE IF NOT EXISTS shares (
                 service TEXT NOT NULL, team TEXT NOT NULL, PRIMARY KEY (service, team));",
        )?;
        let store = Store { conn };
        store.migrate()?;
        store.create_catalog()?;
        Ok(store)
    }

    /// Brings a store of an older schema up to date. Before teams and keys, identities had a
    /// token only and there was one implicit team: they (and their services) join `default`.
    fn migrate(&self) -> Result<(), StoreError> {
        let added = [
            ("identities", "team", "TEXT NOT NULL DEFAULT 'default'"),
            ("identities", "key", "TEXT"),
            ("services", "team", "TEXT"),
            ("services", "public", "INTEGER NOT NULL DEFAULT 0"),
            ("live_workers", "load", "INTEGER NOT NULL DEFAULT 0"),
            ("identities", "catalog_admin", "INTEGER NOT NULL DEFAULT 0"),
        ];
        for (table, column, kind) in added {
            let present: bool = self.conn.query_row(
                &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
                params![column],
                |r| r.get::<_, i64>(0).map(|n| n > 0),
            )?;
            if !present {
                self.conn
                    .execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
            }
        }
        self.conn.execute_batch(
            "CREATE UNIQUE INDEX IF NOT EXISTS identities_key ON identities (key);
             INSERT OR IGNORE INTO teams (name) VALUES ('default');",
        )?;
        Ok(())
    }

    fn insert_identity(
        &self,
        role: Role,
        name: &str,
        team: &str,
        hash: &str,
        key: Option<&str>,
    ) -> Result<(), StoreError> {
        valid_name(name)?;
        self.require_team(team)?;
        let inserted = self.conn.execute(
            "INSERT OR IGNORE INTO identities (name, role, hash, team, key)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, role.as_str(), hash, team, key],
        )?;
        if inserted == 0 {
            return Err(StoreError::Exists(name.to_string()));
        }
        Ok(())
    }

    /// Creates an identity of `team` with a token and returns the token (the only time it is
    /// visible; PLAIN sends it in cleartext).
    pub fn add_identity(&self, role: Role, name: &str, team: &str) -> Result<String, StoreError> {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| StoreError::Hash(e.to_string()))?;
        let hash = argon2()?
            .hash_password(token.as_bytes(), &salt)
            .map_err(|e| StoreError::Hash(e.to_string()))?
            .to_string();
        self.insert_identity(role, name, team, &hash, None)?;
        Ok(token)
    }

    /// Registers an identity of `team` by its CURVE public key (Z85).
    pub fn add_key_identity(
        &self,
        role: Role,
        name: &str,
        key: &str,
        team: &str,
    ) -> Result<(), StoreError> {
        let key = crate::security::decode_key(key)
            .map(|k| crate::security::encode_key(&k))
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let taken: Option<String> = self
            .conn
            .query_row(
                "SELECT name FROM identities WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = taken {
            return Err(StoreError::Invalid(format!(
                "that key is already registered as {other:?}"
            )));
        }
        self.insert_identity(role, name, team, "", Some(&key))
    }

    /// Removes an identity; returns whether it existed.
    pub fn remove_identity(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM identities WHERE name = ?1", params![name])?
            > 0)
    }

    /// Checks `token` for `name`; the peer when it matches.
    pub fn verify(&self, name: &str, token: &[u8]) -> Result<Option<Peer>, StoreError> {
        let row: Option<(String, String, String)> = self
            .conn
            .query_row(
                "SELECT role, hash, team FROM identities WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((role, hash, team)) = row.filter(|(_, hash, _)| !hash.is_empty()) else {
            return Ok(None);
        };
        let parsed = PasswordHash::new(&hash).map_err(|e| StoreError::Hash(e.to_string()))?;
        if argon2()?.verify_password(token, &parsed).is_ok() {
            let (name, role) = (name.to_string(), role.parse()?);
            Ok(Some(Peer { name, role, team }))
        } else {
            Ok(None)
        }
    }

    /// The identity registered with the CURVE public key `key` (32 bytes), if any.
    pub fn verify_key(&self, key: &[u8]) -> Result<Option<Peer>, StoreError> {
        let Ok(key) = <[u8; 32]>::try_from(key) else {
            return Ok(None);
        };
        let row: Option<(String, String, String)> = self
            .conn
            .query_row(
                "SELECT name, role, team FROM identities WHERE key = ?1",
                params![crate::security::encode_key(&key)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(name, role, team)| {
            Ok(Peer {
                name,
                role: role.parse()?,
                team,
            })
        })
        .transpose()
    }

    /// All identities, by name.
    pub fn identities(&self) -> Result<Vec<IdentityInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, role, team, key FROM identities ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, role, team, key) = row?;
            let role = role.parse()?;
            out.push(IdentityInfo {
                name,
                role,
                team,
                key,
            });
        }
        Ok(out)
    }
}

/// An authenticated peer: identity name, role and team. The ZAP handler hands it to the
/// broker as the ZMQ user id `ROLE/TEAM/NAME` (names never contain `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Identity name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Its team.
    pub team: String,
}

impl Peer {
    /// The ZMQ user id the ZAP handler returns.
    pub fn user_id(&self) -> String {
        format!("{}/{}/{}", self.role.as_str(), self.team, self.name)
    }

    /// Parses a user id written by [`Peer::user_id`].
    pub fn parse(user_id: &str) -> Option<Peer> {
        let mut parts = user_id.splitn(3, '/');
        let role = parts.next()?.parse().ok()?;
        let team = parts.next()?.to_string();
        let name = parts.next()?.to_string();
        Some(Peer { name, role, team })
    }
}

/// An identity as `identity list` shows it (never its token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IdentityInfo {
    /// Identity name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its team.
    pub team: String,
    /// Its CURVE public key (Z85); `None` for a token identity.
    pub key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_only_hashes_are_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.db");
        let store = Store::open(&path).expect("open");
        let token = store
            .add_identity(Role::Worker, "web-01", DEFAULT_TEAM)
            .expect("add");
        assert_eq!(token.len(), 64);
        assert_eq!(
            store
                .verify("web-01", token.as_bytes())
                .expect("verify")
                .map(|p| p.user_id()),
            Some("worker/default/web-01".to_string())
        );
        assert_eq!(store.verify("web-01", b"wrong").expect("verify"), None);
        assert_eq!(
            store.verify("nobody", token.as_bytes()).expect("verify"),
            None
        );
        assert!(matches!(
            store.add_identity(Role::Client, "web-01", DEFAULT_TEAM),
            Err(StoreError::Exists(_))
        ));
        assert!(store
            .add_identity(Role::Client, "bad name", DEFAULT_TEAM)
            .is_err());
        let raw = std::fs::read(&path).expect("read db");
        assert!(
            !raw.windows(token.len()).any(|w| w == token.as_bytes()),
            "token in clear"
        );
        assert!(store.remove_identity("web-01").expect("remove"));
        assert_eq!(
            store.verify("web-01", token.as_bytes()).expect("verify"),
            None
        );
    }

    #[test]
    fn service_settings_merge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        store
            .set_service("demo", Some(Algorithm::Mirror), None)
            .expect("set");
        store
            .set_service("demo", None, Some(Duration::from_secs(3)))
            .expect("set");
        let all = store.services().expect("list");
        assert_eq!(
            all,
            vec![ServiceSettings {
                algorithm: Algorithm::Mirror,
                timeout: Some(Duration::from_secs(3)),
                ..ServiceSettings::new("demo")
            }]
        );
    }
}
