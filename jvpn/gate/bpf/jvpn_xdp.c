/* SPDX-License-Identifier: Apache-2.0 */
/*
 * jvpn_xdp.c - the per-packet gate of a jvpn gateway (XDP, loaded by bcc
 * through jvpn/gate/loader.py, which passes -I bpf/include and the -D tunables).
 *
 * Verdict order for a UDP packet to one of our ports (docs/xdp.md):
 *   1 parse (malformed -> drop)         5 binding (data/keepalive only)
 *   2 session lookup (unknown -> drop)  6 anti-replay, under the session lock
 *   3 state allows the message type     7 rate limits (session / source / global)
 *   3b the header's key phase is one    8 pass to the daemon's socket
 *      the element accepts (issue 13)
 *   4 header tag (SipHash-2-4, under that phase's key)
 * Step 6 records the counter for DATA only; keepalives and control messages,
 * whose bodies the tag does not cover, are checked for freshness there and
 * against the element's ctl_floor, which the daemon raises once their AEAD /
 * HMAC verified. A PATH_PROBE is checked against probe_floor instead, which
 * only a verified probe raises: probes and the other control messages cannot
 * overtake each other into a replay, and a probe's replays still die here
 * (issue 14).
 * Handshake initiations carry no session: only 1 and 7 apply. A frame the
 * parser cannot finish and that may be UDP to our port is dropped (1).
 * Authenticated control has its own budgets (per session, then gateway-wide)
 * that handshakes, which anyone can forge, cannot spend; PATH_PROBE has
 * budgets of its own (per session, then gateway-wide) that no other message
 * spends and that spend no other.
 * Every verdict is counted per reason; security drops are sampled as events.
 * Everything else is XDP_PASS, untouched.
 *
 * Map ownership (one writer each, docs/xdp.md):
 *   jvpn_sessions   daemon writes, XDP reads   (binding, state, tag keys by phase, rt slot)
 *   jvpn_session_rt XDP writes, daemon reads   (replay window, buckets)
 *   jvpn_config     attach writes, XDP reads   (ports, limits, clock)
 *   jvpn_fence      daemon writes, XDP reads   (cluster lease token, deadline)
 *   jvpn_remote     daemon writes, XDP reads   (others' sessions: tag keys, ctl_floor)
 *   jvpn_remote_rl  XDP writes (CAS), LRU      (their per-session control buckets)
 *   jvpn_global     XDP writes (CAS)           (global buckets)
 *   jvpn_src_rl     XDP writes (CAS), LRU      (per-source buckets)
 *   jvpn_counters   XDP writes, CLI reads      (per-CPU)
 *   jvpn_events     XDP writes, daemon/CLI read (ring buffer)
 */
#include <uapi/linux/bpf.h>
#include "jvpn_abi.h"
#include "parse.h"
#include "siphash.h"
#include "keyphase.h"
#include "replay.h"
#include "gcra.h"

#ifndef JVPN_PIN_DIR
#error "JVPN_PIN_DIR must name the bpffs directory of the maps"
#endif
#ifndef JVPN_MAX_SESSIONS
#define JVPN_MAX_SESSIONS 65536
#endif
#ifndef JVPN_MAX_SOURCES
#define JVPN_MAX_SOURCES 65536
#endif
#ifndef JVPN_MAX_REMOTE
#define JVPN_MAX_REMOTE 262144
#endif
#ifndef JVPN_MAX_REMOTE_BUCKETS
#define JVPN_MAX_REMOTE_BUCKETS 16384
#endif
#ifndef JVPN_EVENT_PAGES
#define JVPN_EVENT_PAGES 64
#endif

/* Written by the daemon only (jvpn/gate/kernel.py); XDP and the CLI read.
 * No-prealloc: a replaced element is freed after an RCU grace period, so a
 * reader in the middle of a packet sees the old binding or the new one,
 * never a mix. */
BPF_TABLE_PINNED("hash", __u64, struct jvpn_session, jvpn_sessions, JVPN_MAX_SESSIONS,
		 JVPN_PIN_DIR "/sessions", BPF_F_NO_PREALLOC);
