//! The trigger filesystem: a FUSE tree of trigger files whose writes become messages.
