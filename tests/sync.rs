//! The synced trigger tree through real processes: one CURVE broker (in this test process, on
//! an `ipc://` endpoint in a temp dir) and three triggerd hosts, each with its own mount,
//! state directory and control socket, all with `sync_triggers = true`. A trigger added to
//! the team's catalog appears on all three mounts (latency over 100 changes printed), a
//! write on host A runs host C's service with exactly its payload, mv and chmod show
//! everywhere, remove makes the file disappear everywhere, another team's catalog stays
//! invisible, and a local `[[trigger]]` wins a collision. Offline: a host started while the
//! broker is down shows its cached tree and spools its writes; once the broker is back it
//! converges and its spooled write is delivered once.

mod common;
#[allow(dead_code)]
#[path = "remote/harness.rs"]
mod harness;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{wait_for, Daemon, DEADLINE};
use harness::{broker_table, lines_of, remote_status, wait_serving, Broker};
use triggerd_remote::broker::{CatalogChange, CatalogEntry, Role, Store, DEFAULT_TEAM};

/// A host of the default team with its own CURVE key, syncing the catalog.
fn host(broker: &Broker, name: &str, rules: &str) -> Daemon {
    let key = broker.host_key(Role::Worker, name, true);
    let keys = format!(
        "security = \"curve\"\nserver_key = \"{}\"\nsecret_key = \"{}\"\nsync_triggers = true",
        broker.server_key(),
        key.display()
    );
    Daemon::start(&format!("{}\n{rules}", broker_table(broker, &keys)))
}

/// Host C: serves `demo` with a command that appends each payload to `{dir}/demo.log` and
/// answers one line.
fn service_host(broker: &Broker, name: &str) -> Daemon {
    let mut c = host(
        broker,
        name,
        "[[service]]\nname = \"demo\"\n\
         exec = [\"/bin/sh\", \"-c\", \"cat >> {dir}/demo.log; echo forecast: sunny\"]\n",
    );
    wait_serving(&mut c, "demo");
    c
}

fn change(broker: &Broker, team: &str, change: CatalogChange) -> u64 {
    let store = Store::open(&broker.config.store).expect("store");
    store.catalog_apply(team, &change).expect("catalog change")
}

fn add(broker: &Broker, path: &str) -> u64 {
    let entry = CatalogEntry::trigger(path, "demo");
    change(broker, DEFAULT_TEAM, CatalogChange::Add { entry })
}

fn mount(host: &Daemon, path: &str) -> PathBuf {
    host.path("fs").join(path)
}

