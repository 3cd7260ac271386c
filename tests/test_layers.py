"""Import rules of DESIGN.md, checked on the source: layers are imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "emulator"
IO_LIBRARIES = {
    "trio",
    "quart",
    "quart_trio",
    "hypercorn",
    "yaml",
    "werkzeug",
    "httpx",
    "h11",
    "h2",
    "wsproto",
}


def imports_of(path: Path) -> set[str]:
    """Absolute top-level names and package-relative module paths a file imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add(node.module or "")
            else:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
    return found


def modules(pattern: str) -> list[Path]:
    return sorted(PACKAGE.glob(pattern))


def roots(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("path", modules("foundry/core/*.py"), ids=lambda p: p.name)
def test_core_is_synchronous_and_pure(path: Path) -> None:
    names = imports_of(path)
    assert not roots(names) & IO_LIBRARIES, f"{path.name} imports {roots(names) & IO_LIBRARIES}"
    assert not any(n.startswith(("emulator.foundry.api", "emulator.foundry.broker")) for n in names)


@pytest.mark.parametrize(
    "name",
    [
        "platform/seedschema.py",
        "platform/errors.py",
        "platform/clock.py",
        "platform/settings.py",
        "transport/tls.py",
        "foundry/seed.py",
    ],
)
def test_value_modules_do_no_io(name: str) -> None:
    assert not roots(imports_of(PACKAGE / name)) & IO_LIBRARIES


def test_yaml_only_in_seeds_and_hypercorn_only_in_server() -> None:
    for path in modules("**/*.py"):
        top = roots(imports_of(path))
        relative = str(path.relative_to(PACKAGE))
        if "yaml" in top:
            assert relative == "platform/seeds.py", relative
        if "hypercorn" in top:
            assert relative in (
                "transport/server.py",
                "transport/hypercorn_compat.py",
            ), relative


def test_generic_modules_know_no_service() -> None:
    # The service registry (app.default_services), the CLI's seed summary, starter and module
    # launcher, and the embedded handle's `.foundry` shortcut are the only places the generic
    # layer names Foundry.
    allowed = {"web/app.py", "cli.py", "embedded.py"}
    for path in modules("**/*.py"):
        relative = str(path.relative_to(PACKAGE))
        if relative in allowed or relative.startswith("foundry/"):
            continue
        names = imports_of(path)
        assert not any(n.startswith("emulator.foundry") for n in names), path.name
