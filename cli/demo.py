"""`jvpn-xdp demo`: the main job, in namespaces it creates and removes."""

from __future__ import annotations

import sys

import click


@click.command(help="Show, on this machine, a session surviving its transport (wifi -> lte, a "
                    "NAT rebinding) while an attacker's replays, forgeries and floods are "
                    "rejected, then forced churn ending in an explicit termination. Needs root. "
                    "Everything happens in network namespaces the demo creates and removes.")
@click.option("--json", "as_json", is_flag=True, help="Print only the summary as JSON.")
@click.option("--trace", type=click.Path(dir_okay=False), default="jvpn-demo-trace.jsonl",
              show_default=True, help="Where to write every event (JSON lines).")
@click.option("--xdp-only", is_flag=True,
              help="The short XDP-gate demo instead (one veth, no daemon).")
@click.pass_obj
def demo(app, as_json: bool, trace: str, xdp_only: bool):
    app.require_root()
    app.require_bcc()
    if xdp_only:
        from jvpn.demo.xdp import main as xdp_main

        sys.exit(xdp_main(app.paths))
    from jvpn.demo.tunnel import main as demo_main

    sys.exit(demo_main(as_json=as_json, trace=trace))
