//! Event sources and delivery through a real daemon: timers (`every`, 6-field cron, catch-up
//! after a simulated downtime in each mode, `once`/`max_fires` across a restart), retry with
//! back-off then dead letter, a slow rule beside a fast one, the lifecycle verbs of the real
//! `triggerctl` surviving reload and restart, the webhook source driven by curl, the syslog source fed by logger and nginx, and the rate
//! limit and bounded queue. Runs are recorded by a `stamp` script; "nothing more happened" is
//! read from the daemon's counters once its schedule has visibly moved on, never from sleeps.

mod common;

#[path = "sources/delivery.rs"]
mod delivery;
#[path = "sources/lifecycle.rs"]
mod lifecycle;
#[path = "sources/stamp.rs"]
mod stamp;
#[path = "sources/syslog.rs"]
mod syslog;
#[path = "sources/timers.rs"]
mod timers;
#[path = "sources/webhook.rs"]
mod webhook;
