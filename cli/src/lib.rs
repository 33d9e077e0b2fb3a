//! What every triggerd binary (`triggerd`, `triggerctl`, `triggerd-broker`) shares at its top:
//! how it logs (`logging`), and its man page and shell completions, generated from its own
//! clap definition so they cannot drift from it (`generate`), and the config file's man page
//! from the README's reference (`manual`), and fitting tables to the terminal (`terminal`).

#![warn(missing_docs, unreachable_pub)]

pub mod generate;
pub mod logging;
pub mod manual;
pub mod terminal;
