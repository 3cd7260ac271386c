"""emulator: a local, stateful emulator of cloud service HTTP APIs, on Trio.

Services: Palantir Foundry, Fabric, ConnectSoft and FoundryOps (emulator/services.py).
"""

from __future__ import annotations

__version__ = "0.1.0"
