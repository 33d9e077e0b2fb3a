//! Services on NATS JetStream through real processes: `nats-server` nodes (JetStream in temp
//! dirs, ports chosen by the servers), triggerd daemons forwarding `send` events from their
//! spools and serving `[[service]]`s as JetStream workers, and `triggerctl send`. Roundrobin
//! spreads requests over workers, serial never overlaps, mirror reaches every worker, output
//! streams line by line; a worker killed holding a request has it completed by another (or
//! dead-lettered past `max_deliver`); events forwarded while every server is down, or while
//! one node of a three-node R3 cluster is killed, are all executed once.

#[path = "nats/auth.rs"]
mod auth;
#[path = "nats/cluster.rs"]
mod cluster;
mod common;
#[allow(dead_code)]
#[path = "remote/harness.rs"]
mod harness;
#[path = "nats/hosts.rs"]
mod hosts;
#[path = "nats/python.rs"]
mod python;

use std::time::Duration;

use common::{test_root, wait_for, Daemon, DEADLINE};
use harness::{remote_status, wait_serving, Ctl};
use hosts::{
    append_host, assert_once, fire_all, nats_table, numbered, sender, sender_with, set_service,
    wait_lines,
};
use triggerd_nats::testing::Nats;
use triggerd_nats::{Algorithm, ServiceConfig};

#[test]
fn roundrobin_spreads_1000_requests_over_three_workers() {
    let nats = Nats::single(&test_root());
    let workers: Vec<Daemon> = (0..3).map(|_| append_host(&nats, "jobs")).collect();
    let mut ship = sender(&nats, "jobs");
    let payloads = numbered(1000, "rr");
    fire_all(&ship, payloads.clone());
    let files: Vec<_> = workers.iter().map(|w| w.path("jobs.log")).collect();
    let all = wait_lines(&files, 1000, "1000 lines over the workers");
    assert_once(&all, &payloads);
    // Competing consumers share the work by who asks first, not in equal thirds: on a loaded
    // machine a starved worker may take only a few. Each must take part, none twice.
    let spread: Vec<usize> = all.iter().map(Vec::len).collect();
    eprintln!("requests per worker: {spread:?}");
    assert!(
        spread.iter().all(|&n| n >= 1),
        "a worker ran none: {spread:?}"
    );
    let sent = wait_for("the forwarder's count", DEADLINE, || {
        remote_status(&mut ship)
            .forwarder
            .filter(|f| f.delivered == 1000)
    });
    assert_eq!((sent.pending, sent.failed), (0, 0));
}

#[test]
fn triggerctl_send_streams_lines_and_exits_with_the_remote_code() {
    let nats = Nats::single(&test_root());
    let mut worker = Daemon::start(&format!(
        "{}\n[[service]]\nname = \"job\"\nexec = [\"/bin/sh\", \"-c\", \
         \"read x; echo \\\"got $x\\\"; while [ ! -e {{dir}}/go ]; do sleep 0.02; done; echo second; exit 3\"]\n",
        nats_table(&nats, "")
    ));
    wait_serving(&mut worker, "job");
    let endpoint = nats.endpoint();
    let mut echo = Ctl::spawn(&[
        "send", "--broker", &endpoint, "--plugin", "echo", "job", "ping",
    ]);
    assert_eq!(echo.line(), "ping");
    assert_eq!(echo.exit_code(), Some(0));
    // The first line arrives while the command still runs (it waits for `go`).
    let config = worker.config.display().to_string();
    let mut job = Ctl::spawn(&["send", "--config", &config, "job", "hello\n"]);
    assert_eq!(job.line(), "got hello");
    assert!(job.child.try_wait().expect("try_wait").is_none());
    std::fs::write(worker.path("go"), "").expect("go");
    assert_eq!(job.line(), "second");
    assert_eq!(job.exit_code(), Some(3));
}

/// Two workers whose command marks `{dir}/started`, then waits for `{dir}/go`; the service's
/// ack wait is short, so a dead worker's request moves on quickly.
fn marking_hosts(nats: &Nats, max_deliver: u32) -> Vec<Daemon> {
    set_service(
        nats,
        "slow",
        ServiceConfig {
            max_deliver,
            ack_wait: Duration::from_millis(1000),
            ..ServiceConfig::default()
        },
    );
    (0..2)
        .map(|_| {
            let mut daemon = Daemon::start(&format!(
                "{}\n[[service]]\nname = \"slow\"\nexec = [\"/bin/sh\", \"-c\", \
                 \"echo started > {{dir}}/started; while [ ! -e {{dir}}/go ]; do sleep 0.02; done; echo done\"]\n",
                nats_table(nats, "")
            ));
            wait_serving(&mut daemon, "slow");
            daemon
        })
        .collect()
}

