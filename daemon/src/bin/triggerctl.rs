//! `triggerctl [--socket PATH] VERB`: talks to a running triggerd over its control socket
//! (status, list, show, pause, resume, disable, enable, fire); `publish` talks to a
//! shared-memory channel, `send` to the broker and `service` to NATS JetStream. Exit codes: 0 ok, 1 the daemon could not
//! be reached or refused, 2 usage; `send` exits with the remote exit code (124: no answer).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use triggerd::control::{self, Reply, Request, Status};
use triggerd::dispatch::RuleStatus;
use triggerd::remote::catalog::SyncedTrigger;
use triggerd::remote::send::SendRequest;
use triggerd::sources::provider::ProviderStatus;

#[derive(Parser)]
#[command(name = "triggerctl", version, about = "Control a running triggerd")]
struct Cli {
    /// The daemon's control socket.
    #[arg(long, default_value = "/run/triggerd/control.sock")]
    socket: PathBuf,
    /// Machine-readable output, on every verb: one JSON document, or one JSON object per
    /// line for the verbs that stream (`events`, `send`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// The state of the sources and the rules' counters: every rule up to 100 of them, else
    /// counts by kind and state with the most active and the failing rules (--all: every
    /// one). --json prints the whole status, every rule included, filtered as asked.
    Status {
        /// Every selected rule, however many.
        #[arg(long)]
        all: bool,
        /// Only rules whose name matches this glob.
        #[arg(long, value_name = "GLOB")]
        rule: Option<String>,
        /// Only rules of this kind (watch, trigger, channel, timer, webhook, syslog, source).
        #[arg(long)]
        kind: Option<String>,
        /// Only rules in this state (active, paused, disabled, waiting, failed).
        #[arg(long)]
        state: Option<String>,
    },
    /// Event-source providers: state, restarts, rules, fires, refused lines.
    Providers,
    /// Rules with their state and next fire time.
    List,
    /// One rule in full.
    Show { rule: String },
    /// Stop acting on the rule's events (kept across reload and restart).
    Pause { rule: String },
    /// Act on the rule's events again.
    Resume { rule: String },
    /// Like pause, with a reason shown by status.
    Disable {
        rule: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Undo disable.
    Enable { rule: String },
    /// Run the rule now (for testing), with DATA (or stdin when DATA is `-`) as the payload.
    Fire { rule: String, data: Option<String> },
    /// Follow events and runs live (rule, subject, outcome, duration) until interrupted:
    /// the way to see what a trigger does without editing the config. A reader too slow
    /// for the daemon is told how many records it missed; the daemon never waits for it.
    /// With --json, one object per line (`type`: event, run or dropped).
    Events {
        /// Only this rule's events and runs.
        #[arg(long)]
        rule: Option<String>,
        /// Exit after this many records.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Replace the daemon's process with the binary on disk, same pid, keeping the trigger
    /// mount (writers holding a trigger file open go on writing); returns once the new
    /// image answers.
    Reexec {
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Publish DATA (or stdin when DATA is `-` or absent) to a shared-memory channel, as one
    /// message, or one message per line with --lines. Talks to the channel, not the socket.
    Publish {
        channel: String,
        data: Option<String>,
        #[arg(long)]
        lines: bool,
        /// How long to wait when the channel is full.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Send DATA (or stdin when DATA is `-` or absent) to SERVICE through the broker; print
    /// its output lines as they arrive and exit with its exit code. Talks to the broker.
    Send {
        service: String,
        data: Option<String>,
        /// The plugin to run (the service's default when absent).
        #[arg(long)]
        plugin: Option<String>,
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// The config whose `[broker]` says where and as whom to connect.
        #[arg(long, default_value = "/etc/triggerd.conf")]
        config: PathBuf,
        /// Connect to this endpoint instead (with --server-key and --secret-key for CURVE, or
        /// --identity and --token for PLAIN, if it needs them).
        #[arg(long)]
        broker: Option<String>,
        #[arg(long, requires = "token", conflicts_with = "server_key")]
        identity: Option<String>,
        /// A file holding the token.
        #[arg(long, requires = "identity")]
        token: Option<PathBuf>,
        /// The broker's CURVE public key (Z85).
        #[arg(long, requires = "secret_key")]
        server_key: Option<String>,
        /// This host's CURVE secret key file (`triggerd keygen`).
        #[arg(long, requires = "server_key")]
        secret_key: Option<PathBuf>,
    },
    /// Show or change a service's settings on NATS JetStream (kept in its stream, created
    /// when missing); settings not given keep their values. Talks to the NATS servers.
    Service {
        service: String,
        #[arg(long, value_parser = ["roundrobin", "serial", "mirror"])]
        algorithm: Option<String>,
        /// Copies of the stream in the cluster.
        #[arg(long)]
        replicas: Option<usize>,
        /// Deliveries before a request goes to the dead-letter subject.
        #[arg(long)]
        max_deliver: Option<u32>,
        /// Silence after which a held request goes to another worker.
        #[arg(long, value_parser = humantime::parse_duration)]
        ack_wait: Option<std::time::Duration>,
        /// The plugin's time limit for this service (`0s`: none; a request's shorter one wins).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// The config whose `[broker]` says where and as whom to connect.
        #[arg(long, default_value = "/etc/triggerd.conf")]
        config: PathBuf,
        /// Connect to these servers instead (`nats://HOST:PORT,...`).
        #[arg(long)]
        broker: Option<String>,
    },
}

fn main() -> ExitCode {
    if let Some(code) = triggerd_cli::generate::answer(<Cli as clap::CommandFactory>::command()) {
        return code;
    }
    let cli = Cli::parse();
    if let Verb::Publish {
        channel,
        data,
        lines,
        timeout,
    } = &cli.verb
    {
        return publish(channel, data.as_deref(), *lines, *timeout, cli.json);
    }
    if let Verb::Send {
        service,
        data,
        plugin,
        timeout,
        config,
        broker,
        identity,
        token,
        server_key,
        secret_key,
    } = cli.verb
    {
        let Some(payload) = read_data(data.as_deref()) else {
            return ExitCode::from(1);
        };
        return ExitCode::from(triggerd::remote::send::send(&SendRequest {
            service,
            plugin,
            timeout,
            payload,
            config,
            broker,
            identity,
            token,
            server_key,
            secret_key,
            json: cli.json,
        }));
    }
    if let Verb::Service {
        service,
        algorithm,
        replicas,
        max_deliver,
        ack_wait,
        timeout,
        config,
        broker,
    } = cli.verb
    {
        let change = triggerd::remote::nats::ServiceChange {
            algorithm: algorithm
                .as_deref()
                .and_then(triggerd_nats::service::parse_algorithm),
            replicas,
            max_deliver,
            ack_wait,
            timeout,
        };
        return ExitCode::from(triggerd::remote::nats::service(
            &service, &change, &config, broker, cli.json,
        ));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("triggerctl: {e}");
            return ExitCode::from(1);
        }
    };
    if let Verb::Reexec { timeout } = &cli.verb {
        return runtime.block_on(control::reexec::run(&cli.socket, *timeout, cli.json));
    }
    if let Verb::Events { rule, count } = cli.verb {
        let width = triggerd_cli::terminal::width();
        let mut out = std::io::stdout().lock();
        let followed = control::events::follow(&cli.socket, rule, cli.json, count, width, &mut out);
        return match runtime.block_on(followed) {
            Ok(_) => ExitCode::SUCCESS,
            // The reader of our output went away (`| head`): not a failure.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("triggerctl: {}: {e}", cli.socket.display());
                ExitCode::from(1)
            }
        };
    }
    let providers_view = matches!(cli.verb, Verb::Providers);
    let json = cli.json;
    let request = match cli.verb {
        Verb::Status {
            all,
            rule,
            kind,
            state,
        } => {
            let filter = control::summary::RuleFilter {
                rule,
                kind,
                state,
                all: all || json,
            };
            Request::Summary { filter }
        }
        Verb::Providers => Request::Status,
        Verb::List => Request::List,
        Verb::Show { rule } => Request::Show { rule },
        Verb::Pause { rule } => Request::Pause { rule },
        Verb::Resume { rule } => Request::Resume { rule },
        Verb::Disable { rule, reason } => Request::Disable { rule, reason },
        Verb::Enable { rule } => Request::Enable { rule },
        Verb::Fire { rule, data } => {
            let data = match data.as_deref() {
                Some("-") => {
                    let mut text = String::new();
                    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    {
                        eprintln!("triggerctl: stdin: {e}");
                        return ExitCode::from(1);
                    }
                    Some(text)
                }
                _ => data,
            };
            Request::Fire { rule, data }
        }
        Verb::Publish { .. }
        | Verb::Send { .. }
        | Verb::Service { .. }
        | Verb::Reexec { .. }
        | Verb::Events { .. } => {
            unreachable!("handled above")
        }
    };
    let reply = match runtime.block_on(control::request(&cli.socket, &request)) {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!("triggerctl: {}: {e}", cli.socket.display());
            return ExitCode::from(1);
        }
    };
    if json {
        let value = match &reply {
            Reply::Status(s) if providers_view => serde_json::to_value(&s.providers),
            Reply::Status(s) => serde_json::to_value(s),
            // The status as before, with the selected rules.
            Reply::Summary(s) => {
                let (status, summary) = s.as_ref();
                let mut status = status.clone();
                status.rules = summary.rules.clone();
                serde_json::to_value(status)
            }
            Reply::Rules(r) => serde_json::to_value(r),
            other => serde_json::to_value(other),
        };
        match value.and_then(|v| serde_json::to_string_pretty(&v)) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("triggerctl: {e}");
                return ExitCode::from(1);
            }
        }
        return match reply {
            Reply::Error(_) => ExitCode::from(1),
            _ => ExitCode::SUCCESS,
        };
    }
    match reply {
        Reply::Status(status) if providers_view => {
            let rows: Vec<ProviderRow> = status.providers.into_iter().collect();
            print_table(&PROVIDER_COLUMNS, &rows);
        }
        Reply::Status(status) => print_status(&status),
        Reply::Summary(s) => {
            let (mut status, summary) = *s;
            if summary.rules.len() as u64 != summary.total {
                print_summary(&summary);
            }
            status.rules = summary.rules;
            print_status(&status);
        }
        Reply::Rules(rules) if matches!(request, Request::Show { .. }) => print_rule(&rules),
        Reply::Rules(rules) => print_list(&rules),
        Reply::Done(what) => println!("{what}"),
        Reply::Error(e) => {
            eprintln!("triggerctl: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// DATA, or stdin when DATA is `-` or absent.
fn read_data(data: Option<&str>) -> Option<Vec<u8>> {
    match data {
        Some(d) if d != "-" => Some(d.as_bytes().to_vec()),
        _ => {
            let mut bytes = Vec::new();
            match std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes) {
                Ok(_) => Some(bytes),
                Err(e) => {
                    eprintln!("triggerctl: stdin: {e}");
                    None
                }
            }
        }
    }
}

fn publish(
    channel: &str,
    data: Option<&str>,
    lines: bool,
    timeout: std::time::Duration,
    json: bool,
) -> ExitCode {
    let Some(payload) = read_data(data) else {
        return ExitCode::from(1);
    };
    let publisher = match triggerd_ipc::Publisher::connect(channel) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("triggerctl: {e}");
            return ExitCode::from(1);
        }
    };
    let messages: Vec<&[u8]> = if lines {
        payload
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect()
    } else {
        vec![&payload]
    };
    let total = messages.len();
    for message in messages {
        if let Err(e) = publisher.publish_timeout(message, timeout) {
            eprintln!("triggerctl: {channel}: {e}");
            return ExitCode::from(1);
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "channel": channel, "published": total })
        );
    }
    ExitCode::SUCCESS
}

