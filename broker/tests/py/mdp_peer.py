#!/usr/bin/python3
"""Plain Majordomo peers written from the RFC frame tables (7/MDP and 18/MDP), with pyzmq.

They know nothing about triggerd: they are the "unchanged MDP peer" the broker must serve.

  mdp_peer.py worker1 ENDPOINT SERVICE HEARTBEAT_MS   MDP/0.1 worker, replies "py1:" + body
  mdp_peer.py worker2 ENDPOINT SERVICE HEARTBEAT_MS   MDP/0.2 worker, 2 PARTIAL + FINAL
  mdp_peer.py hang1 ENDPOINT SERVICE HEARTBEAT_MS     MDP/0.1 worker that never replies
  mdp_peer.py client1 ENDPOINT SERVICE COUNT          MDP/0.1 client (REQ socket)
  mdp_peer.py client2 ENDPOINT SERVICE COUNT          MDP/0.2 client (DEALER socket)
  mdp_peer.py mmi ENDPOINT SERVICE                    asks mmi.service, prints the code

Optional environment: MDP_USER / MDP_TOKEN for PLAIN authentication; MDP_CURVE_SERVER (the
broker's public key), MDP_CURVE_PUBLIC and MDP_CURVE_SECRET (this peer's key pair), all Z85,
for CURVE (RFC 26).
Clients print one line per reply frame and exit 0 when every request got its answer.
"""
import os
import sys
import time

import zmq

W1, C1, W2, C2 = b"MDPW01", b"MDPC01", b"MDPW02", b"MDPC02"
TIMEOUT_MS = 10000


def socket(kind):
    ctx = zmq.Context.instance()
    s = ctx.socket(kind)
    s.linger = 0
    if os.environ.get("MDP_CURVE_SERVER"):
        s.curve_serverkey = os.environ["MDP_CURVE_SERVER"].encode()
        s.curve_publickey = os.environ["MDP_CURVE_PUBLIC"].encode()
        s.curve_secretkey = os.environ["MDP_CURVE_SECRET"].encode()
    if os.environ.get("MDP_USER"):
        s.plain_username = os.environ["MDP_USER"].encode()
        s.plain_password = os.environ["MDP_TOKEN"].encode()
    return s


def worker(version, endpoint, service, heartbeat_ms, hang=False):
    s = socket(zmq.DEALER)
    s.connect(endpoint)
    proto = W1 if version == 1 else W2
    head = [b"", proto] if version == 1 else [proto]
    hb = b"\x04" if version == 1 else b"\x05"
    disconnect = b"\x05" if version == 1 else b"\x06"
    s.send_multipart(head + [b"\x01", service])
    last_sent = time.monotonic()
    while True:
        if s.poll(heartbeat_ms // 2 or 1):
            frames = s.recv_multipart()
            if version == 1:
                assert frames[0] == b"", frames
                frames = frames[1:]
            assert frames[0] == proto, frames
            cmd = frames[1]
            if cmd == b"\x02":
                address, empty, body = frames[2], frames[3], frames[4:]
                assert empty == b""
                print("REQ", body[0].decode(errors="replace") if body else "", flush=True)
                if hang:
                    continue
                if version == 1:
                    s.send_multipart(head + [b"\x03", address, b"", b"py1:" + (body[0] if body else b"")])
                else:
                    for i in range(2):
                        s.send_multipart(head + [b"\x03", address, b"", b"part%d" % i])
                    s.send_multipart(head + [b"\x04", address, b"", b"py2:" + (body[0] if body else b"")])
                last_sent = time.monotonic()
            elif cmd == disconnect:
                print("DISCONNECT", flush=True)
                return 3
        if time.monotonic() - last_sent >= heartbeat_ms / 1000.0:
            s.send_multipart(head + [hb])
            last_sent = time.monotonic()


def client(version, endpoint, service, count):
    if version == 1:
        s = socket(zmq.REQ)  # REQ adds and strips the empty delimiter itself
    else:
        s = socket(zmq.DEALER)
    s.connect(endpoint)
    for n in range(count):
        body = b"hello%d" % n
        if version == 1:
            s.send_multipart([C1, service, body])
        else:
            s.send_multipart([C2, b"\x01", service, body])
        while True:
            if not s.poll(TIMEOUT_MS):
                print("TIMEOUT", flush=True)
                return 1
            frames = s.recv_multipart()
            if version == 1:
                assert frames[0] == C1 and frames[1] == service, frames
                for f in frames[2:]:
                    print("REPLY", f.decode(errors="replace"), flush=True)
                break
            assert frames[0] == C2 and frames[2] == service, frames
            kind = {b"\x02": "PARTIAL", b"\x03": "FINAL"}[frames[1]]
            for f in frames[3:]:
                print(kind, f.decode(errors="replace"), flush=True)
            if kind == "FINAL":
                print("FINAL", flush=True) if len(frames) == 3 else None
                break
    return 0


def mmi(endpoint, service):
    s = socket(zmq.REQ)
    s.connect(endpoint)
    s.send_multipart([C1, b"mmi.service", service])
    if not s.poll(TIMEOUT_MS):
        return 1
    frames = s.recv_multipart()
    print("MMI", frames[2].decode(), flush=True)
    return 0


def main(argv):
    mode = argv[1]
    if mode in ("worker1", "worker2"):
        return worker(int(mode[-1]), argv[2], argv[3].encode(), int(argv[4]))
    if mode == "hang1":
        return worker(1, argv[2], argv[3].encode(), int(argv[4]), hang=True)
    if mode in ("client1", "client2"):
        return client(int(mode[-1]), argv[2], argv[3].encode(), int(argv[4]))
    if mode == "mmi":
        return mmi(argv[2], argv[3].encode())
    print("unknown mode", mode, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
