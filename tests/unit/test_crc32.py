import zlib

from hypothesis import given
from hypothesis import strategies as st

from exporter.metrics import crc32

_PIECES = st.lists(st.binary(max_size=300), max_size=8)


@given(st.binary(max_size=500), st.binary(max_size=500))
def test_combine_gives_the_crc_of_the_joined_text(first: bytes, second: bytes) -> None:
    """The CRC combined from two CRCs and the second size is zlib's CRC of the two joined."""
    joined = crc32.combine(zlib.crc32(first), zlib.crc32(second), len(second))
    assert joined == zlib.crc32(first + second)


@given(st.binary(max_size=200), _PIECES)
def test_join_gives_the_crc_of_every_piece_in_a_row(before: bytes, pieces: list[bytes]) -> None:
    """The CRC joined from each piece's CRC and size, after `before`, is that of all the text."""
    joined = crc32.join(((zlib.crc32(piece), len(piece)) for piece in pieces), zlib.crc32(before))
    assert joined == zlib.crc32(before + b"".join(pieces))


def test_long_pieces_join_as_short_ones() -> None:
    """Pieces longer than the zero buffer are combined through the polynomial arithmetic."""
    pieces = [bytes(range(256)) * 300, b"x" * 70_000, b"", b"tail"]
    joined = crc32.join((zlib.crc32(piece), len(piece)) for piece in pieces)
    assert joined == zlib.crc32(b"".join(pieces))
    assert crc32.combine(0, zlib.crc32(pieces[0]), len(pieces[0])) == zlib.crc32(pieces[0])