fn wait_present(hosts: &[&Daemon], path: &str, present: bool) {
    for h in hosts {
        let file = mount(h, path);
        wait_for(
            &format!("{} present = {present}", file.display()),
            DEADLINE,
            || (file.exists() == present).then_some(()),
        );
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[test]
fn catalog_changes_reach_every_mount_and_writes_reach_the_service() {
    let broker = Broker::start_curve();
    let store = Store::open(&broker.config.store).expect("store");
    store.add_team("lab").expect("team");
    add(&broker, "weather/rpi/station1");
    add(&broker, "weather/local");
    let other = CatalogEntry::trigger("secret/other-team", "demo");
    change(&broker, "lab", CatalogChange::Add { entry: other });

    let c = service_host(&broker, "host-c");
    let mut a = host(
        &broker,
        "host-a",
        "[[trigger]]\nname = \"local\"\nfile = \"weather/local\"\nexec = [\"{record}\", \"{out}\", \"local\"]\n",
    );
    let mut b = host(&broker, "host-b", "");
    store.set_catalog_admin("host-a", true).expect("admin");
    // The snapshot: what existed before the hosts started.
    wait_present(&[&a, &b, &c], "weather/rpi/station1", true);
    for h in [&a, &b, &c] {
        assert!(
            !mount(h, "secret").exists(),
            "another team's catalog is visible"
        );
    }

    // Propagation of 100 changes to all three mounts.
    let mut latencies = Vec::new();
    for i in 0..100 {
        let path = format!("bench/t{i}");
        let started = Instant::now();
        add(&broker, &path);
        wait_present(&[&a, &b, &c], &path, true);
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "catalog change to 3 mounts over {} changes: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        latencies.last().expect("latencies")
    );

    // A write on host A runs host C's service with exactly that payload.
    std::fs::write(mount(&a, "weather/rpi/station1"), "station1 31F;10C;3.2\n").expect("write");
    let log = c.path("demo.log");
    wait_for("the payload at host C", DEADLINE, || {
        (lines_of(&log) == ["station1 31F;10C;3.2"]).then_some(())
    });
    // Host A reads the reply back, and lists the trigger with its counters.
    let reply = wait_for("the reply on host A", DEADLINE, || {
        let text = std::fs::read_to_string(mount(&a, "weather/rpi/station1")).ok()?;
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(reply, "forecast: sunny\n");
    let row = wait_for("the answer in status", DEADLINE, || {
        let catalog = remote_status(&mut a).catalog?;
        let row = catalog
            .triggers
            .into_iter()
            .find(|t| t.path == "weather/rpi/station1")?;
        row.last_reply.is_some().then_some(row)
    });
    assert_eq!(
        (
            row.origin.as_str(),
            row.service.as_str(),
            row.writes,
            row.sends,
            row.failures
        ),
        ("broker catalog", "demo", 1, 1, 0)
    );

    // mv and chmod (admin verbs) show on every host.
    let mv = CatalogChange::Mv {
        from: "weather/rpi".into(),
        to: "weather/pi".into(),
    };
    change(&broker, DEFAULT_TEAM, mv);
    wait_present(&[&a, &b, &c], "weather/pi/station1", true);
    wait_present(&[&a, &b, &c], "weather/rpi", false);
    let chmod = CatalogChange::Chmod {
        path: "weather/pi/station1".into(),
        mode: 0o600,
    };
    change(&broker, DEFAULT_TEAM, chmod);
    for h in [&a, &b, &c] {
        let file = mount(h, "weather/pi/station1");
        wait_for("the new mode", DEADLINE, || {
            (mode_of(&file) == 0o600).then_some(())
        });
    }

    // Local wins: host A's own trigger keeps the path, the others show the synced one.
    let rules: Vec<String> = a.status().rules.iter().map(|r| r.name.clone()).collect();
    assert!(rules.contains(&"local".to_string()), "{rules:?}");
    assert!(
        !rules.contains(&"catalog:weather/local".to_string()),
        "{rules:?}"
    );
    let catalog = remote_status(&mut a).catalog.expect("catalog status");
    assert_eq!(catalog.collisions, 1, "{catalog:?}");
    assert!(a.log_text().contains("local wins"), "collision not logged");
    let rules: Vec<String> = b.status().rules.iter().map(|r| r.name.clone()).collect();
    assert!(
        rules.contains(&"catalog:weather/local".to_string()),
        "{rules:?}"
    );

    // Remove makes the files disappear everywhere.
    let remove = CatalogChange::Remove {
        path: "bench".into(),
    };
    change(&broker, DEFAULT_TEAM, remove);
    wait_present(&[&a, &b, &c], "bench", false);
    let status = remote_status(&mut b).catalog.expect("catalog status");
    assert!(status.synced, "{status:?}");
    assert_eq!(status.snapshots, 1, "no re-snapshot expected: {status:?}");
}

#[test]
fn a_host_started_offline_shows_its_cache_and_converges_when_the_broker_returns() {
    let mut broker = Broker::start_curve();
    add(&broker, "weather/rpi/station1");
    let c = service_host(&broker, "host-c");
    let mut b = host(&broker, "host-b", "");
    wait_present(&[&b, &c], "weather/rpi/station1", true);
    assert_eq!(b.stop(), Some(0));

    for i in 0..5 {
        add(&broker, &format!("later/t{i}"));
    }
    wait_present(&[&c], "later/t4", true);
    drop(c);
    broker.pause();

    // The broker is down: host B starts with the tree it last saw, and spools its write.
    b.launch();
    wait_present(&[&b], "weather/rpi/station1", true);
    assert!(
        !mount(&b, "later").exists(),
        "B cannot know the later changes yet"
    );
    std::fs::write(mount(&b, "weather/rpi/station1"), "while offline\n").expect("write");
    wait_for("the write in the spool", DEADLINE, || {
        remote_status(&mut b)
            .forwarder
            .filter(|f| f.spooled == 1 && f.pending == 1)
    });

    broker.resume();
    let c = service_host(&broker, "host-c2");
    wait_present(&[&b], "later/t4", true);
    let log = c.path("demo.log");
    wait_for("the spooled write at host C", DEADLINE, || {
        (lines_of(&log) == ["while offline"]).then_some(())
    });
    wait_for("the spool to empty", DEADLINE, || {
        remote_status(&mut b)
            .forwarder
            .filter(|f| f.pending == 0 && f.delivered == 1)
    });
    assert_eq!(
        lines_of(&log),
        ["while offline"],
        "delivered more than once"
    );
}

#[test]
fn mv_chmod_and_mkdir_in_the_mount_are_catalog_changes_for_admins_only() {
    let broker = Broker::start_curve();
    add(&broker, "weather/rpi/station1");
    add(&broker, "weather/rpi/station2");
    let a = host(&broker, "host-a", "");
    let b = host(&broker, "host-b", "");
    let store = Store::open(&broker.config.store).expect("store");
    store.set_catalog_admin("host-a", true).expect("admin");
    wait_present(&[&a, &b], "weather/rpi/station2", true);

    // A non-admin host is refused and nothing changes anywhere.
    let eperm = |r: std::io::Result<()>| r.expect_err("refused").raw_os_error();
    let from = mount(&b, "weather/rpi/station2");
    let moved = std::fs::rename(&from, mount(&b, "weather/rpi/other"));
    assert_eq!(eperm(moved), Some(libc::EPERM));
    let chmod = std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o600));
    assert_eq!(eperm(chmod), Some(libc::EPERM));
    let mkdir = std::fs::create_dir(mount(&b, "weather/rpi/new"));
    assert_eq!(eperm(mkdir), Some(libc::EPERM));
    let before = store.catalog_snapshot(DEFAULT_TEAM).expect("snapshot");
    assert_eq!(before.0, 2, "a refused change took a number: {before:?}");
    for h in [&a, &b] {
        assert!(mount(h, "weather/rpi/station2").exists());
        assert!(!mount(h, "weather/rpi/other").exists());
        assert_eq!(mode_of(&mount(h, "weather/rpi/station2")), 0o620);
    }

    // The admin host's changes are applied at the broker, and so on the other host.
    std::fs::rename(
        mount(&a, "weather/rpi/station1"),
        mount(&a, "weather/rpi/renamed"),
    )
    .expect("mv on the admin host");
    wait_present(&[&a, &b], "weather/rpi/renamed", true);
    wait_present(&[&a, &b], "weather/rpi/station1", false);
    let renamed = mount(&a, "weather/rpi/renamed");
    std::fs::set_permissions(&renamed, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let on_b = mount(&b, "weather/rpi/renamed");
    wait_for("the mode on host B", DEADLINE, || {
        (mode_of(&on_b) == 0o640).then_some(())
    });
    std::fs::create_dir(mount(&a, "weather/rpi/new")).expect("mkdir on the admin host");
    let (_, entries) = store.catalog_snapshot(DEFAULT_TEAM).expect("snapshot");
    let dirs: Vec<&str> = entries
        .iter()
        .filter(|e| e.dir)
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(dirs, ["weather/rpi/new"]);
}

#[test]
fn a_chain_that_loops_stops_at_the_hop_limit() {
    let broker = Broker::start_curve();
    let entry = CatalogEntry::trigger("chain/loop", "looper");
    change(&broker, DEFAULT_TEAM, CatalogChange::Add { entry });
    // The service's command writes to the trigger that calls it: a loop without the guard.
    let mut c = host(
        &broker,
        "host-c",
        "[[service]]\nname = \"looper\"\n\
         exec = [\"/bin/sh\", \"-c\", \"cat >> {dir}/loop.log; echo again > {dir}/fs/chain/loop\"]\n",
    );
    wait_serving(&mut c, "looper");
    wait_present(&[&c], "chain/loop", true);
    std::fs::write(mount(&c, "chain/loop"), "start\n").expect("write");
    let refused = wait_for("the loop guard to refuse a write", DEADLINE, || {
        let rule = c.rule("catalog:chain/loop");
        (rule.failed > 0).then_some(rule)
    });
    assert_eq!(refused.failed, 1, "{refused:?}");
    let log = c.path("loop.log");
    let lines = wait_for("every hop in the log", DEADLINE, || {
        let lines = lines_of(&log);
        (lines.len() == triggerd_remote::ext::MAX_HOPS as usize).then_some(lines)
    });
    assert_eq!(lines[0], "start");
    assert!(lines[1..].iter().all(|l| l == "again"), "{lines:?}");
    assert!(c.log_text().contains("loop guard"), "refusal not logged");
}

#[test]
fn a_catalog_of_ten_thousand_triggers_syncs_and_lists() {
    const N: usize = 10_000;
    let broker = Broker::start_curve();
    let changes: Vec<CatalogChange> = (0..N)
        .map(|i| CatalogChange::Add {
            entry: CatalogEntry::trigger(&format!("fleet/rack{:02}/pi{i:05}", i % 50), "demo"),
        })
        .collect();
    let store = Store::open(&broker.config.store).expect("store");
    store
        .catalog_apply_all(DEFAULT_TEAM, &changes)
        .expect("bulk add");
    let started = Instant::now();
    let mut a = host(&broker, "host-a", "");
    let count = || -> usize {
        let Ok(racks) = std::fs::read_dir(mount(&a, "fleet")) else {
            return 0;
        };
        racks
            .flatten()
            .map(|r| std::fs::read_dir(r.path()).map_or(0, |d| d.count()))
            .sum()
    };
    wait_for("every trigger in the mount", DEADLINE, || {
        (count() == N).then_some(())
    });
    let first_sync = started.elapsed();
    let listed = Instant::now();
    assert_eq!(count(), N);
    let listing = listed.elapsed();
    let catalog = remote_status(&mut a).catalog.expect("catalog status");
    assert_eq!(catalog.entries as usize, N);
    println!(
        "10,000 triggers: snapshot {} ms (ask to held), start to full mount {first_sync:?}, \
         listing {listing:?}",
        catalog.snapshot_ms
    );
}
