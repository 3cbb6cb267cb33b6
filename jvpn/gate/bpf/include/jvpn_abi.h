/* SPDX-License-Identifier: Apache-2.0 */
/*
 * jvpn_abi.h - the single source of truth for every layout and constant that
 * the XDP program shares with Python.
 *
 * Included by: jvpn_xdp.c (through the helper headers) and by the layout
 * check in tests/bpf/test_abi.py, which compiles this file with the host gcc and
 * compares every size, offset and constant with the ctypes mirrors in
 * jvpn/gate/abi.py. Change a field here and that test tells you what to mirror.
 *
 * Rules: fixed-width fields only, explicit padding, every struct size a
 * multiple of 8, _Static_assert on sizes and key offsets.
 * Wire fields are little-endian (as WireGuard's); map fields are host order
 * except addresses and ports, which stay in network order as on the wire so
 * the XDP program compares them without byte swaps.
 */
#ifndef JVPN_ABI_H
#define JVPN_ABI_H

#include <linux/types.h>
#include <linux/bpf.h> /* struct bpf_spin_lock */

/* ---- wire format: the fixed 32-byte header of every jvpn message ---- */
#define JVPN_WIRE_VERSION 1
#define JVPN_HDR_LEN 32
#define JVPN_TAGGED_LEN 24 /* the tag covers bytes [0, 24) of the header */
#define JVPN_AEAD_TAG_LEN 16
#define JVPN_DEFAULT_PORT 51900

/* Message types. Which ones the gateway accepts, and in which session
 * state, is decided by JVPN_STATE_ALLOW_* below. */
#define JVPN_MSG_HANDSHAKE_INIT 1
#define JVPN_MSG_HANDSHAKE_RESP 2
#define JVPN_MSG_COOKIE_REPLY 3
#define JVPN_MSG_DATA 4
#define JVPN_MSG_KEEPALIVE 5
#define JVPN_MSG_REATTACH_REQ 6
#define JVPN_MSG_PATH_CHALLENGE 7
#define JVPN_MSG_PATH_RESPONSE 8
#define JVPN_MSG_REATTACH_ACK 9
#define JVPN_MSG_REATTACH_REJECT 10
#define JVPN_MSG_TERMINATE 11
#define JVPN_MSG_REKEY_INIT 12   /* client -> gateway: a new key epoch (issue 13) */
#define JVPN_MSG_REKEY_RESP 13   /* gateway -> client */
#define JVPN_MSG_REKEY_REJECT 14 /* gateway -> client */
/* client -> gateway from a candidate path, and the answer to its source
 * (issue 14, docs/protocol.md "Transport selection"): authenticated, moves
 * nothing (no binding, no state), so the gate treats it as control */
#define JVPN_MSG_PATH_PROBE 15
#define JVPN_MSG_PATH_PROBE_REPLY 16
#define JVPN_MSG_MAX 17

struct jvpn_hdr {
	__u8 type;
	__u8 version;
	__u16 flags;
	__u32 reserved;   /* must be zero */
	__u64 session_id; /* 0 only for handshake messages */
	__u64 counter;    /* per direction; AEAD nonce and replay sequence */
	__u64 tag;        /* SipHash-2-4(header key, bytes [0, 24)) */
};

/* Header flags the gate reads. The key phase is the low bit of the key
 * epoch the sender sealed under (docs/protocol.md, "Rekey"): it picks which
 * of the element's two header keys checks the tag. The flag is inside the
 * tagged bytes, so flipping it fails the tag. */
#define JVPN_FLAG_KEY_PHASE 4
/* The element's accepted-phase mask (jvpn_session.key_phases): bit p set =
 * phase p's header key is live. 0 accepts nothing (fail closed). */
#define JVPN_KEY_PHASE_BIT(p) (1u << (p))
#define JVPN_KEY_PHASES_ALL 3u

/* ---- session states (the seed's state machine) ---- */
#define JVPN_STATE_BIRTH 0
#define JVPN_STATE_ATTACHED 1
#define JVPN_STATE_VOLATILE 2
#define JVPN_STATE_RECOVERING 3
#define JVPN_STATE_DEGRADED 4
#define JVPN_STATE_TERMINATED 5
/* Not a state of the machine: an element of a session this gateway does not
 * pass data for (parked for a handover, fenced, blind after a crash), and
 * the mask a jvpn_remote entry (a session another gateway owns) is checked
 * against. Either lets only the client's reattach traffic reach this
 * daemon, never data. */
