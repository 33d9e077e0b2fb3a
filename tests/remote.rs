//! The broker side through real processes: a broker (`triggerd_remote::broker::run`, in this
//! test process, on an `ipc://` endpoint in a temp dir), a triggerd that sends events and a
//! second triggerd that serves the service with a worker. A watched file's path, and each line
//! written to a trigger file (the nginx access log case), reach the other host's `append`
//! plugin; events fired while the broker is down (and across a restart
//! of the sending daemon) all arrive once it is back, exactly once; `triggerctl send` streams
//! a command's lines as they are printed and exits with its code; the shipped external plugin
//! answers; a reload starts and stops services; a broker with authentication accepts the
//! daemons' token files and refuses a wrong token, and one with CURVE the hosts' own keys
//! from `triggerd keygen` (an unregistered key refused); bad `[broker]` and `[[service]]` tables
//! fail `triggerd check` with file:line; one daemon per spool; a full spool rejects or drops as
//! configured, counted; `window = 1` delivers in spool order across an outage; children start
//! clean under a broker; a spool on a full disk refuses and then delivers what it accepted.

mod common;
#[path = "remote/containment.rs"]
mod containment;
#[path = "remote/curve.rs"]
mod curve;
#[path = "remote/full_disk.rs"]
mod full_disk;
#[path = "remote/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{wait_for, Daemon, DEADLINE};
use harness::{
    broker_table, central_log_host, fire, lines_of, remote_status, wait_serving, Broker, Ctl,
};
use triggerd_remote::broker::Role;

#[test]
fn a_watched_file_reaches_the_append_plugin_of_another_host() {
    let broker = Broker::start(false);
    let mut worker = central_log_host(&broker, "");
    let mut sender = Daemon::start(&format!(
        "{}\n[[watch]]\nname = \"ship\"\npath = \"{{out}}\"\nevents = [\"close_write\"]\nsend = \"central\"\n",
        broker_table(&broker, "")
    ));
    sender.wait_watching();
    let written = sender.out().join("report.csv");
    std::fs::write(&written, "a,b\n").expect("write");

    let log = worker.path("central.log");
    let lines = wait_for("the path in the central log", DEADLINE, || {
        let lines = lines_of(&log);
        (!lines.is_empty()).then_some(lines)
    });
    assert_eq!(lines, [written.display().to_string()]);
    let sent = wait_for("the forwarder to see the answer", DEADLINE, || {
        remote_status(&mut sender)
            .forwarder
            .filter(|f| f.delivered == 1)
    });
    assert_eq!((sent.spooled, sent.pending, sent.failed), (1, 0, 0));
    let served = &remote_status(&mut worker).services[0];
    assert_eq!((served.served, served.plugin.as_str()), (1, "append"));
    assert_eq!(sender.rule("ship").failed, 0);
    // Workers and forwarder stop cleanly on SIGTERM.
    assert_eq!(worker.stop(), Some(0));
    assert_eq!(sender.stop(), Some(0));
}

#[test]
fn events_survive_a_broker_outage_and_a_sender_restart() {
    const N: usize = 10_000;
    let mut broker = Broker::start(false);
    let worker = central_log_host(&broker, "");
    let log = worker.path("central.log");
    // The spool outlives the first sending daemon, which the second one picks up.
    let spool = broker.dir.path().join("sender-spool");
    let sender_config = format!(
        "[broker]\nendpoint = \"{}\"\nspool = \"{}\"\nheartbeat = \"250ms\"\ntimeout = \"2s\"\n\n\
         [[timer]]\nname = \"ship\"\ncron = \"0 0 1 1 *\"\nsend = \"central\"\n",
        broker.endpoint(),
        spool.display()
    );
    let mut first = Daemon::start(&sender_config);
    fire(&first, "ship", "before the outage");
    wait_for("the first event", DEADLINE, || {
        (lines_of(&log).len() == 1).then_some(())
    });
    // The worker appends before its answer reaches the sender; pausing the broker between
    // the two would leave the first event unacknowledged, and delivery is at least once.
    wait_for("the first event's answer", DEADLINE, || {
        remote_status(&mut first)
            .forwarder
            .filter(|f| f.delivered == 1)
    });

    broker.pause();
    for i in 0..N / 2 {
        fire(&first, "ship", &format!("event {i}"));
    }
    let spooled = wait_for("half the events in the spool", DEADLINE, || {
        remote_status(&mut first)
            .forwarder
            .filter(|f| f.spooled as usize == 1 + N / 2)
    });
    assert_eq!(
        spooled.delivered, 1,
        "nothing can be delivered: {spooled:?}"
    );
    assert_eq!(spooled.pending as usize, N / 2);
    assert_eq!(first.stop(), Some(0));

    let mut second = Daemon::start(&sender_config);
    let reopened = remote_status(&mut second).forwarder.expect("forwarder");
    assert_eq!(reopened.pending as usize, N / 2, "the spool kept them");
    for i in N / 2..N {
        fire(&second, "ship", &format!("event {i}"));
    }
    wait_for("every event in the spool", DEADLINE, || {
        remote_status(&mut second)
            .forwarder
            .filter(|f| f.pending as usize == N)
    });

    broker.resume();
    let done = wait_for("every event delivered", DEADLINE, || {
        remote_status(&mut second)
            .forwarder
            .filter(|f| f.pending == 0 && f.delivered as usize == N)
    });
    assert_eq!(done.failed, 0);
    let lines = wait_for("every event in the central log", DEADLINE, || {
        let lines = lines_of(&log);
        (lines.len() > N).then_some(lines)
    });
    let unique: BTreeSet<&String> = lines.iter().collect();
    assert_eq!(unique.len(), lines.len(), "an event arrived twice");
    let mut expected: BTreeSet<String> = (0..N).map(|i| format!("event {i}")).collect();
    expected.insert("before the outage".into());
    assert_eq!(unique, expected.iter().collect());
}

