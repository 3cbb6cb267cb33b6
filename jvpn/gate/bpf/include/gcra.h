/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gcra.h - token buckets as GCRA (generic cell rate algorithm): one 64-bit
 * "theoretical arrival time" per bucket instead of (tokens, last refill), so
 * a shared bucket can be updated with one compare-and-swap and no lock.
 *
 *   allow  iff  max(tat, now) - now <= burst_ns
 *   then   tat  = max(tat, now) + interval_ns * cost
 *
 * rate = 1e9 / interval_ns units per second; about burst_ns / interval_ns + 1
 * units pass back to back. interval_ns == 0 disables the bucket. With the
 * coarse clock (one tick per jiffy), burst_ns must cover at least a tick.
 * Mirrored by jvpn/gate/model.py:gcra_next and gcra_allow.
 *
 * Included by: jvpn_xdp.c (beside include/ in jvpn/gate/bpf/).
 */
#ifndef JVPN_GCRA_H
#define JVPN_GCRA_H

#define JVPN_GCRA_CAS_TRIES 3

/* Returns the new TAT, or 0 when the packet must be refused. */
static __always_inline __u64 jvpn_gcra_next(__u64 tat, __u64 now, __u64 interval_ns,
					    __u64 burst_ns, __u64 cost)
{
	__u64 base = tat > now ? tat : now;
	__u64 next;

	if (base - now > burst_ns)
		return 0;
	next = base + interval_ns * cost;
	return next ? next : 1;
}

/* For state the caller owns exclusively (under a lock). */
static __always_inline int jvpn_gcra_allow(__u64 *tat, __u64 now, __u64 interval_ns,
					   __u64 burst_ns, __u64 cost)
{
	__u64 next;

	if (!interval_ns)
		return 1;
	next = jvpn_gcra_next(*tat, now, interval_ns, burst_ns, cost);
	if (!next)
		return 0;
	*tat = next;
	return 1;
}

/* For state shared between CPUs without a lock: compare-and-swap, a few
 * tries, then refuse (fail closed under contention). */
static __always_inline int jvpn_gcra_allow_atomic(__u64 *tat, __u64 now, __u64 interval_ns,
						  __u64 burst_ns)
{
	__u64 old, next;
	int i;

	if (!interval_ns)
		return 1;
#pragma unroll
	for (i = 0; i < JVPN_GCRA_CAS_TRIES; i++) {
		old = *(volatile __u64 *)tat;
		next = jvpn_gcra_next(old, now, interval_ns, burst_ns, 1);
		if (!next)
			return 0;
		if (__sync_val_compare_and_swap(tat, old, next) == old)
			return 1;
	}
	return 0;
}

#endif /* JVPN_GCRA_H */
