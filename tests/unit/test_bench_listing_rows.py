"""jvpn/bench/listing_rows.py times the CLI's real `sessions --json` path:
its listing is the CLI's text (json.dumps of the merged rows, indent 2)
of pages that the CLI's own checks accept, and it reports every stage."""

from __future__ import annotations

import io
import json

from jvpn.bench import listing_rows
from jvpn_cli import views


def test_the_benchs_listing_is_the_clis_json_of_the_merged_rows():
    kernel = listing_rows.kernel_rows(2 * views.SESSIONS_PAGE + 7)  # three pages, one short
    pages = listing_rows.daemon_pages(kernel)
    assert len(pages) == 3
    out = io.StringIO()
    listing_rows.listing(kernel, pages, out)
    daemon = [r for raw in pages for r in views._checked_rows(json.loads(raw)["result"], "")]
    rows = [views.merged(k, d, listing_rows.NOW_MS) for k, d in zip(kernel, daemon, strict=True)]
    assert out.getvalue() == json.dumps({listing_rows.IFACE: rows}, indent=2) + "\n"
    assert rows[0]["allowed_ips"] == ["100.64.0.1/32"] and rows[0]["last_rx_age_s"] == 5.0


def test_it_prints_each_stage_per_row(capsys):
    listing_rows.main(["300", "2"])
    names = [line.split(":")[0].strip() for line in capsys.readouterr().out.splitlines()]
    assert names == ["decode", "check", "join", "text", "write", "whole"]