#[test]
fn triggerctl_send_streams_lines_and_exits_with_the_remote_code() {
    let broker = Broker::start(false);
    let mut worker = Daemon::start(&format!(
        "{}\n[[service]]\nname = \"job\"\nexec = [\"/bin/sh\", \"-c\", \
         \"read x; echo \\\"got $x\\\"; while [ ! -e {{dir}}/go ]; do sleep 0.02; done; echo second; exit 3\"]\n",
        broker_table(&broker, "")
    ));
    wait_serving(&mut worker, "job");
    // --broker and --plugin: the built-in echo answers in its FINAL.
    let mut echo = Ctl::spawn(&[
        "send",
        "--broker",
        broker.endpoint(),
        "--plugin",
        "echo",
        "job",
        "ping",
    ]);
    assert_eq!(echo.line(), "ping");
    assert_eq!(echo.exit_code(), Some(0));

    // The endpoint from the config's [broker]; the command's first line arrives while it
    // still runs (it waits for `go`, which is created only after that line was seen).
    let config = worker.config.display().to_string();
    let mut job = Ctl::spawn(&["send", "--config", &config, "job", "hello\n"]);
    assert_eq!(job.line(), "got hello");
    assert!(job.child.try_wait().expect("try_wait").is_none());
    std::fs::write(worker.path("go"), "").expect("go");
    assert_eq!(job.line(), "second");
    assert_eq!(job.exit_code(), Some(3));

    // --json: one object per output line, then the status.
    let mut json = Ctl::spawn(&["send", "--json", "--config", &config, "job", "again\n"]);
    assert_eq!(json.line(), r#"{"output":"got again"}"#);
    assert_eq!(json.line(), r#"{"output":"second"}"#);
    assert_eq!(json.line(), r#"{"status":3}"#);
    assert_eq!(json.exit_code(), Some(3));
}

#[test]
fn authenticated_daemons_use_their_token_files_and_a_wrong_token_is_refused() {
    let broker = Broker::start(true);
    let worker_token = broker.token_file(Role::Worker, "log-host");
    let sender_token = broker.token_file(Role::Client, "web-01");
    let worker = central_log_host(
        &broker,
        &format!(
            "identity = \"log-host\"\ntoken = \"{}\"",
            worker_token.display()
        ),
    );
    let sender = Daemon::start(&format!(
        "{}\n[[timer]]\nname = \"ship\"\ncron = \"0 0 1 1 *\"\nsend = \"central\"\n",
        broker_table(
            &broker,
            &format!(
                "identity = \"web-01\"\ntoken = \"{}\"",
                sender_token.display()
            )
        )
    ));
    fire(&sender, "ship", "authenticated");
    let log = worker.path("central.log");
    wait_for("the authenticated event", DEADLINE, || {
        (lines_of(&log) == ["authenticated"]).then_some(())
    });

    let wrong = broker.dir.path().join("wrong.token");
    std::fs::write(&wrong, "0123456789abcdef\n").expect("token");
    let wrong = wrong.display().to_string();
    let mut refused = Ctl::spawn(&[
        "send",
        "--broker",
        broker.endpoint(),
        "--identity",
        "web-01",
        "--token",
        &wrong,
        "--timeout",
        "1s",
        "central",
        "forged",
    ]);
    assert_eq!(refused.exit_code(), Some(124));
    assert_eq!(lines_of(&log), ["authenticated"]);
}

#[test]
fn bad_broker_and_service_tables_fail_check_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "[[timer]]\ncron = \"0 0 1 1 *\"\nsend = \"central\"\n",
            "3: [[timer]]: send: sending to `central` needs a [broker] section",
        ),
        (
            "[broker]\nendpoint = \"tcp://127.0.0.1:5555\"\n\n[[service]]\nname = \"job\"\nplugin = \"command\"\n",
            "4: [[service]]: exec: missing: the `command` plugin needs the command to run",
        ),
        (
            "[broker]\nendpoint = \"tcp://127.0.0.1:5555\"\nspool = \"spool\"\n",
            "3: [broker]: spool: `spool` is not an absolute path",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.conf"));
        std::fs::write(&file, text).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_triggerd"))
            .arg("check")
            .arg(&file)
            .output()
            .expect("triggerd check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("{}:{expected}", file.display())),
            "expected {expected}, got {stderr}"
        );
    }
}

#[test]
fn remote_fixture_means_what_it_says() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/remote.conf");
    let config = triggerd::config::load(&file).expect("valid");
    let broker = config.broker.expect("[broker]");
    assert_eq!(broker.endpoint, "tcp://broker.example:5555");
    assert_eq!(
        broker.token.as_deref(),
        Some(Path::new("/etc/triggerd/token"))
    );
    assert_eq!(broker.spool_max, 104_857_600);
    assert_eq!(broker.when_full, triggerd::config::FullPolicy::DropOldest);
    assert_eq!(
        broker.sync,
        triggerd::config::SyncPolicy::Interval(Duration::from_millis(50))
    );
    assert_eq!(broker.timeout, Duration::from_secs(10));
    assert_eq!(broker.window, 1);
    let plugins: Vec<(&str, &str)> = config
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.plugin.as_str()))
        .collect();
    assert_eq!(
        plugins,
        [
            ("logsink", "append"),
            ("deploy", "command"),
            ("tools", "upper")
        ]
    );
    assert_eq!(config.services[1].capacity, 1);
    assert_eq!(config.services[2].forward.as_deref(), Some("logsink"));
}

