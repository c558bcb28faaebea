"""README.md and docs/*.md stay true to the code and the results they quote (issue 32).

* Commands: every command in a fenced shell block (``python -m X``, ``python path/x.py``, ``banet-*``,
  ``.venv/bin/python ...``, ``bash scripts/x.sh``) names an entry point that answers ``--help``, and every option
  the docs give it appears in that help (a renamed option fails here). One subprocess per distinct entry point,
  run two at a time.
* Numbers: a table or paragraph quoting a results file is preceded by ``<!-- source: PATH [PATH...] -->``; every
  number in it must be a value of that file at the precision quoted (``16,389`` matches 16388.6; ``4%`` matches
  0.0385). Every table of numbers in the README and docs/ carries a marker (``<!-- source: none (why) -->`` for one
  quoting no file). A source is a path from the repository root: a file of the repository, or of the project's
  shared notes beside it (``../shared/notes/...``, there in CI).
* Links: every relative link points to an existing file, and an ``#anchor`` to a heading of the page.
* Prose lines stay under 120 characters (tables and code blocks may be wider).
"""

from __future__ import annotations

import bisect
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
PYTHONS = {"python", "python3", ".venv/bin/python"}
MAX_PROSE = 120

#: A number as prose quotes it: 16,389 / 0.11 / 1.5e-7 / 4% (its sign is not compared: "-0.16 dB" is a loss).
NUMBER = re.compile(r"(?<![\w.])(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
                    r"(?P<percent>%)?")
MARKER = re.compile(r"<!--\s*source:\s*(?P<what>.*?)\s*-->")
LINK = re.compile(r"!?\[(?:[^\]]|\][^(])*?\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def fences(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of each fenced code block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        start, body = i + 2, []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        yield match.group(1), start, body
        i += 1


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside code blocks."""
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*```", line):
            inside = not inside
            continue
        if not inside:
            yield number, line


# ---------------------------------------------------------------------------------------------- commands


@dataclass
class EntryPoint:
    """A command the docs run: how to ask it for help, and where and with which options the docs use it."""

    kind: str  # module | script | console | shell
    name: str
    uses: list[tuple[str, list[str]]] = field(default_factory=list)  # (page:line, options)

    def help_argv(self) -> list[str] | None:
        if self.kind == "module":
            return [sys.executable, "-m", self.name, "--help"]
        if self.kind == "script":
            return [sys.executable, self.name, "--help"]
        if self.kind == "console":
            module, _, function = console_scripts()[self.name].partition(":")
            code = (f"import sys; sys.argv = [{self.name!r}, '--help']; from {module} import {function}; "
                    f"sys.exit({function}())")
            return [sys.executable, "-c", code]
        script = ROOT / self.name  # a shell script: --help only where it handles one (a case arm), never a run
        if script.is_file() and re.search(r"^\s*(-h\|)?--help(\|-h)?\)", script.read_text(), re.M):
            return ["bash", self.name, "--help"]
        return None


def console_scripts() -> dict[str, str]:
    """pyproject.toml's [project.scripts] (name -> "module:function"; tomllib is Python 3.11+)."""
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", (ROOT / "pyproject.toml").read_text(), re.M | re.S)
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.:]+)"', section.group(1), re.M)) if section else {}


def logical_lines(body: list[str], start: int) -> Iterator[tuple[int, str]]:
    """Lines of a shell block with backslash continuations joined, each with its first line number."""
    pending, first = "", start
    for offset, line in enumerate(body):
        if not pending:
            first = start + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield first, pending + line
        pending = ""
    if pending:
        yield first, pending


