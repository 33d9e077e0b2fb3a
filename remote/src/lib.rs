//! triggerd's wire to other hosts: the Majordomo codec ([`codec`]) and triggerd's compatible
//! extensions ([`ext`]), the broker behind `triggerd-broker` ([`broker`]), the worker library
//! with its plugins ([`worker`]), the client library ([`client`]), and the durable spool with
//! its forwarder ([`spool`], [`forwarder`]) used by `send` actions.

pub mod broker;
pub mod client;
pub mod codec;
pub mod ext;
pub mod forwarder;
pub mod spool;
pub mod worker;
pub use client::{Client, ClientError, ClientOptions, Event, Reply};
pub use forwarder::{Forwarder, ForwarderError, ForwarderOptions, ForwarderStats};
pub use spool::{FullPolicy, Spool, SpoolError, SpoolOptions, SyncPolicy};
pub use worker::{Worker, WorkerError, WorkerOptions};