#define JVPN_STATE_REMOTE 6
#define JVPN_STATE_MAX 7

/* Message types each state lets through the gate (bit = 1 << type).
 * Data and keepalives need a bound transport (checked separately), so they
 * are allowed while the client may still use its old path (VOLATILE,
 * RECOVERING). Reattach traffic is allowed in every live state: a client
 * whose path broke may be seen as ATTACHED by the gateway until its first
 * valid request arrives (docs/protocol.md). BIRTH and TERMINATED pass
 * nothing: a session enters the map only once its handshake completed. */
#define JVPN_BIT(t) (1u << (t))
#define JVPN_ALLOW_DATA (JVPN_BIT(JVPN_MSG_DATA) | JVPN_BIT(JVPN_MSG_KEEPALIVE))
#define JVPN_ALLOW_CONTROL                                                    \
	(JVPN_BIT(JVPN_MSG_REATTACH_REQ) | JVPN_BIT(JVPN_MSG_PATH_RESPONSE) | \
	 JVPN_BIT(JVPN_MSG_TERMINATE) | JVPN_BIT(JVPN_MSG_REKEY_INIT) |    \
	 JVPN_BIT(JVPN_MSG_PATH_PROBE))
#define JVPN_STATE_ALLOW_BIRTH 0u
#define JVPN_STATE_ALLOW_ATTACHED (JVPN_ALLOW_DATA | JVPN_ALLOW_CONTROL)
#define JVPN_STATE_ALLOW_VOLATILE (JVPN_ALLOW_DATA | JVPN_ALLOW_CONTROL)
#define JVPN_STATE_ALLOW_RECOVERING (JVPN_ALLOW_DATA | JVPN_ALLOW_CONTROL)
#define JVPN_STATE_ALLOW_DEGRADED JVPN_ALLOW_CONTROL
/* A standby (REMOTE) passes what its daemon acts on: a reattach (a
 * handoff), its path response, a terminate. Not REKEY_INIT nor PATH_PROBE:
 * the standby refuses them before verifying anything, so neither its
 * ctl_floor nor its probe_floor ever rises and a captured header would
 * stay fresh there forever. */
#define JVPN_STATE_ALLOW_REMOTE                                               \
	(JVPN_BIT(JVPN_MSG_REATTACH_REQ) | JVPN_BIT(JVPN_MSG_PATH_RESPONSE) | \
	 JVPN_BIT(JVPN_MSG_TERMINATE))
#define JVPN_STATE_ALLOW_TERMINATED 0u

/* ---- verdict reasons: index of the per-CPU counters array ---- */
#define JVPN_R_PASS_OTHER 0          /* not jvpn traffic: untouched */
#define JVPN_R_PASS_DATA 1
#define JVPN_R_PASS_KEEPALIVE 2
#define JVPN_R_PASS_CONTROL 3        /* reattach, path response, terminate, rekey init */
#define JVPN_R_PASS_HANDSHAKE 4
#define JVPN_R_DROP_MALFORMED 5      /* truncated, bad version/reserved, fragment */
#define JVPN_R_DROP_BAD_TYPE 6       /* a type the gateway never receives */
#define JVPN_R_DROP_UNKNOWN_SESSION 7
#define JVPN_R_DROP_STATE 8          /* session state forbids this type */
#define JVPN_R_DROP_BAD_TAG 9
#define JVPN_R_DROP_WRONG_BINDING 10
#define JVPN_R_DROP_REPLAY 11
#define JVPN_R_DROP_RATE_SESSION 12
#define JVPN_R_DROP_RATE_SOURCE 13
#define JVPN_R_DROP_RATE_GLOBAL 14     /* handshakes: unauthenticated, whole gateway */
#define JVPN_R_DROP_UNPARSED 15        /* the parser gave up: may be UDP to our port */
#define JVPN_R_DROP_RATE_AUTHED 16     /* authenticated control, whole gateway */
#define JVPN_R_DROP_KEY_PHASE 17       /* a key phase the element does not accept
					* (or whose slot holds the zero key): a
					* forgery, or old-key traffic after an overlap */
#define JVPN_R_VERDICT_MAX 18
/* bookkeeping slots after the verdicts (not verdicts themselves) */
#define JVPN_C_EVENT_SENT 18
#define JVPN_C_EVENT_SUPPRESSED 19
#define JVPN_C_MAX 20

