//! The local fast path: shared-memory rings, doorbell, publisher and consumer.
