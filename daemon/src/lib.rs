//! triggerd: config, dispatcher, actions, reload and control socket.
