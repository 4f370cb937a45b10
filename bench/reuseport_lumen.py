"""`lumen` with one listening socket per worker (SO_REUSEPORT), applied from outside.

`lumen serve --workers N` shares one listening socket between its workers, and whichever worker
is awake accepts every connection waiting in the queue. A load balancer or a client with a
handful of keep-alive connections then often lands them all on one worker for as long as they
live (bench/scale.py shows the per-worker CPU shares). With SO_REUSEPORT every worker listens on
its own socket and the kernel spreads new connections over them by a hash of the addresses.

This wrapper measures that change without editing src/: the supervisor binds the port with
SO_REUSEPORT but never listens (it only reserves the port and learns it for port 0), and each
worker opens, binds and listens on its own SO_REUSEPORT socket before serving.

    bench/run.py --workers 2 --lumen ".venv/bin/python bench/reuseport_lumen.py" ...
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import lumen.cli.serve as serve_cli
from lumen.cli import main

_original_serve = serve_cli._serve


def _socket(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # IPPROTO_TCP: see _bind
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def _bind(host: str, port: int) -> socket.socket:
    sock = _socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, port))  # not listening: a bound socket takes no connections
    sock.set_inheritable(True)
    return sock


def _serve(settings: Any, config: Any, overrides: Any, sock: socket.socket, *, banner: bool) -> None:
    own = _socket(sock.family)
    own.bind(sock.getsockname())
    own.listen(2048)
    sock.close()  # this worker's copy only; the supervisor keeps the port reserved
    _original_serve(settings, config, overrides, own, banner=banner)


serve_cli._bind = _bind
serve_cli._serve = _serve

if __name__ == "__main__":
    sys.argv[0] = "lumen"
    sys.exit(main())
