//! CURVE end to end: a broker with its key pair, hosts whose key pairs come from `triggerd
//! keygen` and whose public keys are registered at the broker; a daemon's `send` reaches the
//! other host's worker, `triggerctl send` works with `--server-key`/`--secret-key`, and a host
//! whose key is not registered gets no answer.

use triggerd_remote::broker::Role;

use super::common::{wait_for, Daemon, DEADLINE};
use super::harness::{broker_table, central_log_host, fire, lines_of, Broker, Ctl};

fn curve_keys(broker: &Broker, secret: &std::path::Path) -> String {
    format!(
        "security = \"curve\"\nserver_key = \"{}\"\nsecret_key = \"{}\"",
        broker.server_key(),
        secret.display()
    )
}

#[test]
fn curve_daemons_use_their_own_keys_and_an_unregistered_key_is_refused() {
    let broker = Broker::start_curve();
    let worker_key = broker.host_key(Role::Worker, "log-host", true);
    let sender_key = broker.host_key(Role::Client, "web-01", true);
    let worker = central_log_host(&broker, &curve_keys(&broker, &worker_key));
    let sender = Daemon::start(&format!(
        "{}\n[[timer]]\nname = \"ship\"\ncron = \"0 0 1 1 *\"\nsend = \"central\"\n",
        broker_table(&broker, &curve_keys(&broker, &sender_key))
    ));
    fire(&sender, "ship", "encrypted");
    let log = worker.path("central.log");
    wait_for("the encrypted event", DEADLINE, || {
        (lines_of(&log) == ["encrypted"]).then_some(())
    });

    let server = broker.server_key();
    let send = |key: &std::path::Path, data: &str| {
        let key = key.display().to_string();
        let args = [
            "send",
            "--broker",
            broker.endpoint(),
            "--server-key",
            &server,
            "--secret-key",
            &key,
            "--timeout",
            "2s",
            "central",
            data,
        ];
        Ctl::spawn(&args).exit_code()
    };
    assert_eq!(send(&sender_key, "by hand"), Some(0));
    let stranger = broker.host_key(Role::Client, "stranger", false);
    assert_eq!(send(&stranger, "forged"), Some(124));
    assert_eq!(lines_of(&log), ["encrypted", "by hand"]);
}
