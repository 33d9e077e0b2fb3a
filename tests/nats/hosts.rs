//! What the JetStream tests share: the `[broker]` table, worker and sender daemons, firing
//! many events, setting a service's stream, and checking that each event ran exactly once.

use std::collections::BTreeSet;
use std::time::Duration;

use super::common::{wait_for, Daemon};
use super::harness::{lines_of, wait_serving};
use triggerd::control::{Reply, Request};
use triggerd_nats::testing::Nats;
use triggerd_nats::ServiceConfig;

/// The `[broker]` table of every daemon of a test.
pub fn nats_table(nats: &Nats, extra: &str) -> String {
    format!(
        "[broker]\nendpoint = \"{}\"\nspool = \"{{dir}}/spool\"\ntimeout = \"2s\"\n{extra}\n",
        nats.endpoint()
    )
}

/// A daemon serving `service` by appending each payload to `{dir}/NAME.log`.
pub fn append_host(nats: &Nats, service: &str) -> Daemon {
    let mut daemon = Daemon::start(&format!(
        "{}\n[[service]]\nname = \"{service}\"\nfile = \"{{dir}}/{service}.log\"\n",
        nats_table(nats, "")
    ));
    wait_serving(&mut daemon, service);
    daemon
}

/// A daemon whose timer rule `ship` sends to `service` (fired through the control socket).
pub fn sender(nats: &Nats, service: &str) -> Daemon {
    sender_with(nats, service, "")
}

/// Starts a sender made by `Daemon::create` after `prepare` wrote its files.
pub fn sender_from(mut daemon: Daemon, prepare: impl FnOnce(&Daemon)) -> Daemon {
    prepare(&daemon);
    daemon.launch();
    daemon
}

/// A sender whose rule has `extra` keys too (`max_running = 1` keeps firing order).
pub fn sender_with(nats: &Nats, service: &str, extra: &str) -> Daemon {
    Daemon::start(&format!(
        "{}\n[[timer]]\nname = \"ship\"\ncron = \"0 0 1 1 *\"\nsend = \"{service}\"\n{extra}\n",
        nats_table(nats, "")
    ))
}

/// Fires `ship` once per payload.
pub fn fire_all(daemon: &Daemon, payloads: impl IntoIterator<Item = String>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for data in payloads {
        let request = Request::Fire {
            rule: "ship".into(),
            data: Some(data),
        };
        match runtime.block_on(triggerd::control::request(&daemon.socket, &request)) {
            Ok(Reply::Done(_)) => {}
            other => panic!("fire: {other:?}"),
        }
    }
}

/// Sets a service's stream settings with `triggerctl service`.
pub fn set_service(nats: &Nats, service: &str, config: ServiceConfig) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triggerctl"))
        .args(["service", service, "--broker", &nats.endpoint()])
        .args(["--algorithm", config.algorithm.as_str()])
        .args(["--replicas", &config.replicas.to_string()])
        .args(["--max-deliver", &config.max_deliver.to_string()])
        .args(["--ack-wait", &format!("{}ms", config.ack_wait.as_millis())])
        .args([
            "--timeout",
            &format!("{}ms", config.timeout.map_or(0, |t| t.as_millis())),
        ])
        .output()
        .expect("triggerctl service");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.starts_with(&format!(
            "service {service}: {},",
            config.algorithm.as_str()
        )),
        "{text}"
    );
}

pub fn numbered(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}-{i:05}")).collect()
}

/// Waits until the files hold `n` lines together; returns them all.
pub fn wait_lines(files: &[std::path::PathBuf], n: usize, what: &str) -> Vec<Vec<String>> {
    wait_for(what, Duration::from_secs(120), || {
        let all: Vec<Vec<String>> = files.iter().map(|f| lines_of(f)).collect();
        (all.iter().map(Vec::len).sum::<usize>() >= n).then_some(all)
    })
}

pub fn assert_once(all: &[Vec<String>], expected: &[String]) {
    let flat: Vec<&String> = all.iter().flatten().collect();
    let unique: BTreeSet<&String> = flat.iter().copied().collect();
    if flat.len() != unique.len() {
        let mut seen = BTreeSet::new();
        let twice: Vec<&&String> = flat.iter().filter(|l| !seen.insert(**l)).take(20).collect();
        panic!(
            "{} events ran twice, e.g. {twice:?}",
            flat.len() - unique.len()
        );
    }
    let wanted: BTreeSet<&String> = expected.iter().collect();
    assert_eq!(unique, wanted);
}