def segments(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line (split on && || ; |), leading VAR=value assignments removed."""
    words = shlex.split(line, comments=True)
    current: list[str] = []
    for word in [*words, "&&"]:
        if word in {"&&", "||", ";", "|"}:
            while current and re.match(r"^[A-Za-z_]\w*=", current[0]):
                current.pop(0)
            if current:
                yield current
            current = []
        else:
            current.append(word)


def options(args: list[str]) -> list[str]:
    """The options a command line passes (``--name`` of ``--name=value`` too), not negative numbers."""
    return [a.split("=", 1)[0] for a in args if re.match(r"^--?[A-Za-z][\w-]*(=|$)", a)]


def classify(words: list[str]) -> tuple[EntryPoint, list[str]] | None:
    """The entry point a simple command runs and its arguments, or None for other programs."""
    program = words[0]
    if program in PYTHONS and len(words) > 1:
        if words[1] == "-m" and len(words) > 2:
            return EntryPoint("module", words[2]), words[3:]
        if words[1].endswith(".py"):
            return EntryPoint("script", words[1]), words[2:]
        return None
    if program.startswith("banet-"):
        return EntryPoint("console", program), words[1:]
    if program == "bash" and len(words) > 1 and words[1].endswith(".sh"):
        return EntryPoint("shell", words[1]), words[2:]
    return None


def inline_commands(text: str) -> Iterator[tuple[int, str]]:
    """(line number, command) of each inline code span in prose that runs one of our commands."""
    prose = "\n".join(line if not inside else "" for inside, line in code_mask(text))
    for match in re.finditer(r"`([^`]+)`", prose):
        span = " ".join(match.group(1).split())
        if re.match(r"^(python3? |\.venv/bin/python |banet-[\w-]+( |$)|bash \S+\.sh)", span):
            yield prose.count("\n", 0, match.start()) + 1, span


def code_mask(text: str) -> Iterator[tuple[bool, str]]:
    """(inside a fenced block, line) for each line (fence lines count as inside)."""
    inside = False
    for line in text.splitlines():
        fence = bool(re.match(r"^\s*```", line))
        if fence:
            inside = not inside
        yield inside or fence, line


def collect_commands(pages: list[Path] = PAGES) -> tuple[dict[tuple[str, str], EntryPoint], list[str]]:
    """Every entry point the pages' shell blocks and inline command spans run, and every repository file their
    commands name."""
    entries: dict[tuple[str, str], EntryPoint] = {}
    paths: list[str] = []
    for page in pages:
        text = page.read_text()
        lines = [(number, line) for language, start, body in fences(text) if language in SHELL_LANGUAGES
                 for number, line in logical_lines(body, start)]
        for number, line in [*lines, *inline_commands(text)]:
            for words in segments(line):
                where = f"{rel(page)}:{number}"
                paths += [f"{where} {w}" for w in words
                          if re.match(r"^(export|calibration|training|benchmarks|serving|runtime|scripts|banet)/"
                                      r"[\w./-]+\.(py|sh)(:\w+)?$", w)]
                found = classify(words)
                if found is None:
                    continue
                entry, args = found
                entry = entries.setdefault((entry.kind, entry.name), entry)
                entry.uses.append((where, options(args)))
    return entries, paths


ENTRIES, NAMED_PATHS = collect_commands()


def missing_package(output: str) -> str | None:
    """The third-party package a failed --help lacked, if that is why it failed (a thin install)."""
    match = re.search(r"No module named '([\w.]+)'", output)
    if not match:
        return None
    top = match.group(1).split(".")[0]
    if (ROOT / top).is_dir() or importlib.util.find_spec(top) is not None:
        return None  # ours, or installed: a real failure
    return top


@pytest.fixture(scope="module")
def helps() -> dict[tuple[str, str], subprocess.CompletedProcess | None]:
    """``--help`` of every entry point, two subprocesses at a time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "COLUMNS": "200"}

    def ask(key: tuple[str, str]) -> subprocess.CompletedProcess | None:
        argv = ENTRIES[key].help_argv()
        if argv is None:
            return None
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    def same_as(key: tuple[str, str]) -> tuple[str, str]:
        """A console script whose module the docs also run with ``python -m``/``python path.py`` shares its help
        (the same parser; that the function exists is checked without running it)."""
        if key[0] != "console" or key[1] not in console_scripts():
            return key
        module, _, function = console_scripts()[key[1]].partition(":")
        for other in (("module", module), ("script", module.replace(".", "/") + ".py")):
            if other in ENTRIES and function_defined(module, function):
                return other
        return key

    keys = {key: same_as(key) for key in ENTRIES}
    distinct = sorted(set(keys.values()))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(distinct, pool.map(ask, distinct)))
    return {key: results[keys[key]] for key in ENTRIES}


def function_defined(module: str, function: str) -> bool:
    """Whether the module's source defines the function (read, not imported)."""
    path = ROOT / (module.replace(".", "/") + ".py")
    return path.is_file() and re.search(rf"^def {re.escape(function)}\(", path.read_text(), re.M) is not None


