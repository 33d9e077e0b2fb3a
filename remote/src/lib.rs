//! triggerd's wire to other hosts: the Majordomo codec ([`codec`]) and triggerd's compatible
//! extensions ([`ext`]), the broker behind `triggerd-broker` ([`broker`]), the worker library
//! with its plugins ([`worker`]), the client library ([`client`]), and the durable spool with
//! its forwarder ([`spool`], [`forwarder`]) used by `send` actions, and how every connection
//! is secured ([`security`]: CURVE keys, PLAIN tokens).

pub mod broker;
pub mod client;
pub mod codec;
pub mod ext;
pub mod forwarder;
pub mod replies;
pub mod security;
pub mod spool;
pub mod worker;
pub use client::{Client, ClientError, ClientOptions, Event, Reply};
pub use forwarder::{Forwarder, ForwarderError, ForwarderOptions, ForwarderStats};
pub use security::{Credentials, KeyPair, Mechanism, SecurityError};
pub use spool::{FullPolicy, Spool, SpoolError, SpoolOptions, SyncPolicy};
pub use worker::{Worker, WorkerError, WorkerOptions};
