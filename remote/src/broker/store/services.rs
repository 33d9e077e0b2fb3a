//! Service settings in the store: algorithm and timeout, the owning team, visibility and
//! shares (the access rules themselves are in `teams`), and the live worker list the running
//! broker keeps for `service list`.

use std::str::FromStr;
use std::time::Duration;

use rusqlite::params;

use super::{valid_name, Store, StoreError};

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
    /// The team owning it (`None`: not yet owned; the first worker to register claims it
    /// for its team).
    pub team: Option<String>,
    /// Callable by every team.
    pub public: bool,
    /// Teams it is shared with.
    pub shares: Vec<String>,
}

impl ServiceSettings {
    /// Defaults for a service the store does not know yet.
    pub fn new(name: &str) -> ServiceSettings {
        ServiceSettings {
            name: name.to_string(),
            algorithm: Algorithm::default(),
            timeout: None,
            team: None,
            public: false,
            shares: Vec::new(),
        }
    }
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
    /// Requests its workers hold now (as the running broker last recorded, once a second).
    pub load: u64,
}

impl Store {
    /// Creates or updates a service's settings; `None` keeps the current value.
    pub fn set_service(
        &self,
        name: &str,
        algorithm: Option<Algorithm>,
        timeout: Option<Duration>,
    ) -> Result<ServiceSettings, StoreError> {
        valid_name(name)?;
        let current = self.services()?.into_iter().find(|s| s.name == name);
        let mut settings = current.unwrap_or_else(|| ServiceSettings::new(name));
        settings.algorithm = algorithm.unwrap_or(settings.algorithm);
        settings.timeout = timeout.or(settings.timeout);
        self.conn.execute(
            "INSERT INTO services (name, algorithm, timeout_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET algorithm = ?2, timeout_ms = ?3",
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
        let mut stmt = self.conn.prepare(
            "SELECT name, algorithm, timeout_ms, team, public FROM services ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, bool>(4)?,
            ))
        })?;
        let mut shares = self.all_shares()?;
        let mut out = Vec::new();
        for row in rows {
            let (name, algorithm, timeout, team, public) = row?;
            out.push(ServiceSettings {
                shares: shares.remove(&name).unwrap_or_default(),
                name,
                algorithm: algorithm.parse()?,
                timeout: timeout.map(|ms| Duration::from_millis(ms.max(0) as u64)),
                team,
                public,
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

    /// Records how many requests a connected worker holds.
    pub fn record_load(&self, worker: &str, load: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE live_workers SET load = ?2 WHERE worker = ?1",
            params![worker, load as i64],
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
                        load: 0,
                    },
                )
            })
            .collect();
        let mut stmt = self
            .conn
            .prepare("SELECT service, identity, worker, load FROM live_workers ORDER BY worker")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (service, identity, worker, load) = row?;
            let entry = by_name
                .entry(service.clone())
                .or_insert_with(|| ServiceOverview {
                    settings: ServiceSettings::new(&service),
                    workers: Vec::new(),
                    load: 0,
                });
            entry.load += load.max(0) as u64;
            entry.workers.push(if identity.is_empty() {
                worker
            } else {
                format!("{identity} ({worker})")
            });
        }
        Ok(by_name.into_values().collect())
    }
}
