#!/usr/bin/env python3
"""A TCP proxy for tools/test-cli.sh whose failures the test controls.

    test-cli-proxy.py UPSTREAM_HOST UPSTREAM_PORT DIR

Listens on a free port of 127.0.0.1 and writes it to DIR/port.  On SIGUSR1
it reads DIR/mode, one word:
  up     forward (the initial mode)
  down   close every connection, and each new one at once: the store is
         unreachable
  stall  keep connections open but forward nothing: the store stopped
         answering
"""
import os
import signal
import socket
import sys
import threading

host, port, state_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
mode = "up"
conns = []
conns_lock = threading.Lock()


def close_all():
    with conns_lock:
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        conns.clear()


def on_usr1(signum, frame):
    global mode
    with open(os.path.join(state_dir, "mode")) as f:
        mode = f.read().strip()
    if mode == "down":
        close_all()


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if mode == "up" and dst is not None:
                dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


signal.signal(signal.SIGUSR1, on_usr1)
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(64)
tmp = os.path.join(state_dir, "port.tmp")
with open(tmp, "w") as f:
    f.write("%d\n" % ls.getsockname()[1])
os.rename(tmp, os.path.join(state_dir, "port"))

while True:
    c, _ = ls.accept()
    if mode == "down":
        c.close()
        continue
    u = None
    if mode == "up":
        try:
            u = socket.create_connection((host, port), timeout=5)
            u.settimeout(None)
        except OSError:
            c.close()
            continue
    with conns_lock:
        conns.append(c)
        if u is not None:
            conns.append(u)
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    if u is not None:
        threading.Thread(target=pump, args=(u, c), daemon=True).start()
