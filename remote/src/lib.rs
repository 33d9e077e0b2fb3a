//! The wire to the broker: Majordomo codec, broker, worker, client, plugins, spool.
