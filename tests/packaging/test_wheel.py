"""A regular install works outside the source tree.

The wheel is built from a clean `git clone` of the repository's HEAD (so
untracked or uncommitted files cannot help: commit before running this), then
checked two ways:

- without root: it holds every tracked source file under jvpn/ and cli/ (the
  latter as jvpn_cli/), so a subpackage missing from pyproject.toml or C
  sources missing from the package data fail here;
- as root with bcc (marked ``kernel``): installed into a fresh venv made from
  /usr/bin/python3 with --system-site-packages (bcc comes from Debian), run
  from a directory outside the tree, `jvpn-xdp attach` and `detach` work on a
  veth in a network namespace this test makes (and removes), and the gateway
  imports.

The build uses the running venv's setuptools (`--no-build-isolation`, the test
extra pins a new enough one); the install resolves jvpn's dependencies through
pip as configured on this machine (they are not in the system site-packages).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
SOURCE_SUFFIXES = (".py", ".c", ".h")
# Tree folder -> installed top-level package (pyproject's package-dir).
INSTALLED_AS = {"jvpn": "jvpn", "cli": "jvpn_cli"}
VETH, PEER = "jvpk0", "jvpk1"  # names inside the test's namespace only
PORT = 41990
PREFIX = "jvpnpk"  # namespaces and pin roots: PREFIX-<pid>-<random>
BPFFS = Path("/sys/fs/bpf")


def run(cmd: list[str], *, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run cmd; on failure, fail the test with its output (not a traceback)."""
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if got.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {got.returncode}:\n"
                    f"{got.stdout[-3000:]}\n{got.stderr[-3000:]}", pytrace=False)
    return got


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would make the
    installed venv see the source tree or this test's venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "JVPN_BPF_DIR")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout: the wheel is built from a clone of HEAD")
    head = run(["git", "-C", str(REPO), "rev-parse", "HEAD"]).stdout.strip()
    dest = tmp_path_factory.mktemp("clone") / "jvpn"
    run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(dest)])
    run(["git", "-C", str(dest), "checkout", "--quiet", head])
    return dest


@pytest.fixture(scope="module")
def wheel(clone, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(clone)], cwd=out)
    (built,) = out.glob("jvpn-*.whl")
    return built


def tracked_sources(clone: Path) -> set[str]:
    """Installed paths of every tracked .py/.c/.h file of the packages."""
    listed = run(["git", "-C", str(clone), "ls-files", *INSTALLED_AS]).stdout.split()
    return {INSTALLED_AS[p.split("/", 1)[0]] + "/" + p.split("/", 1)[1]
            for p in listed if p.endswith(SOURCE_SUFFIXES)}


def test_every_package_directory_is_declared(clone):
    """A directory with an __init__.py under jvpn/ or cli/ that pyproject.toml
    does not list would be silently left out of the wheel."""
    declared = set(tomllib.loads((clone / "pyproject.toml").read_text())
                   ["tool"]["setuptools"]["packages"])
    found = {(INSTALLED_AS[top] + "." + ".".join(init.parent.relative_to(clone / top).parts))
             .rstrip(".")
             for top in INSTALLED_AS for init in (clone / top).rglob("__init__.py")}
    assert found - declared == set(), "packages missing from [tool.setuptools] packages"
    assert declared - found == set(), "declared packages that do not exist"


def test_wheel_holds_every_tracked_source(clone, wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    missing = sorted(tracked_sources(clone) - names)
    assert missing == [], f"tracked sources missing from {wheel.name}"
    assert "jvpn/gate/bpf/jvpn_xdp.c" in names


# ---------------------------------------------------------------- installed


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv from the system Python (bcc is a Debian package) with
    the wheel installed. It gets no pip of its own: this venv's pip installs
    into it (`pip --python`), which saves the ensurepip copy."""
    where = tmp_path_factory.mktemp("venv") / "v"
    run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", "--system-site-packages", str(where)])
    run([sys.executable, "-m", "pip", "--python", str(where / "bin" / "python"), "install",
         "--quiet", str(wheel)], cwd=where.parent, env=clean_env())
    return where


def remove_leftovers() -> None:
    """Namespaces and pin roots of earlier runs that were killed before their
    clean-up (names carry the pid: a run going on in parallel is left alone)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in listed.splitlines() if line.strip()]
    names += [p.name for p in BPFFS.glob(f"{PREFIX}-*")]
    for name in names:
        parts = name.split("-")
        if parts[0] != PREFIX or len(parts) != 3 or not parts[1].isdigit():
            continue
        if Path(f"/proc/{parts[1]}").exists():
            continue
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        shutil.rmtree(BPFFS / name, ignore_errors=True)


def unique_name() -> str:
    return f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"


@pytest.fixture
def netns():
    """A network namespace holding a veth pair (both ends up); removed after,
    also when the test fails (deleting the namespace deletes the veth)."""
    remove_leftovers()
    name = unique_name()
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "-n", name, "link", "add", VETH, "type", "veth", "peer", "name", PEER])
        for dev in (VETH, PEER):
            run(["ip", "-n", name, "link", "set", dev, "up"])
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def pin_root():
    """A bpffs directory of this test's own, so no other test's pins collide."""
    root = BPFFS / unique_name()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def xdp_attached(ns: str, dev: str) -> bool:
    return " xdp" in run(["ip", "-n", ns, "-details", "link", "show", dev]).stdout


@pytest.mark.kernel
def test_installed_wheel_attaches_and_detaches(venv, netns, pin_root, tmp_path):
    cli = [str(venv / "bin" / "jvpn-xdp"), "--pin-root", str(pin_root),
           "--run-dir", str(tmp_path / "run")]
    # nsenter, not `ip netns exec`: the latter remounts /sys and hides bpffs.
    enter = ["nsenter", f"--net=/run/netns/{netns}", "--"]
    kw = {"cwd": tmp_path, "env": clean_env()}
    run([*enter, *cli, "attach", VETH, "--port", str(PORT), "--mode", "generic"], **kw)
    try:
        assert xdp_attached(netns, VETH)
        assert (pin_root / VETH / "sessions").exists()
        run([*enter, *cli, "detach", VETH], **kw)
        assert not xdp_attached(netns, VETH)
        assert not (pin_root / VETH).exists()
    finally:
        subprocess.run([*enter, *cli, "detach", VETH], capture_output=True, check=False, **kw)


@pytest.mark.kernel
def test_installed_wheel_imports_the_gateway(venv, tmp_path):
    probe = ("import jvpn, jvpn.gateway.daemon, jvpn.gate.sources as s; "
             "print(jvpn.__file__); print(s.bpf_dir())")
    got = run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, env=clean_env())
    package_file, bpf_dir = got.stdout.split()
    assert Path(package_file).is_relative_to(venv), "jvpn imported from outside the venv"
    assert Path(bpf_dir).is_relative_to(venv)
    assert (Path(bpf_dir) / "jvpn_xdp.c").is_file()
