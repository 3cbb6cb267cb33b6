#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine, run as root.
# Used by `make setup` (and so by `make test` / `make demo`), by .ci/run and by
# the Vagrant provisioner: the VM path is the CI path.
#
# What it does, and says it does:
#   1. Debian packages (--no-install-recommends): bcc for Python, bpftool,
#      iproute2, the tools later stages need (iperf3, nftables, netsniff-ng,
#      wireguard-go/-tools, etcd-server), python3-venv, git (tests/packaging
#      builds the wheel from a clone).
#   2. Kernel headers for bcc: the running kernel's own package when the distro
#      has it; otherwise the distro's generic headers, linked as
#      /lib/modules/$(uname -r)/{build,source}. XDP programs touch no
#      kernel-internal struct, so a nearby header set compiles them correctly.
#   3. bpffs mounted at /sys/fs/bpf.
#   4. A venv (.venv) from the distro Python with --system-site-packages so
#      `import bcc` works, and `pip install -e .[test]` into it (the test extra
#      brings pytest, hypothesis, ruff and the setuptools that builds the wheel).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv=${JVPN_VENV:-$here/.venv}
stamp=$venv/.jvpn-setup-done
log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo make setup): installing packages and mounting bpffs need it"
command -v apt-get >/dev/null || die "this script supports Debian/Ubuntu (apt-get not found)"

PKGS=(python3 python3-venv python3-pip python3-bpfcc bpftool iproute2 nftables
      iperf3 netsniff-ng wireguard-tools wireguard-go etcd-server procps kmod conntrack iputils-ping gcc libc6-dev linux-libc-dev git util-linux systemd)

missing_pkgs() {
  local p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

install_packages() {
  local need
  need=$(missing_pkgs | tr '\n' ' ')
  if [ -z "${need// }" ]; then log "Debian packages: all present"; return; fi
  log "installing Debian packages: $need"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $need >/dev/null
}

kernel_headers() {
  local kver build
  kver=$(uname -r)
  build=/lib/modules/$kver/build
  if [ -e "$build/include/generated/autoconf.h" ] && [ -e "/lib/modules/$kver/source/include/linux/kconfig.h" ]; then
    log "kernel headers: $build present"
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  if apt-cache show "linux-headers-$kver" >/dev/null 2>&1; then
    log "kernel headers: installing linux-headers-$kver (the running kernel's own)"
    apt-get install -y -qq --no-install-recommends "linux-headers-$kver" >/dev/null
    return
  fi
  # No headers package for this kernel (custom build): fall back to the
  # distro's generic headers and point build/source at them.
  local arch meta gver
  arch=$(dpkg --print-architecture)
  meta=linux-headers-$arch
  log "kernel headers: no package for $kver; falling back to the distro's generic $meta"
  dpkg-query -W -f='${Status}' "$meta" 2>/dev/null | grep -q 'install ok installed' ||
    apt-get install -y -qq --no-install-recommends "$meta" >/dev/null
  # The generic package's own /lib/modules/<gver>/{build,source} point at the
  # arch-specific tree and the -common tree (which holds include/linux/kconfig.h).
  gver=$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -n1)
  gver=${gver#/usr/src/linux-headers-}
  [ -n "$gver" ] && [ -e "/lib/modules/$gver/build" ] ||
    die "generic headers installed but /lib/modules/<ver>-$arch/build not found"
  mkdir -p "/lib/modules/$kver"
  ln -sfn "$(readlink -f "/lib/modules/$gver/build")" "/lib/modules/$kver/build"
  ln -sfn "$(readlink -f "/lib/modules/$gver/source")" "/lib/modules/$kver/source"
  log "kernel headers: linked /lib/modules/$kver/{build,source} -> $gver's headers (generic, not $kver's own)"
}

mount_bpffs() {
  if mountpoint -q /sys/fs/bpf; then log "bpffs: mounted"; return; fi
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf && log "bpffs: mounted at /sys/fs/bpf"
}

make_venv() {
  if [ ! -x "$venv/bin/python" ]; then
    log "venv: creating $venv from /usr/bin/python3 (--system-site-packages, for bcc)"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
  fi
  if [ -f "$stamp" ] && [ "$stamp" -nt "$here/pyproject.toml" ]; then
    log "venv: jvpn already installed"
  else
    log "venv: pip install -e .[test]"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install -q -e "$here[test]"
    touch "$stamp"
  fi
  "$venv/bin/python" -c 'import bcc' 2>/dev/null ||
    die "python3-bpfcc is installed but 'import bcc' fails in $venv"
}

install_packages
kernel_headers
mount_bpffs
make_venv
log "done: $venv/bin/jvpn-xdp is ready"
