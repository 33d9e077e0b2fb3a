//! `[[timer]]` through a real daemon: `every` and 6-field cron fire repeatedly on whole
//! seconds and show their next fire; catch-up after a simulated downtime (a `timers.json`
//! saying the last fire was 55 minutes ago) in each mode; `once` and `max_fires` hold across
//! a restart on the same state directory.

use std::fs;

use crate::common::{wait_for, DEADLINE};
use crate::stamp::{self, ctl_ok, now_secs, runs, wait_runs};

#[test]
fn every_and_six_field_cron_fire_repeatedly_and_show_their_next_fire() {
    let mut daemon = stamp::start(
        "[[timer]]\nname = \"tick\"\nevery = \"1s\"\nexec = [\"{stamp}\", \"{out}/tick\"]\n\n\
         [[timer]]\nname = \"cron\"\ncron = \"* * * * * *\"\ntimezone = \"Europe/Paris\"\nexec = [\"{stamp}\", \"{out}/cron\"]\n",
    );
    let ticks = wait_runs(&daemon.out().join("tick"), 3);
    let crons = wait_runs(&daemon.out().join("cron"), 2);
    for run in ticks.iter().chain(&crons) {
        assert_eq!(run.source, "timer", "{run:?}");
        // Phase-locked to the epoch (every) and to whole seconds (cron): never drifting.
        assert!(
            run.time.ends_with(".000000000"),
            "scheduled time {run:?} is not a whole second"
        );
    }
    let mut scheduled: Vec<f64> = ticks.iter().map(stamp::Run::scheduled).collect();
    scheduled.sort_by(f64::total_cmp);
    scheduled.dedup();
    assert_eq!(
        scheduled.len(),
        ticks.len(),
        "a tick fired twice: {ticks:?}"
    );

    let status = daemon.status();
    for name in ["tick", "cron"] {
        let rule = status.rules.iter().find(|r| r.name == name).unwrap();
        let next = rule.next_fire.expect("a next fire time");
        assert_eq!(next.fract(), 0.0, "{rule:?}");
        assert!(next > scheduled[0], "{rule:?} after {scheduled:?}");
        assert_eq!(
            (rule.kind.as_str(), rule.state.as_str()),
            ("timer", "active")
        );
    }
    // `triggerctl list`: RULE KIND STATE NEXT-FIRE SUBJECT, the time in RFC 3339 UTC.
    let list = ctl_ok(&daemon, &["list"]);
    let row: Vec<&str> = list
        .lines()
        .find(|l| l.starts_with("tick "))
        .unwrap_or_else(|| panic!("no tick row in:\n{list}"))
        .split_whitespace()
        .collect();
    assert_eq!(&row[1..3], ["timer", "active"], "{list}");
    let shown = chrono::DateTime::parse_from_rfc3339(row[3])
        .unwrap_or_else(|e| panic!("next fire `{}`: {e}\n{list}", row[3]));
    assert!(
        (shown.timestamp() as f64 - now_secs()).abs() < 60.0,
        "{list}"
    );
}

/// A 10-minute timer anchored (`start`) at T0 = 55 minutes ago whose last fire was T0: while
/// the daemon was "down" it missed T0+10m … T0+50m (five fires); the next is T0+60m, five
/// minutes ahead, so the count cannot depend on how fast the daemon starts.
fn catch_up(mode: &str, extra: &str, expected_offsets_min: &[u64]) {
    let t0 = now_secs().floor() as i64 - 55 * 60;
    let start = chrono::DateTime::from_timestamp(t0, 0)
        .unwrap()
        .to_rfc3339();
    let mut daemon = stamp::create(&format!(
        "[[timer]]\nname = \"late\"\nevery = \"10m\"\nstart = \"{start}\"\ncatchup = \"{mode}\"\n{extra}exec = [\"{{stamp}}\", \"{{out}}\"]\n"
    ));
    fs::create_dir_all(daemon.state_dir()).unwrap();
    fs::write(
        daemon.state_dir().join("timers.json"),
        format!("{{\"late\": {{\"last\": {t0}.0, \"fires\": 7}}}}"),
    )
    .unwrap();
    daemon.launch();

    // The next fire moves to T0+60m once the last caught-up fire was handed over; then only
    // the runs are left to finish.
    let next = (t0 + 3600) as f64;
    let n = expected_offsets_min.len() as u64;
    let rule = wait_for("the catch-up to be done", DEADLINE, || {
        let r = daemon.rule("late");
        (r.next_fire == Some(next) && r.matched >= n && r.running == 0 && r.queued == 0)
            .then_some(r)
    });
    assert_eq!((rule.matched, rule.fired), (n, n), "{mode}: {rule:?}");
    let mut scheduled: Vec<i64> = runs(&daemon.out())
        .iter()
        .map(|r| r.scheduled() as i64)
        .collect();
    scheduled.sort_unstable();
    let expected: Vec<i64> = expected_offsets_min
        .iter()
        .map(|m| t0 + *m as i64 * 60)
        .collect();
    assert_eq!(
        scheduled, expected,
        "{mode}: scheduled instants of the runs"
    );

    let saved: serde_json::Value =
        serde_json::from_slice(&fs::read(daemon.state_dir().join("timers.json")).unwrap()).unwrap();
    assert_eq!(saved["late"]["fires"], 7 + n, "{saved}");
    let last = expected.last().copied().unwrap_or(t0) as f64;
    assert_eq!(saved["late"]["last"].as_f64(), Some(last), "{saved}");
}

