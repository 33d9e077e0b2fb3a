//! `[[provider]]` tables (name, program, user, the provider's own `config`, bounds) and
//! `[[source]]` rules (which provider, and the `params` handed to it). Whether the params
//! make sense is the provider's to say; here only the shape is checked.

use std::collections::HashSet;

use toml::Spanned;

use super::super::provider::{DEFAULT_MAX_LINE, DEFAULT_VALIDATE_TIMEOUT};
use super::super::raw::{RawProvider, RawRule, Source};
use super::super::{Problem, ProviderSettings, ProviderTrigger, Rule, Trigger};
use super::action::{command, duration, lookup_user, number};
use super::Table;

pub(super) fn trigger(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<Trigger> {
    let Some(provider) = raw.provider.clone() else {
        problems.push(table.problem("provider", "missing (the name of a [[provider]] table)"));
        return None;
    };
    let params = raw.params.as_ref().map_or_else(
        || serde_json::Value::Object(Default::default()),
        |t| json(&toml::Value::Table(t.clone())),
    );
    Some(Trigger::Provider(ProviderTrigger { provider, params }))
}

/// Every `[[provider]]` table; names are unique and every `[[source]]` names one of them.
pub(super) fn providers(
    source: &Source<'_>,
    tables: &[Spanned<RawProvider>],
    rules: &[Rule],
    problems: &mut Vec<Problem>,
) -> Vec<ProviderSettings> {
    let mut providers = Vec::new();
    let mut names = HashSet::new();
    for spanned in tables {
        let table = Table {
            source,
            span: spanned.span(),
            heading: "[[provider]]",
        };
        let Some(p) = provider(&table, spanned.get_ref(), problems) else {
            continue;
        };
        if !names.insert(p.name.clone()) {
            problems
                .push(table.problem("name", format!("`{}` is used by another provider", p.name)));
            continue;
        }
        providers.push(p);
    }
    for rule in rules {
        if let Trigger::Provider(t) = &rule.def.trigger {
            if !names.contains(&t.provider) {
                problems.push(Problem::new(
                    rule.line,
                    format!(
                        "[[source]]: provider: no [[provider]] named `{}`",
                        t.provider
                    ),
                ));
            }
        }
    }
    providers
}

fn provider(
    table: &Table<'_>,
    raw: &RawProvider,
    problems: &mut Vec<Problem>,
) -> Option<ProviderSettings> {
    let before = problems.len();
    let name = match raw.name.as_deref() {
        Some(n) if valid_name(n) => n.to_string(),
        Some(n) => {
            problems.push(table.problem(
                "name",
                format!("`{n}`: use letters, digits, `-` and `_` (at most 64)"),
            ));
            String::new()
        }
        None => {
            problems.push(table.problem("name", "missing (e.g. \"interval\")"));
            String::new()
        }
    };
    let exec = match raw.exec.as_deref().map(command) {
        Some(Ok(argv)) => argv,
        Some(Err(m)) => {
            problems.push(table.problem("exec", m));
            Vec::new()
        }
        None => {
            problems.push(table.problem("exec", "missing (the provider's program and arguments)"));
            Vec::new()
        }
    };
    let user = raw.user.as_deref().and_then(|u| {
        lookup_user(u)
            .map_err(|m| problems.push(table.problem("user", m)))
            .ok()
    });
    let validate_timeout = duration(table, "validate_timeout", &raw.validate_timeout, problems)
        .unwrap_or(DEFAULT_VALIDATE_TIMEOUT);
    if validate_timeout.is_zero() || validate_timeout.as_secs() > 60 {
        problems.push(table.problem("validate_timeout", "expected a duration from 1ms to 60s"));
    }
    let max_line = number(table, "max_line", raw.max_line, 1024..=(64 << 20), problems)
        .map_or(DEFAULT_MAX_LINE, |n| n as usize);
    let config = raw.config.as_ref().map_or_else(
        || serde_json::Value::Object(Default::default()),
        |t| json(&toml::Value::Table(t.clone())),
    );
    (problems.len() == before).then(|| ProviderSettings {
        name,
        exec,
        user,
        config,
        validate_timeout,
        max_line,
        line: table.line(),
    })
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// TOML as the JSON the provider reads; dates and times become their RFC 3339 text.
fn json(value: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(json).collect()),
        toml::Value::Table(t) => J::Object(t.iter().map(|(k, v)| (k.clone(), json(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_values_become_the_json_a_provider_reads() {
        let table: toml::Table = toml::from_str(
            "every = \"1m\"\nn = 3\nok = true\nat = 1979-05-27T07:32:00Z\nl = [1.5]",
        )
        .expect("toml");
        let value = json(&toml::Value::Table(table));
        assert_eq!(
            value,
            serde_json::json!({"every": "1m", "n": 3, "ok": true, "at": "1979-05-27T07:32:00Z", "l": [1.5]})
        );
    }
}
