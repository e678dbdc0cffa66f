"""The single-threaded launcher of `vfiofs run`:
``python -m vfiofs.launch MOUNTPOINT SCRATCH SOCKFD CMD ARGS...``.

It must be a fresh process: unshare(CLONE_NEWNS) in a threaded process moves only the
calling thread (kernel/fork.c ksys_unshare()). It sets up the namespace, installs the seccomp filter,
hands the listener to the daemon over SOCKFD, and execs CMD. Any failure before the exec
is reported on stderr with exit status 127; a CMD that cannot be executed is named, with
127 when it does not exist and 126 otherwise, as a shell does. Nothing is left behind:
the namespace dies with the process.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(
            "usage: python -m vfiofs.launch MOUNTPOINT SCRATCH SOCKFD CMD ARGS...",
            file=sys.stderr,
        )
        return 2
    # Ctrl-C before the exec: end quietly, as CMD would (no KeyboardInterrupt traceback)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
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
    except OSError as e:
        print(f"vfiofs run: {e}", file=sys.stderr)
        return 127
    # the daemon may have held these while it started: CMD gets them as signals again
    signal.pthread_sigmask(
        signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    )
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        # as a shell says it: the path, why, and 127 for "not found", 126 for the rest
        print(f"vfiofs run: {cmd[0]}: {e.strerror}", file=sys.stderr)
        return 127 if e.errno == errno.ENOENT else 126


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
