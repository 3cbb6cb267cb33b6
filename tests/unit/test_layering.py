"""The product never imports the harness: importing every product module
(jvpn/*.py, jvpn.gate, jvpn.gateway, jvpn.store) loads no jvpn.lab,
jvpn.bench or jvpn.demo module. Checked in a fresh interpreter, so that
what other tests imported does not count."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import jvpn

HARNESS = ("jvpn.lab", "jvpn.bench", "jvpn.demo")
PRODUCT_PACKAGES = ("jvpn.gate", "jvpn.gateway", "jvpn.store")

PROBE = r"""
import importlib, json, sys
loaded, skipped = {}, []
for name in sys.argv[1:]:
    before = set(sys.modules)
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != "bcc":  # bcc (python3-bpfcc) is optional outside the kernel tiers
            raise
        skipped.append(name)
        continue
    loaded[name] = sorted(set(sys.modules) - before)
print(json.dumps({"loaded": loaded, "skipped": skipped}))
"""


def product_modules() -> list[str]:
    root = Path(jvpn.__file__).parent
    names = ["jvpn"] + [f"jvpn.{m.name}" for m in pkgutil.iter_modules([str(root)])
                        if not m.ispkg]
    for pkg in PRODUCT_PACKAGES:
        names.append(pkg)
        path = root / pkg.split(".", 1)[1]
        names += [f"{pkg}.{m.name}" for m in pkgutil.walk_packages([str(path)])]
    return names


def test_the_list_covers_every_product_package():
    names = product_modules()
    assert {"jvpn.wire", "jvpn.codes", "jvpn.gate.abi", "jvpn.gateway.daemon",
            "jvpn.store.sqlite"} <= set(names)
    assert not [n for n in names if n.startswith(HARNESS)]


def test_no_product_module_imports_the_harness():
    out = subprocess.run([sys.executable, "-c", PROBE, *product_modules()], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    offenders = {name: [m for m in mods if m.startswith(HARNESS)]
                 for name, mods in result["loaded"].items()}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert len(result["loaded"]) > 20  # the probe did import the product


def test_test_modules_have_unique_basenames():
    """pytest imports test modules by basename (rootdir mode, no packages):
    two files of one name in two tiers stop the whole run at collection."""
    root = Path(__file__).resolve().parents[1]
    names = [p.name for p in root.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
