"""Topology files: every mistake is one ConfigError naming the file, the key path and the
fix; typos are reported as themselves; models load from model_path; docs/topology.md
describes exactly the keys the parser knows."""

from __future__ import annotations

import re
import stat
import sys
from pathlib import Path

import pytest

from tests.support import doc_files
from vfiofs.config import KEYS, ConfigError, load_topology, parse_topology
from vfiofs.machine import Machine

ROOT = Path(__file__).resolve().parents[2]
DEVICE = """
[[group]]
[[group.device]]
bdf = "0000:00:04.0"
vendor = 0x1b36
device = 0x0005
[[group.device.bar]]
index = 0
size = 4096
"""


def error(text: str, source: str = "t.toml") -> str:
    with pytest.raises(ConfigError) as e:
        Machine(parse_topology(text, source))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [
        (
            "vendor =",
            "vendr =",
            "group[0].device[0].vendr: unknown key vendr (did you mean vendor?)",
        ),
        (
            "[[group]]",
            "[[group]]\nids = 3",
            "group[0].ids: unknown key ids (did you mean id?)",
        ),
        (
            "index = 0",
            "index = 0\nprefech = true",
            "group[0].device[0].bar[0].prefech: unknown key prefech (did you mean prefetch?)",
        ),
        (
            "vendor =",
            "irqs = { msx = 2 }\nvendor =",
            "group[0].device[0].irqs.msx: unknown key msx (did you mean msix?)",
        ),
        (
            "[[group]]",
            "[options]\ndevice_cdv = false\n[[group]]",
            "options.device_cdv: unknown key device_cdv (did you mean device_cdev?)",
        ),
        (
            "[[group]]",
            "grup = 1\n[[group]]",
            "grup: unknown key grup (did you mean group?)",
        ),
        (
            "vendor =",
            "colour = 1\nvendor =",
            "group[0].device[0].colour: unknown key colour (a device table has: bdf, vendor,",
        ),
        ("vendor = 0x1b36\n", "", "group[0].device[0].vendor: missing"),
        (
            "size = 4096",
            "size = 100",
            "group[0].device[0].bar[0].size: 100: must be a power of two >= 16",
        ),
    ],
)
def test_config_error_names_file_key_and_fix(
    before: str, after: str, message: str
) -> None:
    assert DEVICE.count(before) == 1
    assert error(DEVICE.replace(before, after)).startswith(f"t.toml: {message}")


def test_unknown_model_suggests_the_builtin() -> None:
    msg = error(DEVICE.replace("device = 0x0005", 'device = 5\nmodel = "mttyy"'))
    assert msg.startswith("t.toml: group[0].device[0].model: unknown model 'mttyy'")
    assert "did you mean 'mtty'?" in msg


def test_model_that_does_not_import_names_the_fix(tmp_path: Path) -> None:
    text = DEVICE.replace("device = 0x0005", 'device = 5\nmodel = "nosuchmod:Dev"')
    msg = error(text)
    assert msg.startswith("t.toml: group[0].device[0].model: model 'nosuchmod:Dev': ")
    assert "No module named 'nosuchmod'" in msg and "--model-path DIR" in msg
    (tmp_path / "bad.py").write_text("def broken(:\n")
    msg = error(
        f'model_path = "{tmp_path}"\n'
        + DEVICE.replace("device = 0x0005", 'device = 5\nmodel = "bad:Dev"')
    )
    assert f"{tmp_path / 'bad.py'}:1:" in msg


def test_model_path_relative_to_the_topology_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "ledmodel.py").write_text(
        "from vfiofs.devices import PciDevice\n"
        "class Led(PciDevice):\n"
        "    model_name = 'led'\n"
    )
    cfg = tmp_path / "topo.toml"
    cfg.write_text(
        'model_path = "models"\n'
        + DEVICE.replace("device = 0x0005", 'device = 5\nmodel = "ledmodel:Led"')
    )
    topology = load_topology(str(cfg))
    assert topology.model_path == (str(models),)
    dev = Machine(topology).devices["0000:00:04.0"]
    assert type(dev).__name__ == "Led" and dev.model_name == "led"
    # the same file without model_path: found with Machine's model_path (--model-path)
    cfg.write_text(cfg.read_text().replace('model_path = "models"\n', ""))
    monkeypatch.delitem(sys.modules, "ledmodel")  # imported modules stay imported
    with pytest.raises(ConfigError, match="No module named 'ledmodel'"):
        Machine(load_topology(str(cfg)))
    dev = Machine(load_topology(str(cfg)), model_path=(str(models),)).devices[
        "0000:00:04.0"
    ]
    assert dev.model_name == "led"
    cfg.write_text('model_path = "nowhere"\n' + DEVICE)
    with pytest.raises(
        ConfigError, match=r"topo\.toml: model_path: 'nowhere': .* is not a directory"
    ):
        load_topology(str(cfg))


def test_device_files_belong_to_the_given_owner() -> None:
    from vfiofs.config import default_topology
    from vfiofs.fs.node import Node

    m = Machine(default_topology(), device_owner=(1000, 1001))

    def node(path: str) -> Node:
        return m.tree.root.walk(path)

    for path, mode in (
        ("dev/vfio/0", 0o600),
        ("dev/vfio/noiommu-2", 0o600),
        ("dev/vfio/devices/vfio0", 0o600),
        ("dev/iommu", 0o660),
    ):
        n = node(path)
        assert (n.uid, n.gid, stat.S_IMODE(n.mode)) == (1000, 1001, mode), path
    container = node("dev/vfio/vfio")  # the kernel's 0666 root node
    assert (container.uid, stat.S_IMODE(container.mode)) == (0, 0o666)
    assert node("sys/devices/pci0000:00/0000:00:04.0/vendor").uid == 0


def test_topology_doc_describes_every_key() -> None:
    doc = (ROOT / "docs/topology.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", doc, re.MULTILINE))
    known = {k for keys in KEYS.values() for k in keys}
    assert documented == known


def test_topology_doc_example_is_valid(tmp_path: Path) -> None:
    """The worked example's files, as docs/topology.md shows them, load as a machine
    with the example's device (tests/mount/test_cli.py runs its lspci)."""
    files = doc_files(tmp_path)
    assert set(files) == {"models/blink.py", "topology.toml"}
    m = Machine(load_topology(str(tmp_path / "topology.toml")))
    assert type(m.devices["0000:00:1f.0"]).__name__ == "BlinkDevice"