struct jvpn_counter {
	__u64 packets;
	__u64 bytes;
};

/* ---- jvpn_sessions: session_id -> binding, written by the daemon only ----
 * The element also names the session's runtime slot (rt_slot) and the
 * generation of that runtime (rt_gen). The XDP program (re)initializes the
 * slot when it does not hold (this session id, this generation), starting
 * its replay window at replay_floor, or at max(replay_floor, its own top) for
 * the same session id: so the daemon hands a window over by writing its own
 * element, and never writes jvpn_session_rt. */
#define JVPN_AF_NONE 0 /* no bound transport: data is dropped as wrong binding */
#define JVPN_AF_INET 4
#define JVPN_AF_INET6 6

/* Key phases (issue 13, docs/protocol.md "Rekey"): the element carries the
 * client->gateway header key of each live key epoch in the slot of its
 * phase (the epoch's low bit), and the mask of the phases it accepts: one
 * phase normally, both from a rekey's commit to the end of its overlap.
 * Each step is one element replace by the daemon (jvpn/gate/element.py
 * session_element); the runtime slot (replay window, buckets),
 * ctl_floor and probe_floor are per session and carry over. Every field:
 * written by the daemon only, read by XDP (and the CLI). */
struct jvpn_session {
	__u64 tag_key[2];   /* SipHash key (k0, k1) of client->gateway headers of phase 0 */
	__u64 version;      /* store version of the record this element projects */
	__u64 fence;        /* ownership fencing token (lease/revision), 0 = none */
	__u32 bind_addr[4]; /* network order; IPv4 in bind_addr[0], rest zero */
	__u16 bind_port;    /* network order */
	__u8 bind_family;   /* JVPN_AF_* */
	__u8 state;         /* JVPN_STATE_* */
	__u32 rt_slot;      /* index into jvpn_session_rt, chosen by the daemon */
	__u64 rt_gen;       /* a new value (new on this gateway) re-initializes the slot */
	__u64 replay_floor; /* counters below this count as seen in a new window */
	__u64 ctl_floor;    /* keepalive/control counters <= this are replays: the
			     * highest the daemon verified (issue 10 item 5); not
			     * PATH_PROBE's, which have probe_floor (issue 14) */
	__u64 tag_key_phase1[2]; /* the same for headers of key phase 1 */
	__u8 key_phases;    /* JVPN_KEY_PHASE_BIT(p): phase p accepted (its key live) */
	__u8 _pad0[7];
	__u64 probe_floor;  /* PATH_PROBE counters <= this are replays: the highest
			     * probe the daemon verified (issue 14: a captured
			     * probe's replays must not spend the probe bucket) */
};

/* ---- jvpn_session_rt: per-session runtime state, written by XDP only ----
 * An array of JVPN_MAX_SESSIONS slots (an element holding a bpf_spin_lock
 * cannot live in an LRU map): a slot is never deleted, it is re-initialized
 * by the XDP program when an element with another (session id, generation)
 * uses it. The daemon only reads it. */
#ifndef JVPN_REPLAY_BITS
#define JVPN_REPLAY_BITS 4096 /* bitmap size, a power of two >= 128 */
#endif
#define JVPN_REPLAY_WORDS (JVPN_REPLAY_BITS / 64)
/* RFC 6479: one word of the ring is the one being filled, so the window that
 * is guaranteed to be remembered is one word short of the ring. */
#define JVPN_REPLAY_WINDOW (JVPN_REPLAY_BITS - 64)
/* Counters at or above this are refused (WireGuard's REJECT_AFTER_MESSAGES):
 * it keeps JVPN_REPLAY_WINDOW + counter + 1 from wrapping around. */
#define JVPN_REJECT_AFTER (0xFFFFFFFFFFFFFFFFULL - JVPN_REPLAY_BITS)

