//! fanotify: groups, marks, event and info-record parsing, handle to path resolution.
