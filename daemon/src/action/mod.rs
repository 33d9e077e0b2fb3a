//! Actions: what a fired rule does. Today an exec'd command; each action reports how it ended
//! so the dispatcher can count it and answer permission requests.

mod exec;
mod stdin;
mod tokens;

pub use exec::{run_exec, ExecOutcome, Running};
pub use stdin::input as stdin_input;
pub use tokens::substitute;
