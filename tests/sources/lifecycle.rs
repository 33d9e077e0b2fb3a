//! The lifecycle verbs of the real `triggerctl`: pause, resume, disable with a reason, enable,
//! fire with data; paused and disabled states kept across a reload that replaces the rule and
//! across a restart on the same state directory.

use std::fs;

use crate::common::{wait_for, Daemon, DEADLINE};
use crate::stamp::{self, ctl_ok, runs, triggerctl, wait_runs};

const RULES: &str = "[[timer]]\nname = \"tick\"\nevery = \"1s\"\nexec = [\"{stamp}\", \"{out}/tick\"]\n\n\
                     [[timer]]\nname = \"beat\"\nevery = \"1s\"\nexec = [\"{stamp}\", \"{out}/beat\"]\n";

/// Waits until both rules skipped `n` more ticks, and checks they ran none of them.
fn assert_held(daemon: &mut Daemon) {
    let (tick, beat) = (daemon.rule("tick"), daemon.rule("beat"));
    wait_for("two skipped ticks each", DEADLINE, || {
        let (t, b) = (daemon.rule("tick"), daemon.rule("beat"));
        (t.skipped >= tick.skipped + 2 && b.skipped >= beat.skipped + 2).then_some(())
    });
    assert_eq!(daemon.rule("tick").fired, tick.fired);
    assert_eq!(daemon.rule("beat").fired, beat.fired);
}

fn states(daemon: &mut Daemon) -> (String, String) {
    (daemon.rule("tick").state, daemon.rule("beat").state)
}

#[test]
fn pause_disable_and_fire_survive_reload_and_restart() {
    let mut daemon = stamp::start(RULES);
    wait_for("both timers to fire", DEADLINE, || {
        (daemon.rule("tick").fired >= 1 && daemon.rule("beat").fired >= 1).then_some(())
    });
    assert_eq!(ctl_ok(&daemon, &["pause", "tick"]).trim(), "paused");
    assert_eq!(
        ctl_ok(
            &daemon,
            &["disable", "beat", "--reason", "maintenance window"]
        )
        .trim(),
        "disabled"
    );
    let held = (
        "paused".to_string(),
        "disabled: maintenance window".to_string(),
    );
    assert_eq!(states(&mut daemon), held);
    assert_held(&mut daemon);

    // A reload that changes `tick` gives it a new runtime; its state is kept by name.
    daemon.write_config(&stamp::with_stamp(&RULES.replacen(
        "every = \"1s\"\n",
        "every = \"1s\"\ntimeout = \"30s\"\n",
        1,
    )));
    let status = daemon.reload();
    assert_eq!(status.reload_error, None);
    assert_eq!(states(&mut daemon), held);
    assert_held(&mut daemon);
    let saved = fs::read_to_string(daemon.state_dir().join("rules.json")).unwrap();
    assert!(saved.contains("maintenance window"), "{saved}");

    // `fire` runs a paused rule now, with DATA on stdin.
    let before = runs(&daemon.out().join("tick")).len();
    assert_eq!(
        ctl_ok(&daemon, &["fire", "tick", "hello from triggerctl"]).trim(),
        "fired"
    );
    let fired = wait_runs(&daemon.out().join("tick"), before + 1);
    let manual: Vec<_> = fired.iter().filter(|r| r.source == "manual").collect();
    assert_eq!(manual.len(), 1, "{fired:?}");
    assert_eq!(manual[0].body, b"hello from triggerctl");
    assert_eq!(manual[0].rule, "tick");

    daemon.restart();
    assert_eq!(states(&mut daemon), held);
    assert_held(&mut daemon);
    let list = ctl_ok(&daemon, &["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("beat ") && l.contains("disabled: maintenance window")),
        "{list}"
    );

    assert_eq!(ctl_ok(&daemon, &["resume", "tick"]).trim(), "resumed");
    assert_eq!(ctl_ok(&daemon, &["enable", "beat"]).trim(), "enabled");
    wait_for("both timers to fire again", DEADLINE, || {
        (daemon.rule("tick").fired >= 1 && daemon.rule("beat").fired >= 1).then_some(())
    });
    assert_eq!(states(&mut daemon), ("active".into(), "active".into()));
    let show = ctl_ok(&daemon, &["show", "tick"]);
    assert!(
        show.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["state", "active"]),
        "{show}"
    );
    // Back to all enabled: nothing left to remember.
    let saved = fs::read_to_string(daemon.state_dir().join("rules.json")).unwrap();
    assert_eq!(saved.trim(), "{}", "{saved}");

    let missing = triggerctl(&daemon, &["pause", "nope"]);
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("no rule named `nope`"),
        "{}",
        missing.stderr
    );
}

