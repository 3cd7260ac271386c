"""The ASGI type aliases every layer shares (the transport calls apps, the web layer is one).

Loose on purpose: servers and frameworks each declare their own (TypedDict) ASGI types, and
these only have to let them meet. Imports nothing from the rest of the package.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