/* Written by XDP only, under each slot's lock; the daemon and the CLI read.
 * Slots are named by the sessions' elements and re-initialized by
 * jvpn_rt_claim(), never deleted: an array (a spin lock cannot live in an
 * LRU map), so stale slots cost no memory beyond the fixed array. */
BPF_TABLE_PINNED("array", __u32, struct jvpn_session_rt, jvpn_session_rt, JVPN_MAX_SESSIONS,
		 JVPN_PIN_DIR "/session_rt");
/* Written by the daemon only: the sessions other gateways of the cluster own
 * (docs/cluster.md "Remote sessions"). Looked up only for a session id the
 * sessions map does not hold; its own capacity, so the cluster's sessions
 * are not capped by one sessions map. No-prealloc: memory per live entry. */
BPF_TABLE_PINNED("hash", __u64, struct jvpn_remote, jvpn_remote, JVPN_MAX_REMOTE,
		 JVPN_PIN_DIR "/remote", BPF_F_NO_PREALLOC);
/* Written by XDP only (compare-and-swap): the remote sessions' control
 * buckets. Bounded by LRU eviction. */
BPF_TABLE_PINNED("lru_hash", __u64, struct jvpn_remote_rl, jvpn_remote_rl,
		 JVPN_MAX_REMOTE_BUCKETS, JVPN_PIN_DIR "/remote_rl");
/* Written by `jvpn-xdp attach` only; XDP reads. */
BPF_TABLE_PINNED("array", int, struct jvpn_config, jvpn_config, 1, JVPN_PIN_DIR "/config");
/* Written by the gateway daemon only (its lease); XDP reads. */
BPF_TABLE_PINNED("array", int, struct jvpn_fence, jvpn_fence, 1, JVPN_PIN_DIR "/fence");
/* Written by XDP only (compare-and-swap); read by XDP. Global buckets. */
BPF_TABLE_PINNED("array", int, struct jvpn_global, jvpn_global, 1, JVPN_PIN_DIR "/global");
/* Written by XDP only (compare-and-swap); read by XDP. Bounded by LRU eviction. */
BPF_TABLE_PINNED("lru_hash", struct jvpn_src_key, struct jvpn_src_rl, jvpn_src_rl,
		 JVPN_MAX_SOURCES, JVPN_PIN_DIR "/src_rl");
/* Written by XDP only (per CPU, no atomics needed); the CLI reads and sums the CPUs. */
BPF_TABLE_PINNED("percpu_array", int, struct jvpn_counter, jvpn_counters, JVPN_C_MAX,
		 JVPN_PIN_DIR "/counters");
/* Written by XDP only; read by the daemon / `jvpn-xdp events`. Pinned by
 * jvpn/gate/loader.py. */
BPF_RINGBUF_OUTPUT(jvpn_events, JVPN_EVENT_PAGES);

#ifdef JVPN_TEST_CLOCK
/* Tests only: the clock is a map the test writes (and XDP reads), so runs are
 * deterministic. */
BPF_TABLE_PINNED("array", int, __u64, jvpn_test_clock, 1, JVPN_PIN_DIR "/test_clock");
static __always_inline __u64 jvpn_read_clock(const struct jvpn_config *cfg)
{
	int zero = 0;
	__u64 *t = jvpn_test_clock.lookup(&zero);

	return t ? *t : 0;
}
#else
/* Jiffy resolution is all the buckets need. bpf_jiffies64() is inlined by
 * the verifier (a load); bpf_ktime_get_coarse_ns() is a real call that cost
 * ~14 ns per packet here. attach measures ns_per_jiffy (jvpn/gate/loader.py). */
static __always_inline __u64 jvpn_read_clock(const struct jvpn_config *cfg)
{
	if (cfg->ns_per_jiffy)
		return bpf_jiffies64() * cfg->ns_per_jiffy;
	return bpf_ktime_get_coarse_ns();
}
#endif

#ifdef JVPN_TEST_CLOCK
static __always_inline __u64 jvpn_fence_clock(const struct jvpn_config *cfg)
{
	return jvpn_read_clock(cfg);
}
#else
/* The daemon's deadline is CLOCK_MONOTONIC: the coarse ktime is that clock
 * (a real helper call, paid only by data packets of a clustered gateway). */
static __always_inline __u64 jvpn_fence_clock(const struct jvpn_config *cfg)
{
	return bpf_ktime_get_coarse_ns();
}
#endif

