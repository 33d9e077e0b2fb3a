//! Children start clean even when the daemon holds libzmq's epoll fds (a `[broker]` and a
//! `[[service]]` are configured): an exec action run as `nobody` and a worker's command
//! plugin see fds 0-2 only, none of the daemon's environment (a marker set on the daemon
//! process), and the action has nobody's own groups; the daemon then serves another rule.

use super::common::{wait_for, Daemon, DEADLINE};
use super::harness::{broker_table, fire, wait_serving, Broker, Ctl};

/// Set on the daemon process (inherited from the test); no child may see it.
const MARKER: &str = "TRIGGERD_TEST_DAEMON_ONLY";

/// Lists its fds (minus the one `ls` opens on the listing itself), its environment and
/// groups into `{out}/NAME.*`.
fn probe(name: &str) -> String {
    format!(
        "for f in /proc/self/fd/*; do readlink $f; done > {{out}}/{name}.fds; \
         env > {{out}}/{name}.env; id -G > {{out}}/{name}.groups; \
         echo done > {{out}}/{name}.done"
    )
}

fn read(daemon: &Daemon, file: &str) -> String {
    std::fs::read_to_string(daemon.out().join(file)).unwrap_or_default()
}

fn assert_clean(daemon: &Daemon, name: &str) {
    let fds = read(daemon, &format!("{name}.fds"));
    // The glob's own directory fd may show as a 4th entry pointing at /proc/…/fd.
    let extra: Vec<&str> = fds.lines().skip(3).filter(|l| !l.contains("/fd")).collect();
    assert!(extra.is_empty(), "{name} inherited fds:\n{fds}");
    assert!(
        !fds.contains("eventpoll"),
        "{name} sees an epoll fd:\n{fds}"
    );
    let env = read(daemon, &format!("{name}.env"));
    assert!(
        !env.contains(MARKER),
        "{name} sees the daemon's environment:\n{env}"
    );
    assert!(env.contains("PATH=/usr/local/sbin:"), "{name} env:\n{env}");
}

#[test]
fn actions_and_plugins_start_with_fds_0_to_2_and_a_clean_environment_under_a_broker() {
    // SAFETY (edition 2021: safe): the daemon inherits it; other tests ignore it.
    std::env::set_var(MARKER, "leaked");
    let broker = Broker::start(false);
    let action = probe("action");
    let plugin = probe("plugin");
    let mut daemon = Daemon::start(&format!(
        "{}\n[[service]]\nname = \"probe\"\nexec = [\"/bin/sh\", \"-c\", \"{plugin}\"]\n\
         [[watch]]\nname = \"probe\"\npath = \"{{dir}}\"\nevents = \"close_write\"\n\
         user = \"nobody\"\nexec = [\"/bin/sh\", \"-c\", \"{action}\"]\n\
         [[watch]]\nname = \"honest\"\npath = \"{{dir}}\"\nevents = \"close_write\"\n\
         exec = [\"/bin/sh\", \"-c\", \"echo served > {{out}}/honest\"]\n",
        broker_table(&broker, "")
    ));
    std::env::remove_var(MARKER);
    wait_serving(&mut daemon, "probe");
    let out = daemon.out();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod out");

    fire(&daemon, "probe", "x");
    wait_for("the action's probe", DEADLINE, || {
        out.join("action.done").exists().then_some(())
    });
    assert_clean(&daemon, "action");
    let groups = read(&daemon, "action.groups");
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd")
        .expect("nobody");
    let mut want: Vec<String> = nix::unistd::getgrouplist(c"nobody", nobody.gid)
        .expect("grouplist")
        .iter()
        .map(|g| g.to_string())
        .collect();
    want.dedup();
    let mut got: Vec<String> = groups.split_whitespace().map(str::to_owned).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "nobody's groups, not root's");

    let config = daemon.config.display().to_string();
    let mut send = Ctl::spawn(&["send", "--config", &config, "probe", "x"]);
    assert_eq!(send.exit_code(), Some(0));
    assert_clean(&daemon, "plugin");

    daemon.assert_alive();
    fire(&daemon, "honest", "y");
    wait_for("the second rule", DEADLINE, || {
        out.join("honest").exists().then_some(())
    });
    daemon.assert_alive();
}
