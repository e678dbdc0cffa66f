"""The ``vfiofs`` command: mount, umount, run, doctor."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .machine import Machine

log = logging.getLogger("vfiofs")

# From the moment a daemon starts until it exits, these end it cleanly (see cmd_mount).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vfiofs",
        description="Serve VFIO and iommufd from FUSE, for testing VFIO programs without hardware.",
    )
    p.add_argument("--version", action="version", version=f"vfiofs {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config",
            metavar="FILE",
            help="topology file (TOML, see docs/topology.md); default: the built-in topology",
        )
        sp.add_argument(
            "--model-path",
            metavar="DIR",
            action="append",
            default=[],
            help="a directory to import device models ('module:Class') from; repeatable",
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
    m.add_argument(
        "--force",
        action="store_true",
        help="mount on a non-empty directory, or over a mount of vfiofs already there",
    )
    m.add_argument(
        "-q", "--quiet", action="store_true", help="do not print the line saying ready"
    )
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


def _machine(args: argparse.Namespace) -> Machine:
    """The machine of ``--config`` (or the built-in topology); a bad topology or model
    is one line on stderr and exit status 2."""
    from .config import ConfigError, default_topology, load_topology
    from .machine import Machine

    try:
        topology = load_topology(args.config) if args.config else default_topology()
        return Machine(
            topology,
            model_path=tuple(os.path.abspath(p) for p in args.model_path),
            device_owner=(os.geteuid(), os.getegid()),
        )
    except ConfigError as e:
        print(f"vfiofs: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _mountpoint_problem(path: str, force: bool) -> str | None:
    """Why ``vfiofs mount`` should not mount at ``path`` (None: go ahead)."""
    from .session.mount import mounted_fstype

    if not os.path.lexists(path):
        return f"{path}: does not exist (mkdir -p {path})"
    if not os.path.isdir(path):
        return f"{path}: not a directory"
    if force:
        return None
    if mounted_fstype(path) == "fuse.vfiofs":  # checked without entering the mount
        return (
            f"{path}: vfiofs is already mounted there (`vfiofs umount {path}` "
            "removes it; --force mounts over it)"
        )
    try:
        entries = os.listdir(path)
    except OSError as e:
        return f"{path}: {e.strerror}"
    if entries:
        return f"{path}: not empty (--force mounts over its contents)"
    return None


def _ready_line(machine: Machine, mountpoint: str) -> str:
    groups = " ".join(g.name for _, g in sorted(machine.core.groups.items()))
    devices = " ".join(sorted(machine.devices))
    return f"vfiofs: ready at {mountpoint}: devices {devices}; groups {groups}"


def cmd_mount(args: argparse.Namespace) -> int:
    # Hold SIGINT/SIGTERM from here on: serve_until_signalled takes them before it
    # mounts and hands them back after unmounting; one that arrives outside that stays
    # pending (before: handled as soon as it can; after: dropped at exit). So from the
    # moment the mount exists, either signal ends in a clean unmount and status 0.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    problem = _mountpoint_problem(args.mountpoint, args.force)
    if problem is not None:
        print(f"vfiofs: {problem}", file=sys.stderr)
        return 2
    machine = _machine(args)
    mountpoint = os.path.realpath(args.mountpoint)
    import trio  # after the checks above: a refusal is quick

    from .session.serve import serve_until_signalled

    def ready(session: object) -> None:
        if not args.quiet:
            try:
                print(_ready_line(machine, mountpoint), flush=True)
            except BrokenPipeError:  # nobody reads stdout: serve anyway
                pass

    try:
        trio.run(
            lambda: serve_until_signalled(
                machine.tree,
                mountpoint,
                trace=sys.stderr if args.trace else None,
                transport=args.transport,
                on_ready=ready,
            )
        )
    except (OSError, BaseExceptionGroup) as e:  # mount refused, /dev/fuse unusable, ...
        errors = _os_errors(e)
        if errors is None:
            raise
        for err in errors:
            why = err.strerror or str(err)
            print(
                f"vfiofs: {err.filename}: {why}" if err.filename else f"vfiofs: {why}",
                file=sys.stderr,
            )
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
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("vfiofs run: no command (vfiofs run -- CMD ARGS)", file=sys.stderr)
        return 2
    # as in cmd_mount: held until run() takes them (it passes them on to CMD)
    signal.pthread_sigmask(signal.SIG_BLOCK, (*STOP_SIGNALS, signal.SIGHUP))
    machine = _machine(args)
    from .session.run import run

    return run(
        machine,
        cmd,
        trace=sys.stderr if args.trace else None,
        transport=args.transport,
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    from .session.doctor import doctor

    return doctor(sys.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vfiofs`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `vfiofs` alone: say what it can do
        parser.print_help(sys.stderr)
        return 2
    _logging(getattr(args, "verbose", 0))
    handler = {
        "mount": cmd_mount,
        "umount": cmd_umount,
        "run": cmd_run,
        "doctor": cmd_doctor,
    }
    return handler[args.command](args)