#[test]
fn run_at_start_fires_once_when_the_rule_starts() {
    // Timers whose first fire is far away: every run below comes from `run_at_start`.
    let rules = "[[timer]]\nname = \"boot\"\nevery = \"1h\"\nstart = \"2100-01-01T00:00:00Z\"\n\
                 run_at_start = true\nexec = [\"{stamp}\", \"{out}/boot\"]\n\n\
                 [[timer]]\nname = \"quiet\"\nevery = \"1h\"\nstart = \"2100-01-01T00:00:00Z\"\n\
                 exec = [\"{stamp}\", \"{out}/quiet\"]\n";
    let mut daemon = stamp::start(rules);
    let boot = daemon.path("out/boot");
    let first = wait_runs(&boot, 1);
    assert_eq!(
        (first[0].source.as_str(), first[0].rule.as_str()),
        ("start", "boot")
    );

    // An unchanged rule keeps running across a reload: it does not start again.
    assert_eq!(daemon.reload().reload_error, None);
    // A changed rule is a new rule: it starts, and runs once more.
    let changed = rules.replacen(
        "run_at_start = true\n",
        "run_at_start = true\ntimeout = \"9s\"\n",
        1,
    );
    daemon.write_config(&stamp::with_stamp(&changed));
    assert_eq!(daemon.reload().reload_error, None);
    wait_runs(&boot, 2);
    // Paused, a restarted rule does not run: its start is skipped like any other event.
    assert_eq!(ctl_ok(&daemon, &["pause", "boot"]).trim(), "paused");
    daemon.write_config(&stamp::with_stamp(rules));
    assert_eq!(daemon.reload().reload_error, None);
    wait_for("the paused start to be skipped", DEADLINE, || {
        (daemon.rule("boot").skipped >= 1).then_some(())
    });
    assert_eq!(runs(&boot).len(), 2, "{:?}", runs(&boot));
    assert!(runs(&daemon.path("out/quiet")).is_empty());
}

#[test]
fn a_reload_reads_a_new_drop_in() {
    let rules = "[[timer]]\nname = \"main\"\nevery = \"1h\"\nstart = \"2100-01-01T00:00:00Z\"\n\
                 exec = [\"{stamp}\", \"{out}/main\"]\n";
    let mut daemon = stamp::start(rules);
    let dropins = daemon.config.with_extension("d");
    fs::create_dir(&dropins).unwrap();
    let added = daemon.expand(&stamp::with_stamp(
        "[[timer]]\nname = \"added\"\nevery = \"1h\"\nstart = \"2100-01-01T00:00:00Z\"\n\
         run_at_start = true\nexec = [\"{stamp}\", \"{out}/added\"]\n",
    ));
    fs::write(dropins.join("10-added.conf"), added).unwrap();
    assert_eq!(daemon.reload().reload_error, None);
    let run = wait_runs(&daemon.path("out/added"), 1);
    assert_eq!(run[0].rule, "added");
    // A broken drop-in is refused like a broken main file: the running rules stay.
    fs::write(dropins.join("20-broken.conf"), "[[timer]\n").unwrap();
    let error = daemon.reload().reload_error.expect("refused");
    assert!(error.contains("20-broken.conf:1:"), "{error}");
    assert_eq!(daemon.rule("added").state, "active");
}