#[test]
fn catch_up_skip_runs_nothing_missed() {
    catch_up("skip", "", &[]);
}

#[test]
fn catch_up_once_runs_the_latest_missed_fire_once() {
    catch_up("once", "", &[50]);
}

#[test]
fn catch_up_all_runs_every_missed_fire() {
    catch_up("all", "", &[10, 20, 30, 40, 50]);
}

#[test]
fn catch_up_all_stays_within_its_window() {
    // 26 minutes back from T0+55m reaches T0+29m: only T0+30m, 40m and 50m are caught up.
    catch_up("all", "catchup_window = \"26m\"\n", &[30, 40, 50]);
}

#[test]
fn catch_up_all_through_a_blocking_queue_loses_nothing() {
    // One run at a time, one queued, and a full queue blocks: the caught-up fires wait for
    // room instead of being dropped.
    catch_up(
        "all",
        "max_running = 1\nqueue = 1\nwhen_full = \"block\"\n",
        &[10, 20, 30, 40, 50],
    );
}

#[test]
fn once_and_max_fires_hold_across_a_restart() {
    let rules = "[[timer]]\nname = \"one\"\nevery = \"1s\"\nonce = true\ncatchup = \"all\"\nexec = [\"{stamp}\", \"{out}/one\"]\n\n\
                 [[timer]]\nname = \"three\"\nevery = \"1s\"\nmax_fires = 3\ncatchup = \"all\"\nexec = [\"{stamp}\", \"{out}/three\"]\n\n\
                 [[timer]]\nname = \"beat\"\nevery = \"1s\"\nexec = [\"{stamp}\", \"{out}/beat\"]\n";
    let mut daemon = stamp::start(rules);
    wait_for("once and max_fires to be used up", DEADLINE, || {
        let (one, three) = (daemon.rule("one"), daemon.rule("three"));
        (one.fired == 1 && three.fired == 3 && one.next_fire.is_none() && three.next_fire.is_none())
            .then_some(())
    });
    let saved: serde_json::Value =
        serde_json::from_slice(&fs::read(daemon.state_dir().join("timers.json")).unwrap()).unwrap();
    assert_eq!(
        (&saved["one"]["fires"], &saved["three"]["fires"]),
        (&1.into(), &3.into())
    );

    daemon.restart();
    // Armed before the control socket answers: nothing is scheduled for the used-up timers.
    for name in ["one", "three"] {
        let r = daemon.rule(name);
        assert_eq!((r.next_fire, r.matched), (None, 0), "{r:?}");
    }
    // Let the schedule visibly run on the new daemon: two beats, and still nothing else.
    wait_for("two beats after the restart", DEADLINE, || {
        (daemon.rule("beat").fired >= 2).then_some(())
    });
    for name in ["one", "three"] {
        let r = daemon.rule(name);
        assert_eq!((r.matched, r.fired), (0, 0), "{r:?}");
    }
    assert_eq!(runs(&daemon.out().join("one")).len(), 1);
    assert_eq!(runs(&daemon.out().join("three")).len(), 3);
}