def test_the_docs_show_the_commands_users_run():
    names = {name for _, name in ENTRIES}
    for needed in ("export/to_onnx.py", "export/build_trt.py", "runtime", "serving.serve", "serving.batch",
                   "calibration.quantize", "benchmarks.run", "training.train"):
        assert needed in names, f"no command runs {needed}"
    assert len(ENTRIES) >= 20, sorted(names)


@pytest.mark.parametrize("key", sorted(ENTRIES), ids=lambda key: key[1])
def test_command_answers_help_and_takes_every_option_shown(helps, key):
    entry = ENTRIES[key]
    where = ", ".join(w for w, _ in entry.uses[:3])
    if entry.kind == "shell":
        assert (ROOT / entry.name).is_file(), f"{where}: {entry.name} does not exist"
    if entry.kind == "console":
        assert entry.name in console_scripts(), f"{where}: no console script {entry.name} in pyproject.toml"
    result = helps[key]
    if result is None:  # a shell script without --help: its options are its own business
        return
    output = result.stdout + result.stderr
    if result.returncode != 0 and (package := missing_package(output)):
        pytest.skip(f"{entry.name} needs {package}, not installed here")
    assert result.returncode == 0, f"{where}: {entry.name} --help exited {result.returncode}:\n{output[-2000:]}"
    assert "usage" in output.lower(), f"{entry.name} --help printed no usage"
    unknown = sorted({f"{opt} ({w})" for w, opts in entry.uses for opt in opts
                      if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", output)})
    assert not unknown, f"{entry.name} --help does not list options the docs use: {unknown}"


def test_files_named_in_commands_exist():
    missing = [item for item in NAMED_PATHS if not (ROOT / item.split(" ", 1)[1].split(":")[0]).is_file()]
    assert not missing, missing


def test_the_command_parser_finds_what_a_page_shows(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\nFOO=1 python -m pkg.mod --alpha 2 \\\n    --beta=3 -q  # note\n"
                    ".venv/bin/python tool/x.py --gamma && banet-thing --delta  # 'quoted' comment\n"
                    "bash scripts/run.sh OUT\npip install x --upgrade\n```\n```python\npython -m not.this\n```\n")
    entries, _ = collect_commands([page])
    found = {key: [opts for _, opts in entry.uses] for key, entry in entries.items()}
    assert found == {("module", "pkg.mod"): [["--alpha", "--beta", "-q"]], ("script", "tool/x.py"): [["--gamma"]],
                     ("console", "banet-thing"): [["--delta"]], ("shell", "scripts/run.sh"): [[]]}


# ----------------------------------------------------------------------------------------------- numbers


@dataclass
class Quote:
    """A block (table or paragraph) that says which results files its numbers come from."""

    page: str
    line: int
    sources: list[str]  # empty: quotes no file ("none")
    text: str


def quotes(page: Path, text: str | None = None) -> Iterator[Quote]:
    lines = (page.read_text() if text is None else text).splitlines()
    for i, line in enumerate(lines):
        match = MARKER.search(line)
        if not match:
            continue
        what = match.group("what")
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        block = []
        while j < len(lines) and lines[j].strip() and not MARKER.search(lines[j]):
            block.append(lines[j])
            j += 1
        sources = [] if what.split()[0] == "none" else what.split()
        yield Quote(rel(page), i + 1, sources, "\n".join(block))


def quoted_numbers(text: str) -> list[tuple[str, Decimal, bool]]:
    """(as written, value, is a percentage) of every number in prose: code, link targets and comments left out."""
    text = re.sub(r"<!--.*?-->", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"`[^`]*`", " ", text)
    return [(m.group(0), abs(Decimal(m.group("digits").replace(",", ""))), bool(m.group("percent")))
            for m in NUMBER.finditer(text)]


def source_values(path: Path) -> list[float]:
    """Every number a results file holds (in JSON: values, and numbers inside strings), sorted."""
    values: list[float] = []

    def walk(item) -> None:
        if isinstance(item, bool):
            return
        if isinstance(item, int | float):
            values.append(abs(float(item)))
        elif isinstance(item, str):
            values.extend(float(v) for _, v, _ in quoted_numbers(item))
        elif isinstance(item, dict):
            for key, value in item.items():
                walk(key)
                walk(value)
        elif isinstance(item, list):
            for value in item:
                walk(value)

    if path.suffix == ".json":
        walk(json.loads(path.read_text()))
    else:
        values.extend(float(v) for _, v, _ in quoted_numbers(path.read_text()))
    return sorted(values)


def without_table_header(text: str) -> str:
    """A table's rows without its header (column names such as "GFLOP @256" are labels, not quotes)."""
    lines = text.splitlines()
    if len(lines) >= 2 and lines[0].startswith("|") and re.match(r"^\|[-:| ]+\|$", lines[1]):
        return "\n".join(lines[2:])
    return text


def unmatched(quote: Quote, root: Path = ROOT) -> list[str]:
    """The numbers of a quote that no value of its sources rounds to (at the precision written)."""
    values = sorted(v for source in quote.sources for v in source_values(root / source))
    wrong = []
    for written, number, percent in quoted_numbers(without_table_header(quote.text)):
        tolerance = float(Decimal("0.5").scaleb(number.as_tuple().exponent)) * (1 + 1e-9) + 1e-12
        targets = [float(number)] + ([float(number) / 100] if percent else [])
        scales = [1.0] + ([0.01] if percent else [])
        if not any(bisect.bisect_left(values, t - tol) < bisect.bisect_right(values, t + tol)
                   for t, tol in zip(targets, (tolerance * s for s in scales))):
            wrong.append(written)
    return wrong


ALL_QUOTES = [q for page in PAGES for q in quotes(page)]


@pytest.mark.parametrize("quote", [q for q in ALL_QUOTES if q.sources], ids=lambda q: f"{q.page}:{q.line}")
def test_quoted_numbers_equal_their_results_file(quote):
    for source in quote.sources:
        if not (ROOT / source).exists() and not (ROOT / source).resolve().is_relative_to(ROOT):
            pytest.skip(f"{quote.page}:{quote.line}: {source} is not beside this checkout (it is in CI)")
        assert (ROOT / source).is_file(), f"{quote.page}:{quote.line}: no results file {source}"
    assert quoted_numbers(without_table_header(quote.text)), f"{quote.page}:{quote.line}: no numbers follow the marker"
    wrong = unmatched(quote)
    assert not wrong, f"{quote.page}:{quote.line}: not in {' '.join(quote.sources)}: {wrong}"


def test_none_markers_say_why():
    for quote in ALL_QUOTES:
        if not quote.sources:
            assert re.search(r"none\s*\(.+\)", MARKER.search(
                (ROOT / quote.page).read_text().splitlines()[quote.line - 1]).group("what")), quote


GENERATED = {"drift_report.md", "config_study.md"}  # written by their commands (which name their sources)


def unsourced_tables(page: Path, text: str | None = None) -> list[int]:
    """Line numbers of the tables of numbers on a page that no ``<!-- source: ... -->`` marker precedes."""
    text = page.read_text() if text is None else text
    lines = text.splitlines()
    sourced = {q.line for q in quotes(page, text)}
    missing = []
    inside = False
    for i, line in enumerate(lines):
        if re.match(r"^\s*```", line):
            inside = not inside
        starts_table = line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))
        if inside or not starts_table or i + 1 >= len(lines) or not re.match(r"^\|[-:| ]+\|$", lines[i + 1]):
            continue
        rows = []
        for row in lines[i + 2:]:
            if not row.startswith("|"):
                break
            rows.append(row)
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        if any(quoted_numbers(row) for row in rows) and k + 1 not in sourced:
            missing.append(i + 1)
    return missing


