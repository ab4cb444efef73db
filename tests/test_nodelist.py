"""numactl-syntax lists and sizes: one parser for every node and CPU list."""

from __future__ import annotations

import pytest

from numamove.errors import NodeListError, SizeError
from numamove.nodelist import format_bytes, format_list, parse_list, parse_size


@pytest.mark.parametrize("text, want", [
    ("0", [0]), ("0-2,4", [0, 1, 2, 4]), ("4,0-2", [0, 1, 2, 4]), ("1-1", [1]), (" 3 ", [3]),
    ("", []), ("0-1,1-2", [0, 1, 2]),
])
def test_parse_list_ok(text: str, want: list[int]) -> None:
    """numactl syntax parses to sorted unique values."""
    assert parse_list(text) == want


@pytest.mark.parametrize("text", ["1-", "-1", "a", "1,a", "3-1", "1.5", "0x1", ",", "1 2"])
def test_parse_list_rejects(text: str) -> None:
    """Malformed lists raise NodeListError naming the text."""
    with pytest.raises(NodeListError, match="invalid node list"):
        parse_list(text)


def test_all_and_universe() -> None:
    """'all' expands to the universe and values outside it are named in the error."""
    assert parse_list("all", [0, 2, 5]) == [0, 2, 5]
    with pytest.raises(NodeListError, match="node 99 does not exist .*nodes 0,2,5"):
        parse_list("0,99", [0, 2, 5])
    with pytest.raises(NodeListError, match="'all' needs"):
        parse_list("all")


@pytest.mark.parametrize("vals, want", [([0, 1, 2, 4], "0-2,4"), ([], ""), ([3], "3"), ([5, 1, 2], "1-2,5")])
def test_format_list_roundtrip(vals: list[int], want: str) -> None:
    """format_list is the inverse of parse_list."""
    assert format_list(vals) == want
    assert parse_list(want) == sorted(vals)


@pytest.mark.parametrize("text, want", [
    ("4096", 4096), ("1K", 1024), ("512M", 512 << 20), ("1G", 1 << 30), ("1g", 1 << 30),
    ("1GiB", 1 << 30), ("1.5G", 3 << 29), ("2T", 2 << 40),
])
def test_parse_size_ok(text: str, want: int) -> None:
    """Sizes take binary K/M/G/T suffixes."""
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["0", "-5", "1Q", "", "G", "0.0001K"])
def test_parse_size_rejects(text: str) -> None:
    """Zero, negative and unknown units are SizeErrors."""
    with pytest.raises(SizeError):
        parse_size(text)


def test_format_bytes() -> None:
    """Binary units with two decimals."""
    assert format_bytes(1 << 30) == "1.00 GiB"
    assert format_bytes(512) == "512 B"
