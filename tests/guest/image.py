"""Build the guest image: Debian's generic amd64 kernel and an initramfs made of
busybox-static, pciutils' lspci (with its libraries), a few kernel modules and our init.

Everything comes from Debian packages fetched with ``apt-get download`` and unpacked with
``dpkg-deb -x`` into the build directory; nothing is installed on the host. The result is
cached: ``<dir>/vmlinux``, ``<dir>/initrd.gz`` and ``<dir>/manifest.json`` are rebuilt only
when an input changes (this file, the init script, or the package versions apt resolves).

    python -m tests.guest.image [DIR]      # default: build/guest (what `make guest` runs)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEFAULT_DIR = ROOT / "build" / "guest"
INIT = HERE / "rootfs" / "init"

# The generic kernel, not cloud-amd64: it has 8250_pci built in *and* ioatdma as a module.
KERNEL_META = "linux-image-amd64"
# busybox for the shell and tools; pciutils' lspci and setpci, and the packages holding
# their libraries (libpci3, libkmod2 -> libudev1, zlib1g, liblzma5, libssl3, libzstd1, libc6).
USER_PACKAGES = [
    "busybox-static",
    "pciutils",
    "pci.ids",
    "libpci3",
    "libkmod2",
    "libudev1",
    "zlib1g",
    "liblzma5",
    "libssl3",
    "libzstd1",
    "libc6",
]
# Kernel modules for the checks, with their dependencies (read from each module's
# .modinfo). Everything else the checks need (8250_pci, PCI MSI) is built in.
MODULES = ["ioatdma"]
BINARIES = ["bin/busybox", "usr/bin/lspci", "usr/bin/setpci"]
DATA_FILES = ["usr/share/misc/pci.ids"]
# include/xen/interface/elfnote.h: the 32-bit entry point QEMU's PVH boot jumps to
XEN_ELFNOTE_PHYS32_ENTRY = 18
DEPMOD = "/sbin/depmod"  # Debian's kmod, installed by `make deps`
APT = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=600"]


# --- ELF: the few fields we need, for x86-64 little-endian files ----------------------


def _sections(data: bytes) -> dict[str, tuple[int, int, int, int]]:
    """Section name -> (type, offset, size, link)."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
        for i in range(shnum)
    ]
    strtab = raw[shstrndx][4]
    out = {}
    for name, typ, _flags, _addr, off, size, link, *_ in raw:
        end = data.index(b"\0", strtab + name)
        out[data[strtab + name : end].decode()] = (typ, off, size, link)
    return out


def elf_needed(path: Path) -> tuple[list[str], str | None]:
    """(DT_NEEDED sonames, PT_INTERP) of an ELF executable or shared library."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2, f"{path}: not ELF64"
    interp = None
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, _, p_off, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type == 3:  # PT_INTERP
            interp = data[p_off : p_off + p_filesz].rstrip(b"\0").decode()
    secs = _sections(data)
    if ".dynamic" not in secs:
        return [], interp
    _, off, size, _ = secs[".dynamic"]
    _, stroff, _, _ = secs[".dynstr"]
    needed = []
    for i in range(0, size, 16):
        tag, val = struct.unpack_from("<qQ", data, off + i)
        if tag == 0:
            break
        if tag == 1:  # DT_NEEDED
            end = data.index(b"\0", stroff + val)
            needed.append(data[stroff + val : end].decode())
    return needed, interp


def elf_notes(data: bytes) -> list[tuple[str, int]]:
    """(owner, type) of the notes in an ELF64 file's PT_NOTE segments."""
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    notes = []
    for i in range(phnum):
        p_type, _, off, _, _, size = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        end = off + size
        while off + 12 <= end:
            namesz, descsz, typ = struct.unpack_from("<III", data, off)
            name = data[off + 12 : off + 12 + namesz].rstrip(b"\0").decode()
            notes.append((name, typ))
            off += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return notes


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed kernel ELF inside a bzImage (XZ-compressed, as Debian builds it),
    checked for the PVH entry note that lets QEMU start it directly."""
    start = bzimage.find(b"\xfd7zXZ\x00")
    if start < 0:
        raise RuntimeError("no XZ-compressed kernel in the bzImage")
    elf = lzma.LZMADecompressor().decompress(bzimage[start:])
    if elf[:4] != b"\x7fELF" or ("Xen", XEN_ELFNOTE_PHYS32_ENTRY) not in elf_notes(elf):
        raise RuntimeError("the kernel is not an ELF with a PVH entry point")
    return elf


def modinfo(path: Path) -> dict[str, list[str]]:
    """A kernel module's .modinfo section: key -> values."""
    data = path.read_bytes()
    _, off, size, _ = _sections(data)[".modinfo"]
    out: dict[str, list[str]] = {}
    for entry in data[off : off + size].split(b"\0"):
        if b"=" in entry:
            k, _, v = entry.decode(errors="replace").partition("=")
            out.setdefault(k, []).append(v)
    return out


