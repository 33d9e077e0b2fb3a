//! `[broker]` and `[[service]]` tables, and the rule keys that need them: a `send` needs a
//! `[broker]`, so does a `[[service]]`; each `[[service]]` configures the plugins its default
//! `plugin` needs (`exec` for `command`, `file` for `append`, `forward` for `forward`,
//! `plugin_dir` for an external one).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::super::raw::{RawBroker, RawRule, RawService, Source};
use super::super::remote::{
    Mechanism, DEFAULT_CAPACITY, DEFAULT_HEARTBEAT, DEFAULT_SEND_TIMEOUT, DEFAULT_SPOOL_MAX,
    DEFAULT_SYNC, DEFAULT_WINDOW,
};
use super::super::{BrokerSettings, FullPolicy, Problem, ServiceSettings, SyncPolicy};
use super::action::{command, duration, number};
use super::{absolute, Table};

/// Names the broker accepts for services (and the spool's record format: at most 255 bytes).
fn service_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 255
        || name.starts_with("mmi.")
        || name.contains(|c: char| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{name}` is not a service name (1-255 bytes, no blanks, not `mmi.*`)"
        ));
    }
    Ok(())
}

/// The plugins a worker has built in; any other name is an external plugin.
const BUILT_IN: &[&str] = &["echo", "command", "append", "forward"];

/// `[broker]` and every `[[service]]`; `state_dir` holds the spool unless `spool` says where.
pub(super) fn remote(
    source: &Source<'_>,
    broker: Option<&Spanned<RawBroker>>,
    services: &[Spanned<RawService>],
    state_dir: &Path,
    problems: &mut Vec<Problem>,
) -> (Option<BrokerSettings>, Vec<ServiceSettings>) {
    let settings = broker.and_then(|b| {
        let table = Table {
            source,
            span: b.span(),
            heading: "[broker]",
        };
        broker_settings(&table, b.get_ref(), state_dir, problems)
    });
    let mut names = HashSet::new();
    let mut built = Vec::new();
    for spanned in services {
        let table = Table {
            source,
            span: spanned.span(),
            heading: "[[service]]",
        };
        if broker.is_none() {
            problems.push(table.problem(
                "name",
                "a service needs a [broker] section (workers connect to it)",
            ));
        }
        if let Some(service) = service(&table, spanned.get_ref(), problems) {
            if !names.insert(service.name.clone()) {
                problems.push(table.problem(
                    "name",
                    format!("service `{}` is already served by this host", service.name),
                ));
            }
            built.push(service);
        }
    }
    (settings, built)
}

/// A rule's `send` and `plugin` keys: there must be a broker to send to, and names it accepts.
pub(super) fn check_send(
    table: &Table<'_>,
    raw: &RawRule,
    has_broker: bool,
    problems: &mut Vec<Problem>,
) {
    let Some(service) = &raw.send else { return };
    if !has_broker {
        problems.push(table.problem(
            "send",
            format!("sending to `{service}` needs a [broker] section"),
        ));
    }
    if service.len() > 255 {
        problems.push(table.problem("send", "a service name has at most 255 bytes"));
    }
    if let Some(plugin) = &raw.plugin {
        if !BUILT_IN.contains(&plugin.as_str())
            && !triggerd_remote::worker::valid_plugin_name(plugin)
        {
            problems.push(table.problem("plugin", format!("`{plugin}` is not a plugin name")));
        }
    }
}

fn broker_settings(
    table: &Table<'_>,
    raw: &RawBroker,
    state_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Option<BrokerSettings> {
    let before = problems.len();
    let endpoint = match raw.endpoint.as_deref() {
        None => {
            problems.push(table.problem("endpoint", "missing (e.g. \"tcp://broker:5555\")"));
            String::new()
        }
        Some(e) if triggerd_nats::is_nats(e) => {
            if triggerd_nats::servers(e).is_none() {
                problems.push(table.problem(
                    "endpoint",
                    format!("`{e}` is not a list of NATS servers (nats://HOST:PORT,...)"),
                ));
            }
            e.to_string()
        }
        Some(e) => {
            let ok = ["tcp://", "ipc://"]
                .iter()
                .any(|scheme| e.len() > scheme.len() && e.starts_with(scheme))
                && !e.contains(char::is_whitespace);
            if !ok {
                problems.push(table.problem(
                    "endpoint",
                    format!("`{e}` is not a ZeroMQ endpoint (tcp://HOST:PORT or ipc:///PATH)"),
                ));
            }
            e.to_string()
        }
    };
    if let Some(identity) = &raw.identity {
        let ok = !identity.is_empty()
            && identity.len() <= 128
            && identity
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
        if !ok {
            problems.push(table.problem(
                "identity",
                format!("`{identity}`: use 1-128 of [A-Za-z0-9-_.@]"),
            ));
        }
    }
    let token = raw.token.as_deref().and_then(|t| {
        absolute(t)
            .map_err(|m| {
                problems.push(table.problem("token", format!("{m} (the file holding the token)")))
            })
            .ok()
    });
    match (&raw.identity, &raw.token) {
        (Some(_), None) => problems.push(table.problem(
            "identity",
            "needs `token` (the path of a file holding the token)",
        )),
        (None, Some(_)) => problems.push(table.problem("token", "needs `identity`")),
        _ => {}
    }
    let (security, server_key, secret_key) = security(table, raw, state_dir, problems);
    let nats = triggerd_nats::is_nats(&endpoint);
    let mut nats_file = |key: &str, value: &Option<String>| {
        let value = value.as_deref()?;
        if !nats {
            problems.push(table.problem(key, "only for a nats:// or tls:// endpoint"));
            return None;
        }
        absolute(value)
            .map_err(|m| problems.push(table.problem(key, format!("{m} (a file)"))))
            .ok()
    };
    let creds = nats_file("creds", &raw.creds);
    let nkey = nats_file("nkey", &raw.nkey);
    let tls_ca = nats_file("tls_ca", &raw.tls_ca);
    if nats {
        // NATS has its own security (credentials files, TLS): CURVE keys belong to ZeroMQ.
        for (key, set) in [
            ("security", raw.security.is_some()),
            ("server_key", raw.server_key.is_some()),
            ("secret_key", raw.secret_key.is_some()),
        ] {
            if set {
                problems.push(table.problem(key, "only for a ZeroMQ endpoint (tcp:// or ipc://)"));
            }
        }
    }
    let spool = match raw.spool.as_deref() {
        Some(s) => absolute(s)
            .map_err(|m| problems.push(table.problem("spool", m)))
            .ok(),
        None => Some(state_dir.join("spool")),
    };
    let spool_max = number(
        table,
        "spool_max",
        raw.spool_max,
        65_536..=i64::MAX,
        problems,
    )
    .map_or(DEFAULT_SPOOL_MAX, |n| n as u64);
    let when_full = match raw.when_full.as_deref() {
        None | Some("reject") => FullPolicy::Reject,
        Some("drop_oldest") => FullPolicy::DropOldest,
        Some(_) => {
            problems.push(table.problem("when_full", "expected \"reject\" or \"drop_oldest\""));
            FullPolicy::Reject
        }
    };
    let sync = match raw.sync.as_deref() {
        None => SyncPolicy::Interval(DEFAULT_SYNC),
        Some("always") => SyncPolicy::Always,
        Some("never") => SyncPolicy::Never,
        Some(_) => match duration(table, "sync", &raw.sync, problems) {
            Some(d) if !d.is_zero() => SyncPolicy::Interval(d),
            Some(_) => SyncPolicy::Always,
            None => SyncPolicy::Interval(DEFAULT_SYNC),
        },
    };
    let positive = |key: &str, value: &Option<String>, problems: &mut Vec<Problem>| {
        let d = duration(table, key, value, problems)?;
        if d.is_zero() {
            problems.push(table.problem(key, "must be longer than zero"));
        }
        Some(d)
    };
    let heartbeat = positive("heartbeat", &raw.heartbeat, problems).unwrap_or(DEFAULT_HEARTBEAT);
    let timeout = positive("timeout", &raw.timeout, problems).unwrap_or(DEFAULT_SEND_TIMEOUT);
    let window = number(table, "window", raw.window, 1..=65_536, problems)
        .map_or(DEFAULT_WINDOW, |n| n as usize);
    let sync_triggers = raw.sync_triggers.unwrap_or(false);
    if sync_triggers && nats {
        problems.push(table.problem(
            "sync_triggers",
            "the trigger catalog is synced from a ZeroMQ broker (tcp:// or ipc://), not NATS",
        ));
    }
    (problems.len() == before).then(|| BrokerSettings {
        endpoint,
        security,
        server_key,
        secret_key,
        identity: raw.identity.clone(),
        token,
        spool: spool.unwrap_or_default(),
        spool_max,
        when_full,
        sync,
        heartbeat,
        timeout,
        window,
        sync_triggers,
        creds,
        nkey,
        tls_ca,
    })
}

/// `security`, `server_key` and `secret_key`. The default keeps a config from before CURVE
/// working as it did: `curve` when `server_key` is set, else `plain` with an `identity`, else
/// `none`.
fn security(
    table: &Table<'_>,
    raw: &RawBroker,
    state_dir: &Path,
    problems: &mut Vec<Problem>,
) -> (Mechanism, Option<String>, PathBuf) {
    let security = match raw.security.as_deref().map(str::parse::<Mechanism>) {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            problems.push(table.problem("security", e.to_string()));
            Mechanism::None
        }
        None if raw.server_key.is_some() => Mechanism::Curve,
        None if raw.identity.is_some() => Mechanism::Plain,
        None => Mechanism::None,
    };
    let server_key = raw.server_key.as_deref().and_then(|k| {
        triggerd_remote::security::decode_key(k)
            .map_err(|e| {
                let hint = "the broker's public key, as `triggerd-broker keygen` prints it";
                problems.push(table.problem("server_key", format!("{e} ({hint})")))
            })
            .ok()
            .map(|_| k.trim().to_string())
    });
    let secret_key = match raw.secret_key.as_deref() {
        Some(path) => absolute(path)
            .map_err(|m| problems.push(table.problem("secret_key", m)))
            .unwrap_or_default(),
        None => state_dir.join("secret.key"),
    };
    match security {
        Mechanism::Curve if raw.server_key.is_none() => problems.push(table.problem(
            "server_key",
            "needed with security = \"curve\" (the broker's public key)",
        )),
        Mechanism::Plain if raw.identity.is_none() => problems.push(table.problem(
            "identity",
            "needed with security = \"plain\" (with `token`)",
        )),
        _ => {}
    }
    (security, server_key, secret_key)
}

fn service(
    table: &Table<'_>,
    raw: &RawService,
    problems: &mut Vec<Problem>,
) -> Option<ServiceSettings> {
    let before = problems.len();
    let name = match &raw.name {
        None => {
            problems.push(table.problem("name", "missing (the service this host serves)"));
            String::new()
        }
        Some(n) => {
            if let Err(m) = service_name(n) {
                problems.push(table.problem("name", m));
            }
            n.clone()
        }
    };
    let exec = raw.exec.as_ref().and_then(|argv| {
        command(argv)
            .map_err(|m| problems.push(table.problem("exec", m)))
            .ok()
            .map(|_| argv.clone())
    });
    let file = raw.file.as_deref().and_then(|f| {
        absolute(f)
            .map_err(|m| problems.push(table.problem("file", m)))
            .ok()
    });
    if let Some(target) = &raw.forward {
        if let Err(m) = service_name(target) {
            problems.push(table.problem("forward", m));
        } else if raw.name.as_ref() == Some(target) {
            problems.push(table.problem("forward", "a service cannot forward to itself"));
        }
    }
    let plugin_dir = raw.plugin_dir.as_deref().and_then(|d| {
        absolute(d)
            .map_err(|m| problems.push(table.problem("plugin_dir", m)))
            .ok()
    });
    // Without `plugin`, the one plugin the table configures is the default.
    let plugin = raw.plugin.clone().unwrap_or_else(|| {
        match (&raw.exec, &raw.file, &raw.forward) {
            (Some(_), _, _) => "command",
            (None, Some(_), _) => "append",
            (None, None, Some(_)) => "forward",
            (None, None, None) => "echo",
        }
        .to_string()
    });
    let needs = |key: &str, present: bool, what: &str, problems: &mut Vec<Problem>| {
        if !present {
            problems
                .push(table.problem(key, format!("missing: the `{plugin}` plugin needs {what}")));
        }
    };
    match plugin.as_str() {
        "echo" => {}
        "command" => needs("exec", raw.exec.is_some(), "the command to run", problems),
        "append" => needs(
            "file",
            raw.file.is_some(),
            "the file to append to",
            problems,
        ),
        "forward" => needs(
            "forward",
            raw.forward.is_some(),
            "the service to forward to",
            problems,
        ),
        external if triggerd_remote::worker::valid_plugin_name(external) => needs(
            "plugin_dir",
            raw.plugin_dir.is_some(),
            "a `plugin_dir` (it is not built in: echo, command, append, forward)",
            problems,
        ),
        other => problems.push(table.problem("plugin", format!("`{other}` is not a plugin name"))),
    }
    let capacity = number(table, "capacity", raw.capacity, 1..=4096, problems)
        .map_or(DEFAULT_CAPACITY, |n| n as u32);
    let user = raw.user.as_deref().and_then(|name| {
        super::action::lookup_user(name)
            .map_err(|m| problems.push(table.problem("user", m)))
            .ok()
    });
    (problems.len() == before).then(|| ServiceSettings {
        name,
        plugin,
        exec,
        file,
        forward: raw.forward.clone(),
        plugin_dir,
        user,
        capacity,
    })
}
