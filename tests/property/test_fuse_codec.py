"""The FUSE codec: every request type round-trips; any bytes decode to a request or a
protocol error and nothing else; reply bodies decode back to what was encoded."""

from __future__ import annotations

import struct

from hypothesis import given, settings, strategies as st

from tests.fake_kernel import decode_reply, encode_request, parse_dirents
from vfiofs.abi import fuse_kernel as k
from vfiofs.errors import ProtocolError
from vfiofs.fuse import replies, requests as rq
from vfiofs.fuse._opcodes import OPCODES
from vfiofs.fuse.connection import FuseConnection

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


def fields(cls) -> st.SearchStrategy:  # type: ignore[no-untyped-def,type-arg]
    """Values for every field of a ctuple struct, from its format."""
    fmt = cls.STRUCT.format.lstrip("<")
    out = []
    import re

    for count, code in re.findall(r"(\d*)([a-zA-Z])", fmt):
        n = int(count or 1)
        if code == "s":
            out.append(st.binary(min_size=n, max_size=n))
            continue
        for _ in range(n):
            bits = {"B": 8, "H": 16, "I": 32, "Q": 64, "i": 32, "q": 64}[code]
            out.append(
                st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
                if code.islower()
                else st.integers(0, 2**bits - 1)
            )
    return st.tuples(*out).map(lambda t: cls(*t))


name = st.binary(min_size=0, max_size=40).filter(lambda b: b"\0" not in b)


@st.composite
def requests(draw) -> rq.Request:  # type: ignore[no-untyped-def]
    opcode = draw(
        st.sampled_from([op for op in OPCODES if op != k.FuseOpcode.FUSE_INIT])
    )
    spec = OPCODES[opcode]
    header = k.FuseInHeader(
        0, opcode, draw(u64), draw(u64), draw(u32), draw(u32), draw(u32), 0, 0
    )
    arg = draw(fields(spec.arg)) if spec.arg is not None else None
    nm = draw(name) if spec.names else b""
    data = b""
    if opcode == k.FuseOpcode.FUSE_WRITE:
        data = draw(st.binary(max_size=200))
        arg = arg._replace(size=len(data))
    elif opcode == k.FuseOpcode.FUSE_BATCH_FORGET:
        items = draw(st.lists(fields(k.FuseForgetOne), max_size=5))
        arg = arg._replace(count=len(items))
        data = b"".join(i.pack() for i in items)
    elif opcode == k.FuseOpcode.FUSE_IOCTL:
        data = draw(st.binary(max_size=16))
        arg = arg._replace(in_size=len(data))
    raw = encode_request(spec.cls(header, arg, nm, data))
    header = header._replace(len=len(raw))
    return spec.cls(header, arg, nm, data)


def running() -> FuseConnection:
    c = FuseConnection()
    init = rq.Init(
        k.FuseInHeader(0, k.FuseOpcode.FUSE_INIT, 2, 0, 0, 0, 0, 0, 0),
        k.FuseInitIn(7, 45, 1 << 17, 0xFFFFFFFF, 0xFFFF, bytes(44)),
    )
    c.init_reply(c.receive(encode_request(init)))
    return c


@given(requests())
def test_request_round_trip(req: rq.Request) -> None:
    conn = running()
    got = conn.receive(encode_request(req))
    if isinstance(req, rq.Destroy):
        assert isinstance(got, rq.Destroy)
        return
    assert type(got) is type(req)
    assert got == req


@given(requests(), st.binary(min_size=8, max_size=8))
def test_request_extensions_are_skipped(req: rq.Request, ext: bytes) -> None:
    raw = encode_request(req, extensions=ext)
    got = running().receive(raw)
    assert got.arg == req.arg and got.name == req.name and got.data == req.data


