"""Every shell and Python example in README.md and docs/ runs, as a newcomer would paste it.

The rules the pages follow (docs/testing.md says them for contributors too):

- A ```bash (or ```sh) block runs with `bash -euo pipefail`, a ```python block with this
  venv's interpreter, each in its own process: a variable set in one block is unset in the
  next, so a block that leans on another's variables fails (`-u`). Blocks read the emulator's
  whereabouts from `<SERVICE>_URL` / `<SERVICE>_TLS_URL` (`FOUNDRY_URL`, ...) and
  `EMULATOR_URL` with the defaults of `emulator serve`; this test sets those to an emulator on
  free ports running every service of the default seed.
- A page runs top to bottom in one fresh working directory against an emulator reset to the
  default seed, as a reader pasting into one terminal would: files a block writes are there
  for the next block, state the emulator keeps is too.
- A ```python block whose first line is `# NAME.py` is a file to save, not a script: it is
  written to the page's directory; a `test_*.py` file is then run with pytest there. A
  ```toml block whose first line is `# NAME.toml` is saved the same way.
- Expected output: a ```text block right after a runnable block (only blank lines between)
  must match its whole standard output; each `# -> TEXT` comment in a block must appear in the
  output, in order. In both, `...` matches anything.
- Every ```yaml block is a seed and passes `emulator check` without a warning.
- ```console, ```text and the other languages never run: they are for the long-running
  `serve`, install commands, a user's own module, and output.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from emulator.embedded import EmulatorHandle, run_in_thread

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").rglob("*.md")]
)
RUNNABLE = frozenset({"bash", "sh", "python"})
# Every fence names its language, so no example escapes the test by being unlabelled.
KNOWN = RUNNABLE | frozenset({"console", "text", "yaml", "toml", "javascript", "json"})
FILE_COMMENT = re.compile(r"#\s*([\w.-]+\.(?:py|toml))\s*$")
ARROW = re.compile(r"#\s*->\s?(.*)$")
BLOCK_TIMEOUT = 180.0
VENV_BIN = Path(sys.executable).parent


@attrs.frozen
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    # The ```text block that follows it, if any: its expected standard output.
    expected: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def file_name(self) -> str | None:
        """`my_module.py` when the block is a file to save (its first line names it)."""
        first = self.text.split("\n", 1)[0]
        found = FILE_COMMENT.fullmatch(first.strip())
        return found.group(1) if found and self.language in ("python", "toml") else None


def read_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, in order, each with the output block that follows it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    raw: list[tuple[int, str, str, int]] = []  # (line, language, text, closing line index)
    index = 0
    while index < len(lines):
        opening = re.fullmatch(r"```(\S*)\s*", lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page}:{index + 1}: fence never closed")
        raw.append((index + 1, opening.group(1), "\n".join(lines[index + 1 : end]) + "\n", end))
        index = end + 1
    blocks = []
    for position, (line, language, text, closing) in enumerate(raw):
        expected = None
        if language in RUNNABLE and position + 1 < len(raw):
            next_line, next_language, next_text, _ = raw[position + 1]
            between = lines[closing + 1 : next_line - 1]
            if next_language == "text" and not any(item.strip() for item in between):
                expected = next_text
        blocks.append(Block(page, line, language, text, expected))
    return blocks


def output_matches(expected: str, output: str) -> bool:
    """Whether `output` is `expected`, where `...` stands for anything (trailing spaces and
    surrounding blank lines are ignored)."""
    pattern = ".*?".join(re.escape(part) for part in _normalise(expected).split("..."))
    return re.fullmatch(pattern, _normalise(output), re.DOTALL) is not None


def arrows_found(block_text: str, output: str) -> list[str]:
    """The `# -> TEXT` expectations of a block that do not appear in `output` in order, each
    at the start of a line."""
    missing = []
    position = 0
    for line in block_text.splitlines():
        found = ARROW.search(line)
        if found is None:
            continue
        pattern = ".*?".join(re.escape(part) for part in found.group(1).strip().split("..."))
        hit = re.compile("^" + pattern, re.DOTALL | re.MULTILINE).search(output, position)
        if hit is None:
            missing.append(found.group(1))
        else:
            position = hit.end()
    return missing


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def test_output_matching_can_fail() -> None:
    assert output_matches("a ... c\n", "a bb\nb c")
    assert not output_matches("a ... c", "a b d")
    assert not output_matches("3", "4")
    assert arrows_found("x  # -> 1...3\n# -> 5\n", "1 2 3 4\n5") == []
    assert arrows_found("# -> 5\n# -> 1\n", "1\n5") == ["1"]
    assert arrows_found("# -> 3\n", "143") == ["3"]


def test_no_prose_line_opens_a_fence() -> None:
    """A line starting with three backticks opens a code block in Markdown, whatever follows."""
    stray = [
        f"{page.relative_to(ROOT)}:{number}"
        for page in PAGES
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if line.startswith("```") and re.fullmatch(r"```\S*\s*", line) is None
    ]
    assert stray == []


def test_every_fence_names_a_known_language() -> None:
    unknown = [
        f"{block.where}: ```{block.language}"
        for page in PAGES
        for block in read_blocks(page)
        if block.language not in KNOWN
    ]
    assert unknown == []


# --- running the pages -------------------------------------------------------------------------


def runnable_pages() -> list[Path]:
    return [page for page in PAGES if any(b.language in RUNNABLE for b in read_blocks(page))]


@pytest.fixture(scope="module")
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """XDG_STATE_HOME of every example, so `~/.local/state/foundry-emulator` is ours."""
    return tmp_path_factory.mktemp("xdg-state")


@pytest.fixture(scope="module")
def live(state_home: Path) -> Iterator[EmulatorHandle]:
    """One emulator on free ports for every page (reset before each)."""
    with run_in_thread(state_dir=state_home / "foundry-emulator") as handle:
        yield handle


def example_environment(handle: EmulatorHandle, state_home: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("EMULATOR_", "FOUNDRY_EMULATOR_", "FOUNDRY_"))
        and name not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "VIRTUAL_ENV")
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["XDG_STATE_HOME"] = str(state_home)
    # Every running service's listeners: FOUNDRY_URL, FOUNDRY_TLS_URL, FABRIC_URL, ...
    for name in handle.emulator.sites:
        env[f"{name.upper()}_URL"] = handle.url(name)
        env[f"{name.upper()}_TLS_URL"] = handle.url(name, tls=True)
    # Where `emulator module run|env` find Foundry.
    env["EMULATOR_URL"] = handle.url("foundry")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_block(block: Block, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    name = block.file_name
    if name is not None:
        (workdir / name).write_text(block.text, encoding="utf-8")
        if not (name.startswith("test_") and name.endswith(".py")):
            return subprocess.CompletedProcess([], 0, "", "")
        command = [sys.executable, "-W", "error::DeprecationWarning", "-m", "pytest", "-q"]
        command += ["-p", "no:cacheprovider", "-W", "error::DeprecationWarning", name]
    elif block.language == "python":
        # An example that leans on a deprecated API teaches the reader to.
        command = [sys.executable, "-W", "error::DeprecationWarning", "-c", block.text]
    else:
        command = ["bash", "-euo", "pipefail", "-c", block.text]
    # Its own process group, removed whole afterwards: a block that leaves a server behind (or
    # hangs until the timeout) must not leave it listening for the next block or test.
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=workdir,
        env=env,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        stderr += f"\n(killed after {BLOCK_TIMEOUT} s)"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_page_examples_run(
    page: Path, live: EmulatorHandle, state_home: Path, tmp_path: Path
) -> None:
    live.reset()
    env = example_environment(live, state_home)
    ran = 0
    for block in read_blocks(page):
        if block.language not in RUNNABLE and block.file_name is None:
            continue
        result = run_block(block, tmp_path, env)
        report = (
            f"{block.where} ({block.language})\n--- stdout\n{result.stdout}"
            f"--- stderr\n{result.stderr}"
        )
        assert result.returncode == 0, f"exit status {result.returncode}: {report}"
        if block.file_name and block.file_name.startswith("test_"):
            assert " passed" in result.stdout, report
            assert "skipped" not in result.stdout, report
        assert arrows_found(block.text, result.stdout) == [], report
        if block.expected is not None:
            assert output_matches(block.expected, result.stdout), (
                f"expected:\n{block.expected}{report}"
            )
        ran += 1
    assert ran > 0


# --- seeds ---------------------------------------------------------------------------------------

SEED_BLOCKS = [block for page in PAGES for block in read_blocks(page) if block.language == "yaml"]


@pytest.mark.parametrize("block", SEED_BLOCKS, ids=lambda block: block.where)
def test_seed_blocks_pass_check(block: Block, tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(block.text, encoding="utf-8")
    result = subprocess.run(
        [str(VENV_BIN / "emulator"), "check", str(seed)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{seed}: OK"), result.stdout
    assert "warning:" not in result.stdout, result.stdout


# --- what a reader must install ----------------------------------------------------------------


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_canonical(re.split(r"[\[=<>!~; ]", item, maxsplit=1)[0]) for item in requirements}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_distributions(text: str) -> set[str]:
    """The distributions (other than the standard library and this project) a Python block
    imports at its top level."""
    tree = ast.parse(text)
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    owners = importlib.metadata.packages_distributions()
    found: set[str] = set()
    for module in modules - set(sys.stdlib_module_names) - {"emulator"}:
        distributions = owners.get(module)
        assert distributions, f"no installed distribution provides {module!r}"
        found.update(_canonical(name) for name in distributions)
    return found


def test_python_examples_need_only_the_clients_extra() -> None:
    """`pip install -e '.[clients]'` is enough for every Python example; a pytest file may also
    need pytest and pytest-trio, which docs/testing.md names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = _requirement_names(project["dependencies"]) | _requirement_names(
        project["optional-dependencies"]["clients"]
    )
    missing = []
    for page in PAGES:
        for block in read_blocks(page):
            if block.language != "python":
                continue
            allowed = set(base)
            if (block.file_name or "").startswith("test_"):
                allowed |= {"pytest", "pytest-trio"}
            extra = imported_distributions(block.text) - allowed
            if extra:
                missing.append(f"{block.where}: {sorted(extra)}")
    assert missing == []


