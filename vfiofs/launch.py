"""The single-threaded launcher of `vfiofs run`:
``python -m vfiofs.launch MOUNTPOINT SCRATCH SOCKFD CMD ARGS...``.

It must be a fresh process: unshare(CLONE_NEWNS) in a threaded process moves only the
calling thread (kernel/fork.c ksys_unshare()). It sets up the namespace, installs the seccomp filter,
hands the listener to the daemon over SOCKFD, and execs CMD. Any failure before the exec
is reported on stderr with exit status 127, and nothing is left behind: the namespace dies
with the process.
"""

from __future__ import annotations

import os
import socket
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(
            "usage: python -m vfiofs.launch MOUNTPOINT SCRATCH SOCKFD CMD ARGS...",
            file=sys.stderr,
        )
        return 2
    mountpoint, scratch, sockfd, cmd = argv[0], argv[1], int(argv[2]), argv[3:]
    from .session.namespace import setup
    from .session.seccomp import install_filter

    try:
        # without root, a user namespace makes the mounts possible; VFIOFS_USERNS=1
        # takes that path as root too (the tests use it)
        userns = os.geteuid() != 0 or os.environ.get("VFIOFS_USERNS") == "1"
        setup(mountpoint, scratch, user_namespace=userns)
        listener = install_filter()
        with socket.socket(fileno=sockfd) as sock:
            socket.send_fds(sock, [b"L"], [listener])
        os.close(listener)
        os.execvp(cmd[0], cmd)
    except OSError as e:
        print(f"vfiofs run: {e}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
