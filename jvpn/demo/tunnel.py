"""`jvpn-xdp demo` (`sudo make demo`): on one machine, in namespaces the demo
creates, a session survives its transport while every attack of the seed
fails, each rejection shown with its reason code and where it happened.

Steps: (1) the gateway attaches XDP, the client handshakes, a TCP stream and
a ping run through the tunnel; (2) the client jumps wifi -> lte (behind a
carrier NAT), then the NAT rebinds; (3) an attacker who sees the client's
traffic tries replay, reattach replay, a recorded handshake initiation, forged
reattach, floods and the retired binding, then a hijack through a relay (on
path); (4) forced churn: DEGRADED, then TERMINATED; (5) a closing table.
A step that fails ends the demo non-zero, naming the step.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from jvpn import wire
from jvpn.gate import abi
from jvpn.lab.addresses import ATTACKER_IP, GW_INNER
from jvpn.lab.attacker import Attacker, Relay
from jvpn.lab.capture import Sniffer
from jvpn.lab.running import lab_policy
from jvpn.lab.tunnel import TunnelLab

DEMO_POLICY = lab_policy(max_switches_per_min=4, switch_cooldown_ms=300)


class StepFailed(Exception):
    pass


class Demo:
    def __init__(self, console: Console, trace: Path, quiet: bool):
        self.console, self.trace, self.quiet = console, trace, quiet
        self.tmp = Path(tempfile.mkdtemp(prefix="jvpn-demo-"))
        self.tl = TunnelLab(self.tmp, policy=DEMO_POLICY, nat=("lte",))
        self.summary: dict = {"steps": [], "attacks": []}
        self.attacker = Attacker(self.tl.lab)

    # ------------------------------------------------------------ output
    def say(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)

    def step(self, name: str):
        self.summary["steps"].append({"step": name, "ok": False})
        self.say(f"\n[bold cyan]== {name}[/bold cyan]")
        return self.summary["steps"][-1]

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            raise StepFailed(what)
        self.say(f"   [green]ok[/green] {what}")

    # ------------------------------------------------------------ helpers
    def session(self) -> dict:
        found = self.tl.cli_json("sessions", "gw0")["gw0"]
        return found[0] if found else {}

    def counters(self) -> dict:
        return {k: v["packets"] for k, v in self.tl.cli_json("stats", "gw0")["gw0"].items()}

    def wait_accepts(self, n: int, what: str) -> None:
        self.tl.wait(lambda: len([e for e in self.tl.gateway_events()
                                  if e["reason_code"] == "REATTACH_ACCEPT"]) >= n, what)

    def attacker_send(self, msgs: list[bytes], spoof: tuple[str, int] | None = None) -> None:
        self.attacker.send(msgs, spoof)

    def attack(self, name: str, msgs: list[bytes], expect: str,
               spoof: tuple[str, int] | None = None) -> None:
        before = self.counters()
        events_before = len(self.tl.gateway_events())
        self.attacker_send(msgs, spoof)
        time.sleep(0.4)
        after = self.counters()
        moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)
                 and k.startswith("drop_")}
        daemon = Counter(e["reason_code"] for e in self.tl.gateway_events()[events_before:]
                         if e["event_type"] in ("ReattachResult", "HandshakeRejected"))
        where = "XDP" if moved.get(expect) else ("daemon" if daemon.get(expect) else "?")
        got = moved.get(expect, 0) or daemon.get(expect, 0)
        self.summary["attacks"].append({"attack": name, "sent": len(msgs), "rejected": got,
                                        "reason": expect.upper(), "where": where})
        self.say(f"   {name}: {len(msgs)} sent -> [red]rejected[/red] {got} x "
                 f"[bold]{expect.upper()}[/bold] in {where}")
        if got != len(msgs):
            raise StepFailed(f"attack '{name}': expected {len(msgs)} x {expect}, saw {moved} "
                             f"in XDP and {dict(daemon)} in the daemon")

    # ------------------------------------------------------------ the story
    def run(self) -> dict:
        """The story in four acts; each step records whether it held."""
        s0, sniffer, finish = self.act_attach()
        s2 = self.act_jump(s0)
        self.act_attacks(s0, s2, sniffer, finish)
        self.act_churn()
        return self.closing()

    def act_attach(self):
        st = self.step("1. gateway attaches XDP; client handshakes; stream and ping")
        sniffers = []
        self.tl.up(before_client=lambda: sniffers.append(Sniffer(self.tl.lab)))
        s0 = self.session()
        self.say(f"   session [bold]{s0['session_id']}[/bold] bound to {s0['bound']} "
                 f"({s0['state']}, version {s0['version']})")
        [sniffer] = sniffers
        finish = self.tl.stream(12_000_000, 14.0)
        ping = self.tl.lab.run("cl", "ping", "-c", "3", "-i", "0.2", "-W", "2", GW_INNER,
                               check=False)
        self.check(ping.returncode == 0, f"ping {GW_INNER} through the tunnel")
        st["ok"] = True
        return s0, sniffer, finish


    def act_jump(self, s0: dict) -> dict:
        st = self.step("2. the client jumps wifi -> lte (carrier NAT), then the NAT rebinds")
        time.sleep(1.0)
        old_binding = s0["bound"]
        self.tl.lab.link("cl", "wifi", "down")
        self.wait_accepts(1, "reattach after the jump")
        s1 = self.session()
        self.check(s1["session_id"] == s0["session_id"] and s1["bound"] != old_binding,
                   f"same session, binding {old_binding} -> {s1['bound']}, "
                   f"version {s0['version']} -> {s1['version']}")
        time.sleep(1.0)
        self.tl.lab.nat_rebind()
        self.wait_accepts(2, "reattach after the NAT rebinding")
        s2 = self.session()
        self.check(s2["bound"] != s1["bound"], f"NAT rebinding: {s1['bound']} -> {s2['bound']}")
        path = [e["new_state"] for e in self.tl.gateway_events()
                if e["event_type"] == "SessionStateChange"]
        self.say(f"   state path: {' -> '.join(path)}")
        st["ok"] = True
        return s2


    def act_attacks(self, s0: dict, s2: dict, sniffer, finish) -> None:
        old_binding = s0["bound"]
        st = self.step("3. the attacker tries (it sees the client's traffic)")
        sniffer.stop()
        data = [m for m, _ in sniffer.captured.get(abi.MSG_DATA, [])]
        reqs = [m for m, _ in sniffer.captured.get(abi.MSG_REATTACH_REQ, [])]
        inits = [m for m, _ in sniffer.captured.get(abi.MSG_HANDSHAKE_INIT, [])]
        if not data or not reqs or not inits:
            raise StepFailed("the attacker captured no data, REATTACH_REQ or HANDSHAKE_INIT")
        sid = int(s2["session_id"], 16)
        self.attack("replay of captured data packets (attacker's address)", data[:50],
                    "drop_wrong_binding")
        cur = s2["bound"].rsplit(":", 1)
        self.attack("replay of captured data packets (spoofing the current binding)", data[:50],
                    "drop_replay", spoof=(cur[0], int(cur[1])))
        self.attack("replay of a captured REATTACH_REQ from the attacker's address", reqs[:1],
                    "drop_replay")
        self.attack("replay of the client's recorded HANDSHAKE_INIT (attacker's address)",
                    inits[:1], "REPLAY_DETECTED")
        s3 = self.session()
        self.check(s3["session_id"] == s2["session_id"] and s3["bound"] == s2["bound"],
                   f"the session and its binding stay: {s3['session_id']} bound to "
                   f"{s3['bound']}")
        forged = [wire.seal_control(
            wire.Header(type=abi.MSG_REATTACH_REQ, session_id=sid, counter=10**9 + i),
            secrets.token_bytes(16), secrets.token_bytes(32), 10**6 + i, int(time.time() * 1000),
            secrets.token_bytes(16), 0) for i in range(20)]
        self.attack("forged REATTACH_REQ for the victim's session", forged[:1], "drop_bad_tag")
        self.attack("reattach flood (forged proofs)", forged, "drop_bad_tag")
        flood = [wire.message(wire.Header(type=abi.MSG_DATA, session_id=secrets.randbits(64),
                                          counter=i), secrets.token_bytes(16), b"x" * 64)
                 for i in range(3000)]
        self.attack("flood of unknown session IDs", flood, "drop_unknown_session")
        old = old_binding.rsplit(":", 1)
        self.attack("packets spoofing the retired binding", data[50:80] or data[:30],
                    "drop_wrong_binding", spoof=(old[0], int(old[1])))
        sent, received = finish()
        self.check(sent == received, f"the stream's bytes arrived intact: {received['bytes']} "
                                     f"bytes, sha256 {received['sha256'][:16]}...")
        self.summary["stream"] = {"sent": sent, "received": received}
        self.relay_hijack()
        st["ok"] = True


    def act_churn(self) -> None:
        st = self.step("4. forced churn: switching faster than the policy allows")
        for _ in range(6):
            state = self.session().get("state")
            if state in (None, "TERMINATED"):
                break
            self.tl.lab.nat_rebind()
            time.sleep(1.6)
        ends = [e for e in self.tl.gateway_events() if e["event_type"] == "SessionStateChange"]
        states = [e["new_state"] for e in ends]
        self.check("DEGRADED" in states, "switch bounds exceeded: DEGRADED (data blocked in XDP)")
        self.tl.wait(lambda: "TERMINATED" in [e.get("new_state") for e in
                                               self.tl.gateway_events()], "TERMINATED")
        states = [e["new_state"] for e in self.tl.gateway_events()
                  if e["event_type"] == "SessionStateChange"]
        self.check(states[-1] == "TERMINATED" and states.index("DEGRADED") < len(states) - 1,
                   "exceeded again: explicit TERMINATED (no silent new session)")
        self.tl.wait(lambda: self.tl.client.poll() is not None, "the client to stop")
        self.check(self.tl.client.returncode != 0, "the client stopped and said why (exit "
                                                   f"{self.tl.client.returncode})")
        st["ok"] = True

    def relay_hijack(self) -> None:
        """Issue 10 item 6: the attacker, now on path, holds the client's
        traffic, gets the client's reattach request to the gateway from its
        own address, relays the challenge to the client (spoofing the
        gateway) and the client's answer back from its own address; then it
        lets the client through again."""
        name = "hijack through a relay (captured request, relayed challenge and answer)"
        events_before = len(self.tl.gateway_events())
        sniffer = Sniffer(self.tl.lab)
        relay = Relay(self.tl.lab, sniffer)
        on_attacker = lambda: self.session().get("bound", "").startswith(ATTACKER_IP + ":")  # noqa: E731
        try:
            relay.hold()
            request, client = relay.next_from_client(abi.MSG_REATTACH_REQ, 0)
            relay.to_gateway(request)
            relay.to_client(relay.from_gateway(), client)
            answer, _ = relay.next_from_client(abi.MSG_PATH_RESPONSE, 0)
            relay.to_gateway(answer)
            self.tl.wait(on_attacker, "the relayed answer to reach the gateway", timeout=10)
            hijacked = self.session()["bound"]
            relay.release()
            self.tl.wait(lambda: not on_attacker(), "the binding to come back", timeout=15)
        finally:
            relay.close()
            sniffer.stop()
        back = self.session()
        new = self.tl.gateway_events()[events_before:]
        sec = [e for e in new if e["event_type"] == "SecurityEvent"
               and e["reason_code"] == "SEC_SESSION_FIXATION_ATTEMPT"]
        self.summary["attacks"].append({"attack": name, "sent": 1, "rejected": int(bool(sec)),
                                        "reason": "SEC_SESSION_FIXATION_ATTEMPT",
                                        "where": "daemon", "hijacked": hijacked,
                                        "back_to": back.get("bound")})
        self.say(f"   {name}: binding -> {hijacked} (attacker), the client's retry from its "
                 f"own path -> [red]undone[/red]: back to {back.get('bound')} "
                 f"([bold]SEC_SESSION_FIXATION_ATTEMPT[/bold], TRANSPORT_SWITCH_OK in daemon)")
        if not sec or back.get("state") != "ATTACHED":
            raise StepFailed(f"attack '{name}': binding {back}, security events {sec}")

    def closing(self) -> dict:
        st = self.step("5. closing table")
        counters = {k: v for k, v in self.counters().items() if v}
        events = [*self.tl.gateway_events(), *self.tl.client_event_list()]
        by_reason = Counter(e["reason_code"] for e in self.tl.gateway_events())
        history = [(e["version"], e["new_state"], e["reason_code"]) for e in
                   self.tl.gateway_events() if e["event_type"] == "SessionStateChange"]
        self.summary.update({"xdp_counters": counters, "events_by_reason": dict(by_reason),
                             "version_history": history, "trace": str(self.trace)})
        with open(self.trace, "w") as f:
            for e in sorted(events, key=lambda e: e["ts_ms"]):
                f.write(json.dumps(e, sort_keys=True) + "\n")
        if not self.quiet:
            t = Table(title="XDP verdicts (packets)")
            t.add_column("counter")
            t.add_column("packets", justify="right")
            for k, v in counters.items():
                t.add_row(k, str(v))
            self.console.print(t)
            t = Table(title="gateway events by reason code")
            t.add_column("reason")
            t.add_column("n", justify="right")
            for k, v in by_reason.most_common():
                t.add_row(k, str(v))
            self.console.print(t)
            self.console.print("version history: " + ", ".join(f"v{v} {s} ({r})"
                                                               for v, s, r in history))
            self.console.print(f"trace of every event: {self.trace}")
        st["ok"] = True
        return self.summary

    def close(self) -> None:
        self.tl.down()


def main(as_json: bool = False, trace: Path | None = None) -> int:
    console = Console()
    if os.geteuid() != 0:
        console.print("error: the demo needs root (namespaces, XDP): sudo make demo")
        return 1
    trace = Path(trace or "jvpn-demo-trace.jsonl").resolve()
    demo = Demo(console, trace, quiet=as_json)
    if not as_json:
        console.print(Panel("jvpn demo: the session survives its transport; attacks fail",
                            style="bold"))
    code = 0
    try:
        summary = demo.run()
    except StepFailed as e:
        failed = next((s["step"] for s in demo.summary["steps"] if not s["ok"]), "?")
        summary = {**demo.summary, "failed_step": failed, "error": str(e)}
        console.print(f"[red]demo failed at step '{failed}': {e}[/red]")
        code = 1
    except KeyboardInterrupt:
        summary, code = demo.summary, 130
    finally:
        demo.close()
    if as_json:
        print(json.dumps(summary))
    return code