/* Cluster fencing (jvpn_abi.h, jvpn_fence): this gateway's element, under a
 * lease that is certainly still alive. */
static __always_inline int jvpn_fenced(const struct jvpn_session *s,
				       const struct jvpn_config *cfg)
{
	int zero = 0;
	struct jvpn_fence *f = jvpn_fence.lookup(&zero);

	if (!f || !f->deadline_ns)
		return 0;
	return s->fence != f->token || jvpn_fence_clock(cfg) >= f->deadline_ns;
}

/* The clock is read once per packet, and only by verdicts that need it: the
 * cheapest drops (malformed, unknown session) never pay for it. */
static __always_inline __u64 jvpn_clock(const struct jvpn_config *cfg, __u64 *now)
{
	if (!*now)
		*now = jvpn_read_clock(cfg);
	return *now;
}

static __always_inline void jvpn_count(__u32 slot, __u64 bytes)
{
	struct jvpn_counter *c = jvpn_counters.lookup(&slot);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline __u32 jvpn_state_allows(__u8 state)
{
	switch (state) {
	case JVPN_STATE_ATTACHED:
		return JVPN_STATE_ALLOW_ATTACHED;
	case JVPN_STATE_VOLATILE:
		return JVPN_STATE_ALLOW_VOLATILE;
	case JVPN_STATE_RECOVERING:
		return JVPN_STATE_ALLOW_RECOVERING;
	case JVPN_STATE_DEGRADED:
		return JVPN_STATE_ALLOW_DEGRADED;
	case JVPN_STATE_REMOTE:
		return JVPN_STATE_ALLOW_REMOTE;
	default: /* BIRTH, TERMINATED, anything unknown */
		return 0;
	}
}

static __always_inline int jvpn_is_security_drop(__u32 reason)
{
	return reason == JVPN_R_DROP_BAD_TAG || reason == JVPN_R_DROP_WRONG_BINDING ||
	       reason == JVPN_R_DROP_REPLAY || reason == JVPN_R_DROP_RATE_SESSION ||
	       reason == JVPN_R_DROP_RATE_SOURCE || reason == JVPN_R_DROP_RATE_GLOBAL ||
	       reason == JVPN_R_DROP_RATE_AUTHED || reason == JVPN_R_DROP_KEY_PHASE;
}

static __always_inline int jvpn_tag_ok(const struct jvpn_session *s, const struct jvpn_hdr *h,
				       __u32 phase)
{
	const __u64 *w = (const __u64 *)h;
	const __u64 *k = jvpn_phase_key(s, phase);

	return jvpn_siphash24_24(k[0], k[1], w[0], w[1], w[2]) == h->tag;
}

static __always_inline int jvpn_bound_here(const struct jvpn_session *s,
					   const struct jvpn_pkt *pkt)
{
	if (s->bind_family != pkt->family || s->bind_port != pkt->sport)
		return 0;
	return s->bind_addr[0] == pkt->saddr[0] && s->bind_addr[1] == pkt->saddr[1] &&
	       s->bind_addr[2] == pkt->saddr[2] && s->bind_addr[3] == pkt->saddr[3];
}

/* Under the slot's lock: make the slot this element's runtime. A slot that
 * held another session starts at the element's floor; the same session under
 * a new generation (new on this gateway) starts at max(floor, its own top),
 * so nothing accepted here or by a previous owner can be replayed. */
static __always_inline void jvpn_rt_claim(struct jvpn_session_rt *rt, __u64 sid,
					  const struct jvpn_session *s)
{
	__u64 top = s->replay_floor;

	if (rt->session_id == sid && rt->gen == s->rt_gen)
		return;
	if (rt->session_id == sid && rt->replay_top > top)
		top = rt->replay_top;
	rt->session_id = sid;
	rt->gen = s->rt_gen;
	rt->rate_pkt_tat = 0;
	rt->rate_byte_tat = 0;
	rt->control_tat = 0; /* a previous owner's control bucket is not this one's */
	rt->probe_tat = 0;
	rt->probe_top = 0;
	rt->probe_dup_tat = 0;
	rt->rx_packets = 0;
	rt->rx_bytes = 0;
	rt->last_rx_ns = 0;
	jvpn_replay_seed(rt, top);
}

/* Under the slot's lock: the session's probe bucket for a fresh probe above
 * probe_floor. A counter above probe_top spends probe_tat and becomes
 * probe_top. One at or below it (a copy of a probe that passed, whatever its
 * body, the genuine probe after its copy, or a probe reordered behind a
 * newer one from another path) spends probe_tat only while at most half its
 * burst is spent, so junk-body replays of one path's probe header leave
 * the other half to the probes the client sends on its other paths (review
 * E L1); past that, one copy per refill of the whole bucket passes on
 * probe_dup_tat (a copy raced ahead of the genuine probe does not kill it).
 * One session passes at most its burst + 1 (review k16r1: probe_dup_tat was
 * a second bucket of the same size, twice the burst and rate). */
static __always_inline int jvpn_probe_allow(struct jvpn_session_rt *rt, __u64 counter,
					    __u64 now, const struct jvpn_config *cfg)
{
	__u64 interval = cfg->session_probe_interval_ns, burst = cfg->session_probe_burst_ns;

	if (counter > rt->probe_top) {
		if (!jvpn_gcra_allow(&rt->probe_tat, now, interval, burst, 1))
			return 0;
		rt->probe_top = counter;
		return 1;
	}
	if (jvpn_gcra_allow(&rt->probe_tat, now, interval, burst / 2, 1))
		return 1;
	return jvpn_gcra_allow(&rt->probe_dup_tat, now, interval + burst, 0, 1);
}

/* Handshake initiations (nothing authenticated): per source prefix (IPv4
 * /32, IPv6 /64), then global. Authenticated control never draws on these:
 * anyone can spend them by spoofing sources (issue 10 item 3). */
static __always_inline __u32 jvpn_handshake_budget(const struct jvpn_pkt *pkt,
						 const struct jvpn_config *cfg, __u64 *clock)
{
	__u64 now = jvpn_clock(cfg, clock);
	struct jvpn_src_key key = { .family = pkt->family };
	struct jvpn_src_rl fresh = {}, *src;
	struct jvpn_global *g;
	int zero = 0;

	key.addr[0] = pkt->saddr[0];
	if (pkt->family == JVPN_AF_INET6)
		key.addr[1] = pkt->saddr[1];
	src = jvpn_src_rl.lookup(&key);
	if (!src) {
		jvpn_src_rl.insert(&key, &fresh);
		src = jvpn_src_rl.lookup(&key);
		if (!src)
			return JVPN_R_DROP_RATE_SOURCE;
	}
	if (!jvpn_gcra_allow_atomic(&src->tat, now, cfg->source_interval_ns, cfg->source_burst_ns))
		return JVPN_R_DROP_RATE_SOURCE;
	g = jvpn_global.lookup(&zero);
	if (!g || !jvpn_gcra_allow_atomic(&g->control_tat, now, cfg->global_interval_ns,
					  cfg->global_burst_ns))
		return JVPN_R_DROP_RATE_GLOBAL;
	return 0;
}

/* Authenticated control, gateway-wide: a bucket only messages whose tag
 * verified for a known session (and that were fresh) can spend. */
static __always_inline __u32 jvpn_authed_budget(const struct jvpn_config *cfg, __u64 *clock)
{
	struct jvpn_global *g;
	int zero = 0;

	g = jvpn_global.lookup(&zero);
	if (!g || !jvpn_gcra_allow_atomic(&g->authed_control_tat, jvpn_clock(cfg, clock),
					  cfg->authed_interval_ns, cfg->authed_burst_ns))
		return JVPN_R_DROP_RATE_AUTHED;
	return 0;
}

/* PATH_PROBE, gateway-wide: a bucket of its own (jvpn_global.probe_tat),
 * never the authenticated budget. Every multi-homed client probes about once
 * a second, so thousands of them (or a man-on-the-side's copies of their
 * fresh probes) spending the authenticated budget would starve every other
 * session's reattach; here they can only starve each other's probes. */
static __always_inline __u32 jvpn_probe_budget(const struct jvpn_config *cfg, __u64 *clock)
{
	struct jvpn_global *g;
	int zero = 0;

	g = jvpn_global.lookup(&zero);
	if (!g || !jvpn_gcra_allow_atomic(&g->probe_tat, jvpn_clock(cfg, clock),
					  cfg->global_probe_interval_ns,
					  cfg->global_probe_burst_ns))
		return JVPN_R_DROP_RATE_GLOBAL;
	return 0;
}

/* A remote entry's key of phase p, and whether the phase is accepted: the
 * same rules as an element's (keyphase.h: the mask, and never the zero key). */
static __always_inline const __u64 *jvpn_remote_key(const struct jvpn_remote *r, __u32 phase)
{
	return phase ? r->tag_key_phase1 : r->tag_key;
}

static __always_inline int jvpn_remote_phase_accepted(const struct jvpn_remote *r,
						      __u32 phase)
{
	const __u64 *k = jvpn_remote_key(r, phase);

	return (r->key_phases & JVPN_KEY_PHASE_BIT(phase)) != 0 && (k[0] | k[1]) != 0;
}

/* A remote session's control bucket (jvpn_remote_rl), then the gateway's
 * authenticated budget: what a standby element's control spent. */
static __always_inline __u32 jvpn_remote_budget(__u64 sid, const struct jvpn_config *cfg,
						__u64 *clock)
{
	struct jvpn_remote_rl fresh = {}, *rl;

	if (cfg->session_control_interval_ns) {
		rl = jvpn_remote_rl.lookup(&sid);
		if (!rl) {
			jvpn_remote_rl.insert(&sid, &fresh);
			rl = jvpn_remote_rl.lookup(&sid);
			if (!rl)
				return JVPN_R_DROP_RATE_SESSION;
		}
		if (!jvpn_gcra_allow_atomic(&rl->control_tat, jvpn_clock(cfg, clock),
					    cfg->session_control_interval_ns,
					    cfg->session_control_burst_ns))
			return JVPN_R_DROP_RATE_SESSION;
	}
	return jvpn_authed_budget(cfg, clock);
}

/* Steps 2-7 for a session id the sessions map does not hold: unknown, or a
 * session another gateway owns (jvpn_remote). Only its client's reattach,
 * path response and terminate pass, tag-checked, above the control floor,
 * within the buckets; data and keepalives never (drop_state): this gateway
 * cannot pass a packet of a session it does not own. */
static __always_inline __u32 jvpn_remote_verdict(const struct jvpn_pkt *pkt,
						 const struct jvpn_config *cfg, __u64 *clock)
{
	struct jvpn_hdr *h = pkt->hdr;
	__u64 sid = h->session_id;
	__u32 phase = jvpn_key_phase(h);
	const struct jvpn_remote *r = jvpn_remote.lookup(&sid);
	const __u64 *k;
	__u32 verdict;

	if (!r)
		return JVPN_R_DROP_UNKNOWN_SESSION;
	if (!(JVPN_STATE_ALLOW_REMOTE & JVPN_BIT(h->type)))
		return JVPN_R_DROP_STATE;
	if (!jvpn_remote_phase_accepted(r, phase))
		return JVPN_R_DROP_KEY_PHASE;
	k = jvpn_remote_key(r, phase);
	if (jvpn_siphash24_24(k[0], k[1], ((const __u64 *)h)[0], ((const __u64 *)h)[1],
			      ((const __u64 *)h)[2]) != h->tag)
		return JVPN_R_DROP_BAD_TAG;
	if (h->counter <= r->ctl_floor || h->counter >= JVPN_REJECT_AFTER)
		return JVPN_R_DROP_REPLAY;
	verdict = jvpn_remote_budget(sid, cfg, clock);
	return verdict ? verdict : JVPN_R_PASS_CONTROL;
}

/* Steps 2-7 for a message that names a session. */
static __always_inline __u32 jvpn_session_verdict(const struct jvpn_pkt *pkt,
						  const struct jvpn_config *cfg, __u64 *clock)
{
	struct jvpn_hdr *h = pkt->hdr;
	__u64 sid = h->session_id;
	__u8 type = h->type;
	int is_data = type == JVPN_MSG_DATA || type == JVPN_MSG_KEEPALIVE;
	__u32 phase = jvpn_key_phase(h);
	struct jvpn_session *s;
	struct jvpn_session_rt *rt;
	__u32 verdict = 0, slot;
	int fresh;
	__u64 now, floor;

	s = jvpn_sessions.lookup(&sid);
	if (!s)
		return jvpn_remote_verdict(pkt, cfg, clock); /* or unknown */
	if (!(jvpn_state_allows(s->state) & JVPN_BIT(type)))
		return JVPN_R_DROP_STATE;
	if (!jvpn_phase_accepted(s, phase))
		return JVPN_R_DROP_KEY_PHASE; /* old keys after the overlap, or a forgery */
	if (!jvpn_tag_ok(s, h, phase))
		return JVPN_R_DROP_BAD_TAG;
	if (is_data && !jvpn_bound_here(s, pkt))
		return JVPN_R_DROP_WRONG_BINDING;
	if (is_data && jvpn_fenced(s, cfg))
		return JVPN_R_DROP_STATE;

	slot = s->rt_slot;
	rt = jvpn_session_rt.lookup(&slot);
	if (!rt)
		return JVPN_R_DROP_REPLAY; /* no window to prove freshness: fail closed */
	now = jvpn_clock(cfg, clock); /* no helper calls under the lock */
	bpf_spin_lock(&rt->lock);
	jvpn_rt_claim(rt, sid, s);
	/* Only DATA consumes its counter here. A keepalive or a control message
	 * is checked (a counter data consumed, or below the window, is stale)
	 * but not recorded: its body is not covered by the tag, so a copy of
	 * the header with another body must not kill the genuine message; the
	 * daemon records it after the AEAD / HMAC verified and raises the
	 * element's ctl_floor: a replay of a verified one dies here, before any
	 * bucket (issue 10 item 5). A probe has a floor of its own,
	 * probe_floor, which only a verified probe raises: a probe on a slow
	 * candidate is not killed by a later heartbeat of the fast active
	 * path, nor a slow reattach by a fast candidate's probe, and a
	 * captured probe's replays die here, before the session's probe
	 * bucket, once the daemon verified it (issue 14; the client keeps one
	 * probe in flight at a time, so no probe of ours overtakes another). */
	floor = type == JVPN_MSG_PATH_PROBE ? s->probe_floor : s->ctl_floor;
	fresh = type == JVPN_MSG_DATA ? jvpn_replay_accept(rt, h->counter)
				      : h->counter > floor && jvpn_replay_fresh(rt, h->counter);
	if (!fresh) {
		verdict = JVPN_R_DROP_REPLAY;
	} else if (is_data) {
		/* The counter stays consumed even if the bucket refuses: an
		 * authentic packet dropped here can never be replayed later. */
		if (!jvpn_gcra_allow(&rt->rate_pkt_tat, now, cfg->session_pkt_interval_ns,
				     cfg->session_pkt_burst_ns, 1) ||
		    !jvpn_gcra_allow(&rt->rate_byte_tat, now, cfg->session_byte_interval_ns,
				     cfg->session_byte_burst_ns, pkt->msg_len)) {
			verdict = JVPN_R_DROP_RATE_SESSION;
		} else {
			rt->rx_packets++;
			rt->rx_bytes += pkt->msg_len;
			rt->last_rx_ns = now;
		}
	} else if (type == JVPN_MSG_PATH_PROBE) {
		/* Probes only their own buckets (this one, then the gateway's
		 * probe bucket, not the authenticated one): a flood of them
		 * (copies seen on a candidate path, a key holder's, or many
		 * clients probing) leaves the control buckets, and so this and
		 * every other session's reattach, untouched. */
		if (!jvpn_probe_allow(rt, h->counter, now, cfg))
			verdict = JVPN_R_DROP_RATE_SESSION; /* this session's probe buckets */
	} else if (!jvpn_gcra_allow(&rt->control_tat, now, cfg->session_control_interval_ns,
				    cfg->session_control_burst_ns, 1)) {
		verdict = JVPN_R_DROP_RATE_SESSION; /* this session's control bucket */
	}
	bpf_spin_unlock(&rt->lock);
	if (verdict)
		return verdict;
	if (is_data)
		return type == JVPN_MSG_DATA ? JVPN_R_PASS_DATA : JVPN_R_PASS_KEEPALIVE;
	verdict = type == JVPN_MSG_PATH_PROBE ? jvpn_probe_budget(cfg, clock)
					      : jvpn_authed_budget(cfg, clock);
	return verdict ? verdict : JVPN_R_PASS_CONTROL;
}

/* Steps 1-7 for a parsed jvpn message. */
static __always_inline __u32 jvpn_verdict(const struct jvpn_pkt *pkt,
					  const struct jvpn_config *cfg, __u64 *clock)
{
	const struct jvpn_hdr *h = pkt->hdr;
	__u32 verdict;

	if (h->version != JVPN_WIRE_VERSION || h->reserved != 0)
		return JVPN_R_DROP_MALFORMED;
	switch (h->type) {
	case JVPN_MSG_HANDSHAKE_INIT:
		if (h->session_id != 0)
			return JVPN_R_DROP_MALFORMED;
		verdict = jvpn_handshake_budget(pkt, cfg, clock);
		return verdict ? verdict : JVPN_R_PASS_HANDSHAKE;
	case JVPN_MSG_DATA:
	case JVPN_MSG_KEEPALIVE:
	case JVPN_MSG_REATTACH_REQ:
	case JVPN_MSG_PATH_RESPONSE:
	case JVPN_MSG_TERMINATE:
	case JVPN_MSG_REKEY_INIT:
	case JVPN_MSG_PATH_PROBE: /* control: tag, probe_floor, freshness, its own bucket */
		return jvpn_session_verdict(pkt, cfg, clock);
	default: /* gateway-to-client types and unknown ones */
		return JVPN_R_DROP_BAD_TYPE;
	}
}

static __always_inline void jvpn_emit_event(__u32 reason, const struct jvpn_pkt *pkt,
					    const struct jvpn_config *cfg, __u64 *clock)
{
	struct jvpn_event ev = {};
	struct jvpn_global *g;
	__u64 now;
	int zero = 0;

	if (cfg->event_sample_every > 1 && bpf_get_prandom_u32() % cfg->event_sample_every) {
		jvpn_count(JVPN_C_EVENT_SUPPRESSED, 0);
		return;
	}
	now = jvpn_clock(cfg, clock);
	g = jvpn_global.lookup(&zero);
	if (!g || !jvpn_gcra_allow_atomic(&g->event_tat, now, cfg->event_interval_ns,
					  cfg->event_burst_ns)) {
		jvpn_count(JVPN_C_EVENT_SUPPRESSED, 0);
		return;
	}
	ev.ts_ns = now;
	ev.session_id = pkt->hdr->session_id;
	ev.counter = pkt->hdr->counter;
	__builtin_memcpy(ev.saddr, pkt->saddr, sizeof(ev.saddr));
	ev.sport = pkt->sport;
	ev.family = pkt->family;
	ev.msg_type = pkt->hdr->type;
	ev.reason = reason;
	if (jvpn_events.ringbuf_output(&ev, sizeof(ev), 0))
		jvpn_count(JVPN_C_EVENT_SUPPRESSED, 0);
	else
		jvpn_count(JVPN_C_EVENT_SENT, 0);
}

int jvpn_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 frame_len = data_end - data;
	struct jvpn_pkt pkt = {};
	struct jvpn_config *cfg;
	__u32 reason;
	__u64 now = 0; /* read lazily by jvpn_clock() */
	int zero = 0;

	cfg = jvpn_config.lookup(&zero);
	if (!cfg)
		return XDP_PASS;
	switch (jvpn_parse(data, data_end, cfg, &pkt)) {
	case JVPN_PARSE_OTHER:
		jvpn_count(JVPN_R_PASS_OTHER, frame_len);
		return XDP_PASS;
	case JVPN_PARSE_MALFORMED:
		jvpn_count(JVPN_R_DROP_MALFORMED, frame_len);
		return XDP_DROP;
	case JVPN_PARSE_UNPARSED:
		jvpn_count(JVPN_R_DROP_UNPARSED, frame_len);
		return XDP_DROP;
	}
	reason = jvpn_verdict(&pkt, cfg, &now);
	jvpn_count(reason, frame_len);
	if (jvpn_is_security_drop(reason))
		jvpn_emit_event(reason, &pkt, cfg, &now);
	return reason <= JVPN_R_PASS_HANDSHAKE ? XDP_PASS : XDP_DROP;
}
