"""foundry-emulator: a local, stateful emulator of the Palantir Foundry HTTP APIs, on Trio."""

from __future__ import annotations

__version__ = "0.1.0"
