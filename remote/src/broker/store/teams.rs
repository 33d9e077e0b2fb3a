//! Teams and who may use which service. Every identity and every owned service belongs to a
//! team; a service is visible to its team, to the teams it is shared with, and to everyone
//! when public. A service nobody owns yet is claimed by the team of the first worker that
//! registers it (`service set NAME --team T` before first use closes that window). The rule
//! itself is the pure [`access`] so the engine applies it to its cached settings.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};

use super::{valid_name, ServiceSettings, Store, StoreError};

/// The team of identities and services from before teams existed, and of new ones by default.
pub const DEFAULT_TEAM: &str = "default";

/// What a team may do with a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Its own team's (or not owned by anyone yet): may serve and call.
    Own,
    /// Shared with the team, or public: may call, not serve.
    Call,
    /// Another team's private service: invisible.
    Denied,
}

/// The access `team` has to a service with `settings` (`None`: unknown to the store).
pub fn access(settings: Option<&ServiceSettings>, team: &str) -> Access {
    let Some(owner) = settings.and_then(|s| s.team.as_deref()) else {
        return Access::Own;
    };
    let settings = settings.expect("an owner implies settings");
    if owner == team {
        Access::Own
    } else if settings.public || settings.shares.iter().any(|t| t == team) {
        Access::Call
    } else {
        Access::Denied
    }
}

impl Store {
    /// Creates a team.
    pub fn add_team(&self, name: &str) -> Result<(), StoreError> {
        valid_name(name)?;
        let inserted = self.conn.execute(
            "INSERT OR IGNORE INTO teams (name) VALUES (?1)",
            params![name],
        )?;
        match inserted {
            0 => Err(StoreError::Exists(name.to_string())),
            _ => Ok(()),
        }
    }

    /// Removes a team that no identity or service uses; returns whether it existed.
    pub fn remove_team(&self, name: &str) -> Result<bool, StoreError> {
        let users: i64 = self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM identities WHERE team = ?1)
                  + (SELECT COUNT(*) FROM services WHERE team = ?1)",
            params![name],
            |r| r.get(0),
        )?;
        if users > 0 {
            return Err(StoreError::Invalid(format!(
                "team {name:?} still has {users} identities or services"
            )));
        }
        self.conn
            .execute("DELETE FROM shares WHERE team = ?1", params![name])?;
        Ok(self
            .conn
            .execute("DELETE FROM teams WHERE name = ?1", params![name])?
            > 0)
    }

    /// All team names.
    pub fn teams(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT name FROM teams ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(super) fn require_team(&self, team: &str) -> Result<(), StoreError> {
        let known: Option<String> = self
            .conn
            .query_row(
                "SELECT name FROM teams WHERE name = ?1",
                params![team],
                |r| r.get(0),
            )
            .optional()?;
        match known {
            Some(_) => Ok(()),
            None => Err(StoreError::Invalid(format!(
                "no team named {team:?} (team add {team})"
            ))),
        }
    }

    /// Sets a service's team and/or visibility (creating its settings if needed).
    pub fn set_owner(
        &self,
        service: &str,
        team: Option<&str>,
        public: Option<bool>,
    ) -> Result<(), StoreError> {
        if let Some(team) = team {
            self.require_team(team)?;
        }
        self.set_service(service, None, None)?;
        self.conn.execute(
            "UPDATE services SET team = COALESCE(?2, team), public = COALESCE(?3, public)
             WHERE name = ?1",
            params![service, team, public],
        )?;
        Ok(())
    }

    /// Gives a service nobody owns to `team`; returns the owner afterwards.
    pub fn claim_service(&self, service: &str, team: &str) -> Result<String, StoreError> {
        self.set_service(service, None, None)?;
        self.conn.execute(
            "UPDATE services SET team = ?2 WHERE name = ?1 AND team IS NULL",
            params![service, team],
        )?;
        Ok(self.conn.query_row(
            "SELECT team FROM services WHERE name = ?1",
            params![service],
            |r| r.get(0),
        )?)
    }

    /// Lets `team` call `service`.
    pub fn share(&self, service: &str, team: &str) -> Result<(), StoreError> {
        self.require_team(team)?;
        self.set_service(service, None, None)?;
        self.conn.execute(
            "INSERT OR IGNORE INTO shares (service, team) VALUES (?1, ?2)",
            params![service, team],
        )?;
        Ok(())
    }

    /// Takes a share back; returns whether it existed.
    pub fn unshare(&self, service: &str, team: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM shares WHERE service = ?1 AND team = ?2",
            params![service, team],
        )? > 0)
    }

    pub(super) fn all_shares(&self) -> Result<HashMap<String, Vec<String>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT service, team FROM shares ORDER BY service, team")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows {
            let (service, team) = row?;
            out.entry(service).or_default().push(team);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cross_team_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        for team in ["a", "b", "c"] {
            store.add_team(team).expect("team");
        }
        store.set_owner("mine", Some("a"), None).expect("own");
        store.set_owner("theirs", Some("b"), None).expect("own");
        store.set_owner("shared", Some("b"), None).expect("own");
        store.share("shared", "a").expect("share");
        store
            .set_owner("open", Some("c"), Some(true))
            .expect("public");
        assert!(store.share("shared", "nobody").is_err());
        let all: HashMap<String, ServiceSettings> = store
            .services()
            .expect("list")
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let of = |name: &str| access(all.get(name), "a");
        assert_eq!(of("mine"), Access::Own);
        assert_eq!(of("theirs"), Access::Denied);
        assert_eq!(of("shared"), Access::Call);
        assert_eq!(of("open"), Access::Call);
        assert_eq!(of("unknown"), Access::Own);
        assert_eq!(store.claim_service("theirs", "a").expect("claim"), "b");
        assert_eq!(store.claim_service("new", "a").expect("claim"), "a");
        assert!(store.remove_team("b").is_err(), "b still owns services");
        assert!(store.unshare("shared", "a").expect("unshare"));
    }
}
