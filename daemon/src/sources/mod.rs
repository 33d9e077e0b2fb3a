//! Event sources: each turns something the kernel tells us into `Event`s for the dispatcher.

pub mod fanotify;