@pytest.mark.parametrize("page", [p for p in PAGES if p.name not in GENERATED], ids=rel)
def test_every_table_names_its_source(page):
    """Every table of numbers on the README and the docs pages says where its numbers come from (a results file,
    or ``none (why)``: what ran, with the command that produced it)."""
    missing = unsourced_tables(page)
    assert not missing, [f"{rel(page)}:{n}: a table of numbers without <!-- source: ... -->" for n in missing]


def test_the_readme_quotes_results_files():
    assert len([q for q in quotes(ROOT / "README.md") if q.sources]) >= 5


def test_the_table_check_finds_an_unsourced_table(tmp_path):
    page = tmp_path / "page.md"
    text = ("<!-- source: none (a label table) -->\n| a | b |\n|---|---|\n| x | 1.5 |\n\n"
            "| names | only |\n|---|---|\n| x | y |\n\n"
            "Text.\n\n| a | b |\n|---|---|\n| x | 2.5 |\n\n```\n| a | b |\n|---|---|\n| 3 | 4 |\n```\n")
    assert unsourced_tables(page, text) == [12]


def test_sources_stay_in_the_repository_or_the_shared_notes():
    """A marker may name a file of the repository or of the project's shared notes (``../shared``, beside the
    checkout in CI), nothing else outside it."""
    outside = [f"{q.page}:{q.line} {s}" for q in ALL_QUOTES for s in q.sources
               if not ((ROOT / s).resolve().is_relative_to(ROOT)
                       or (ROOT / s).resolve().is_relative_to((ROOT.parent / "shared").resolve()))]
    assert not outside, outside