def test_clients_extra_is_pinned_as_the_tests_pin_it() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    assert extras["clients"], "the clients extra is empty"
    assert set(extras["clients"]) <= set(extras["test"])


# --- pointers ------------------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    inside = False
    anchors = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            inside = not inside
        elif not inside and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


def test_links_between_pages_resolve() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and resolved.is_file() and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_source_files_the_pages_name_exist() -> None:
    """`emulator/.../x.py`, `tests/x.py` and the like in the pages name files that exist (the
    code moves; the pages must follow)."""
    named = re.compile(
        r"(?<![\w/.-])((?:emulator|tests|benchmarks|seeds)/[\w/.-]+\.(?:py|yaml|sh|json))"
    )
    missing = [
        f"{page.relative_to(ROOT)}: {path}"
        for page in PAGES
        for path in named.findall(page.read_text(encoding="utf-8"))
        if not (ROOT / path).exists()
    ]
    assert missing == []


def test_code_cites_pages_not_the_readme() -> None:
    """Docstrings, comments and the default seed point at docs/ pages; the top-level README is
    only a front page now (benchmarks/README.md is a page)."""
    top_readme = re.compile(r"(?<!benchmarks/)README")
    sources = [*sorted((ROOT / "emulator").rglob("*.py")), ROOT / "seeds" / "default.yaml"]
    citing = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sources
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if top_readme.search(line)
    ]
    assert citing == []
