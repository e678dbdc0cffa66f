"""Golden FUSE bytes: every request type decoded from the kernel's own bytes, every reply
type compared byte for byte, and truncation.

tests/data/fuse_requests.hex and fuse_replies.hex hold annotated hex, one field per line
(``hex bytes  path = value``), made by tests/c/fuse_golden.c from the structs of
<linux/fuse.h>, so they owe nothing to our encoder. A request's annotations are checked
against what `FuseConnection.receive` returns, and each field's offset against our struct;
a reply must equal the golden bytes exactly.
"""

from __future__ import annotations

import ast
import errno
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.uapi import uapi_cflags
from vfiofs.abi import fuse_kernel as k
from vfiofs.errors import ProtocolError
from vfiofs.fs.node import Directory
from vfiofs.fs.tree import Tree
from vfiofs.fuse import replies, requests as rq
from vfiofs.fuse._opcodes import OPCODES
from vfiofs.fuse.connection import FuseConnection
from vfiofs.session.dispatch import Dispatcher
from vfiofs.session.peer import ProcessTable

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data"


class Field:
    def __init__(self, raw: bytes, path: str, value: Any, offset: int) -> None:
        self.raw, self.path, self.value, self.offset = raw, path, value, offset


def load(name: str) -> dict[str, list[Field]]:
    """Sections of an annotated hex file: name -> fields in order."""
    sections: dict[str, list[Field]] = {}
    fields: list[Field] = []
    offset = 0
    for line in (DATA / name).read_text().splitlines():
        if line.startswith("== "):
            fields, offset = [], 0
            sections[line[3:].split(":")[0]] = fields
            continue
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"((?:[0-9a-f]{2} )*[0-9a-f]{2}) +(.*)", line)
        assert m, f"{name}: bad line {line!r}"
        raw = bytes.fromhex(m.group(1))
        path, _, value = m.group(2).partition(" = ")
        parsed = (
            bytes(int(value[6:-1]))
            if value.startswith("bytes(")
            else ast.literal_eval(value)
            if value
            else None
        )
        fields.append(Field(raw, path, parsed, offset))
        offset += len(raw)
    return sections


REQUESTS = load("fuse_requests.hex")
REPLIES = load("fuse_replies.hex")


def message(fields: list[Field]) -> bytes:
    return b"".join(f.raw for f in fields)


def running() -> FuseConnection:
    conn = FuseConnection()
    conn.init_reply(conn.receive(message(REQUESTS["init"])))
    return conn


def decode(name: str) -> rq.Request[Any]:
    conn = FuseConnection() if name.startswith("init") else running()
    return conn.receive(message(REQUESTS[name]))


def resolve(req: rq.Request[Any], path: str) -> Any:
    obj: Any = req
    for part in path.split("."):
        m = re.fullmatch(r"(\w+)\[(\d+)\]", part)
        obj = getattr(obj, m.group(1))[int(m.group(2))] if m else getattr(obj, part)
    return obj


def test_every_opcode_of_the_table_has_a_golden_request() -> None:
    golden = {f[1].value for f in REQUESTS.values()}  # header.opcode is line 2
    assert set(OPCODES) <= golden


@pytest.mark.parametrize("name", list(REQUESTS))
def test_golden_request_decodes_to_its_annotations(name: str) -> None:
    fields = REQUESTS[name]
    req = decode(name)
    opcode = fields[1].value
    spec = OPCODES.get(opcode)
    assert type(req) is (spec.cls if spec else rq.Unknown)
    assert req.opcode == opcode
    for f in fields:
        head, _, attr = f.path.partition(".")
        if head == "header":
            assert f.offset == k.FuseInHeader.offsetofend(attr) - len(f.raw), f.path
        elif head == "arg":
            assert spec is not None and spec.arg is not None
            assert f.offset - k.FuseInHeader.SIZE == (
                spec.arg.offsetofend(attr) - len(f.raw)
            ), f.path
        elif head in ("body", "ext"):  # what an unknown opcode carries: not decoded
            assert isinstance(req, rq.Unknown)
            continue
        if head == "name":
            assert f.raw == f.value + b"\0"
        assert resolve(req, f.path) == f.value, f.path


def test_golden_init_from_an_old_kernel_reads_16_bytes() -> None:
    req = decode("init_7_31")
    assert isinstance(req, rq.Init)
    assert (req.arg.minor, req.arg.flags2, req.arg.unused) == (31, 0, bytes(44))


@pytest.mark.parametrize(
    ("request_name", "reply_name"),
    [("init", "init"), ("init_7_31", "init_7_31")],
)
def test_golden_init_reply(request_name: str, reply_name: str) -> None:
    conn = FuseConnection()
    req = conn.receive(message(REQUESTS[request_name]))
    assert isinstance(req, rq.Init)
    assert conn.init_reply(req) == message(REPLIES[reply_name])
    assert conn.minor == req.arg.minor


