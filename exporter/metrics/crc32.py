"""CRC-32 (gzip's) of texts joined, from the CRCs and sizes of the pieces alone.

A gzip body ends with the CRC-32 of all the text it holds. The renderer keeps
each job's text only deflated; it keeps the CRC and size of each piece of
text, and these functions give the CRC of the pieces joined without their
text: `combine` in a few dozen multiplications of polynomials over GF(2)
(what zlib's crc32_combine does, which Python's zlib does not offer), and
`join` for many pieces in a row, one pass of zlib over zero bytes each.
"""

import zlib
from collections.abc import Iterable

# The CRC-32 polynomial, bit-reversed as zlib uses it.
_POLY = 0xEDB88320
_ONE = 1 << 31  # the polynomial 1, in the reflected order


def _multiply(a: int, b: int) -> int:
    """Return a * b modulo the CRC polynomial (reflected bit order)."""
    product = 0
    mask = _ONE
    while a:
        if a & mask:
            product ^= b
            a ^= mask
        mask >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


def _powers() -> tuple[int, ...]:
    """Return x**(2**k) modulo the polynomial, for k from 0 to 63."""
    power = _ONE >> 1  # x
    table = [power]
    for _ in range(63):
        power = _multiply(power, power)
        table.append(power)
    return tuple(table)


_X_TO_2_TO = _powers()


def _shift(size: int) -> int:
    """Return x**(8 * size) modulo the polynomial: what `size` more bytes do to a CRC."""
    power = _ONE
    k = 3  # 8 * size = size * 2**3
    while size:
        if size & 1:
            power = _multiply(_X_TO_2_TO[k], power)
        size >>= 1
        k += 1
    return power


def combine(first: int, second: int, second_size: int) -> int:
    """Return the CRC-32 of A + B from the CRC-32 of A, that of B and the size of B."""
    return _multiply(_shift(second_size), first) ^ second


# Zero bytes to run zlib's CRC over: what B's size does to the CRC of A
# (x**(8 * size) times it) is zlib's CRC of that many zeros, started from the
# complement of A's CRC, complemented (zlib complements the CRC going in and
# coming out).
_ZEROS = memoryview(bytes(1 << 16))
_MASK = 0xFFFFFFFF


def join(pieces: Iterable[tuple[int, int]], crc: int = 0) -> int:
    """Return the CRC-32 of pieces joined, given (CRC, size) of each; `crc` is of what precedes."""
    for piece_crc, size in pieces:
        if size > len(_ZEROS):
            crc = combine(crc, piece_crc, size)
        elif size:
            crc = zlib.crc32(_ZEROS[:size], crc ^ _MASK) ^ _MASK ^ piece_crc
    return crc