def test_the_number_check_fails_on_a_changed_number(tmp_path):
    """Each README quote, with its longest number changed in its last digit, is caught."""
    readme = ROOT / "README.md"
    checked = 0
    for quote in quotes(readme):
        if not quote.sources:
            continue
        written = max((w for w, _, _ in quoted_numbers(without_table_header(quote.text))),
                      key=lambda w: len(w.strip("%")))
        digits = written.rstrip("%")
        caught = []
        # The last digit moved by 5 (or, where that lands on another value the file holds, by 3 or 7): caught.
        for step in (5, 3, 7):
            changed = digits[:-1] + str((int(digits[-1]) + step) % 10) + written[len(digits):]
            text = re.sub(rf"(?<![\w.,]){re.escape(written)}(?![\d,])", changed, quote.text, count=1)
            assert text != quote.text
            caught = [changed] if changed in unmatched(Quote(quote.page, quote.line, quote.sources, text)) else []
            if caught:
                break
        assert caught, (quote.page, quote.line, written)
        checked += 1
    assert checked >= 5


def test_the_number_check_rounds_as_written(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"p50_ms": 16388.6, "share": 0.0385, "drift": "155.5 (151.2)",
                                                 "tiny": 1.5e-7}))
    ok = Quote("x", 1, ["r.json"], "| 16,389 ms | 16,388.6 | 4% | 155.5 (151.2) dB | 1.5e-7 | -0.04 |")
    assert unmatched(ok, tmp_path) == []
    bad = Quote("x", 1, ["r.json"], "| 16,390 ms | 16,388.7 | 5% | 155.4 | 1.6e-7 |")
    assert unmatched(bad, tmp_path) == ["16,390", "16,388.7", "5%", "155.4", "1.6e-7"]


# ------------------------------------------------------------------------------------------------- links


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for _, line in prose_lines(page.read_text()) if re.match(r"^#{1,6} ", line)}


def test_relative_links_resolve():
    broken = []
    for page in PAGES:
        for number, line in prose_lines(page.read_text()):
            for match in LINK.finditer(line):
                target = match.group("target")
                if re.match(r"^[a-z]+:", target):
                    continue
                path, _, anchor = target.partition("#")
                file = (page.parent / path).resolve() if path else page
                if not file.exists():
                    broken.append(f"{rel(page)}:{number}: {target} (no such file)")
                elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                    broken.append(f"{rel(page)}:{number}: {target} (no heading #{anchor})")
    assert not broken, "\n".join(broken)


def test_docs_pages_are_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        if page.name in GENERATED:  # linked from pages
            continue
        assert f"(docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


def test_prose_lines_stay_short():
    long = [f"{rel(page)}:{number} ({len(line)})" for page in PAGES if page.name not in GENERATED
            for number, line in prose_lines(page.read_text())
            if len(line) > MAX_PROSE and not line.startswith("|") and not MARKER.search(line)
            and max(map(len, line.split())) < MAX_PROSE * 2 // 3]  # a long link cannot be wrapped
    assert not long, long


def test_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 260


def test_ci_runs_the_readme_test_command():
    """The README's second command is what .ci/run runs, byte for byte."""
    blocks = [body for language, _, body in fences((ROOT / "README.md").read_text()) if language == "bash"]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert [ci] in blocks[:2], (ci, blocks[:2])
