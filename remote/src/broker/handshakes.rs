//! Bounds on the broker's connections whose handshake is not done (ZMTP greeting, and with
//! `auth` the PLAIN exchange and its ZAP check): in total and per peer IP address. They are
//! enforced inside the patched libzmq (`third_party/zeromq-src`, options
//! `ZMQ_TRIGGERD_MAX_HANDSHAKES*`), which closes a connection past either bound as soon as it
//! accepts it and reports `ZMQ_EVENT_ACCEPT_FAILED` with `EUSERS` (total) or `EMLINK` (per
//! address) to the socket monitor; `ZMQ_HANDSHAKE_IVL` closes those that take too long. An
//! unauthenticated peer never reaches the engine: it holds a slot and an fd, nothing else.

use std::os::raw::{c_int, c_void};

/// `ZMQ_TRIGGERD_MAX_HANDSHAKES` in the patched `zmq.h`.
const MAX_HANDSHAKES: c_int = 1801;
/// `ZMQ_TRIGGERD_MAX_HANDSHAKES_PER_IP` in the patched `zmq.h`.
const MAX_HANDSHAKES_PER_IP: c_int = 1802;

fn set_int(socket: &mut zmq::Socket, option: c_int, value: c_int) -> Result<(), zmq::Error> {
    let raw = socket.as_mut_ptr();
    // SAFETY: `raw` is the live socket `socket` borrows mutably for the call; libzmq reads
    // exactly `size_of::<c_int>()` bytes from a pointer to a local that outlives the call.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            raw,
            option,
            (&value as *const c_int).cast::<c_void>(),
            std::mem::size_of::<c_int>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: zmq_errno only reads the calling thread's errno.
    Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
}

/// Bounds `socket`'s connections still in their handshake to `total`, and to `per_address`
/// from one IP address (0: no bound). Set before binding: listeners copy the options.
pub(crate) fn bound(
    socket: &mut zmq::Socket,
    total: i32,
    per_address: i32,
) -> Result<(), zmq::Error> {
    set_int(socket, MAX_HANDSHAKES, total)?;
    set_int(socket, MAX_HANDSHAKES_PER_IP, per_address)
}

/// Whether an `ACCEPT_FAILED` event value means the connection was refused by these bounds.
pub(crate) fn refused(value: i32) -> bool {
    value == libc::EUSERS || value == libc::EMLINK
}

/// Which bound an `ACCEPT_FAILED` value names.
pub(crate) fn reason(value: i32) -> &'static str {
    match value {
        libc::EMLINK => "per-address bound (`handshakes_per_address`)",
        _ => "total bound (`max_handshakes`)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patched_libzmq_knows_the_options() {
        let ctx = zmq::Context::new();
        let mut socket = ctx.socket(zmq::ROUTER).expect("socket");
        bound(&mut socket, 4, 2).expect("options accepted");
        assert_eq!(
            set_int(&mut socket, MAX_HANDSHAKES, -1),
            Err(zmq::Error::EINVAL)
        );
    }

    #[test]
    fn a_connection_past_the_total_is_closed_at_once() {
        let ctx = zmq::Context::new();
        let mut socket = ctx.socket(zmq::ROUTER).expect("socket");
        bound(&mut socket, 1, 0).expect("options");
        socket
            .monitor(
                "inproc://handshakes-test",
                zmq::SocketEvent::ACCEPT_FAILED as i32,
            )
            .expect("monitor");
        let monitor = ctx.socket(zmq::PAIR).expect("pair");
        monitor
            .connect("inproc://handshakes-test")
            .expect("connect");
        socket.bind("tcp://127.0.0.1:*").expect("bind");
        let endpoint = socket
            .get_last_endpoint()
            .expect("endpoint")
            .expect("utf-8");
        let address = endpoint.trim_start_matches("tcp://");
        // Two silent TCP peers: the first holds the one slot, the second is refused.
        let _first = std::net::TcpStream::connect(address).expect("first");
        let _second = std::net::TcpStream::connect(address).expect("second");
        assert!(
            monitor.poll(zmq::POLLIN, 20_000).expect("poll") > 0,
            "no event"
        );
        let frames = monitor.recv_multipart(0).expect("event");
        let value = i32::from_le_bytes(frames[0][2..6].try_into().expect("value"));
        assert!(refused(value), "value {value}");
        assert_eq!(reason(value), "total bound (`max_handshakes`)");
    }
}
