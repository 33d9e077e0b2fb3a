//! mkdir, mv and chmod in the mount of a synced subtree are changes of the broker's trigger
//! catalog, never of this host's tree alone: the FUSE thread asks the broker (`mmi.catalog`
//! `change`, over a connection with this host's credentials), which applies it when this
//! host's identity is a catalog admin of its team and answers 77 otherwise (EPERM here).
//! Once applied, the change comes back as an update like any other and the tree follows it
//! on every host; the operation returns when this host's catalog has it (bounded).
//!
//! Which side a path is on: a synced trigger, or a directory with synced triggers below it
//! and no local ones, is synced; a directory holding both is neither (EPERM: a change there
//! could not be applied to one side alone); everything else is local and behaves as before.
//! A mkdir is synced when its parent directory is.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use triggerd_fusefs::NamespaceChange;
use triggerd_remote::broker::{CatalogChange, Pong};
use triggerd_remote::client::Event;
use triggerd_remote::{Client, ClientOptions};

use super::catalog::CatalogShared;

/// How long a change waits for the broker's answer, and then for the update to arrive.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
const APPLIED_WITHIN: Duration = Duration::from_secs(2);

/// The trigger paths of the running config, by side (set at each merge).
#[derive(Debug, Default)]
pub struct MergedPaths {
    pub synced: HashSet<String>,
    pub local: HashSet<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum Side {
    Synced,
    Local,
    Mixed,
}

impl MergedPaths {
    fn side(&self, path: &str) -> Side {
        if self.synced.contains(path) {
            return Side::Synced;
        }
        if path.is_empty() || self.local.contains(path) {
            return Side::Local;
        }
        let prefix = format!("{path}/");
        let below = |set: &HashSet<String>| set.iter().any(|p| p.starts_with(&prefix));
        match (below(&self.synced), below(&self.local)) {
            (true, false) => Side::Synced,
            (true, true) => Side::Mixed,
            _ => Side::Local,
        }
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The catalog change a namespace change in the mount means; `Err(errno)` when it may not
/// happen at all, `Ok(None)` when it is local.
fn as_catalog(paths: &MergedPaths, change: &NamespaceChange) -> Result<Option<CatalogChange>, i32> {
    let (side, catalog) = match change {
        NamespaceChange::Mkdir { path } => (
            paths.side(parent(path)),
            CatalogChange::Mkdir { path: path.clone() },
        ),
        NamespaceChange::Rename { from, to } => (
            paths.side(from),
            CatalogChange::Mv {
                from: from.clone(),
                to: to.clone(),
            },
        ),
        NamespaceChange::Chmod { path, mode } => (
            paths.side(path),
            CatalogChange::Chmod {
                path: path.clone(),
                mode: *mode,
            },
        ),
    };
    match side {
        Side::Local => Ok(None),
        Side::Mixed => Err(libc::EPERM),
        Side::Synced => Ok(Some(catalog)),
    }
}

/// The hook the trigger-file source asks before a namespace change.
pub fn hook(
    shared: Arc<CatalogShared>,
    endpoint: String,
    options: ClientOptions,
) -> crate::sources::file::NamespaceHook {
    Box::new(move |change| {
        let catalog = match as_catalog(&shared.merged(), change) {
            Ok(None) => return None,
            Ok(Some(c)) => c,
            Err(errno) => return Some(Err(errno)),
        };
        Some(request(&shared, &endpoint, &options, &catalog))
    })
}

fn request(
    shared: &CatalogShared,
    endpoint: &str,
    options: &ClientOptions,
    change: &CatalogChange,
) -> Result<(), i32> {
    let body = serde_json::to_vec(change).map_err(|_| libc::EINVAL)?;
    let mut client = Client::connect(endpoint, options.clone()).map_err(|_| libc::EIO)?;
    let id = client
        .send(
            "mmi.catalog",
            "",
            None,
            Some(ANSWER_WITHIN),
            &[b"change", &body],
        )
        .map_err(|_| libc::EIO)?;
    let deadline = Instant::now() + ANSWER_WITHIN;
    let reply = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv(left) {
            Ok(Some(Event::Final(reply))) if reply.id == id => break reply,
            Ok(Some(_)) => continue,
            _ => {
                tracing::warn!(?change, "catalog change: no answer from the broker");
                return Err(libc::EIO);
            }
        }
    };
    let text = || String::from_utf8_lossy(reply.body.concat().as_slice()).into_owned();
    match reply.status {
        0 => {}
        triggerd_remote::ext::STATUS_FORBIDDEN => {
            tracing::warn!(
                ?change,
                "catalog change refused: this host is not a catalog admin"
            );
            return Err(libc::EPERM);
        }
        status => {
            tracing::warn!(?change, status, "catalog change refused: {}", text());
            return Err(libc::EINVAL);
        }
    }
    let seq = reply
        .body
        .first()
        .and_then(|f| serde_json::from_slice::<Pong>(f).ok())
        .map_or(0, |p| p.seq);
    // The update reaches this host's catalog too; answer once it did (bounded).
    let until = Instant::now() + APPLIED_WITHIN;
    while shared.status().seq < seq && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_follow_the_triggers_below() {
        let paths = MergedPaths {
            synced: ["weather/rpi/station1".to_string(), "mixed/s".to_string()].into(),
            local: ["nginx/access".to_string(), "mixed/l".to_string()].into(),
        };
        let rename = |from: &str| NamespaceChange::Rename {
            from: from.into(),
            to: "x".into(),
        };
        assert!(matches!(
            as_catalog(&paths, &rename("weather/rpi")),
            Ok(Some(_))
        ));
        assert!(matches!(
            as_catalog(&paths, &rename("weather/rpi/station1")),
            Ok(Some(_))
        ));
        assert_eq!(as_catalog(&paths, &rename("nginx")), Ok(None));
        assert_eq!(as_catalog(&paths, &rename("mixed")), Err(libc::EPERM));
        let mkdir = |path: &str| NamespaceChange::Mkdir { path: path.into() };
        assert!(matches!(
            as_catalog(&paths, &mkdir("weather/new")),
            Ok(Some(_))
        ));
        assert_eq!(as_catalog(&paths, &mkdir("top")), Ok(None));
        assert_eq!(as_catalog(&paths, &mkdir("nginx/new")), Ok(None));
    }
}
