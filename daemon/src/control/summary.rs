//! What `triggerctl status` asks for at scale: the rules a filter selects (a name glob, a kind,
//! a state), summed up as counts by kind and state plus the most active and the failing
//! rules, or listed in full when asked. Built from a snapshot of the rule set, so answering
//! never holds the dispatcher while it counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dispatch::RuleStatus;

/// Rules shown as the most active, and at most as many failing ones.
pub const TOP: usize = 10;
/// Up to this many rules in the daemon, every selected rule is shown.
pub const ALL_UP_TO: usize = 100;

/// Which rules a status request is about; every field that is set must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleFilter {
    /// A glob on the rule's name (`web-*`).
    #[serde(default)]
    pub rule: Option<String>,
    /// The rule's kind (`watch`, `trigger`, `timer`, ...).
    #[serde(default)]
    pub kind: Option<String>,
    /// The first word of its state (`active`, `paused`, `disabled`, `waiting`, `failed`).
    #[serde(default)]
    pub state: Option<String>,
    /// Every selected rule, not only the most active and the failing.
    #[serde(default)]
    pub all: bool,
}

/// The selected rules in numbers, and the ones worth showing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Rules in the daemon, and how many the filter selected.
    pub total: u64,
    pub selected: u64,
    /// Selected rules by kind, then by the first word of their state.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// All selected rules (`all`, or at most `ALL_UP_TO` rules in all), else the `TOP` most
    /// active then up to `TOP` failing ones.
    pub rules: Vec<RuleStatus>,
}

#[derive(Debug, thiserror::Error)]
#[error("bad rule glob {glob:?}: {source}")]
pub struct FilterError {
    glob: String,
    source: globset::Error,
}

/// The first word of a state (`waiting: ENOENT ...` → `waiting`).
fn state_word(state: &str) -> &str {
    state.split([':', ' ']).next().unwrap_or(state)
}

/// Sums up `rules` as `filter` asks.
pub fn summarize(
    rules: impl ExactSizeIterator<Item = RuleStatus>,
    filter: &RuleFilter,
) -> Result<Summary, FilterError> {
    let all = filter.all || rules.len() <= ALL_UP_TO;
    let glob = filter
        .rule
        .as_deref()
        .map(|g| {
            globset::Glob::new(g)
                .map(|g| g.compile_matcher())
                .map_err(|source| FilterError {
                    glob: g.to_string(),
                    source,
                })
        })
        .transpose()?;
    let mut summary = Summary::default();
    let mut shown = Vec::new();
    for rule in rules {
        summary.total += 1;
        let state = state_word(&rule.state);
        let selected = glob.as_ref().is_none_or(|g| g.is_match(&rule.name))
            && filter.kind.as_ref().is_none_or(|k| *k == rule.kind)
            && filter.state.as_ref().is_none_or(|s| s == state);
        if !selected {
            continue;
        }
        summary.selected += 1;
        *summary
            .counts
            .entry(rule.kind.clone())
            .or_default()
            .entry(state.to_string())
            .or_default() += 1;
        shown.push(rule);
        if !all && shown.len() > 4 * TOP {
            keep_notable(&mut shown);
        }
    }
    if !all {
        keep_notable(&mut shown);
    }
    summary.rules = shown;
    Ok(summary)
}

fn failing(rule: &RuleStatus) -> bool {
    rule.failed > 0 || matches!(state_word(&rule.state), "failed" | "waiting")
}

/// Keeps the `TOP` most active rules (by fired, then matched) and up to `TOP` failing ones
/// (most failures first), in that order; bounded memory whatever the number of rules.
fn keep_notable(rules: &mut Vec<RuleStatus>) {
    rules.sort_by_key(|r| std::cmp::Reverse((r.fired, r.matched)));
    let (active, mut rest): (Vec<_>, Vec<_>) =
        rules.drain(..).enumerate().partition(|(i, _)| *i < TOP);
    rest.retain(|(_, r)| failing(r));
    rest.sort_by_key(|(_, r)| std::cmp::Reverse(r.failed));
    rest.truncate(TOP);
    rules.extend(active.into_iter().chain(rest).map(|(_, r)| r));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, kind: &str, state: &str, fired: u64, failed: u64) -> RuleStatus {
        RuleStatus {
            name: name.into(),
            kind: kind.into(),
            subject: String::new(),
            events: String::new(),
            state: state.into(),
            matched: fired,
            fired,
            failed,
            dropped: 0,
            overflowed: 0,
            loops_suppressed: 0,
            skipped: 0,
            retried: 0,
            dead_lettered: 0,
            coalesced: 0,
            batch_cuts: 0,
            rescanned: 0,
            refused: 0,
            refused_bytes: 0,
            running: 0,
            queued: 0,
            queued_bytes: 0,
            next_fire: None,
            backend: None,
        }
    }

    fn many() -> Vec<RuleStatus> {
        let mut rules: Vec<RuleStatus> = (0..1_000)
            .map(|i| rule(&format!("w{i}"), "watch", "active", i, 0))
            .collect();
        rules.push(rule(
            "gone",
            "watch",
            "waiting: ENOENT; next try in 2s",
            0,
            0,
        ));
        rules.push(rule("t0", "trigger", "paused", 0, 3));
        rules
    }

    #[test]
    fn a_summary_counts_every_rule_and_shows_the_most_active_and_the_failing() {
        let s = summarize(many().into_iter(), &RuleFilter::default()).expect("summary");
        assert_eq!((s.total, s.selected), (1_002, 1_002));
        assert_eq!(s.counts["watch"]["active"], 1_000);
        assert_eq!(s.counts["watch"]["waiting"], 1);
        assert_eq!(s.counts["trigger"]["paused"], 1);
        let names: Vec<&str> = s.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names[0], "w999");
        assert_eq!(names[TOP - 1], "w990");
        assert_eq!(&names[TOP..], ["t0", "gone"]);
    }

    #[test]
    fn filters_select_by_name_glob_kind_and_state() {
        let by = |filter: RuleFilter| summarize(many().into_iter(), &filter).expect("summary");
        let glob = by(RuleFilter {
            rule: Some("w1?".into()),
            all: true,
            ..RuleFilter::default()
        });
        assert_eq!(glob.selected, 10);
        assert_eq!(glob.rules.len(), 10);
        let few = summarize(many().into_iter().take(ALL_UP_TO), &RuleFilter::default());
        assert_eq!(
            few.expect("summary").rules.len(),
            ALL_UP_TO,
            "few: all shown"
        );
        assert_eq!(
            by(RuleFilter {
                kind: Some("trigger".into()),
                ..RuleFilter::default()
            })
            .selected,
            1
        );
        let waiting = by(RuleFilter {
            state: Some("waiting".into()),
            ..RuleFilter::default()
        });
        assert_eq!(waiting.rules[0].name, "gone");
        assert!(summarize(
            many().into_iter(),
            &RuleFilter {
                rule: Some("[".into()),
                ..RuleFilter::default()
            }
        )
        .is_err());
    }
}
