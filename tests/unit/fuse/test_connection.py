"""FuseConnection's state machine and the opcode table's consistency."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from tests.fake_kernel import decode_reply, encode_request, header
from vfiofs.abi import fuse_kernel as k
from vfiofs.abi.fuse_kernel import FuseOpcode as Op
from vfiofs.errors import ProtocolError
from vfiofs.fuse import requests as rq
from vfiofs.fuse._opcodes import OPCODES, describe, opname
from vfiofs.fuse.connection import ConnState, FuseConnection


def init(major: int = 7, minor: int = 45) -> bytes:
    return encode_request(
        rq.Init(
            header(Op.FUSE_INIT, 2),
            k.FuseInitIn(major, minor, 1 << 16, 0, 0, bytes(44)),
        )
    )


def statfs(unique: int = 4) -> bytes:
    return encode_request(rq.Statfs(header(Op.FUSE_STATFS, unique, 1), None))


def destroy() -> bytes:
    return encode_request(rq.Destroy(header(Op.FUSE_DESTROY, 6), None))


def test_states_follow_init_and_destroy() -> None:
    conn = FuseConnection()
    assert conn.state is ConnState.AWAITING_INIT
    req = conn.receive(init())
    assert isinstance(req, rq.Init) and conn.state is ConnState.NEGOTIATING
    conn.init_reply(req)
    assert conn.state is ConnState.RUNNING
    assert isinstance(conn.receive(statfs()), rq.Statfs)
    assert conn.state is ConnState.RUNNING
    assert isinstance(conn.receive(destroy()), rq.Destroy)
    assert conn.state is ConnState.DESTROYED


@pytest.mark.parametrize("raw", [statfs(), destroy()], ids=["statfs", "destroy"])
def test_request_before_init_is_a_protocol_error(raw: bytes) -> None:
    conn = FuseConnection()
    with pytest.raises(ProtocolError, match="awaiting-init"):
        conn.receive(raw)
    assert conn.state is ConnState.AWAITING_INIT


def test_request_while_init_is_unanswered_is_a_protocol_error() -> None:
    conn = FuseConnection()
    conn.receive(init())
    with pytest.raises(ProtocolError, match="negotiating"):
        conn.receive(statfs())


def test_request_after_destroy_is_a_protocol_error() -> None:
    conn = FuseConnection()
    conn.init_reply(conn.receive(init()))  # type: ignore[arg-type]
    conn.receive(destroy())
    for raw in (statfs(), destroy(), init()):
        with pytest.raises(ProtocolError, match="destroyed"):
            conn.receive(raw)


def test_second_init_while_running_is_a_protocol_error() -> None:
    conn = FuseConnection()
    conn.init_reply(conn.receive(init()))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="INIT in state running"):
        conn.receive(init())
    assert conn.state is ConnState.RUNNING


def test_init_reply_without_init_is_a_protocol_error() -> None:
    conn = FuseConnection()
    req = rq.Init(header(Op.FUSE_INIT, 2), k.FuseInitIn(7, 45, 0, 0, 0, bytes(44)))
    with pytest.raises(ProtocolError):
        conn.init_reply(req)
    conn.init_reply(conn.receive(init()))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="running"):
        conn.init_reply(req)


def test_newer_major_gets_our_version_and_init_again() -> None:
    conn = FuseConnection()
    req = conn.receive(init(major=8))
    assert isinstance(req, rq.Init)
    hdr, body = decode_reply(Op.FUSE_INIT, conn.init_reply(req))
    assert hdr.len == 16 + k.FUSE_COMPAT_22_INIT_OUT_SIZE and isinstance(body, tuple)
    assert (body[0].major, body[0].minor) == (7, k.FUSE_KERNEL_MINOR_VERSION)
    assert conn.state is ConnState.AWAITING_INIT
    conn.init_reply(conn.receive(init()))  # type: ignore[arg-type]
    assert conn.state is ConnState.RUNNING


@pytest.mark.parametrize(("major", "minor"), [(6, 45), (7, 30)])
def test_older_kernel_is_a_protocol_error(major: int, minor: int) -> None:
    conn = FuseConnection()
    req = conn.receive(init(major, minor))
    with pytest.raises(ProtocolError, match=r"older than 7\.31"):
        conn.init_reply(req)  # type: ignore[arg-type]


@pytest.mark.parametrize("op", list(OPCODES), ids=lambda op: opname(op))
def test_request_class_carries_the_struct_of_its_opcode(op: int) -> None:
    spec = OPCODES[op]
    (base,) = spec.cls.__orig_bases__  # type: ignore[attr-defined]
    (arg,) = typing.get_args(base)
    assert arg is (spec.arg if spec.arg is not None else type(None))
    assert spec.name == Op(op).name.removeprefix("FUSE_")


def test_request_classes_are_one_per_opcode() -> None:
    classes = [s.cls for s in OPCODES.values()]
    assert len(set(classes)) == len(classes)


def test_trace_fields_exist() -> None:
    for spec in OPCODES.values():
        for item in spec.trace:
            field = item.partition(":")[0].rpartition("=")[2]
            assert spec.arg is not None and field in spec.arg.FIELDS, (spec.name, item)


def _req(op: int, arg: Any, name: bytes = b"") -> rq.Request[Any]:
    return OPCODES[op].cls(header(op, 2, 3), arg, name, b"")


def test_describe_renders_from_the_table() -> None:
    assert (
        describe(_req(Op.FUSE_IOCTL, k.FuseIoctlIn(5, 0, 0x3B64, 0x1000, 0, 0)))
        == "IOCTL fh=5 cmd=0x3b64 arg=0x1000"
    )
    assert (
        describe(_req(Op.FUSE_READ, k.FuseReadIn(5, 4096, 4, 0, 0, 0, 0)))
        == "READ fh=5 off=4096 size=4"
    )
    assert (
        describe(_req(Op.FUSE_OPEN, k.FuseOpenIn(0o2000002, 0)))
        == "OPEN flags=0o2000002"
    )
    assert describe(_req(Op.FUSE_LOOKUP, None, b"vfio")) == "LOOKUP 'vfio'"
    assert describe(_req(Op.FUSE_STATFS, None)) == "STATFS"
    bad = rq.BadRequest(header(Op.FUSE_LOOKUP, 2, 1), None, b"name without NUL", b"")
    assert describe(bad) == "LOOKUP"
    assert describe(rq.Unknown(header(Op.FUSE_MKDIR, 2, 1), None)) == "MKDIR"
    assert describe(rq.Unknown(header(9999, 2, 1), None)) == "OP9999"