/// Sends one request to `slow`, waits until a worker runs it and kills that worker with
/// SIGKILL (after telling the other one to finish at once, if `go`); returns the sender and
/// the survivor's index.
fn send_and_kill_the_holder(nats: &Nats, hosts: &mut [Daemon], go: bool) -> (Ctl, usize) {
    let endpoint = nats.endpoint();
    let args = [
        "send",
        "--broker",
        &endpoint,
        "--timeout",
        "20s",
        "slow",
        "x",
    ];
    let ctl = Ctl::spawn(&args);
    let holder = wait_for("a worker to start the request", DEADLINE, || {
        hosts.iter().position(|h| h.path("started").exists())
    });
    let survivor = 1 - holder;
    if go {
        std::fs::write(hosts[survivor].path("go"), "").expect("go");
    }
    hosts[holder].signal(libc::SIGKILL);
    let _ = hosts[holder].child.take().map(|mut c| c.wait());
    (ctl, survivor)
}

#[test]
fn a_worker_killed_holding_a_request_has_it_completed_by_another() {
    let nats = Nats::single(&test_root());
    let mut hosts = marking_hosts(&nats, 5);
    let (mut ctl, survivor) = send_and_kill_the_holder(&nats, &mut hosts, true);
    // The survivor gets it after the ack wait, runs it, and the sender sees one final status.
    let mut lines = Vec::new();
    let code = loop {
        if let Some(status) = ctl.child.try_wait().expect("try_wait") {
            break status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    while let Ok(line) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctl.line())) {
        lines.push(line);
    }
    assert_eq!(code, Some(0), "{lines:?}");
    assert!(lines.ends_with(&["done".to_string()]), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| *l == "done").count(), 1);
    assert!(hosts[survivor].path("started").exists());
    let served = &remote_status(&mut hosts[survivor]).services[0];
    assert_eq!((served.served, served.dead_letters), (1, 0));
}

#[test]
fn past_max_deliver_a_request_goes_to_the_dead_letter_subject_counted() {
    let nats = Nats::single(&test_root());
    let mut hosts = marking_hosts(&nats, 1);
    let (mut ctl, survivor) = send_and_kill_the_holder(&nats, &mut hosts, false);
    assert_eq!(ctl.exit_code(), Some(70));
    let served = wait_for("the dead letter counted", DEADLINE, || {
        let status = remote_status(&mut hosts[survivor]);
        status.services.into_iter().find(|s| s.dead_letters == 1)
    });
    assert_eq!(served.served, 0);
    assert!(!hosts[survivor].path("started").exists());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triggerctl"))
        .arg("--socket")
        .arg(&hosts[survivor].socket)
        .arg("status")
        .output()
        .expect("triggerctl status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 dead letters"), "{text}");
}

#[test]
fn events_forwarded_while_nats_is_down_are_all_delivered_once() {
    let mut nats = Nats::single(&test_root());
    let worker = append_host(&nats, "central");
    let mut ship = sender(&nats, "central");
    nats.kill(0);
    let payloads = numbered(1000, "down");
    fire_all(&ship, payloads.clone());
    let waiting = remote_status(&mut ship).forwarder.expect("forwarder");
    assert!(waiting.pending > 0, "{waiting:?}");
    nats.restart(0);
    let all = wait_lines(
        &[worker.path("central.log")],
        1000,
        "1000 lines after the outage",
    );
    assert_once(&all, &payloads);
    wait_for("an empty spool", DEADLINE, || {
        remote_status(&mut ship)
            .forwarder
            .filter(|f| f.pending == 0)
    });
}

