//! triggerd: a per-host daemon that turns file events into actions. This crate holds the
//! config (parse, validate), the dispatcher that matches events to rules, the actions, the
//! event sources, the control socket, and `run`, which the `triggerd` binary calls.

pub mod action;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dispatch;
pub mod event;
pub mod fds;
pub mod handover;
pub mod metrics;
pub mod remote;
pub mod schedule;
pub mod sources;
pub mod systemd;
pub mod throttle;

pub use daemon::{run, Command, DaemonError};
