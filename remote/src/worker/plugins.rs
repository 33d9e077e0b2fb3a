//! Built-in worker plugins and the [`Plugin`] trait they share: `echo` (the payload back),
//! `append` (the payload as one line at the end of a file: the central-log case), `command`
//! (argv with the payload on stdin; stdout/stderr lines streamed back as PARTIAL in real time,
//! exit code in FINAL; killed on timeout) and `forward` (the payload to another service, its
//! output relayed). External plugins are in `external`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::client::Client;
use crate::codec::Frame;

use super::process;

/// Exit status for a plugin that could not do its work (sysexits' EX_SOFTWARE).
pub const STATUS_PLUGIN_FAILED: i32 = 70;

/// What a plugin gets for one request.
#[derive(Debug, Clone)]
pub struct PluginRequest {
    /// Request id (0 when the client sent none).
    pub id: u128,
    /// Service the request was sent to.
    pub service: String,
    /// Payload (the body frames, concatenated).
    pub payload: Vec<u8>,
    /// Time left before the broker gives up on the request.
    pub timeout: Duration,
    /// Requests in the chain that led to this one (see [`crate::ext::MAX_HOPS`]).
    pub hops: u8,
}

/// The FINAL answer of a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Exit status, 0 for success.
    pub status: i32,
    /// Frames of the FINAL reply.
    pub body: Vec<Frame>,
}

impl Outcome {
    /// A failure with a message as body.
    pub fn failed(message: impl std::fmt::Display) -> Outcome {
        Outcome {
            status: STATUS_PLUGIN_FAILED,
            body: vec![message.to_string().into_bytes()],
        }
    }
}

/// A way to serve requests. `call` may block unless `inline` says otherwise; lines given to
/// `partial` reach the client as PARTIAL replies in order, before the FINAL.
pub trait Plugin: Send + Sync {
    /// Serves one request.
    fn call(&self, request: &PluginRequest, partial: &mut dyn FnMut(Vec<u8>)) -> Outcome;
    /// True when `call` is quick and never blocks, so the worker runs it on its socket
    /// thread instead of a thread of its own.
    fn inline(&self) -> bool {
        false
    }
}

/// Replies with the payload.
pub struct Echo;

impl Plugin for Echo {
    fn call(&self, request: &PluginRequest, _partial: &mut dyn FnMut(Vec<u8>)) -> Outcome {
        Outcome {
            status: 0,
            body: vec![request.payload.clone()],
        }
    }
    fn inline(&self) -> bool {
        true
    }
}

/// Appends each payload as one line to a file.
pub struct Append {
    file: Mutex<File>,
}

impl Append {
    /// Opens (creating) `path` for appending.
    pub fn open(path: PathBuf) -> std::io::Result<Append> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Append {
            file: Mutex::new(file),
        })
    }
}

impl Plugin for Append {
    fn call(&self, request: &PluginRequest, _partial: &mut dyn FnMut(Vec<u8>)) -> Outcome {
        let mut line = request.payload.clone();
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        let Ok(mut file) = self.file.lock() else {
            return Outcome::failed("append: poisoned lock");
        };
        // One write per line keeps concurrent appenders from interleaving inside a line.
        match file.write_all(&line) {
            Ok(()) => Outcome {
                status: 0,
                body: Vec::new(),
            },
            Err(e) => Outcome::failed(format!("append: {e}")),
        }
    }
    fn inline(&self) -> bool {
        true
    }
}

/// Runs a fixed argv per request.
pub struct Command {
    argv: Vec<String>,
    user: Option<(u32, u32)>,
}

impl Command {
    /// A command plugin for `argv` (program first), run as the worker's own user.
    pub fn new(argv: Vec<String>) -> Command {
        Command { argv, user: None }
    }

    /// Runs it as `user` (uid, gid) instead; the worker must be root.
    pub fn as_user(self, user: Option<(u32, u32)>) -> Command {
        Command { user, ..self }
    }
}

impl Plugin for Command {
    fn call(&self, request: &PluginRequest, partial: &mut dyn FnMut(Vec<u8>)) -> Outcome {
        let env = [
            ("TRIGGERD_SERVICE", request.service.clone()),
            ("TRIGGERD_REQUEST_ID", format!("{:032x}", request.id)),
            ("TRIGGERD_HOPS", (u16::from(request.hops) + 1).to_string()),
        ];
        match process::run(
            &self.argv,
            &env,
            self.user,
            &request.payload,
            request.timeout,
            &mut |line| partial(line),
        ) {
            Ok(status) => Outcome {
                status,
                body: Vec::new(),
            },
            Err(e) => Outcome::failed(format!("command: {e}")),
        }
    }
}

/// Sends each payload on to another service and relays its output.
pub struct Forward {
    client: Mutex<Client>,
    service: String,
    plugin: String,
}

impl Forward {
    /// Forwards to `service` (using `plugin` there) through `client`.
    pub fn new(client: Client, service: String, plugin: String) -> Forward {
        Forward {
            client: Mutex::new(client),
            service,
            plugin,
        }
    }
}

impl Plugin for Forward {
    fn call(&self, request: &PluginRequest, partial: &mut dyn FnMut(Vec<u8>)) -> Outcome {
        let Ok(mut client) = self.client.lock() else {
            return Outcome::failed("forward: poisoned lock");
        };
        let result = client.request(
            &self.service,
            &self.plugin,
            &request.payload,
            request.timeout,
            |body| {
                for frame in body {
                    partial(frame.clone());
                }
            },
        );
        match result {
            Ok(reply) => Outcome {
                status: reply.status,
                body: reply.body,
            },
            Err(e) => Outcome::failed(format!("forward to {}: {e}", self.service)),
        }
    }
}
