/* SPDX-License-Identifier: Apache-2.0 */
/*
 * siphash.h - SipHash-2-4 over exactly three 64-bit little-endian words: the
 * first 24 bytes of a jvpn header. Fixed length, fully unrolled, no loops.
 * Checked against the reference implementation (the `siphash24` Python
 * package, itself checked against the published vectors) in
 * tests/unit/test_siphash.py (the Python tag, jvpn/wire.py) and, in the kernel,
 * tests/bpf/test_xdp_verdicts.py and tests/bpf/test_xdp_property.py.
 *
 * Included by: jvpn_xdp.c (beside include/ in jvpn/gate/bpf/) and the tag-only
 * program of `jvpn-xdp bench xdp` (jvpn/bench/xdp.py).
 */
#ifndef JVPN_SIPHASH_H
#define JVPN_SIPHASH_H

#define JVPN_ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

/* One SipRound half per line, as in the reference: clang-format would split it. */
/* clang-format off */
#define JVPN_SIPROUND                                                      \
	do {                                                               \
		v0 += v1; v1 = JVPN_ROTL64(v1, 13); v1 ^= v0;              \
		v0 = JVPN_ROTL64(v0, 32);                                  \
		v2 += v3; v3 = JVPN_ROTL64(v3, 16); v3 ^= v2;              \
		v0 += v3; v3 = JVPN_ROTL64(v3, 21); v3 ^= v0;              \
		v2 += v1; v1 = JVPN_ROTL64(v1, 17); v1 ^= v2;              \
		v2 = JVPN_ROTL64(v2, 32);                                  \
	} while (0)

#define JVPN_SIP_COMPRESS(m)                                               \
	do {                                                               \
		v3 ^= (m);                                                 \
		JVPN_SIPROUND;                                             \
		JVPN_SIPROUND;                                             \
		v0 ^= (m);                                                 \
	} while (0)
/* clang-format on */

static __always_inline __u64 jvpn_siphash24_24(__u64 k0, __u64 k1,
					       __u64 m0, __u64 m1, __u64 m2)
{
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL;
	__u64 v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL;
	__u64 v3 = k1 ^ 0x7465646279746573ULL;
	const __u64 last = 24ULL << 56; /* message length in the top byte */

	JVPN_SIP_COMPRESS(m0);
	JVPN_SIP_COMPRESS(m1);
	JVPN_SIP_COMPRESS(m2);
	JVPN_SIP_COMPRESS(last);
	v2 ^= 0xff;
	JVPN_SIPROUND;
	JVPN_SIPROUND;
	JVPN_SIPROUND;
	JVPN_SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

#endif /* JVPN_SIPHASH_H */