struct jvpn_session_rt {
	struct bpf_spin_lock lock; /* guards every field below */
	__u32 _pad0;
	__u64 session_id;          /* the element this slot was initialized for ... */
	__u64 gen;                 /* ... and its rt_gen (0, 0: never used) */
	__u64 replay_top;          /* highest accepted counter + 1 (0: none yet) */
	__u64 rate_pkt_tat;        /* GCRA theoretical arrival time, packets */
	__u64 rate_byte_tat;       /* GCRA theoretical arrival time, bytes */
	__u64 rx_packets;          /* accepted data + keepalive */
	__u64 rx_bytes;
	__u64 last_rx_ns;
	__u64 replay_bitmap[JVPN_REPLAY_WORDS];
	__u64 control_tat;         /* GCRA, the session's authenticated control */
	__u64 probe_tat;           /* GCRA, the session's PATH_PROBEs (their own bucket) */
	/* A probe's body is not tagged, so the gate cannot consume its counter
	 * (a header copy must not kill the genuine probe): instead each counter
	 * spends probe_tat once. probe_top is the highest that did (0: none since
	 * the claim); a probe at or below it (a copy, a junk-body replay, the
	 * genuine one after its copy, or one reordered) spends probe_tat only
	 * while at most half its burst is spent, then probe_dup_tat, one copy
	 * per refill of the whole bucket: replays of one path's probe header
	 * cannot starve the probes the client sends on its other paths (review
	 * E L1), and a session passes at most its burst + 1 (review k16r1). */
	__u64 probe_top;
	__u64 probe_dup_tat;       /* GCRA, one copy per refill of probe_tat */
};

/* ---- jvpn_config: array[1], written by `jvpn-xdp attach` only ---- */
#define JVPN_MAX_PORTS 4

struct jvpn_config {
	__u16 ports[JVPN_MAX_PORTS];  /* network order, 0 = unused slot */
	/* GCRA limits as (interval per unit, burst tolerance), both in ns:
	 * rate = 1e9 / interval per second, burst ~ tolerance / interval. */
	__u64 session_pkt_interval_ns;
	__u64 session_pkt_burst_ns;
	__u64 session_byte_interval_ns; /* per byte; 0 disables the byte limit */
	__u64 session_byte_burst_ns;
	__u64 source_interval_ns;       /* handshakes per source prefix */
	__u64 source_burst_ns;
	__u64 global_interval_ns;       /* handshakes, whole gateway */
	__u64 global_burst_ns;
	/* Authenticated control (reattach, path response, terminate whose tag
	 * verified): budgets that unauthenticated traffic cannot spend. */
	__u64 session_control_interval_ns; /* per session, under its lock */
	__u64 session_control_burst_ns;
	/* PATH_PROBE spends its own per-session bucket, never the control one:
	 * copies of a fresh probe (anyone on a candidate path sees one each
	 * probe interval) cannot starve the session's reattach (issue 14). */
	__u64 session_probe_interval_ns;   /* per session, under its lock */
	__u64 session_probe_burst_ns;
	__u64 authed_interval_ns;          /* whole gateway */
	__u64 authed_burst_ns;
	/* PATH_PROBE, whole gateway: a bucket of its own, never the
	 * authenticated one above: every multi-homed client probes each
	 * second, so probes spending the authenticated budget would starve
	 * other sessions' reattaches (review D, issue 14). */
	__u64 global_probe_interval_ns;
	__u64 global_probe_burst_ns;
	__u64 event_interval_ns;        /* security events to userspace */
	__u64 event_burst_ns;
	__u32 event_sample_every;       /* 1 = every eligible drop, N = 1 in N */
	__u32 ns_per_jiffy;             /* clock: jiffies * this (0: coarse ktime) */
};

/* ---- jvpn_fence: array[1], written by the gateway daemon only ----
 * Cluster fencing, written on every lease refresh (deadline 0: off). Data
 * passes only for elements whose fence is this gateway's current lease, and
 * only before the lease's deadline (CLOCK_MONOTONIC ns, read coarse): a
 * daemon that stops refreshing (crashed, stopped, cut off from etcd) stops
 * passing data without having to act. */
struct jvpn_fence {
	__u64 token;
	__u64 deadline_ns;
};

/* ---- jvpn_remote: session_id -> a session another gateway of the cluster
 * owns, written by the daemon only (docs/cluster.md "Remote sessions") ----
 * What the gate needs to let that session's client reach this daemon (a
 * handoff's REATTACH_REQ, its PATH_RESPONSE, a TERMINATE) and nothing else:
 * the header keys of its live key phases and the control floor. No binding,
 * no runtime slot, no data ever (JVPN_STATE_ALLOW_REMOTE). Looked up only for
 * a session id the sessions map does not hold: an element of ours wins. Its
 * own capacity (JVPN_MAX_REMOTE), so a cluster is not capped at one
 * sessions map. */
