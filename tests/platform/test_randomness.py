"""Randomness: ids are well-formed random UUIDs and tokens keep their strength."""

from __future__ import annotations

import uuid

from emulator.platform.clock import Randomness


def test_uuids_are_canonical_random_version_4_and_distinct() -> None:
    # One source across several refills of its pool of random bytes, and fresh ones.
    randomness = Randomness()
    made = [randomness.uuid() for _ in range(2000)] + [Randomness().uuid() for _ in range(50)]
    for text in made:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # lower-case, hyphenated, nothing else
    assert len(set(made)) == len(made)
    # Every variant nibble (8, 9, a, b) and many version-4 bodies turn up: the bits are random.
    assert {text[19] for text in made} == set("89ab")
    assert len({text[14:18] for text in made}) > 1000


def test_tokens_keep_at_least_160_bits() -> None:
    randomness = Randomness()
    assert len(randomness.hex(1)) == 40
    token = randomness.token("fab_", 1)
    assert token.startswith("fab_")
    assert len(token) >= 4 + 27
