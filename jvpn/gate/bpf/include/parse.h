/* SPDX-License-Identifier: Apache-2.0 */
/*
 * parse.h - bounds-checked parsing of Ethernet / VLAN / IPv4 / IPv6 / UDP up
 * to the jvpn header. Pure: no maps, no helpers, so it can live in a header
 * that bcc's rewriter never needs to see.
 *
 * Included by: jvpn_xdp.c (beside include/ in jvpn/gate/bpf/). Mirrored by
 * jvpn/gate/model.py:parse.
 *
 * Classification: a frame passes untouched only once it is proven not to be
 * UDP to one of our ports (not IP, another L4 protocol, another UDP port, or
 * a later fragment, which is checked through its first fragment), so
 * attaching to a real uplink never cuts SSH. A frame the parser cannot
 * finish (a third VLAN tag, a fourth IPv6 extension header, a header cut
 * short) may be UDP to our port, which the kernel would then deliver to the
 * daemon unchecked: it is dropped as "unparsed" (issue 10 item 12).
 */
#ifndef JVPN_PARSE_H
#define JVPN_PARSE_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/in.h>
#include <uapi/linux/udp.h>
#include "jvpn_abi.h"

#define JVPN_PARSE_OTHER 0     /* not ours: XDP_PASS untouched */
#define JVPN_PARSE_OK 1        /* ours, header present and in bounds */
#define JVPN_PARSE_MALFORMED 2 /* ours (our port) but unusable */
#define JVPN_PARSE_UNPARSED 3  /* the parser gave up: may be ours, so not passed */

/* L4 results of the IP parsers besides a protocol number. */
#define JVPN_L4_NOT_OURS -1    /* proven not ours: a later fragment */
#define JVPN_L4_GAVE_UP -2     /* cut short, or beyond what we parse */

#define JVPN_ETH_P_8021Q 0x8100
#define JVPN_ETH_P_8021AD 0x88A8
#define JVPN_IP_MF 0x2000
#define JVPN_IP_OFFSET 0x1FFF
#define JVPN_IPV6_MAX_EXT 3

struct jvpn_cursor {
	void *pos;
	void *end;
};

struct jvpn_vlan {
	__be16 tci;
	__be16 proto;
};

struct jvpn_ipv6_opt {
	__u8 nexthdr;
	__u8 hdrlen; /* in 8-octet units, not counting the first 8 */
};

struct jvpn_ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset << 3 | flags */
	__be32 id;
};

/* What the verdict logic needs to know about one packet. */
struct jvpn_pkt {
	struct jvpn_hdr *hdr;
	__u32 saddr[4]; /* network order, IPv4 in saddr[0] */
	__u16 sport;    /* network order */
	__u8 family;    /* JVPN_AF_INET / JVPN_AF_INET6 */
	__u8 first_frag;
	__u32 msg_len;  /* UDP payload length: the jvpn message */
};

static __always_inline int jvpn_port_is_ours(const struct jvpn_config *cfg, __u16 dport)
{
	int i;
#pragma unroll
	for (i = 0; i < JVPN_MAX_PORTS; i++) {
		if (cfg->ports[i] && cfg->ports[i] == dport)
			return 1;
	}
	return 0;
}

static __always_inline int jvpn_parse_eth(struct jvpn_cursor *c, __u16 *proto)
{
	struct ethhdr *eth = c->pos;
	struct jvpn_vlan *vlan;
	int i;

	if ((void *)(eth + 1) > c->end)
		return -1;
	*proto = eth->h_proto;
	c->pos = eth + 1;
#pragma unroll
	for (i = 0; i < 2; i++) { /* 802.1Q and 802.1ad (QinQ) */
		if (*proto != bpf_htons(JVPN_ETH_P_8021Q) &&
		    *proto != bpf_htons(JVPN_ETH_P_8021AD))
			break;
		vlan = c->pos;
		if ((void *)(vlan + 1) > c->end)
			return JVPN_L4_GAVE_UP;
		*proto = vlan->proto;
		c->pos = vlan + 1;
	}
	if (*proto == bpf_htons(JVPN_ETH_P_8021Q) || *proto == bpf_htons(JVPN_ETH_P_8021AD))
		return JVPN_L4_GAVE_UP; /* a third tag: the kernel strips VID 0 ones */
	return 0;
}

/* Returns the L4 protocol or JVPN_L4_*. Fills addresses and the fragment flag. */
static __always_inline int jvpn_parse_ipv4(struct jvpn_cursor *c, struct jvpn_pkt *pkt)
{
	struct iphdr *ip = c->pos;
	__u32 ihl;

	if ((void *)(ip + 1) > c->end)
		return JVPN_L4_GAVE_UP;
	ihl = ip->ihl * 4;
	if (ip->version != 4 || ihl < sizeof(*ip))
		return JVPN_L4_GAVE_UP;
	if (c->pos + ihl > c->end)
		return JVPN_L4_GAVE_UP;
	if (ip->frag_off & bpf_htons(JVPN_IP_OFFSET))
		return JVPN_L4_NOT_OURS; /* no UDP header; its first fragment is checked */
	pkt->first_frag = (ip->frag_off & bpf_htons(JVPN_IP_MF)) != 0;
	pkt->family = JVPN_AF_INET;
	pkt->saddr[0] = ip->saddr;
	c->pos += ihl;
	return ip->protocol;
}

