//! The validated model of event-source providers: `[[provider]]` (an executable that speaks
//! the provider protocol, `docs/providers.md`) and the `[[source]]` rules bound to one. The
//! provider's own `validate` answer is asked for at load time by `sources::provider`, since
//! only the provider knows its parameters.

use std::ffi::OsString;
use std::time::Duration;

/// `[[provider]]`: one provider process, shared by every `[[source]]` rule naming it.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    /// Program (absolute) and arguments; run directly, never through a shell.
    pub exec: Vec<OsString>,
    /// Who it runs as (uid, gid); none: root.
    pub user: Option<(u32, u32)>,
    /// The provider's own settings, handed over in `init`.
    pub config: serde_json::Value,
    /// How long `init` plus `validate` may take before the config is refused.
    pub validate_timeout: Duration,
    /// Longest line the provider may write; longer lines are discarded, counted.
    pub max_line: usize,
    /// The config line the table starts on (messages only).
    pub line: usize,
}

/// Equal when the provider would run the same: the line is for messages, not identity (as
/// for rules), so moving the table does not restart its process.
impl PartialEq for ProviderSettings {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.name,
            &self.exec,
            self.user,
            &self.config,
            self.validate_timeout,
            self.max_line,
        ) == (
            &other.name,
            &other.exec,
            other.user,
            &other.config,
            other.validate_timeout,
            other.max_line,
        )
    }
}

impl Eq for ProviderSettings {}

/// A `[[source]]` rule: fired by the named provider with these parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderTrigger {
    pub provider: String,
    pub params: serde_json::Value,
}

pub const DEFAULT_VALIDATE_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_LINE: usize = 1 << 20;
