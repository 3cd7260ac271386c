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


def imports_of(path: Path, tree: ast.Module | None = None) -> set[str]:
    """Absolute top-level names and package-relative module paths a file imports."""
    if tree is None:
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


SERVICE_PACKAGES = sorted(
    path.parent.name for path in PACKAGE.glob("*/service.py") if path.parent.name != "platform"
)


def runtime_imports_of(path: Path) -> set[str]:
    """Like `imports_of`, without the imports under `if TYPE_CHECKING:` (no run-time coupling)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
            node.body = [ast.Pass()]
    return imports_of(path, tree)


def _within(name: str, package: str) -> bool:
    """`name` is `package` or inside it (emulator.foundryops is not inside emulator.foundry)."""
    return name == package or name.startswith(package + ".")


def test_every_registered_service_has_a_package() -> None:
    from emulator.services import service_names

    assert sorted(service_names()) == SERVICE_PACKAGES


def test_generic_modules_know_no_service() -> None:
    # The registry is the one place the generic layer names a service package.
    for path in modules("**/*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in SERVICE_PACKAGES or str(relative) == "services.py":
            continue
        names = imports_of(path)
        for service in SERVICE_PACKAGES:
            assert not any(_within(n, f"emulator.{service}") for n in names), relative


@pytest.mark.parametrize("service", SERVICE_PACKAGES)
def test_services_never_import_each_other(service: str) -> None:
    others = [name for name in SERVICE_PACKAGES if name != service]
    for path in modules(f"{service}/**/*.py"):
        names = imports_of(path)
        for other in others:
            assert not any(_within(n, f"emulator.{other}") for n in names), path


@pytest.mark.parametrize("service", SERVICE_PACKAGES)
def test_service_cores_are_synchronous_and_pure(service: str) -> None:
    for path in modules(f"{service}/core/**/*.py"):
        names = imports_of(path)
        assert not roots(names) & IO_LIBRARIES, f"{path} imports {roots(names) & IO_LIBRARIES}"
        assert not any(n.startswith(f"emulator.{service}.api") for n in names), path


def test_platform_imports_neither_web_nor_transport_at_run_time() -> None:
    for path in modules("platform/*.py"):
        names = runtime_imports_of(path)
        assert not any(n.startswith(("emulator.web", "emulator.transport")) for n in names), path
        assert not roots(names) & {"quart", "quart_trio", "hypercorn", "h11", "h2"}, path


def test_registering_the_services_loads_none_of_their_instances() -> None:
    """The registry, seed reading and `check` need only each service's light `service.py`;
    `instance.py` and the libraries behind it load when a service starts."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from emulator.platform.seeds import default_seed_path, load_seed\n"
        "from emulator.services import registered_services\n"
        "load_seed(default_seed_path(), registered_services())\n"
        "heavy = ('quart', 'pyarrow', 'rapidfuzz', 'google.protobuf', 'joserfc')\n"
        "print(sorted(m for m in sys.modules if m.endswith('.instance') or m in heavy))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