T = 1700000000


def golden_replies() -> dict[str, bytes]:
    """Our bytes for each reply of fuse_replies.hex, built from the golden requests."""
    conn = running()
    req = {name: decode(name) for name in REQUESTS if not name.startswith("init")}
    dirmode = stat.S_IFDIR | 0o755
    return {
        "entry": conn.reply(
            req["lookup"],
            replies.entry_out(
                2,
                replies.Attr(
                    ino=2, size=0, mode=dirmode, nlink=2, atime=T, mtime=T, ctime=T
                ),
                1,
                1,
            ),
        ),
        "attr": conn.reply(
            req["getattr"],
            replies.attr_out(
                replies.Attr(
                    ino=3,
                    size=4096,
                    mode=stat.S_IFREG | 0o600,
                    uid=1000,
                    gid=1000,
                    atime=T,
                    mtime=T,
                    ctime=T,
                ),
                1,
            ),
        ),
        "open": conn.reply(
            req["open"],
            replies.open_out(
                5, k.FopenFlags.FOPEN_DIRECT_IO | k.FopenFlags.FOPEN_NOFLUSH
            ),
        ),
        "read": conn.reply(req["read"], b"abcd"),
        "write": conn.reply(req["write"], replies.write_out(4)),
        "statfs": conn.reply(req["statfs"], replies.statfs_out()),
        "empty": conn.reply(req["release"]),
        "getxattr_size": conn.reply(req["listxattr"], replies.getxattr_size(0)),
        "readdir": conn.reply(
            req["readdir"],
            replies.dirents(
                [(1, ".", dirmode), (1, "..", dirmode), (2, "vfio", dirmode)], 0, 4096
            ),
        ),
        "readlink": conn.reply(req["readlink"], b"../../../devices/vfio"),
        "ioctl": conn.reply_ioctl(req["ioctl"], 0),
        "ioctl_negative": conn.reply_ioctl(req["ioctl_in_data"], -1),
        "poll": conn.reply(req["poll"], replies.poll_out(0x41)),  # POLLIN|POLLRDNORM
        "error": conn.reply_error(req["lookup"], errno.ENOENT),
        "notify_poll": conn.notify_poll(77),
    }


@pytest.mark.parametrize("name", [n for n in REPLIES if not n.startswith("init")])
def test_golden_reply_bytes(name: str) -> None:
    assert golden_replies()[name] == message(REPLIES[name])


def test_every_golden_reply_is_checked() -> None:
    assert set(REPLIES) == set(golden_replies()) | {"init", "init_7_31"}


def dispatcher(conn: FuseConnection) -> Dispatcher:
    return Dispatcher(Tree(Directory()), conn, ProcessTable(), lambda data: None)


@pytest.mark.parametrize("name", [n for n in REQUESTS if n != "unknown"])
def test_truncated_golden_request_is_protocol_error_or_eio(name: str) -> None:
    """Cut anywhere: a short header is a ProtocolError (so is a length that is not the
    read's); with the length fixed, a short body is EIO, or no reply at all for the
    opcodes the kernel expects none for."""
    raw = message(REQUESTS[name])
    opcode = REQUESTS[name][1].value
    for cut in range(len(raw)):
        conn = FuseConnection() if name.startswith("init") else running()
        with pytest.raises(ProtocolError):
            conn.receive(raw[:cut])
        if cut < k.FuseInHeader.SIZE:
            continue
        short = cut.to_bytes(4, "little") + raw[4:cut]
        req = conn.receive(short)
        assert isinstance(req, rq.BadRequest), (cut, req)
        reply = dispatcher(conn).dispatch(req)
        if OPCODES[opcode].reply:
            assert reply == conn.reply_error(req, errno.EIO)
        else:
            assert reply is None


def test_unknown_opcode_gets_enosys() -> None:
    conn = running()
    req = conn.receive(message(REQUESTS["unknown"]))
    assert isinstance(req, rq.Unknown)
    assert dispatcher(conn).dispatch(req) == conn.reply_error(req, errno.ENOSYS)


@pytest.mark.parametrize("which", ["requests", "replies"])
def test_golden_files_are_what_the_c_helper_prints(which: str, tmp_path: Path) -> None:
    """The committed files are exactly what tests/c/fuse_golden.c prints against the
    uapi headers of `make headers`: nothing was edited by hand, and the ABI has not
    moved under them."""
    exe = tmp_path / "fuse_golden"
    subprocess.run(
        [
            "gcc",
            "-Wall",
            "-Wextra",
            "-Werror",
            *uapi_cflags(),
            "-o",
            str(exe),
            str(ROOT / "tests" / "c" / "fuse_golden.c"),
        ],
        check=True,
    )
    out = subprocess.run([str(exe), which], check=True, capture_output=True, text=True)
    assert out.stdout == (DATA / f"fuse_{which}.hex").read_text()