fn print_list(rules: &[RuleStatus]) {
    print_table(&LIST_COLUMNS, rules);
}

fn print_rule(rules: &[RuleStatus]) {
    for r in rules {
        match serde_json::to_value(r) {
            Ok(serde_json::Value::Object(fields)) => {
                for (key, value) in fields {
                    let value = match value {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    println!("{key:<17} {value}");
                }
                println!("{:<17} {}", "next_fire_utc", next_fire(r));
            }
            _ => println!("{r:?}"),
        }
    }
}

/// RFC 3339 in UTC, or `-`.
fn next_fire(rule: &RuleStatus) -> String {
    rule.next_fire
        .and_then(|s| chrono::DateTime::from_timestamp(s as i64, ((s.fract()) * 1e9) as u32))
        .map_or_else(
            || "-".into(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

fn print_status(status: &Status) {
    println!(
        "triggerd pid {} config {} reloads {}",
        status.pid, status.config, status.reloads
    );
    if let Some(e) = &status.reload_error {
        println!("last reload refused (previous config running):\n{e}");
    }
    println!(
        "fds: {} open of {} allowed",
        status.fds.open, status.fds.limit
    );
    let w = &status.watch;
    println!(
        "fanotify: {} events, {} overflows, {} permission requests, {} watches refused",
        w.events, w.overflows, w.permission_requests, w.refused_marks
    );
    if w.inotify_watches > 0 || w.inotify_events > 0 || w.inotify_refused > 0 {
        println!(
            "inotify: {} watches, {} events, {} overflows, {} watches refused (fs.inotify.max_user_watches)",
            w.inotify_watches, w.inotify_events, w.inotify_overflows, w.inotify_refused
        );
    }
    for (path, why) in &w.failing_marks {
        println!("  not watched yet: {path}: {why}");
    }
    print!("{}", status.remote);
    for (name, c) in &status.channels {
        println!(
            "channel {name}: {} messages, {} bytes, {} full-ring waits, {} quarantines{}",
            c.messages,
            c.bytes,
            c.full_ring_waits,
            c.quarantines,
            c.quarantine
                .as_deref()
                .map(|q| format!(" ({q})"))
                .unwrap_or_default()
        );
    }
    for (addr, w) in &status.webhooks {
        println!(
            "webhook {addr}: {} connections, {} refused per peer, {} timed out, {} unauthorized",
            w.accepted, w.per_peer_refused, w.timed_out, w.unauthorized
        );
    }
    for (file, t) in &status.triggers {
        println!(
            "trigger {file}: {} writes, {} bytes, {} events, {} drops, {} bytes refused, {} opens refused, {} open",
            t.writes, t.bytes, t.events, t.drops, t.refused_bytes, t.refused_opens, t.open
        );
    }
    print_table(&STATUS_COLUMNS, &status.rules);
    if let Some(c) = &status.remote.catalog {
        println!(
            "trigger catalog at change {}: {} entries, {}, {} snapshots, {} updates, {} resyncs, {} refused, {} collisions (local wins)",
            c.seq,
            c.entries,
            if c.synced { "synced" } else { "not connected (cached tree)" },
            c.snapshots,
            c.updates,
            c.resyncs,
            c.refused,
            c.collisions
        );
        print_table(&SYNCED_COLUMNS, &c.triggers);
    }
}

fn print_summary(summary: &control::summary::Summary) {
    println!("rules: {} selected of {}", summary.selected, summary.total);
    for (kind, states) in &summary.counts {
        let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
        println!("  {kind}: {}", states.join(", "));
    }
    if summary.rules.len() as u64 != summary.selected {
        println!(
            "shown: the {} most active and the failing (--all for every one)",
            control::summary::TOP
        );
    }
}

/// A table column: its header and how a row fills it (one list, so they cannot drift apart).
type Column<T> = (&'static str, fn(&T) -> String);

/// A provider's row: its name and status.
type ProviderRow = (String, ProviderStatus);

const PROVIDER_COLUMNS: [Column<ProviderRow>; 9] = [
    ("PROVIDER", |(name, _)| name.to_string()),
    ("STATE", |(_, p)| p.state.clone()),
    ("PID", |(_, p)| {
        p.pid.map_or_else(|| "-".into(), |pid| pid.to_string())
    }),
    ("RESTARTS", |(_, p)| p.restarts.to_string()),
    ("RULES", |(_, p)| p.rules.to_string()),
    ("ACTIVE", |(_, p)| p.active.to_string()),
    ("FIRES", |(_, p)| p.fires.to_string()),
    ("REFUSED", |(_, p)| p.refused.to_string()),
    ("DUPLICATES", |(_, p)| p.duplicates.to_string()),
];

const SYNCED_COLUMNS: [Column<SyncedTrigger>; 7] = [
    ("SYNCED TRIGGER", |t| t.path.clone()),
    ("ORIGIN", |t| t.origin.clone()),
    ("SERVICE", |t| t.service.clone()),
    ("WRITES", |t| t.writes.to_string()),
    ("SENDS", |t| t.sends.to_string()),
    ("FAILURES", |t| t.failures.to_string()),
    ("LAST REPLY", |t| {
        t.last_reply
            .and_then(|s| chrono::DateTime::from_timestamp(s as i64, 0))
            .map_or_else(
                || "-".into(),
                |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            )
    }),
];

const STATUS_COLUMNS: [Column<RuleStatus>; 15] = [
    ("RULE", |r| r.name.clone()),
    ("KIND", |r| r.kind.clone()),
    ("SUBJECT", |r| r.subject.clone()),
    ("EVENTS", |r| r.events.clone()),
    ("BACKEND", |r| {
        r.backend.clone().unwrap_or_else(|| "-".into())
    }),
    ("STATE", |r| r.state.clone()),
    ("MATCHED", |r| r.matched.to_string()),
    ("FIRED", |r| r.fired.to_string()),
    ("FAILED", |r| r.failed.to_string()),
    ("DROPPED", |r| r.dropped.to_string()),
    ("REFUSED", |r| r.refused.to_string()),
    ("OVERFLOWED", |r| r.overflowed.to_string()),
    ("RUNNING", |r| r.running.to_string()),
    ("QUEUED", |r| r.queued.to_string()),
    ("NEXT FIRE", next_fire),
];

const LIST_COLUMNS: [Column<RuleStatus>; 5] = [
    ("RULE", |r| r.name.clone()),
    ("KIND", |r| r.kind.clone()),
    ("STATE", |r| r.state.clone()),
    ("NEXT FIRE", next_fire),
    ("SUBJECT", |r| r.subject.clone()),
];

fn print_table<T>(columns: &[Column<T>], rules: &[T]) {
    let header: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|r| columns.iter().map(|(_, cell)| cell(r)).collect())
        .collect();
    let chars = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| chars(&r[i]))
                .chain([chars(header[i])])
                .max()
                .unwrap_or(0)
        })
        .collect();
    // On a terminal, the widest columns give way (their cells cut with `…`) so rows fit.
    if let Some(width) = triggerd_cli::terminal::width() {
        let floors: Vec<usize> = header.iter().map(|h| chars(h)).collect();
        triggerd_cli::terminal::shrink(&mut widths, &floors, width);
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{:<w$}", triggerd_cli::terminal::fit(c, *w)))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}
