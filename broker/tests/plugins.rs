//! Worker plugins end to end (client → broker → worker → plugin → client): `command` streams
//! lines while the process still runs and reports its exit code, `append` writes the central
//! log, `forward` relays to another service, and the shipped external plugin example speaks
//! the JSON-lines protocol; an unknown plugin is answered with 127; `command` and external
//! plugins run as the configured user.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use triggerd_remote::worker::{Append, Command, Forward};
use triggerd_remote::{Client, Event, Worker};

const T: Duration = Duration::from_secs(20);

fn start(dir: &std::path::Path) -> Broker {
    Broker::start_in(
        dir,
        "tcp://127.0.0.1:*",
        "auth = false\nheartbeat = \"100ms\"",
    )
}

#[test]
fn command_streams_in_real_time_and_reports_the_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path());
    let gate = dir.path().join("gate");
    // The second line is only printed once the test has seen the first one.
    let script = format!(
        "read input; echo \"first $input\"; while [ ! -e '{}' ]; do sleep 0.01; done; echo second >&2; exit 7",
        gate.display()
    );
    let mut options = fast_worker(&broker.endpoint, "cmd");
    options.default_plugin = "command".into();
    let mut worker = Worker::new(options);
    worker.add_plugin(
        "command",
        Arc::new(Command::new(vec!["/bin/sh".into(), "-c".into(), script])),
    );
    let _worker = WorkerThread::start(worker);
    wait_service_up(&broker.endpoint, "cmd", Default::default());
    let mut client = Client::connect(&broker.endpoint, Default::default()).expect("client");
    let id = client
        .send("cmd", "", None, Some(T), &[b"payload\n"])
        .expect("send");
    match client.recv(T).expect("recv") {
        Some(Event::Partial { id: got, body }) => {
            assert_eq!(got, id);
            assert_eq!(body, vec![b"first payload".to_vec()]);
        }
        other => panic!("expected the first line while the command runs, got {other:?}"),
    }
    std::fs::write(&gate, b"").expect("open the gate");
    match client.recv(T).expect("recv") {
        Some(Event::Partial { body, .. }) => assert_eq!(body, vec![b"second".to_vec()]),
        other => panic!("expected the stderr line, got {other:?}"),
    }
    match client.recv(T).expect("recv") {
        Some(Event::Final(reply)) => assert_eq!(reply.status, 7),
        other => panic!("expected FINAL, got {other:?}"),
    }
}

#[test]
fn append_forward_external_and_unknown_plugins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path());
    let log = dir.path().join("central.log");
    let mut options = fast_worker(&broker.endpoint, "logsink");
    options.default_plugin = "append".into();
    options.plugin_dir = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../etc/plugins").into());
    let mut sink = Worker::new(options);
    sink.add_plugin(
        "append",
        Arc::new(Append::open(log.clone()).expect("open log")),
    );
    let _sink = WorkerThread::start(sink);

    let mut options = fast_worker(&broker.endpoint, "relay");
    options.default_plugin = "forward".into();
    let mut relay = Worker::new(options);
    let upstream = Client::connect(&broker.endpoint, Default::default()).expect("client");
    relay.add_plugin(
        "forward",
        Arc::new(Forward::new(upstream, "logsink".into(), "upper".into())),
    );
    let _relay = WorkerThread::start(relay);
    wait_service_up(&broker.endpoint, "logsink", Default::default());
    wait_service_up(&broker.endpoint, "relay", Default::default());

    let mut client = Client::connect(&broker.endpoint, Default::default()).expect("client");
    for line in ["GET /a 200", "GET /b 404"] {
        let reply = client
            .request("logsink", "", line.as_bytes(), T, |_| {})
            .expect("append");
        assert_eq!(reply.status, 0);
    }
    assert_eq!(
        std::fs::read_to_string(&log).expect("log"),
        "GET /a 200\nGET /b 404\n"
    );

    // The external example plugin, reached through the forward plugin of another service.
    let mut lines = Vec::new();
    let reply = client
        .request("relay", "", b"one\ntwo", T, |b| lines.push(b.concat()))
        .expect("relay");
    assert_eq!(reply.status, 0);
    assert_eq!(lines, vec![b"ONE".to_vec(), b"TWO".to_vec()]);

    let reply = client
        .request("logsink", "no-such-plugin", b"x", T, |_| {})
        .expect("reply");
    assert_eq!(reply.status, 127);
    let reply = client
        .request("logsink", "../plugins/upper", b"x", T, |_| {})
        .expect("reply");
    assert_eq!(
        reply.status, 127,
        "plugin names cannot leave the plugin directory"
    );
}

#[test]
fn command_and_external_plugins_run_as_the_configured_user() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd")
        .expect("nobody");
    let user = Some((nobody.uid.as_raw(), nobody.gid.as_raw()));
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path());
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    let whoami = plugins.join("whoami");
    std::fs::write(
        &whoami,
        "#!/bin/sh\nread request\necho \"{\\\"output\\\":\\\"$(id -u):$USER\\\"}\"\n",
    )
    .expect("plugin");
    std::fs::set_permissions(&whoami, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    // The plugin directory and the test's dir must be reachable for nobody.
    for d in [dir.path(), plugins.as_path()] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    let mut options = fast_worker(&broker.endpoint, "asuser");
    options.default_plugin = "command".into();
    options.plugin_dir = Some(plugins);
    options.plugin_user = user;
    let mut worker = Worker::new(options);
    let id = vec!["/bin/sh".into(), "-c".into(), "echo $(id -u):$USER".into()];
    worker.add_plugin("command", Arc::new(Command::new(id).as_user(user)));
    let _worker = WorkerThread::start(worker);
    wait_service_up(&broker.endpoint, "asuser", Default::default());
    let mut client = Client::connect(&broker.endpoint, Default::default()).expect("client");
    let expected = format!("{}:nobody", nobody.uid);
    for plugin in ["command", "whoami"] {
        let mut lines = Vec::new();
        let reply = client
            .request("asuser", plugin, b"x\n", T, |b| lines.push(b.concat()))
            .expect(plugin);
        assert_eq!(reply.status, 0, "{plugin}: {lines:?}");
        assert_eq!(lines, vec![expected.clone().into_bytes()], "{plugin}");
    }
}
