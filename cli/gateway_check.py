"""`jvpn-xdp gateway check`: validate a gateway config, its peers file,
policy file and key files, and print the effective configuration. Opens no
socket, TUN, store or lock and needs no root (only read access to the
files): run it before `gateway up`, or before `gateway reload`."""

from __future__ import annotations

from dataclasses import replace

import click

from jvpn.errors import JvpnError


@click.command("check", help="Validate the gateway config, the peers file, the policy file "
                             "and the key files they name, without opening sockets, the TUN, "
                             "the store or the gate; then print the effective configuration: "
                             "every key with its value and the FILE:LINE that set it, or "
                             "'default'. Secrets are never printed (the public key is). "
                             "Stops at the first error, as `gateway up` would, with one line "
                             "FILE:LINE: Key: message, and exits 1. Also checks, without "
                             "creating anything, that StateDir and EventsFile can be used.")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Gateway config file (see README, Configuration files).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the effective configuration (or the error) as JSON.")
@click.pass_obj
def gateway_check(app, config_path: str, as_json: bool):
    from jvpn.config import load_gateway_config
    from jvpn.config_preflight import preflight
    from jvpn.config_report import gateway_report
    from jvpn.gateway.operator import default_path

    try:
        cfg = load_gateway_config(config_path)
        warnings = preflight(cfg)
    except JvpnError as e:
        if as_json:
            app.emit_json({"config": config_path, "valid": False, "error": str(e)})
        raise
    for line in warnings:  # one line each, never wrapped (rich would wrap at the width)
        click.echo(f"warning: {line}", err=True)
    if as_json:
        app.emit_json({**gateway_report(cfg, default_path(app.run_dir)), "warnings": warnings})
        return
    for line in gateway_text(cfg, default_path(app.run_dir)):
        click.echo(line)


def gateway_text(cfg, default_socket=None) -> list[str]:
    """The effective configuration in the config files' own syntax, with the
    source of each value as a comment."""
    from jvpn.config_report import gateway_rows, peer_dict, policy_rows, text_lines

    base = cfg.sources.path
    out = [f"# {base}: valid, peers: {len(cfg.peers)}", "[Interface]",
           *text_lines(gateway_rows(cfg, default_socket), base)]
    for peer in cfg.peers:
        p = peer_dict(peer)
        out += ["", f"[Peer]  # {p['source']}", f"PublicKey = {p['public_key']}",
                f"AllowedIPs = {', '.join(p['allowed_ips'])}", f"Name = {p['name']}"]
    policy = cfg.sources.files.get("Policy")
    out += ["", f"# policy: {policy or 'the default policy (no Policy key)'}"]
    section = ""
    for row in policy_rows(cfg.policy, cfg.sources):
        head, _, name = row.key.rpartition(".")
        if head != section:
            section = head
            out.append(f"[{head}]")
        out += text_lines([replace(row, key=name)], policy or base)
    return out
