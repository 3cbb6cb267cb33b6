/* SPDX-License-Identifier: Apache-2.0 */
/*
 * replay.h - RFC 6479 sliding-window anti-replay, the algorithm of
 * WireGuard's counter_validate(): a ring of JVPN_REPLAY_WORDS 64-bit words,
 * of which JVPN_REPLAY_WINDOW bits are always remembered. Words are cleared
 * lazily when the top of the window moves forward.
 *
 * Pure: the caller holds the session's bpf_spin_lock and has already
 * verified the header tag, so only authentic packets move the window; and
 * only DATA moves it (jvpn_replay_fresh below: keepalives and control are
 * checked, not recorded).
 * Mirrored line for line by jvpn/replay.py:replay_accept (used by the reference
 * model, jvpn/gate/model.py, and by jvpn/replay.py:ReplayWindow).
 *
 * Included by: jvpn_xdp.c (beside include/ in jvpn/gate/bpf/).
 */
#ifndef JVPN_REPLAY_H
#define JVPN_REPLAY_H

#include "jvpn_abi.h"

/* Returns 1 if counter is fresh (and records it), 0 if it is a replay or
 * too old. rt->replay_top holds (highest accepted counter + 1) so that 0 can
 * mean "nothing accepted yet". */
static __always_inline int jvpn_replay_accept(struct jvpn_session_rt *rt, __u64 counter)
{
	__u64 seq = counter + 1;
	__u64 index, cur, span, bit;
	__u32 i;

	if (counter >= JVPN_REJECT_AFTER)
		return 0; /* the key must be replaced long before this */
	if (JVPN_REPLAY_WINDOW + seq < rt->replay_top)
		return 0; /* too old: no longer remembered */
	index = seq >> 6;
	if (seq > rt->replay_top) {
		cur = rt->replay_top >> 6;
		span = index - cur;
		if (span > JVPN_REPLAY_WORDS)
			span = JVPN_REPLAY_WORDS;
		for (i = 1; i <= JVPN_REPLAY_WORDS; i++) {
			if (i > span)
				break;
			rt->replay_bitmap[(cur + i) & (JVPN_REPLAY_WORDS - 1)] = 0;
		}
		rt->replay_top = seq;
	}
	index &= JVPN_REPLAY_WORDS - 1;
	bit = 1ULL << (seq & 63);
	if (rt->replay_bitmap[index] & bit)
		return 0;
	rt->replay_bitmap[index] |= bit;
	return 1;
}

/* Whether counter would be fresh, without recording it: 0 if it is at or
 * beyond the reject limit, below the window, or already recorded. For the
 * messages whose body the gate cannot check (keepalives and control: only the
 * header is tagged), so that a copy of a header with another body cannot
 * consume the genuine message's counter (issue 10 item 5). Above the top the
 * bits of the top's word are clear (accept and seed keep them so), and words
 * further up are cleared before use. Mirrored by jvpn/replay.py:replay_fresh. */
static __always_inline int jvpn_replay_fresh(const struct jvpn_session_rt *rt, __u64 counter)
{
	__u64 seq = counter + 1;

	if (counter >= JVPN_REJECT_AFTER)
		return 0;
	if (JVPN_REPLAY_WINDOW + seq < rt->replay_top)
		return 0;
	if (seq > rt->replay_top)
		return 1;
	return !(rt->replay_bitmap[(seq >> 6) & (JVPN_REPLAY_WORDS - 1)] & (1ULL << (seq & 63)));
}

/* Start a window as if every counter below top had been seen (top = a
 * previous window's replay_top): what a gateway accepted before cannot be
 * replayed into the new window. Bits above top in its own word stay clear,
 * so the next counters are accepted. top == 0 is an empty window. Mirrored by
 * jvpn/replay.py:seed_floor. */
static __always_inline void jvpn_replay_seed(struct jvpn_session_rt *rt, __u64 top)
{
	__u64 fill = top ? ~0ULL : 0;
	__u64 last = top & 63;
	__u32 i;

	for (i = 0; i < JVPN_REPLAY_WORDS; i++)
		rt->replay_bitmap[i] = fill;
	if (top)
		rt->replay_bitmap[(top >> 6) & (JVPN_REPLAY_WORDS - 1)] =
			last == 63 ? ~0ULL : (1ULL << (last + 1)) - 1;
	rt->replay_top = top;
}

#endif /* JVPN_REPLAY_H */
