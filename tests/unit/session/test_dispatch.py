"""The Dispatcher against the opcode table, without trio or a mount."""

from __future__ import annotations

import errno
import logging

import pytest

from tests.fake_kernel import encode_request, header
from vfiofs.abi import fuse_kernel as k
from vfiofs.abi.fuse_kernel import FuseOpcode as Op
from vfiofs.errors import KernelError
from vfiofs.fs.node import Directory
from vfiofs.fs.tree import Tree
from vfiofs.fuse import requests as rq
from vfiofs.fuse._opcodes import OPCODES
from vfiofs.fuse.connection import FuseConnection
from vfiofs.session.dispatch import SERVE_LOOP_OPCODES, Dispatcher
from vfiofs.session.peer import ProcessTable


def running() -> Dispatcher:
    conn = FuseConnection()
    init = rq.Init(header(Op.FUSE_INIT, 2), k.FuseInitIn(7, 45, 0, 0, 0, bytes(44)))
    conn.init_reply(conn.receive(encode_request(init)))  # type: ignore[arg-type]
    return Dispatcher(Tree(Directory()), conn, ProcessTable(), lambda data: None)


def test_every_opcode_of_the_table_has_a_handler() -> None:
    d = running()
    served = {spec.cls for op, spec in OPCODES.items() if op not in SERVE_LOOP_OPCODES}
    assert set(d._ops) == served
    for op, spec in OPCODES.items():
        if op not in SERVE_LOOP_OPCODES:
            assert d._ops[spec.cls] == getattr(d, "op_" + spec.name.lower())


def test_error_of_a_no_reply_opcode_is_logged_not_sent(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    d = running()

    def forget(self: Tree, nodeid: int, nlookup: int) -> None:
        raise KernelError(errno.ENOENT, "no such node")

    monkeypatch.setattr(Tree, "forget", forget)
    req = d.conn.receive(
        encode_request(rq.Forget(header(Op.FUSE_FORGET, 4, 9), k.FuseForgetIn(1)))
    )
    with caplog.at_level(logging.WARNING, logger="vfiofs.dispatch"):
        assert d.dispatch(req) is None
    assert "no such node" in caplog.text


def test_bug_in_a_handler_is_eio_with_a_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    d = running()

    def statfs(req: object) -> bytes:
        raise RuntimeError("boom")

    monkeypatch.setitem(d._ops, rq.Statfs, statfs)
    req = d.conn.receive(encode_request(rq.Statfs(header(Op.FUSE_STATFS, 4, 1), None)))
    with caplog.at_level(logging.ERROR, logger="vfiofs.dispatch"):
        assert d.dispatch(req) == d.conn.reply_error(req, errno.EIO)
    assert "boom" in caplog.text and "Traceback" in caplog.text