#[test]
fn reload_starts_and_stops_services_and_defers_broker_changes() {
    let broker = Broker::start(false);
    let mut host = central_log_host(&broker, "");
    let central = "[[service]]\nname = \"central\"\nfile = \"{dir}/central.log\"\n";
    let second = "[[service]]\nname = \"second\"\nplugin = \"echo\"\n";
    host.write_config(&format!(
        "{}\n{central}\n{second}",
        broker_table(&broker, "sync = \"always\"")
    ));
    host.reload();
    wait_serving(&mut host, "second");
    let status = remote_status(&mut host);
    let kept = status.services.iter().find(|s| s.name == "central");
    assert_eq!(kept.map(|s| s.connections), Some(1), "{status:?}");
    assert!(host
        .log_text()
        .contains("[broker] settings changed: they take effect at the next restart"));
    let mut echo = Ctl::spawn(&["send", "--broker", broker.endpoint(), "second", "hi"]);
    assert_eq!(echo.line(), "hi");
    assert_eq!(echo.exit_code(), Some(0));

    host.write_config(&format!("{}\n{second}", broker_table(&broker, "")));
    host.reload();
    let names: Vec<String> = remote_status(&mut host)
        .services
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["second"]);
    let mut gone = Ctl::spawn(&[
        "send",
        "--broker",
        broker.endpoint(),
        "--timeout",
        "1s",
        "central",
        "nobody serves this",
    ]);
    assert_eq!(gone.exit_code(), Some(124));
    assert!(lines_of(&host.path("central.log")).is_empty());
}

#[test]
fn the_shipped_external_plugin_answers_line_by_line() {
    let broker = Broker::start(false);
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/plugins");
    let mut host = Daemon::start(&format!(
        "{}\n[[service]]\nname = \"tools\"\nplugin = \"upper\"\nplugin_dir = \"{}\"\n",
        broker_table(&broker, ""),
        plugins.display()
    ));
    wait_serving(&mut host, "tools");
    let mut upper = Ctl::spawn(&[
        "send",
        "--broker",
        broker.endpoint(),
        "tools",
        "station1 31F\nstation2 12C\n",
    ]);
    assert_eq!(upper.line(), "STATION1 31F");
    assert_eq!(upper.line(), "STATION2 12C");
    assert_eq!(upper.exit_code(), Some(0));
}

