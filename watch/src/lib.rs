//! fanotify for triggerd: notification groups in FID mode (create/delete/move included) and
//! permission groups, their marks (diffed on every reload so unchanged marks are never
//! touched), the parser of the kernel's event and info records, handle to path resolution
//! with a directory cache, event kinds and their names (`FAN_*`, `IN_*`, short), overflow.
//!
//! Entry points: [`Watcher`] (notifications), [`PermissionGate`] (permission requests),
//! [`parse_events`] (event expressions from configs), [`parse_events_buffer`] (the pure parser).

mod error;
mod expr;
mod filter;
mod kinds;
mod marks;
mod permission;
mod record;
mod resolve;
mod sys;
mod watcher;

pub use error::{MarkError, WatchError};
pub use expr::parse_events;
pub use kinds::EventMask;
pub use marks::{MarkScope, MarkSpec};
pub use permission::{PermissionGate, PermissionRequest};
pub use record::{parse_events_buffer, EventRecords, FileId, ParseError, ParsedEvent};
pub use watcher::{WatchEvent, Watcher, READ_BUFFER_LEN};
