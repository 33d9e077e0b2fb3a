//! The broker's store (embedded SQLite): identities with the argon2 hash of their token and
//! role, and per-service settings (algorithm, timeout). Tokens are 32 random bytes shown once
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

/// How a service hands requests to its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Each request to the next worker with free capacity, in rotation.
    #[default]
    Roundrobin,
    /// One request at a time for the whole service, in arrival order.
    Serial,
    /// Every worker gets every request; the client gets each reply, then one FINAL.
    Mirror,
}

impl FromStr for Algorithm {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Algorithm, StoreError> {
        match s {
            "roundrobin" => Ok(Algorithm::Roundrobin),
            "serial" => Ok(Algorithm::Serial),
            "mirror" => Ok(Algorithm::Mirror),
            other => Err(StoreError::Invalid(format!("unknown algorithm {other:?}"))),
        }
    }
}

impl Algorithm {
    /// The lowercase name used in the store and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Roundrobin => "roundrobin",
            Algorithm::Serial => "serial",
            Algorithm::Mirror => "mirror",
        }
    }
}

/// Stored settings of one service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceSettings {
    /// Service name.
    pub name: String,
    /// Dispatch algorithm.
    pub algorithm: Algorithm,
    /// Timeout for each request, `None` for the broker's default.
    #[serde(serialize_with = "serialize_millis")]
    pub timeout: Option<Duration>,
}

fn serialize_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

/// A service as `service list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceOverview {
    /// Stored settings (defaults when the service only exists because workers serve it).
    #[serde(flatten)]
    pub settings: ServiceSettings,
    /// Connected workers: `identity (connection)`, or the connection alone without auth.
    pub workers: Vec<String>,
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
                 worker TEXT PRIMARY KEY, service TEXT NOT NULL, identity TEXT NOT NULL);",
        )?;
        Ok(Store { conn })
    }

    /// Creates an identity and returns its token (the only time it is visible).
    pub fn add_identity(&self, role: Role, name: &str) -> Result<String, StoreError> {
        valid_name(name)?;
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
        let inserted = self.conn.execute(
            "INSERT OR IGNORE INTO identities (name, role, hash) VALUES (?1, ?2, ?3)",
            params![name, role.as_str(), hash],
        )?;
        if inserted == 0 {
            return Err(StoreError::Exists(name.to_string()));
        }
        Ok(token)
    }

    /// Removes an identity; returns whether it existed.
    pub fn remove_identity(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM identities WHERE name = ?1", params![name])?
            > 0)
    }

    /// Checks `token` for `name`; `Some(role)` when it matches.
    pub fn verify(&self, name: &str, token: &[u8]) -> Result<Option<Role>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT role, hash FROM identities WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((role, hash)) = row else {
            return Ok(None);
        };
        let parsed = PasswordHash::new(&hash).map_err(|e| StoreError::Hash(e.to_string()))?;
        if argon2()?.verify_password(token, &parsed).is_ok() {
            Ok(Some(role.parse()?))
        } else {
            Ok(None)
        }
    }

    /// Creates or updates a service's settings; `None` keeps the current value.
    pub fn set_service(
        &self,
        name: &str,
        algorithm: Option<Algorithm>,
        timeout: Option<Duration>,
    ) -> Result<ServiceSettings, StoreError> {
        valid_name(name)?;
        let current = self.services()?.into_iter().find(|s| s.name == name);
        let settings = ServiceSettings {
            name: name.to_string(),
            algorithm: algorithm
                .or(current.as_ref().map(|c| c.algorithm))
                .unwrap_or_default(),
            timeout: timeout.or(current.and_then(|c| c.timeout)),
        };
        self.conn.execute(
            "INSERT OR REPLACE INTO services (name, algorithm, timeout_ms) VALUES (?1, ?2, ?3)",
            params![
                settings.name,
                settings.algorithm.as_str(),
                settings.timeout.map(|t| t.as_millis() as i64)
            ],
        )?;
        Ok(settings)
    }

    /// All stored service settings, by name.
    pub fn services(&self) -> Result<Vec<ServiceSettings>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, algorithm, timeout_ms FROM services ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, algorithm, timeout) = row?;
            out.push(ServiceSettings {
                name,
                algorithm: algorithm.parse()?,
                timeout: timeout.map(|ms| Duration::from_millis(ms.max(0) as u64)),
            });
        }
        Ok(out)
    }

    /// Records a connected worker (the running broker keeps this table current).
    pub fn record_worker(
        &self,
        worker: &str,
        service: &str,
        identity: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO live_workers (worker, service, identity) VALUES (?1, ?2, ?3)",
            params![worker, service, identity],
        )?;
        Ok(())
    }

    /// Forgets a worker (`None`: all of them, when a broker starts).
    pub fn forget_worker(&self, worker: Option<&str>) -> Result<(), StoreError> {
        match worker {
            Some(w) => self
                .conn
                .execute("DELETE FROM live_workers WHERE worker = ?1", params![w])?,
            None => self.conn.execute("DELETE FROM live_workers", [])?,
        };
        Ok(())
    }

    /// Every service that is configured or has workers, with its connected workers.
    pub fn service_overview(&self) -> Result<Vec<ServiceOverview>, StoreError> {
        let mut by_name: std::collections::BTreeMap<String, ServiceOverview> = self
            .services()?
            .into_iter()
            .map(|settings| {
                (
                    settings.name.clone(),
                    ServiceOverview {
                        settings,
                        workers: Vec::new(),
                    },
                )
            })
            .collect();
        let mut stmt = self
            .conn
            .prepare("SELECT service, identity, worker FROM live_workers ORDER BY worker")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (service, identity, worker) = row?;
            let entry = by_name
                .entry(service.clone())
                .or_insert_with(|| ServiceOverview {
                    settings: ServiceSettings {
                        name: service,
                        algorithm: Algorithm::default(),
                        timeout: None,
                    },
                    workers: Vec::new(),
                });
            entry.workers.push(if identity.is_empty() {
                worker
            } else {
                format!("{identity} ({worker})")
            });
        }
        Ok(by_name.into_values().collect())
    }

    /// Names and roles of all identities.
    pub fn identities(&self) -> Result<Vec<(String, Role)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, role FROM identities ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, role) = row?;
            out.push((name, role.parse()?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_only_hashes_are_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.db");
        let store = Store::open(&path).expect("open");
        let token = store.add_identity(Role::Worker, "web-01").expect("add");
        assert_eq!(token.len(), 64);
        assert_eq!(
            store.verify("web-01", token.as_bytes()).expect("verify"),
            Some(Role::Worker)
        );
        assert_eq!(store.verify("web-01", b"wrong").expect("verify"), None);
        assert_eq!(
            store.verify("nobody", token.as_bytes()).expect("verify"),
            None
        );
        assert!(matches!(
            store.add_identity(Role::Client, "web-01"),
            Err(StoreError::Exists(_))
        ));
        assert!(store.add_identity(Role::Client, "bad name").is_err());
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
                name: "demo".into(),
                algorithm: Algorithm::Mirror,
                timeout: Some(Duration::from_secs(3))
            }]
        );
    }
}