static __always_inline int jvpn_parse_ipv6(struct jvpn_cursor *c, struct jvpn_pkt *pkt)
{
	struct ipv6hdr *ip6 = c->pos;
	struct jvpn_ipv6_opt *opt;
	struct jvpn_ipv6_frag *frag;
	__u8 nexthdr;
	int i;

	if ((void *)(ip6 + 1) > c->end)
		return JVPN_L4_GAVE_UP;
	if (ip6->version != 6)
		return JVPN_L4_GAVE_UP;
	pkt->family = JVPN_AF_INET6;
	__builtin_memcpy(pkt->saddr, &ip6->saddr, 16);
	nexthdr = ip6->nexthdr;
	c->pos = ip6 + 1;
#pragma unroll
	for (i = 0; i < JVPN_IPV6_MAX_EXT; i++) {
		if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
		    nexthdr == IPPROTO_DSTOPTS) {
			opt = c->pos;
			if ((void *)(opt + 1) > c->end)
				return JVPN_L4_GAVE_UP;
			nexthdr = opt->nexthdr;
			c->pos += (opt->hdrlen + 1) * 8;
		} else if (nexthdr == IPPROTO_FRAGMENT) {
			frag = c->pos;
			if ((void *)(frag + 1) > c->end)
				return JVPN_L4_GAVE_UP;
			if (frag->frag_off & bpf_htons(0xFFF8))
				return JVPN_L4_NOT_OURS; /* checked through its first fragment */
			pkt->first_frag = 1;
			nexthdr = frag->nexthdr;
			c->pos = frag + 1;
		} else {
			break;
		}
	}
	if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	    nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_FRAGMENT)
		return JVPN_L4_GAVE_UP; /* a longer chain than we walk; the kernel walks it */
	return nexthdr;
}

/*
 * Parse one frame. On JVPN_PARSE_OK, pkt->hdr points at a full jvpn header
 * inside the packet and pkt->msg_len is the UDP payload length.
 */
static __always_inline int jvpn_parse(void *data, void *data_end,
				      const struct jvpn_config *cfg, struct jvpn_pkt *pkt)
{
	struct jvpn_cursor c = { .pos = data, .end = data_end };
	struct udphdr *udp;
	__u16 proto;
	__u32 udp_len;
	int l4;

	l4 = jvpn_parse_eth(&c, &proto);
	if (l4 == JVPN_L4_GAVE_UP)
		return JVPN_PARSE_UNPARSED;
	if (l4 < 0)
		return JVPN_PARSE_OTHER; /* shorter than an Ethernet header */
	if (proto == bpf_htons(ETH_P_IP))
		l4 = jvpn_parse_ipv4(&c, pkt);
	else if (proto == bpf_htons(ETH_P_IPV6))
		l4 = jvpn_parse_ipv6(&c, pkt);
	else
		return JVPN_PARSE_OTHER;
	if (l4 == JVPN_L4_GAVE_UP)
		return JVPN_PARSE_UNPARSED;
	if (l4 != IPPROTO_UDP)
		return JVPN_PARSE_OTHER;

	udp = c.pos;
	if ((void *)(udp + 1) > c.end)
		return JVPN_PARSE_UNPARSED; /* a first fragment may carry it in the next one */
	if (!jvpn_port_is_ours(cfg, udp->dest))
		return JVPN_PARSE_OTHER;

	/* From here on the packet is addressed to jvpn. */
	if (pkt->first_frag)
		return JVPN_PARSE_MALFORMED; /* jvpn never fragments; refuse reassembly */
	if (!udp->source)
		return JVPN_PARSE_MALFORMED; /* port 0: nothing can answer it (issue 10 item 1) */
	pkt->sport = udp->source;
	udp_len = bpf_ntohs(udp->len);
	if (udp_len < sizeof(*udp) + JVPN_HDR_LEN)
		return JVPN_PARSE_MALFORMED;
	if ((void *)udp + udp_len > c.end)
		return JVPN_PARSE_MALFORMED;
	pkt->hdr = (void *)(udp + 1);
	if ((void *)(pkt->hdr + 1) > c.end)
		return JVPN_PARSE_MALFORMED;
	pkt->msg_len = udp_len - sizeof(*udp);
	return JVPN_PARSE_OK;
}

#endif /* JVPN_PARSE_H */
