"""Sizes in the config file (durations are tested with the reader in test_config)."""

from __future__ import annotations

import pytest

from gateway.config.units import parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100", 100),
        (100, 100),
        ("512KB", 512_000),
        ("512KiB", 512 * 1024),
        ("64MiB", 64 * 1024**2),
        ("64 mib", 64 * 1024**2),
        ("1GB", 1000**3),
        ("1GiB", 1024**3),
        ("7B", 7),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "big", "1.5MiB", "-1", -1, "1TB", True])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)
