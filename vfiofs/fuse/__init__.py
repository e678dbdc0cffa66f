"""The FUSE kernel protocol, sans-I/O: bytes of one /dev/fuse read in, typed requests out,
reply bytes back (h11's model). No os, no trio, no fds in this package."""

from .connection import ConnState as ConnState, FuseConnection as FuseConnection

__all__ = ["ConnState", "FuseConnection"]
