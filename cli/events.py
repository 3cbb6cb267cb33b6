"""`jvpn-xdp events`: the event stream (JSON lines)."""

from __future__ import annotations

import json
from pathlib import Path

import click

DEFAULT_EVENTS = "/var/lib/jvpn/events.jsonl"
# the fields of the short form: a summary line (jvpn.events) shows its count
_SHOWN = ("count", "distinct_sources", "transport_id", "version", "new_state", "detail")
_SHORT = {"distinct_sources": "sources"}


@click.command(help="Print lifecycle and security events (one JSON object per line) from the "
                    "gateway's events file, including the XDP program's sampled drops. "
                    "Unauthenticated rejections come as one summary line per kind and "
                    "interval (count=, sources=). --follow keeps following across the "
                    "file's rotation, like tail -F.")
@click.option("--file", "path", default=DEFAULT_EVENTS, show_default=True,
              type=click.Path(dir_okay=False), help="The events file (EventsFile in the config).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they come.")
@click.option("--json", "as_json", is_flag=True,
              help="Raw JSON lines (default: a short line each).")
@click.option("--session", default=None, help="Only events of this session id (hex).")
@click.pass_obj
def events(app, path: str, follow: bool, as_json: bool, session: str | None):
    from jvpn.events import follow as follow_file

    p = Path(path)
    _require_readable(p)
    want = session.lower().removeprefix("0x").zfill(16) if session else None

    def show(ev: dict) -> None:
        if want and ev.get("session_id") != want:
            return
        if as_json:
            click.echo(json.dumps(ev, sort_keys=True))
            return
        extra = " ".join(f"{_SHORT.get(k, k)}={ev[k]}" for k in _SHOWN
                         if ev.get(k) not in (None, ""))
        click.echo(f"{ev.get('ts_ms')} {ev.get('event_type'):<20} {ev.get('reason_code'):<26} "
                   f"{ev.get('session_id') or '-'} {extra}")

    if follow:
        try:
            for ev in follow_file(p):
                show(ev)
        except KeyboardInterrupt:
            return
    else:
        with open(p) as f:
            for line in f:
                try:
                    show(json.loads(line))
                except ValueError:
                    continue


def _require_readable(p: Path) -> None:
    """One line naming the file and the setting, not a raw errno (the state
    directory is root's, 0700: an operator without root gets EACCES)."""
    from jvpn.errors import JvpnError

    try:
        with open(p, "rb"):
            pass
    except FileNotFoundError:
        raise JvpnError(f"no events file at {p} (--file): is the gateway running with "
                        "this EventsFile?") from None
    except PermissionError:
        raise JvpnError(f"cannot read the events file {p} (--file; EventsFile in the gateway "
                        "config): permission denied: run it as root (the StateDir is 0700)"
                        ) from None
    except IsADirectoryError:
        raise JvpnError(f"{p} (--file) is a directory, not the events file") from None
