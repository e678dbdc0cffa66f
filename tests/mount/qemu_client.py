"""Run under `vfiofs run` (``qemu_client.py [BDF [GROUP [RAM_MiB]]]``): start QEMU with a vfio-pci device from the tree, ask it over QMP
what it realized, quit, and print one JSON line: the PCI devices QEMU sees, the IOMMU
mappings while it ran and after it quit, and its exit status. Standard library only (it
also runs under the system's python3 as an unprivileged user)."""

import json
import subprocess
import sys
import time

BDF = sys.argv[1] if len(sys.argv) > 1 else "0000:00:04.0"
GROUP = sys.argv[2] if len(sys.argv) > 2 else "0"
RAM_MIB = sys.argv[3] if len(sys.argv) > 3 else "256"


def mappings() -> list[str]:
    path = f"/sys/kernel/debug/vfiofs/iommu_groups/{GROUP}/mappings"
    with open(path) as f:
        return f.read().splitlines()


q = subprocess.Popen(
    ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-nodefaults", "-display", "none",
     "-S", "-m", RAM_MIB, "-device", f"vfio-pci,host={BDF}", "-qmp", "stdio"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
)  # fmt: skip
assert q.stdin is not None and q.stdout is not None


def cmd(c: str) -> dict:
    q.stdin.write(json.dumps({"execute": c}) + "\n")
    q.stdin.flush()
    while True:
        line = q.stdout.readline()
        if not line:
            return {"error": "QEMU exited"}
        msg = json.loads(line)
        if "return" in msg or "error" in msg:
            return msg


try:
    greeting = q.stdout.readline()
    pci: dict = {"error": "no QMP greeting"}
    during: list[str] = []
    if greeting:
        cmd("qmp_capabilities")
        pci = cmd("query-pci")
        during = mappings()
        cmd("quit")
    q.wait(timeout=60)
finally:
    if q.poll() is None:  # never leave QEMU behind
        q.kill()
        q.wait()
deadline = time.monotonic() + 10  # the last close reaches the daemon asynchronously
while mappings() and time.monotonic() < deadline:
    time.sleep(0.02)
print(
    json.dumps({"pci": pci, "during": during, "after": mappings(), "rc": q.returncode})
)
