"""A private /etc for one process of a lab (the client, to test DNS and
Endpoint host names): the process runs in its own mount namespace where /etc
is an overlay of the real /etc with our resolv.conf and hosts on top. Every
write it makes to /etc (resolv.conf rewritten, its backup) lands in
``upper`` under the test's tmp folder, where the test reads it, even after
the process is gone. The host's /etc is never written.

Resolver managers are hidden in that namespace (a tmpfs over
/run/systemd/resolve; /dev/null over resolvectl and resolvconf): the client
picks the resolv.conf backend, and nothing reaches the host's resolver,
which lives in another network namespace anyway.
"""

from __future__ import annotations

from pathlib import Path

_SETUP = """set -e
if [ -d /run/systemd/resolve ]; then mount -t tmpfs tmpfs /run/systemd/resolve; fi
for t in resolvectl resolvconf; do
  if p=$(command -v "$t"); then mount --bind /dev/null "$p"; fi
done
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$UPPER,workdir=$WORK" /etc
exec "$@"
"""


class PrivateEtc:
    def __init__(self, tmp: Path, *, resolv_conf: str, hosts: str):
        self.upper, self.work = Path(tmp) / "etc-upper", Path(tmp) / "etc-work"
        self.upper.mkdir()
        self.work.mkdir()
        (self.upper / "resolv.conf").write_text(resolv_conf)
        (self.upper / "hosts").write_text(hosts)

    @property
    def resolv_conf(self) -> Path:
        """What the process sees as /etc/resolv.conf (read it from here)."""
        return self.upper / "resolv.conf"

    def wrap(self) -> tuple[str, ...]:
        """The command prefix that runs a command with this /etc."""
        script = _SETUP.replace("$UPPER", str(self.upper)).replace("$WORK", str(self.work))
        return ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh")
