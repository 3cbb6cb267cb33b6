"""`jvpn-xdp events`: the event stream (JSON lines)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

DEFAULT_EVENTS = "/var/lib/jvpn/events.jsonl"
FOLLOW_LINES = 10  # like tail -f: the last 10 lines first
# the fields of the short form: a summary line (jvpn.events) shows its count
_SHOWN = ("count", "distinct_sources", "transport_id", "version", "new_state", "key_epoch",
          "detail")
_SHORT = {"distinct_sources": "sources"}


def iso_time(ts_ms) -> str:
    """An event's ts_ms (epoch milliseconds) as ISO-8601 UTC, to the
    millisecond; what is not a number is shown as it is (a file's line is
    input, not a promise)."""
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, (int, float)):
        return str(ts_ms)
    try:
        t = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return str(ts_ms)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def short_line(ev: dict) -> str:
    extra = " ".join(f"{_SHORT.get(k, k)}={ev[k]}" for k in _SHOWN
                     if ev.get(k) not in (None, ""))
    return (f"{iso_time(ev.get('ts_ms'))} {ev.get('event_type')!s:<20} "
            f"{ev.get('reason_code')!s:<26} {ev.get('session_id') or '-'} {extra}")


@click.command(help="Print lifecycle and security events (one JSON object per line) from the "
                    "gateway's events file, including the XDP program's sampled drops. "
                    "Unauthenticated rejections come as one summary line per kind and "
                    "interval (count=, sources=). Times are ISO-8601 UTC (--json keeps "
                    "ts_ms, epoch milliseconds). --follow prints the last --lines events, "
                    "then only new ones, across the file's rotation, like tail -F; a file "
                    "truncated in place is read again from its start (a note on stderr says "
                    "so, as it does for a dropped line of over 1 MiB with no newline).")
@click.option("--file", "path", default=DEFAULT_EVENTS, show_default=True,
              type=click.Path(dir_okay=False), help="The events file (EventsFile in the config).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they come.")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=None,
              help=f"Only the file's last N lines, like tail -n (then --session filters "
                   f"them); with --follow, before the new ones: default {FOLLOW_LINES}, 0 for "
                   "only new ones. Without --follow the default is the whole file.")
@click.option("--json", "as_json", is_flag=True,
              help="Raw JSON lines (default: a short line each).")
@click.option("--session", default=None, help="Only events of this session id (hex).")
@click.pass_obj
def events(app, path: str, follow: bool, lines: int | None, as_json: bool,
           session: str | None):
    from jvpn.events import follow as follow_file
    from jvpn.events import read as read_file

    p = Path(path)
    _require_readable(p)
    want = session.lower().removeprefix("0x").zfill(16) if session else None

    def show(ev: dict) -> None:
        if want and ev.get("session_id") != want:
            return
        click.echo(json.dumps(ev, sort_keys=True) if as_json else short_line(ev))

    if follow:
        try:
            for ev in follow_file(p, last=FOLLOW_LINES if lines is None else lines,
                                  note=lambda text: click.echo(f"note: {text}", err=True)):
                show(ev)
        except KeyboardInterrupt:
            return
        return
    for ev in read_file(p, last=lines):
        show(ev)


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
