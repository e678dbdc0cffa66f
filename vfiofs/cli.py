"""The ``vfiofs`` command: mount, umount, run, doctor."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

log = logging.getLogger("vfiofs")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vfiofs",
        description="Serve VFIO and iommufd from FUSE, for testing VFIO programs without hardware.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config",
            metavar="FILE",
            help="topology file (TOML); default: the built-in topology",
        )
        sp.add_argument(
            "--trace",
            action="store_true",
            help="print one line per FUSE request to stderr",
        )
        sp.add_argument(
            "--transport",
            choices=("auto", "uring", "dev"),
            default=os.environ.get("VFIOFS_TRANSPORT", "auto"),
            help="how requests reach the daemon: io_uring (FUSE over io_uring), dev "
            "(read/write on /dev/fuse), auto: io_uring when the kernel offers it "
            "(default: $VFIOFS_TRANSPORT or auto)",
        )
        sp.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=0,
            help="more logging (-vv: debug)",
        )

    m = sub.add_parser("mount", help="mount the tree and serve it in the foreground")
    m.add_argument("mountpoint")
    common(m)
    u = sub.add_parser(
        "umount", help="unmount, also a stale mount left by a killed daemon"
    )
    u.add_argument("mountpoint")
    r = sub.add_parser(
        "run", help="run a command that sees the tree at /dev/vfio, /dev/iommu and /sys"
    )
    common(r)
    r.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    sub.add_parser(
        "doctor", help="report which kernel features vfiofs needs are present"
    )
    return p


def _logging(verbose: int) -> None:
    level = (
        logging.WARNING
        if verbose == 0
        else logging.INFO
        if verbose == 1
        else logging.DEBUG
    )
    logging.basicConfig(
        level=level, format="vfiofs: %(levelname)s %(name)s: %(message)s"
    )


def _machine(config: str | None):  # type: ignore[no-untyped-def]
    from .config import ConfigError, default_topology, load_topology
    from .machine import Machine

    try:
        topology = load_topology(config) if config else default_topology()
    except ConfigError as e:
        print(f"vfiofs: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return Machine(topology)


def cmd_mount(args: argparse.Namespace) -> int:
    import trio

    from .session.serve import serve_until_signalled

    machine = _machine(args.config)
    if not os.path.isdir(args.mountpoint):
        print(f"vfiofs: {args.mountpoint}: not a directory", file=sys.stderr)
        return 2
    try:
        trio.run(
            lambda: serve_until_signalled(
                machine.tree,
                args.mountpoint,
                trace=sys.stderr if args.trace else None,
                transport=args.transport,
            )
        )
    except (OSError, BaseExceptionGroup) as e:  # mount refused, /dev/fuse unusable, ...
        errors = _os_errors(e)
        if errors is None:
            raise
        for err in errors:
            print(f"vfiofs: {err}", file=sys.stderr)
        return 1
    return 0


def _os_errors(e: BaseException) -> list[OSError] | None:
    """The OSErrors in ``e`` (trio wraps them in exception groups), or None if it holds
    anything else."""
    if isinstance(e, OSError):
        return [e]
    if isinstance(e, BaseExceptionGroup):
        out: list[OSError] = []
        for sub in e.exceptions:
            inner = _os_errors(sub)
            if inner is None:
                return None
            out += inner
        return out
    return None


def cmd_umount(args: argparse.Namespace) -> int:
    from .session.mount import is_mounted, unmount

    if not is_mounted(args.mountpoint):
        print(f"vfiofs: {args.mountpoint} is not mounted", file=sys.stderr)
        return 1
    unmount(args.mountpoint)
    return 0 if not is_mounted(args.mountpoint) else 1


def cmd_run(args: argparse.Namespace) -> int:
    from .session.run import run

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("vfiofs run: no command (vfiofs run -- CMD ARGS)", file=sys.stderr)
        return 2
    return run(
        _machine(args.config),
        cmd,
        trace=sys.stderr if args.trace else None,
        transport=args.transport,
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    from .session.doctor import doctor

    return doctor(sys.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vfiofs`` console script."""
    args = _parser().parse_args(argv)
    _logging(getattr(args, "verbose", 0))
    handler = {
        "mount": cmd_mount,
        "umount": cmd_umount,
        "run": cmd_run,
        "doctor": cmd_doctor,
    }
    return handler[args.command](args)