struct jvpn_remote {
	__u64 tag_key[2];        /* header key of key phase 0 (as jvpn_session) */
	__u64 tag_key_phase1[2]; /* ... of phase 1 */
	__u64 ctl_floor;         /* control counters <= this are replays (daemon-verified) */
	__u8 key_phases;         /* JVPN_KEY_PHASE_BIT(p): phase p accepted */
	__u8 _pad0[7];
};

/* ---- jvpn_remote_rl: LRU session_id -> the per-session control bucket of a
 * remote session, written by XDP only (compare-and-swap) ----
 * A remote session has no runtime slot; its control bucket lives here,
 * bounded by LRU eviction (an evicted session starts with a fresh bucket,
 * as an evicted source does). */
struct jvpn_remote_rl {
	__u64 control_tat;
};

/* ---- jvpn_global: array[1], written by XDP only (atomic CAS) ---- */
struct jvpn_global {
	__u64 control_tat; /* GCRA state of the global handshake budget */
	__u64 event_tat;   /* GCRA state of the event budget */
	__u64 authed_control_tat; /* GCRA state of the authenticated control budget */
	__u64 probe_tat;   /* GCRA state of the gateway-wide PATH_PROBE budget */
};

/* ---- jvpn_src_rl: LRU source prefix -> GCRA state, written by XDP ---- */
struct jvpn_src_key {
	__u32 addr[4]; /* IPv4: /32 in addr[0]; IPv6: the /64 in addr[0..1] */
	__u8 family;
	__u8 _pad0[7];
};

struct jvpn_src_rl {
	__u64 tat;
};

/* ---- jvpn_events: ring buffer, written by XDP, read by the daemon/CLI ---- */
struct jvpn_event {
	__u64 ts_ns;
	__u64 session_id;
	__u64 counter;
	__u32 saddr[4];  /* network order */
	__u16 sport;     /* network order */
	__u8 family;
	__u8 msg_type;
	__u32 reason;    /* JVPN_R_* */
};

/* ---- test clock: array[1] of __u64 ns, only with -DJVPN_TEST_CLOCK ---- */

_Static_assert(sizeof(struct jvpn_hdr) == JVPN_HDR_LEN, "jvpn_hdr size");
_Static_assert(__builtin_offsetof(struct jvpn_hdr, tag) == JVPN_TAGGED_LEN, "tag offset");
_Static_assert(sizeof(struct jvpn_counter) == 16, "jvpn_counter size");
_Static_assert(sizeof(struct jvpn_session) == 112, "jvpn_session size");
_Static_assert(__builtin_offsetof(struct jvpn_session, bind_addr) == 32, "bind_addr offset");
_Static_assert(__builtin_offsetof(struct jvpn_session, tag_key_phase1) == 80,
	       "tag_key_phase1 offset");
_Static_assert(__builtin_offsetof(struct jvpn_session, key_phases) == 96, "key_phases offset");
_Static_assert(__builtin_offsetof(struct jvpn_session, probe_floor) == 104, "probe_floor offset");
_Static_assert(sizeof(struct jvpn_session_rt) == 104 + 8 * JVPN_REPLAY_WORDS, "rt size");
_Static_assert((JVPN_REPLAY_BITS & (JVPN_REPLAY_BITS - 1)) == 0, "replay bits: power of two");
_Static_assert(JVPN_REPLAY_BITS >= 128, "replay bits >= 128");
_Static_assert(sizeof(struct jvpn_config) == 160, "jvpn_config size");
_Static_assert(sizeof(struct jvpn_fence) == 16, "jvpn_fence size");
_Static_assert(sizeof(struct jvpn_remote) == 48, "jvpn_remote size");
_Static_assert(__builtin_offsetof(struct jvpn_remote, tag_key_phase1) == 16,
	       "jvpn_remote tag_key_phase1 offset");
_Static_assert(sizeof(struct jvpn_remote_rl) == 8, "jvpn_remote_rl size");
_Static_assert(sizeof(struct jvpn_global) == 32, "jvpn_global size");
_Static_assert(sizeof(struct jvpn_src_key) == 24, "jvpn_src_key size");
_Static_assert(sizeof(struct jvpn_event) == 48, "jvpn_event size");

#endif /* JVPN_ABI_H */
