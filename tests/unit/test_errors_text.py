import pytest

from exporter.errors import valid_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\ud800", "\ufffd"),
        ("a\udc00b", "a\ufffdb"),
        ("é\udfff😀", "é\ufffd😀"),
        # Two halves of a pair, as separate code points, are still not text.
        ("\ud83d\ude00", "\ufffd\ufffd"),
        ("\udbff\ud800x", "\ufffd\ufffdx"),
    ],
)
def test_lone_surrogates_become_replacement_characters(text: str, expected: str) -> None:
    """Each surrogate code point becomes U+FFFD; every other code point is kept."""
    assert valid_text(text) == expected
    assert valid_text(text).encode()


@pytest.mark.parametrize("text", ["", "CreateCluster", "é", "节点 😀", "\ufffd", "\x00\n"])
def test_text_that_encodes_is_returned_as_it_is(text: str) -> None:
    """A string that is valid Unicode text comes back as the very same object."""
    assert valid_text(text) is text
