"""The `dbt` a warm run worker gives its dbt steps (skewless/dbt_warm.py): standard library only,
run with `python -I -S`, so it starts in milliseconds.

    dbt_warm_client.py <socket> <real dbt> <dbt arguments>...

It hands its arguments, folder, environment and standard streams to the server, forwards SIGINT
and SIGTERM to the forked command, and exits with its status. When the server cannot be reached
it runs the real dbt in its place (same arguments, same streams).
"""

import contextlib
import json
import os
import signal
import socket
import struct
import sys

HEADER = struct.Struct("!I")
"""A request: its JSON payload's length (with the standard streams as file descriptors)."""
STATUS = struct.Struct("!iq")
"""A reply: (kind, value); kind 0 = the forked command's pid, 1 = its exit status."""


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the other end closed the connection")
        data += chunk
    return data


def main(argv: list[str]) -> int:
    path, real, args = argv[0], argv[1], argv[2:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        os.execv(real, [real, *args])  # no server: the real dbt, as if called directly
    payload = json.dumps({"argv": [real, *args], "cwd": os.getcwd(), "env": dict(os.environ)})
    socket.send_fds(sock, [HEADER.pack(len(payload.encode()))], [0, 1, 2])
    sock.sendall(payload.encode())
    kind, pid = STATUS.unpack(read_exactly(sock, STATUS.size))
    if kind != 0:
        return 1

    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        _, code = STATUS.unpack(read_exactly(sock, STATUS.size))
    except ConnectionError:
        return 1
    if code < 0:  # killed by a signal: die of the same one, as the process itself would have
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