@given(requests(), st.data())
def test_truncated_request_is_bad_or_protocol_error(
    req: rq.Request, data: st.DataObject
) -> None:
    raw = encode_request(req)
    cut = data.draw(st.integers(0, len(raw) - 1))
    conn = running()
    short = raw[:cut]
    if len(short) >= 40:  # keep the header consistent: the body is what is short
        short = struct.pack("<I", len(short)) + short[4:]
    try:
        got = conn.receive(short)
    except ProtocolError:
        return
    assert isinstance(got, rq.Request)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_protocol_error(buf: bytes) -> None:
    conn = running()
    try:
        conn.receive(buf)
    except ProtocolError:
        pass
    if len(buf) >= 40:  # with a consistent length field too
        fixed = struct.pack("<I", len(buf)) + buf[4:]
        try:
            assert isinstance(conn.receive(fixed), rq.Request)
        except ProtocolError:
            pass


def test_request_before_init_is_a_protocol_error() -> None:
    conn = FuseConnection()
    raw = encode_request(
        rq.Getattr(k.FuseInHeader(0, 3, 2, 1, 0, 0, 0, 0, 0), k.FuseGetattrIn(0, 0, 0))
    )
    try:
        conn.receive(raw)
    except ProtocolError:
        return
    raise AssertionError("GETATTR before INIT accepted")


def test_unknown_opcode_is_unknown() -> None:
    raw = struct.pack("<IIQQIIIHH", 40, 9999, 2, 1, 0, 0, 0, 0, 0)
    assert isinstance(running().receive(raw), rq.Unknown)


def test_init_negotiation_old_and_new_minor() -> None:
    for minor, size in ((31, 64), (45, 64)):
        conn = FuseConnection()
        init = rq.Init(
            k.FuseInHeader(0, 26, 2, 0, 0, 0, 0, 0, 0),
            k.FuseInitIn(7, minor, 1 << 16, 0xFFFFFFFF, 0, bytes(44)),
        )
        raw = encode_request(init)
        assert len(raw) == 40 + (16 if minor < 36 else 64)
        hdr, (out,) = decode_reply(26, conn.init_reply(conn.receive(raw)))
        assert hdr.len == 16 + size and (out.major, out.minor) == (7, minor)
        assert out.max_write == 1 << 20 and out.max_pages == 256
        assert out.flags & k.FuseInitFlags.FUSE_BIG_WRITES


@given(st.integers(1, 2**63), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_reply_bodies_round_trip(nodeid: int, size: int, mode: int) -> None:
    conn = running()
    req = rq.Lookup(k.FuseInHeader(0, 1, 6, 1, 0, 0, 0, 0, 0), None, b"x", b"")
    attr = replies.Attr(ino=nodeid, size=size, mode=mode)
    hdr, (entry, fattr) = decode_reply(
        1, conn.reply(req, replies.entry_out(nodeid, attr, 1, 2))
    )
    assert (
        hdr.unique,
        hdr.error,
        entry.nodeid,
        entry.entry_valid,
        entry.attr_valid,
    ) == (6, 0, nodeid, 1, 2)
    assert (fattr.ino, fattr.size, fattr.mode) == (nodeid, size, mode)
    hdr, (io,) = decode_reply(
        39, conn.reply_ioctl(req, -5 if size % 2 else size % 2**31)
    )
    assert io.result == (-5 if size % 2 else size % 2**31)
    hdr, body = decode_reply(1, conn.reply_error(req, 22))
    assert (hdr.error, body) == (-22, b"")


@given(
    st.lists(
        st.tuples(
            st.integers(1, 2**40),
            name.filter(bool),
            st.sampled_from([0o40755, 0o100644, 0o120777]),
        ),
        max_size=20,
    ),
    st.integers(0, 10),
    st.integers(24, 600),
)
def test_dirents_pack_whole_records_only(entries: list, offset: int, size: int) -> None:  # type: ignore[type-arg]
    ents = [(ino, n.decode(errors="surrogateescape"), mode) for ino, n, mode in entries]
    buf = replies.dirents(ents, offset, size)
    assert len(buf) <= size and len(buf) % 8 == 0
    got = parse_dirents(buf)
    want = ents[offset : offset + len(got)]
    assert [
        (ino, n.encode(errors="surrogateescape"), (m >> 12) & 0xF) for ino, n, m in want
    ] == [(g[0], g[3], g[2]) for g in got]
    assert [g[1] for g in got] == list(range(offset + 1, offset + 1 + len(got)))
