"""The inspector kit: each service's `GET /_emulate/` page, composed from a shared frame and the
service's own part.

Owns `compose_page` and `generic_page`. The frame (`templates/inspector-kit.html`) holds the
style and the script helpers every page shares (rows of text cells, tables refilled in place,
progress bars, the request log, a refresh once a second with the status line); a service's part
is two files in its package's `templates/`: `inspector-body.html` (its tables) and
`inspector.js` (its `every_second(...)` refresh). The page stays one self-contained document
(no external assets: it works offline). Services without a part get `generic_page` (their
`/_emulate/state` summary and the request log).
"""

from __future__ import annotations

import html
from importlib import resources

FRAME = ("templates", "inspector-kit.html")


def compose_page(title: str, package: str) -> bytes:
    """The page titled `title` with the part found in `package`'s templates."""
    templates = resources.files(package).joinpath("templates")
    body = templates.joinpath("inspector-body.html").read_text("utf-8")
    script = templates.joinpath("inspector.js").read_text("utf-8")
    frame = resources.files("emulator.web").joinpath(*FRAME).read_text("utf-8")
    page = frame.replace("<!--title-->", html.escape(title)).replace("<!--body-->", body)
    return page.replace("<!--script-->", script).encode("utf-8")


def generic_page() -> bytes:
    """The page of a service with no part of its own."""
    return compose_page("Emulator inspector", "emulator.web")
