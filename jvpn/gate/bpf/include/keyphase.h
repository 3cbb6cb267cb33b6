/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keyphase.h - which of a session element's two header keys checks a
 * message (issue 13, docs/protocol.md "Rekey": the kernel gate during the
 * change). Pure: no maps.
 *
 * A message names its key phase in the header flags (JVPN_FLAG_KEY_PHASE,
 * inside the tagged bytes: flipping it fails the tag). The element holds
 * one key per phase and the mask of the phases it accepts, so during a
 * rekey's overlap both epochs pass, and outside it only the live one does.
 * Exactly one SipHash per packet: the phase picks the key, never both.
 */
#ifndef JVPN_KEYPHASE_H
#define JVPN_KEYPHASE_H

#include "jvpn_abi.h"

static __always_inline __u32 jvpn_key_phase(const struct jvpn_hdr *h)
{
	return (h->flags & JVPN_FLAG_KEY_PHASE) ? 1 : 0;
}

/* k0 of the phase's header key; k1 is the word after it. */
static __always_inline const __u64 *jvpn_phase_key(const struct jvpn_session *s, __u32 phase)
{
	return phase ? s->tag_key_phase1 : s->tag_key;
}

/* A phase outside the mask is dropped before the tag, so no per-session
 * state (window, buckets, counters) moves for it. A slot holding the
 * all-zero key is refused too, whatever the mask says: that key is public,
 * and an element replace is not atomic for XDP readers (a hash element of
 * a BPF_F_NO_PREALLOC map can be reused under an RCU reader), so a torn
 * read must not pair a mask bit with a zero slot (docs/xdp.md). The daemon
 * fills unused slots with random bytes; this is the second defense. */
static __always_inline int jvpn_phase_accepted(const struct jvpn_session *s, __u32 phase)
{
	const __u64 *k = jvpn_phase_key(s, phase);

	return (s->key_phases & JVPN_KEY_PHASE_BIT(phase)) != 0 && (k[0] | k[1]) != 0;
}

#endif /* JVPN_KEYPHASE_H */
