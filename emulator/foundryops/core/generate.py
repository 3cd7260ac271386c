"""Generated company records for load tests (a seed dataset with `generate: N`).

Owns `company_rows(count, seed)`: deterministic rows (company_name, domain, country) built
from word lists with a seeded `random.Random`, so the same seed always makes the same snapshot.
Names repeat their first word across many rows, as real company lists do, so blocking is
exercised. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

GENERATED_SCHEMA = {"company_name": "string", "domain": "string", "country": "string"}

_FIRST = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "hooli",
    "vandelay",
    "pied",
    "dunder",
    "massive",
    "oceanic",
    "nakatomi",
    "gringotts",
    "monarch",
    "aperture",
    "blue",
    "red",
    "green",
    "silver",
    "golden",
    "iron",
    "north",
    "south",
    "east",
    "west",
    "pacific",
    "atlantic",
    "summit",
    "apex",
    "vertex",
    "pioneer",
    "liberty",
    "eagle",
    "falcon",
    "harbor",
    "river",
    "lake",
    "mountain",
    "valley",
    "prairie",
    "coastal",
    "urban",
    "metro",
    "national",
    "global",
    "united",
    "allied",
    "premier",
    "prime",
    "royal",
    "crown",
    "sterling",
    "granite",
    "cedar",
    "maple",
    "oak",
    "pine",
    "birch",
    "willow",
    "aspen",
    "delta",
    "omega",
    "alpha",
    "beta",
    "sigma",
    "nova",
    "stellar",
    "lunar",
    "solar",
    "quantum",
    "fusion",
]
_SECOND = [
    "dynamics",
    "systems",
    "labs",
    "logistics",
    "partners",
    "ventures",
    "analytics",
    "robotics",
    "foods",
    "energy",
    "capital",
    "holdings",
    "networks",
    "software",
    "hardware",
    "media",
    "health",
    "pharma",
    "foods",
    "textiles",
    "motors",
    "aerospace",
    "marine",
    "mining",
    "metals",
    "chemicals",
    "studios",
    "consulting",
    "security",
    "finance",
    "insurance",
    "retail",
    "brands",
    "outfitters",
    "supply",
    "works",
    "industries",
    "technologies",
    "solutions",
    "designs",
]
_SUFFIXES = ("Inc", "LLC", "Corp", "GmbH", "Ltd", "", "", "Co.", "PLC", "S.A.")
_TLDS = ("com", "com", "com", "io", "net", "co.uk", "de", "fr")
_COUNTRIES = ("US", "US", "US", "GB", "DE", "FR", "CA", "AU")


def company_rows(count: int, seed: int = 14) -> Iterator[tuple[str, str, str]]:
    rng = random.Random(seed)
    for number in range(count):
        first = rng.choice(_FIRST)
        second = rng.choice(_SECOND)
        tag = format(number, "x")
        suffix = rng.choice(_SUFFIXES)
        name = f"{first.title()} {second.title()} {tag}" + (f" {suffix}" if suffix else "")
        domain = f"{first}{second}{tag}.{rng.choice(_TLDS)}"
        yield name, domain, rng.choice(_COUNTRIES)