#[test]
fn a_spool_in_use_refuses_a_second_daemon_and_status_shows_the_counters() {
    let broker = Broker::start(false);
    let spool = broker.dir.path().join("shared-spool");
    let table = format!(
        "[broker]\nendpoint = \"{}\"\nspool = \"{}\"\n",
        broker.endpoint(),
        spool.display()
    );
    let mut first = Daemon::start(&format!(
        "{table}\n[[service]]\nname = \"central\"\nfile = \"{{dir}}/central.log\"\n"
    ));
    wait_serving(&mut first, "central");
    let socket = first.socket.display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_triggerctl"))
        .args(["--socket", &socket, "status"])
        .output()
        .expect("triggerctl status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "broker {}: spool 0 pending (0 bytes), 0 spooled",
            broker.endpoint()
        )) && text.contains("service central (append): 0 served, 0 duplicates, 1 connections"),
        "{text}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("second.conf");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ncontrol = \"{}/control.sock\"\nstate_dir = \"{}\"\n\n{table}",
            dir.path().display(),
            dir.path().display()
        ),
    )
    .expect("config");
    let second = Command::new(env!("CARGO_BIN_EXE_triggerd"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("triggerd");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another triggerd"), "{stderr}");
    first.assert_alive();
}

#[test]
fn a_full_spool_rejects_or_drops_as_configured_and_counts_it() {
    const FIRED: u64 = 100;
    // No broker listens: every event stays in a spool of 64 KiB, about 60 events of 1 KB.
    for policy in ["reject", "drop_oldest"] {
        let mut daemon = Daemon::start(&format!(
            "[broker]\nendpoint = \"ipc://{{dir}}/nobody.ipc\"\nspool = \"{{dir}}/spool\"\n\
             spool_max = 65536\nwhen_full = \"{policy}\"\n\n\
             [[timer]]\nname = \"ship\"\ncron = \"0 0 1 1 *\"\nsend = \"central\"\nmax_running = 1\n"
        ));
        let payload = "x".repeat(1000);
        for _ in 0..FIRED {
            fire(&daemon, "ship", &payload);
        }
        let spool = wait_for("every event handled", DEADLINE, || {
            remote_status(&mut daemon)
                .forwarder
                .filter(|f| f.spooled + f.rejected == FIRED)
        });
        assert!(spool.bytes <= 65536, "{spool:?}");
        let failed = daemon.rule("ship").failed;
        if policy == "reject" {
            assert!(spool.rejected > 0 && spool.dropped == 0, "{spool:?}");
            assert_eq!(failed, spool.rejected, "a rejected event is a failed run");
            assert_eq!(spool.pending, spool.spooled);
        } else {
            assert!(spool.dropped > 0 && spool.rejected == 0, "{spool:?}");
            assert_eq!(failed, 0);
            assert_eq!(spool.pending, FIRED - spool.dropped);
        }
    }
}

#[test]
fn window_one_delivers_in_spool_order_across_an_outage() {
    const N: usize = 100;
    let mut broker = Broker::start(false);
    let worker = central_log_host(&broker, "");
    let log = worker.path("central.log");
    // One run at a time keeps the spool in firing order; window 1 keeps delivery in it.
    let mut sender = Daemon::start(&format!(
        "{}\n[[timer]]\nname = \"ship\"\ncron = \"0 0 1 1 *\"\nsend = \"central\"\nmax_running = 1\n",
        broker_table(&broker, "window = 1")
    ));
    broker.pause();
    for i in 0..N {
        fire(&sender, "ship", &format!("event {i}"));
    }
    wait_for("every event in the spool", DEADLINE, || {
        remote_status(&mut sender)
            .forwarder
            .filter(|f| f.pending as usize == N)
    });
    broker.resume();
    let lines = wait_for("every event in the central log", DEADLINE, || {
        let lines = lines_of(&log);
        (lines.len() >= N).then_some(lines)
    });
    let expected: Vec<String> = (0..N).map(|i| format!("event {i}")).collect();
    assert_eq!(lines, expected);
}

#[test]
fn each_line_written_to_a_trigger_file_reaches_the_central_log() {
    let broker = Broker::start(false);
    let worker = central_log_host(&broker, "");
    let mut web = Daemon::start(&format!(
        "{}\n[[trigger]]\nname = \"access\"\nfile = \"nginx/access\"\nsplit = \"line\"\n\
         send = \"central\"\nplugin = \"append\"\n",
        broker_table(&broker, "")
    ));
    common::sh(&format!(
        "printf 'GET /a 200\\nGET /b 404\\n' >> {}/nginx/access",
        web.path("fs").display()
    ));
    let log = worker.path("central.log");
    let mut lines = wait_for("both lines in the central log", DEADLINE, || {
        let lines = lines_of(&log);
        (lines.len() >= 2).then_some(lines)
    });
    lines.sort();
    assert_eq!(lines, ["GET /a 200", "GET /b 404"]);
    assert_eq!(web.rule("access").failed, 0);
}