# --- cpio (newc), as the kernel's initramfs unpacker reads it --------------------------


class Cpio:
    """An in-memory newc archive: add entries, then ``gzip()`` the whole."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.names: set[str] = set()

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        name = name.strip("/")
        if name in self.names:
            return
        self.names.add(name)
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(name) + 1, 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.buf.write(name.encode() + b"\0")
        self._pad()
        self.buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str, mode: int = 0o755) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), 0o040000 | mode)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.dir(os.path.dirname(name.strip("/")) or ".")
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self.dir(os.path.dirname(name.strip("/")) or ".")
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, 0o020000 | mode, rdev=(major, minor))

    def gzip(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return gzip.compress(self.buf.getvalue(), compresslevel=6, mtime=0)


# --- packages ---------------------------------------------------------------------------


def _apt(args: list[str], cwd: Path | None = None) -> str:
    r = subprocess.run(
        [*APT, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def resolve_packages() -> dict[str, str]:
    """Package name -> the .deb file name apt would download (name_version_arch.deb).
    Reads apt's local lists only; runs ``apt-get update`` once if they lack a package."""
    for attempt in (0, 1):
        try:
            deps = subprocess.run(
                ["apt-cache", "depends", KERNEL_META],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            kernel = next(
                line.split(":", 1)[1].strip()
                for line in deps.splitlines()
                if line.strip().startswith("Depends: linux-image-")
            )
            names = [kernel, *USER_PACKAGES]
            uris = _apt(["download", "--print-uris", *names])
            files = {
                f.split("_", 1)[0]: f
                for f in (line.split()[1] for line in uris.splitlines() if line.strip())
            }
            if sorted(files) != sorted(names):
                raise RuntimeError(f"apt resolved {sorted(files)}, wanted {names}")
            return {n: files[n] for n in names}
        except (subprocess.CalledProcessError, StopIteration, RuntimeError, ValueError):
            if attempt or os.geteuid() != 0:
                raise
            _apt(["update", "-qq"])
    raise AssertionError("unreachable")


def _download(debs: Path, files: dict[str, str]) -> None:
    debs.mkdir(parents=True, exist_ok=True)
    want = set(files.values())
    for old in debs.glob("*.deb"):
        if old.name not in want:
            old.unlink()
    missing = [name for name, f in files.items() if not (debs / f).exists()]
    if missing:
        print(f"guest image: downloading {' '.join(missing)}", file=sys.stderr)
        _apt(["download", *missing], cwd=debs)
    for f in want:
        if not (debs / f).exists():
            # apt-get names files with the epoch's ':' escaped as '%3a'
            raise RuntimeError(f"apt-get download did not produce {f}")


# --- the image --------------------------------------------------------------------------


def _sources_key() -> str:
    h = hashlib.sha256()
    for src in (Path(__file__), INIT):
        h.update(src.read_bytes())
    return h.hexdigest()


def _apt_lists() -> str:
    """A signature of apt's package lists: while it holds, apt resolves the same files."""
    lists = sorted(Path("/var/lib/apt/lists").glob("*_Packages*"))
    return ";".join(
        f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in lists
    )


def _find_lib(tree: Path, soname: str) -> Path:
    for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"):
        p = tree / d / soname
        if p.exists():
            return p
    raise RuntimeError(f"no package in the image provides {soname}")


def _module_closure(moddir: Path, wanted: Iterable[str]) -> dict[str, Path]:
    """Module name -> .ko for ``wanted`` and everything they depend on."""
    index = {
        p.name.removesuffix(".ko").replace("-", "_"): p
        for p in (moddir / "kernel").rglob("*.ko")
    }
    out: dict[str, Path] = {}
    todo = [w.replace("-", "_") for w in wanted]
    while todo:
        name = todo.pop()
        if name in out:
            continue
        if name not in index:
            raise RuntimeError(f"kernel module {name} is not in the kernel package")
        out[name] = index[name]
        for deps in modinfo(index[name]).get("depends", []):
            todo += [d.replace("-", "_") for d in deps.split(",") if d]
    return out


def _assemble(tree: Path, kernel_release: str) -> tuple[Cpio, dict[str, object]]:
    cpio = Cpio()
    for d in ("dev", "proc", "sys", "tmp", "run", "root", "etc", "sbin", "usr/sbin"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.file("init", INIT.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    # executables and, recursively, the shared libraries they need
    libs: dict[str, Path] = {}
    todo: list[Path] = [tree / b for b in BINARIES]
    interp = None
    while todo:
        path = todo.pop()
        needed, path_interp = elf_needed(path)
        interp = interp or path_interp
        for soname in needed:
            if soname not in libs:
                libs[soname] = _find_lib(tree, soname)
                todo.append(libs[soname])
    for b in BINARIES:
        cpio.file(b, (tree / b).read_bytes(), 0o755)
    for soname, p in sorted(libs.items()):
        cpio.file(f"lib/x86_64-linux-gnu/{soname}", p.resolve().read_bytes(), 0o755)
    if interp:
        real = _find_lib(tree, os.path.basename(interp))
        cpio.file(
            f"lib/x86_64-linux-gnu/{real.name}", real.resolve().read_bytes(), 0o755
        )
        cpio.symlink(interp, f"/lib/x86_64-linux-gnu/{real.name}")
    for f in DATA_FILES:
        cpio.file(f, (tree / f).read_bytes())
    # kernel modules, indexed by the host's depmod (kmod) as if installed: modules.dep
    # for modprobe, the .bin indexes libkmod reads for lspci -k
    moddir = tree / "lib/modules" / kernel_release
    mods = _module_closure(moddir, MODULES)
    staging = tree.parent / "modules"
    shutil.rmtree(staging, ignore_errors=True)
    stage = staging / "lib/modules" / kernel_release
    for ko in mods.values():
        dest = stage / ko.relative_to(moddir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ko, dest)
    for f in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        shutil.copyfile(moddir / f, stage / f)
    subprocess.run([DEPMOD, "-b", str(staging), kernel_release], check=True)
    for f in sorted(p for p in stage.rglob("*") if p.is_file()):
        if f.name == "modules.order":  # read by depmod only
            continue
        cpio.file(
            f"lib/modules/{kernel_release}/{f.relative_to(stage)}", f.read_bytes()
        )
    manifest: dict[str, object] = {
        "kernel_release": kernel_release,
        "modules": sorted(mods),
        "libraries": sorted(libs),
        "binaries": BINARIES,
    }
    return cpio, manifest


def _unpack(out: Path, files: dict[str, str]) -> Path:
    """The packages unpacked into ``out/tree`` (kept: unpacking the kernel's modules is
    the slow step, and only a new package version needs it again)."""
    tree, stamp = out / "tree", out / "tree.debs"
    listing = "\n".join(sorted(files.values()))
    if stamp.exists() and stamp.read_text() == listing:
        return tree
    stamp.unlink(missing_ok=True)
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    for f in files.values():
        subprocess.run(["dpkg-deb", "-x", str(out / "debs" / f), str(tree)], check=True)
    stamp.write_text(listing)
    return tree


def build(out: Path = DEFAULT_DIR, *, quiet: bool = False) -> Path:
    """Build (or reuse) the image in ``out``; returns ``out``."""
    stamp = out / "stamp.json"
    products = [out / "vmlinux", out / "initrd.gz", out / "manifest.json"]
    try:
        old = json.loads(stamp.read_text())
    except (OSError, ValueError):
        old = {}
    # apt resolves the same files as last time while its lists are unchanged
    same_lists = old.get("apt_lists") == _apt_lists() and old.get("packages")
    files: dict[str, str] = old["packages"] if same_lists else resolve_packages()
    if (
        all(p.exists() for p in products)
        and old.get("sources") == _sources_key()
        and old.get("packages") == files
    ):
        if not quiet:
            print(f"guest image: up to date in {out}", file=sys.stderr)
        return out
    out.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    _download(out / "debs", files)
    tree = _unpack(out, files)
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise RuntimeError(f"expected one kernel in the package, found {kernels}")
    release = kernels[0].name.removeprefix("vmlinuz-")
    cpio, manifest = _assemble(tree, release)
    initrd = cpio.gzip()
    # QEMU boots the uncompressed kernel through its PVH entry: no decompression in the
    # emulated CPU, which takes seconds under TCG
    vmlinux = extract_vmlinux(kernels[0].read_bytes())
    (out / "vmlinux").write_bytes(vmlinux)
    (out / "initrd.gz").write_bytes(initrd)
    manifest["packages"] = files
    manifest["initrd_bytes"] = len(initrd)
    manifest["vmlinux_bytes"] = len(vmlinux)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    stamp.write_text(
        json.dumps(
            {"sources": _sources_key(), "apt_lists": _apt_lists(), "packages": files}
        )
    )
    if not quiet:
        print(
            f"guest image: kernel {release}, initrd {len(initrd) // 1024} KiB, in {out}",
            file=sys.stderr,
        )
    return out


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR)
