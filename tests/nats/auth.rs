//! Credentials as NATS users expect them, from files named in `[broker]`: user and password
//! (`identity` and the `token` file), and an nkey seed file (`nkey`). A wrong password is
//! refused by the server. Also: a plugin running longer than the ack wait keeps its request
//! (in-progress acks), so it runs once.

use std::time::Duration;

use super::common::{test_root, wait_for, Daemon, DEADLINE};
use super::harness::{lines_of, remote_status, wait_serving, Ctl};
use super::hosts::{fire_all, nats_table, sender_from, set_service};
use triggerd_nats::testing::Nats;
use triggerd_nats::ServiceConfig;

/// A worker serving `central` into `{dir}/central.log` with `extra` in its `[broker]`;
/// `prepare` writes its credential files before it starts.
fn host(nats: &Nats, extra: &str, prepare: impl FnOnce(&Daemon)) -> Daemon {
    let mut daemon = Daemon::create(&format!(
        "{}\n[[service]]\nname = \"central\"\nfile = \"{{dir}}/central.log\"\n",
        nats_table(nats, extra)
    ));
    prepare(&daemon);
    daemon.launch();
    wait_serving(&mut daemon, "central");
    daemon
}

/// `triggerctl send` with the worker's config (its credentials) gets the echo.
fn answers_with_its_config(worker: &Daemon) {
    let config = worker.config.display().to_string();
    let args = [
        "send", "--config", &config, "--plugin", "echo", "central", "hi",
    ];
    let mut echo = Ctl::spawn(&args);
    assert_eq!(echo.line(), "hi");
    assert_eq!(echo.exit_code(), Some(0));
}

/// `triggerctl send --broker` without credentials gets no answer.
fn refused_without_credentials(nats: &Nats) {
    let endpoint = nats.endpoint();
    let args = [
        "send",
        "--broker",
        &endpoint,
        "--timeout",
        "2s",
        "central",
        "x",
    ];
    assert_ne!(Ctl::spawn(&args).exit_code(), Some(0));
}

#[test]
fn user_and_password_come_from_the_token_file_and_a_wrong_one_is_refused() {
    let nats = Nats::single_with(
        &test_root(),
        "authorization { user: log-host, password: s3cret-word }",
    );
    let table = "identity = \"log-host\"\ntoken = \"{dir}/password\"";
    let password = |d: &Daemon| std::fs::write(d.path("password"), "s3cret-word\n").expect("pw");
    let worker = host(&nats, table, password);
    let ship = sender_from(
        Daemon::create(&format!(
            "{}\n[[timer]]\nname = \"ship\"\ncron = \"0 0 1 1 *\"\nsend = \"central\"\n",
            nats_table(&nats, table)
        )),
        password,
    );
    fire_all(&ship, ["authenticated".to_string()]);
    let log = worker.path("central.log");
    wait_for("the event", DEADLINE, || {
        (!lines_of(&log).is_empty()).then_some(())
    });
    assert_eq!(lines_of(&log), ["authenticated"]);

    let wrong = worker.path("wrong");
    std::fs::write(&wrong, "guess\n").expect("wrong");
    let endpoint = nats.endpoint();
    let wrong = wrong.display().to_string();
    let mut refused = Ctl::spawn(&[
        "send",
        "--broker",
        &endpoint,
        "--identity",
        "log-host",
        "--token",
        &wrong,
        "--timeout",
        "2s",
        "central",
        "forged",
    ]);
    assert_ne!(refused.exit_code(), Some(0));
    assert_eq!(lines_of(&log), ["authenticated"]);
}

#[test]
fn an_nkey_seed_file_authenticates() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    let nats = Nats::single_with(
        &test_root(),
        &format!(
            "authorization {{ users: [ {{ nkey: {} }} ] }}",
            user.public_key()
        ),
    );
    let worker = host(&nats, "nkey = \"{dir}/seed\"", |d| {
        std::fs::write(d.path("seed"), format!("{seed}\n")).expect("seed file")
    });
    answers_with_its_config(&worker);
    // Without the seed the server refuses the connection: nothing answers.
    refused_without_credentials(&nats);
}

#[test]
fn a_plugin_longer_than_the_ack_wait_keeps_its_request() {
    let nats = Nats::single(&test_root());
    set_service(
        &nats,
        "long",
        ServiceConfig {
            ack_wait: Duration::from_millis(1500),
            ..ServiceConfig::default()
        },
    );
    let mut hosts: Vec<Daemon> = (0..2)
        .map(|_| {
            let mut daemon = Daemon::start(&format!(
                "{}\n[[service]]\nname = \"long\"\nexec = [\"/bin/sh\", \"-c\", \"sleep 5; echo slept\"]\n",
                nats_table(&nats, "")
            ));
            wait_serving(&mut daemon, "long");
            daemon
        })
        .collect();
    let endpoint = nats.endpoint();
    let mut ctl = Ctl::spawn(&["send", "--broker", &endpoint, "long", "x"]);
    assert_eq!(ctl.line(), "slept");
    assert_eq!(ctl.exit_code(), Some(0));
    // A wrongful redelivery would come after one ack wait, long before the 5 s run ended,
    // and be counted as it starts.
    let served: u64 = hosts
        .iter_mut()
        .map(|h| remote_status(h).services[0].served)
        .sum();
    assert_eq!(
        served, 1,
        "the request ran again while the first run was going on"
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with openssl in `dir`.
fn certificates(dir: &std::path::Path) {
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl (scripts/deps installs it)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-days", "2", "-subj", "/CN=triggerd test CA"],
        &["-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    ]
    .concat());
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        "server.pem",
    ]);
}

#[test]
fn tls_with_a_ca_file_connects_and_an_unknown_ca_is_refused() {
    let certs = tempfile::Builder::new()
        .prefix("triggerd-certs")
        .tempdir_in(test_root())
        .expect("tempdir");
    certificates(certs.path());
    let dir = certs.path().display();
    let nats = Nats::single_with(
        &test_root(),
        &format!("tls {{ cert_file: \"{dir}/server.pem\", key_file: \"{dir}/server.key\" }}"),
    );
    let worker = host(&nats, &format!("tls_ca = \"{dir}/ca.pem\""), |_| {});
    answers_with_its_config(&worker);
    // Without the CA the server's certificate is not trusted: no connection, no answer.
    refused_without_credentials(&nats);
}
