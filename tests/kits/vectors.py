"""Shared test vectors: the same tables drive the Python model and the kernel
program (Katran style), so the two are held to the same answers."""

from jvpn.gate import abi

# SipHash-2-4, key 00..0f, message 00..(n-1), n = 0..63: the published
# reference vectors (Aumasson & Bernstein), as 64-bit little-endian integers.
SIPHASH24_VECTORS = [
    0x726FDB47DD0E0E31, 0x74F839C593DC67FD, 0x0D6C8009D9A94F5A, 0x85676696D7FB7E2D,
    0xCF2794E0277187B7, 0x18765564CD99A68D, 0xCBC9466E58FEE3CE, 0xAB0200F58B01D137,
    0x93F5F5799A932462, 0x9E0082DF0BA9E4B0, 0x7A5DBBC594DDB9F3, 0xF4B32F46226BADA7,
    0x751E8FBC860EE5FB, 0x14EA5627C0843D90, 0xF723CA908E7AF2EE, 0xA129CA6149BE45E5,
    0x3F2ACC7F57C29BDB, 0x699AE9F52CBE4794, 0x4BC1B3F0968DD39C, 0xBB6DC91DA77961BD,
    0xBED65CF21AA2EE98, 0xD0F2CBB02E3B67C7, 0x93536795E3A33E88, 0xA80C038CCD5CCEC8,
    0xB8AD50C6F649AF94, 0xBCE192DE8A85B8EA, 0x17D835B85BBB15F3, 0x2F2E6163076BCFAD,
    0xDE4DAAACA71DC9A5, 0xA6A2506687956571, 0xAD87A3535C49EF28, 0x32D892FAD841C342,
    0x7127512F72F27CCE, 0xA7F32346F95978E3, 0x12E0B01ABB051238, 0x15E034D40FA197AE,
    0x314DFFBE0815A3B4, 0x027990F029623981, 0xCADCD4E59EF40C4D, 0x9ABFD8766A33735C,
    0x0E3EA96B5304A7D0, 0xAD0C42D6FC585992, 0x187306C89BC215A9, 0xD4A60ABCF3792B95,
    0xF935451DE4F21DF2, 0xA9538F0419755787, 0xDB9ACDDFF56CA510, 0xD06C98CD5C0975EB,
    0xE612A3CB9ECBA951, 0xC766E62CFCADAF96, 0xEE64435A9752FE72, 0xA192D576B245165A,
    0x0A8787BF8ECB74B2, 0x81B3E73D20B49B6F, 0x7FA8220BA3B2ECEA, 0x245731C13CA42499,
    0xB78DBFAF3A8D83BD, 0xEA1AD565322A1A0B, 0x60E61C23A3795013, 0x6606D7E446282B93,
    0x6CA4ECB15C5F91E1, 0x9F626DA15C9625F3, 0xE51B38608EF25F57, 0x958A324CEB064572,
]


def replay_cases(bits: int = abi.REPLAY_BITS) -> list[tuple[str, list[tuple[int, bool]]]]:
    """WireGuard's counter self-test (drivers/net/wireguard/selftest/counter.c)
    restated for our window: (name, [(counter, accepted?), ...]), each case
    starting from an empty window."""
    W = abi.replay_window(bits)
    LIM = W + 1
    RAM = abi.reject_after(bits)
    top = (2 * bits // 64 - 1) * 64 + 63
    basic = [
        (0, True), (1, True), (1, False), (9, True), (8, True), (7, True), (7, False),
        (LIM, True), (LIM - 1, True), (LIM - 1, False), (LIM - 2, True), (2, True),
        (2, False), (LIM + 16, True), (3, False), (LIM + 16, False), (LIM * 4, True),
        (LIM * 4 - (LIM - 1), True), (10, False), (LIM * 4 - LIM, False),
        (LIM * 4 - (LIM + 1), False), (LIM * 4 - (LIM - 2), True),
        (LIM * 4 + 1 - LIM, False), (0, False), (RAM, False), (RAM - 1, True),
        (RAM, False), (RAM - 1, False), (RAM - 2, True), (RAM + 1, False),
        (RAM + 2, False), (RAM - 2, False), (RAM - 3, True), (0, False),
    ]
    return [
        ("in-order, reordered, duplicates, too old, huge jumps, the top", basic),
        ("fill the window upward, then 0 is still inside",
         [(i, True) for i in range(1, W + 1)] + [(0, True), (0, False)]),
        ("fill from 2, then 1 inside and 0 just outside",
         [(i, True) for i in range(2, W + 2)] + [(1, True), (0, False)]),
        ("a full window downward", [(i, True) for i in range(W, -1, -1)]),
        ("downward from W+1, 0 falls out",
         [(i, True) for i in range(W + 1, 0, -1)] + [(0, False)]),
        ("downward from W, then W+1 pushes 0 out",
         [(i, True) for i in range(W, 0, -1)] + [(W + 1, True), (0, False)]),
        ("downward from W, 0, then W+1",
         [(i, True) for i in range(W, 0, -1)] + [(0, True), (W + 1, True)]),
        ("wrap of the bitmap ring: each word boundary, twice around",
         [(i * 64 + 63, True) for i in range(2 * bits // 64)]
         + [(top, False), (top - W + 1, True), (top - W, False), (top - W + 1, False)]),
    ]