#[test]
fn serial_runs_one_request_at_a_time_in_arrival_order() {
    let nats = Nats::single(&test_root());
    set_service(
        &nats,
        "serial",
        ServiceConfig {
            algorithm: Algorithm::Serial,
            ..ServiceConfig::default()
        },
    );
    // Three workers log into one file when a request starts and ends.
    let log = nats.dir.path().join("serial.log");
    let workers: Vec<Daemon> = (0..3)
        .map(|_| {
            let mut daemon = Daemon::start(&format!(
                "{}\n[[service]]\nname = \"serial\"\nexec = [\"/bin/sh\", \"-c\", \
                 \"read x; echo \\\"start $x\\\" >> {log}; sleep 0.05; echo \\\"end $x\\\" >> {log}\"]\n",
                nats_table(&nats, ""),
                log = log.display()
            ));
            wait_serving(&mut daemon, "serial");
            daemon
        })
        .collect();
    // One run at a time keeps the spool in firing order.
    let ship = sender_with(&nats, "serial", "max_running = 1");
    let payloads = numbered(30, "s");
    fire_all(&ship, payloads.clone());
    let lines = wait_lines(&[log], 60, "60 start/end lines").concat();
    let expected: Vec<String> = payloads
        .iter()
        .flat_map(|p| [format!("start {p}"), format!("end {p}")])
        .collect();
    assert_eq!(lines, expected, "overlapping or out of order");
    let served: u64 = workers
        .into_iter()
        .map(|mut w| remote_status(&mut w).services[0].served)
        .sum();
    assert_eq!(served, 30);
}

#[test]
fn mirror_reaches_every_worker_and_the_sender_gets_each_reply() {
    let nats = Nats::single(&test_root());
    set_service(
        &nats,
        "all",
        ServiceConfig {
            algorithm: Algorithm::Mirror,
            ..ServiceConfig::default()
        },
    );
    let workers: Vec<Daemon> = (0..3).map(|_| append_host(&nats, "all")).collect();
    let endpoint = nats.endpoint();
    let mut echo = Ctl::spawn(&[
        "send", "--broker", &endpoint, "--plugin", "echo", "all", "ping",
    ]);
    let answers: Vec<String> = (0..3).map(|_| echo.line()).collect();
    assert_eq!(answers, ["ping", "ping", "ping"]);
    assert_eq!(echo.exit_code(), Some(0));
    let ship = sender(&nats, "all");
    let payloads = numbered(100, "m");
    fire_all(&ship, payloads.clone());
    for worker in &workers {
        let all = wait_lines(
            &[worker.path("all.log")],
            100,
            "every event at every worker",
        );
        assert_once(&all, &payloads);
    }
}

#[test]
fn a_service_timeout_set_with_triggerctl_limits_its_plugin() {
    let nats = Nats::single(&test_root());
    set_service(
        &nats,
        "capped",
        ServiceConfig {
            timeout: Some(Duration::from_millis(500)),
            ..ServiceConfig::default()
        },
    );
    let mut worker = Daemon::start(&format!(
        "{}\n[[service]]\nname = \"capped\"\nexec = [\"/bin/sleep\", \"20\"]\n",
        nats_table(&nats, "")
    ));
    wait_serving(&mut worker, "capped");
    let endpoint = nats.endpoint();
    // The request allows 15 s; the service's 500 ms limit kills the command first.
    let mut ctl = Ctl::spawn(&[
        "send",
        "--broker",
        &endpoint,
        "--timeout",
        "15s",
        "capped",
        "x",
    ]);
    assert_eq!(ctl.exit_code(), Some(124));
}

#[test]
fn a_reload_starts_and_stops_jetstream_workers() {
    let nats = Nats::single(&test_root());
    let table = nats_table(&nats, "");
    let mut daemon = Daemon::start(&table);
    daemon.write_config(&format!(
        "{table}\n[[service]]\nname = \"late\"\nplugin = \"echo\"\n"
    ));
    daemon.reload();
    wait_serving(&mut daemon, "late");
    let endpoint = nats.endpoint();
    let mut echo = Ctl::spawn(&["send", "--broker", &endpoint, "late", "hello"]);
    assert_eq!(echo.line(), "hello");
    assert_eq!(echo.exit_code(), Some(0));
    daemon.write_config(&table);
    daemon.reload();
    assert!(remote_status(&mut daemon).services.is_empty());
    let mut gone = Ctl::spawn(&[
        "send",
        "--broker",
        &endpoint,
        "--timeout",
        "1s",
        "late",
        "x",
    ]);
    assert_eq!(gone.exit_code(), Some(124));
    // Served again: the request whose sender gave up is not run late; a new one is.
    daemon.write_config(&format!(
        "{table}\n[[service]]\nname = \"late\"\nplugin = \"echo\"\n"
    ));
    daemon.reload();
    wait_serving(&mut daemon, "late");
    let fresh = Ctl::spawn(&["send", "--broker", &endpoint, "late", "fresh"]);
    assert_eq!(fresh.line(), "fresh");
    assert_eq!(remote_status(&mut daemon).services[0].served, 1);
}
