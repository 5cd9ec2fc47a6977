"""The docs cannot drift from the code (2/2): the command lines, options, files, tests and links
that README.md and docs/*.md quote exist, and the module and package lists are complete (the
rules: tests/docs_quotes.py)."""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from docs_quotes import (
    ALL_BENCH_OPTIONS,
    ALL_OPTIONS,
    DELIBERATELY_WRONG,
    DOC_FILES,
    ROOT,
    SRC,
    Doc,
    bench_options,
    code_lines,
    config_field,
    doc_named,
    docs,
    fits,
    options_of,
    report,
    spans,
    yaml_value,
)

from weather_sr.cli import COMMANDS

PLACEHOLDER = re.compile(r"^(\.\.\.|[A-Z_]+|<.*>:?|N)$")


def _tokens(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return line.split()


def commands() -> Iterator[tuple[str, list[str]]]:
    """(where, argv) of every command line quoted in a code block or a code span."""
    for d in docs():
        for line, text in code_lines(d):
            yield f"{d.name}:{line}", _tokens(text)
    for s in spans():
        argv = _tokens(s.text)
        if argv and (argv[0] in ("weather-sr", "torchrun", "python", "bash")
                     or argv[0].startswith(("benchmarks/", "scripts/", "bench_"))
                     or (argv[0] in COMMANDS and len(argv) > 1 and argv[1].startswith("--"))):
            yield s.where(), argv


def _weather_sr_argv(argv: list[str]) -> list[str] | None:
    """``[COMMAND, args...]`` of a weather-sr command line, else None."""
    if argv[0] == "weather-sr":
        return argv[1:]
    if argv[0] in COMMANDS:
        return argv
    for i in range(len(argv) - 1):
        if argv[i] == "-m" and argv[i + 1] == "weather_sr":
            return argv[i + 2:]
    if argv[0] in ("bash", "scripts/demo.sh") and "scripts/demo.sh" in argv[:2]:
        return ["demo", *argv[argv.index("scripts/demo.sh") + 1:]]
    return None


def _check_cli(where: str, argv: list[str]) -> list[str]:
    if not argv or argv[0].startswith("-"):
        return []
    command, args = argv[0], argv[1:]
    if PLACEHOLDER.match(command):
        return []  # weather-sr COMMAND --help, weather-sr <command>: ...
    if command not in COMMANDS:
        return [f"{where}: weather-sr {command}: no such command (weather_sr.cli.COMMANDS: "
                f"{', '.join(COMMANDS)})"]
    problems, known = [], options_of(command)
    overrides = []
    for i, token in enumerate(args):
        if token.startswith("[--"):  # an optional part: [--device cuda]
            token = token[1:].rstrip("]")
        if token.startswith("--"):
            option, _, inline = token.partition("=")
            if option not in known:
                problems.append(f"{where}: weather-sr {command} {option}: no such option (the "
                                f"parser has {', '.join(sorted(known))})")
                continue
            action = known[option]
            value = (inline or (args[i + 1] if i + 1 < len(args) else "")).rstrip("]")
            if (action.choices and value and not value.startswith("-")
                    and not PLACEHOLDER.match(value) and value not in action.choices):
                problems.append(f"{where}: weather-sr {command} {option} {value}: not one of "
                                f"{list(action.choices)}")
        elif command == "train" and "=" in token and not token.startswith("-"):
            overrides.append(token)
    for item in overrides:
        key, _, text = item.partition("=")
        found = config_field(key)
        if found is None:
            problems.append(f"{where}: override {item}: {key} is no key of the config")
        elif not fits(yaml_value(text), found[0]):
            problems.append(f"{where}: override {item}: {text!r} does not fit {key}: {found[0]}")
    return problems


def _check_script(where: str, argv: list[str]) -> list[str]:
    """``python benchmarks/x.py ...``, ``bench_x.py ...``: the script and its options exist."""
    scripts = [a for a in argv if a.endswith(".py") and "bench" in a]
    if not scripts:
        return []
    name = scripts[0]
    path = ROOT / name if "/" in name else ROOT / "benchmarks" / name
    if not path.is_file():
        return [f"{where}: {name}: no such script"]
    options = bench_options(path)
    return [f"{where}: {name} {t.strip('[]')}: no such option of the script (it has "
            f"{', '.join(sorted(options))})"
            for t in argv[argv.index(name) + 1:]
            if t.strip("[]").startswith("--") and t.strip("[]").split("=")[0] not in options]


def test_quoted_command_lines_use_real_commands_and_options() -> None:
    problems, seen = [], 0
    for where, argv in commands():
        if not argv:
            continue
        cli = _weather_sr_argv(argv)
        if cli is not None:
            seen += 1
            problems += _check_cli(where, cli)
        else:
            problems += _check_script(where, argv)
        for token in argv:
            if (token.startswith(("scripts/", "benchmarks/", "configs/")) and "*" not in token
                    and not (ROOT / token).exists()):
                problems.append(f"{where}: {token}: no such file")
    report(problems)
    assert seen, "no weather-sr command line was found: has the pattern stopped matching?"


def test_quoted_options_exist() -> None:
    """A lone `--option` in prose is an option of some command (or of a benchmark script)."""
    problems = []
    for s in spans():
        m = re.match(r"^\[?(--[a-z][\w-]*)", s.text)
        if not m or DELIBERATELY_WRONG.search(s.text):
            continue
        if m.group(1) not in ALL_OPTIONS | ALL_BENCH_OPTIONS:
            problems.append(f"{s.where()}: `{s.text}`: {m.group(1)} is no option of "
                            f"weather-sr {', '.join(COMMANDS)} (nor of a benchmark script)")
    report(problems)


# ---------------------------------------------------------------- files, tests, links

PATH = re.compile(r"(?<![\w/.~-])((?:[\w.-]+/)*[\w-]+\.(?:py|yaml|sh|md|toml|png))(?![\w/])")
TEST_REF = re.compile(r"(tests/test_\w+\.py)((?:::\w+)?)")
CONTINUED = re.compile(r"(?<![\w/.])::(\w+)")


def _exists(path: str, doc: Doc) -> bool:
    return any((base / path).exists() for base in (ROOT, SRC, doc.path.parent))


def test_quoted_files_exist() -> None:
    problems = []
    for d in docs():
        for s in spans(d):
            if "*" in s.text or s.text.startswith(("runs/", "demo_output/", "/")):
                continue
            for m in PATH.finditer(s.text):
                path = m.group(1)
                if "/" not in path and not path.startswith("test_") and path not in (
                        "config.py", "cli.py"):
                    continue  # a bare name (report.md, demo.sh) is an output or said in passing
                folder = path.split("/")[0]
                if "/" in path and not any((b / folder).is_dir() for b in (ROOT, SRC)):
                    continue  # under a folder a command creates (eval_report/, box/)
                if not _exists(path, d):
                    problems.append(f"{s.where()}: `{s.text}`: {path} does not exist (looked "
                                    f"under the repository, src/weather_sr and docs/)")
    report(problems)


@cache
def functions_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_quoted_tests_exist() -> None:
    problems, checked = [], 0
    for d in docs():
        for number, line in enumerate(d.text.splitlines(), 1):
            last: str | None = None
            for m in re.finditer(rf"{TEST_REF.pattern}|{CONTINUED.pattern}", line):
                if m.group(1):
                    last, name = m.group(1), m.group(2)[2:] or None
                else:
                    name = m.group(3)
                    if last is None:
                        problems.append(f"{d.name}:{number}: ::{name} follows no tests/ file")
                        continue
                path = ROOT / last
                if not path.is_file():
                    problems.append(f"{d.name}:{number}: {last} does not exist")
                    continue
                checked += 1
                if name and name not in functions_of(path):
                    problems.append(f"{d.name}:{number}: {last}::{name}: {last} defines no "
                                    f"function {name}")
    report(problems)
    assert checked, "no test reference was found: has the pattern stopped matching?"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\s-]", "", text)
    return text.replace(" ", "-")


def test_links_resolve() -> None:
    problems = []
    for d in docs():
        for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)\)", d.prose):
            target = m.group(1)
            where = f"{d.name}:{d.prose.count(chr(10), 0, m.start()) + 1}"
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            file, _, anchor = target.partition("#")
            path = d.path if not file else (d.path.parent / file)
            if not path.exists():
                problems.append(f"{where}: link {target}: {path.relative_to(ROOT)} does not exist")
                continue
            if anchor and path.suffix == ".md":
                text = path.read_text(encoding="utf-8")
                anchors = {_slug(h) for h in re.findall(r"^#+\s+(.*)$", text, flags=re.M)}
                if anchor not in anchors:
                    problems.append(f"{where}: link {target}: no heading with anchor #{anchor} "
                                    f"in {path.relative_to(ROOT)}")
    report(problems)


# ---------------------------------------------------------------- what the docs must cover


def _architecture_modules() -> dict[str, set[str]]:
    """{package (or 'Top level'): module names with a line} of docs/architecture.md."""
    text = doc_named("docs/architecture.md").text
    part = text[text.index("## Modules"): text.index("\n## ", text.index("## Modules") + 5)]
    out: dict[str, set[str]] = {}
    current = None
    for line in part.splitlines():
        head = re.match(r"^\*\*([\w ]+)\*\*", line)
        if head:
            current = head.group(1)
            out[current] = set()
        item = re.match(r"^- `(\w+)`", line)
        if item and current:
            out[current].add(item.group(1))
    return out


def test_architecture_has_a_line_for_every_module() -> None:
    listed = _architecture_modules()
    problems = []
    for package in sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()):
        if package == "commands":
            continue  # one module per command, named by the cli line
        actual = {p.stem for p in (SRC / package).glob("*.py") if p.stem != "__init__"}
        doc = listed.get(package, set())
        problems += [f"docs/architecture.md, **{package}**: module {m} "
                     f"(src/weather_sr/{package}/{m}.py) has no line: add one"
                     for m in sorted(actual - doc)]
        problems += [f"docs/architecture.md, **{package}**: `{m}` has a line but "
                     f"src/weather_sr/{package}/{m}.py does not exist"
                     for m in sorted(doc - actual)]
    top = {p.stem for p in SRC.glob("*.py")} - {"__init__", "__main__"}
    doc = listed.get("Top level", set())
    problems += [f"docs/architecture.md, **Top level**: module {m} (src/weather_sr/{m}.py) has no "
                 "line: add one" for m in sorted(top - doc)]
    problems += [f"docs/architecture.md, **Top level**: `{m}` has a line but src/weather_sr/"
                 f"{m}.py does not exist" for m in sorted(doc - top)]
    report(problems)


def test_the_readme_layout_names_every_package() -> None:
    readme = doc_named("README.md").text
    layout = readme[readme.index("## Layout"):]
    layout = layout[: layout.find("\n## ", 5)]
    problems = []
    for package in sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()):
        if not re.search(rf"^\s+{package}/", layout, flags=re.M):
            problems.append(f"README.md, Layout: the package {package}/ is not listed")
    for name in re.findall(r"(?<![\w/])((?!test_)\w+\.py)\b", layout):
        if not (SRC / name).is_file():
            problems.append(f"README.md, Layout: {name} is listed but src/weather_sr/{name} does "
                            "not exist")
    report(problems)


# how the docs name each setting that `--resume` compares (inference.partial.COMPARED)
RESUME_WORDS = {"checkpoint_sha256": "checkpoint", "sampler": "sampler", "steps": "steps",
                "eta": "eta", "seed": "seed", "members": "members", "tile": "tile",
                "overlap": "overlap", "precision": "precision", "noise_colour": "noise colour",
                "constrain": "constraint", "coherent": "coherent", "rho": "rho",
                "input": "input",
                "input_fields": "number of fields", "input_times_sha256": "times",
                "coarsen": "coarsen", "target_grid": "target grid", "domain": "domain"}


def test_the_resume_settings_are_the_compared_ones() -> None:
    from weather_sr.inference.partial import COMPARED

    unnamed = [k for k in COMPARED if k not in RESUME_WORDS]
    assert not unnamed, (f"inference.partial.COMPARED has {unnamed}: add how the docs name it to "
                         "RESUME_WORDS here, and to the docs' list of what --resume compares")
    found = 0
    for d in docs():
        prose = " ".join(d.prose.split())
        for m in re.finditer(r"continues it only if it was written with the same (.+?):", prose):
            found += 1
            missing = [k for k in COMPARED if RESUME_WORDS[k] not in m.group(1).replace("-", " ")]
            assert not missing, (f"{d.name}: the settings --resume compares are listed as "
                                 f"{m.group(1)!r}; inference.partial.COMPARED also has {missing}")
    assert found, "no doc lists what --resume compares (docs/reliability.md did)"
    from weather_sr.inference import partial

    said = " ".join((partial.__doc__ or "").split()).replace("-", " ")
    missing = [k for k in COMPARED if RESUME_WORDS[k] not in said]
    assert not missing, (f"the docstring of weather_sr.inference.partial does not name {missing} "
                         "of its COMPARED among the settings --resume compares")


def test_install_facts() -> None:
    readme = doc_named("README.md").text
    setup = (ROOT / "scripts" / "setup_venv.sh").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    problems = []
    pins = re.findall(r"torch==[\w.]+", setup)
    for pin in re.findall(r"torch==[\w.]+", readme):
        if pin not in pins:
            problems.append(f"README.md quotes {pin}; scripts/setup_venv.sh installs {pins}")
    extras = set(project["optional-dependencies"])
    for group in re.findall(r'\.\[([\w,]+)\]', readme):
        for extra in group.split(","):
            if extra not in extras:
                problems.append(f"README.md: pip extra [{extra}] is not in pyproject.toml "
                                f"({', '.join(sorted(extras))})")
    for version in re.findall(r"Python >= ([\d.]+)", readme):
        if project["requires-python"] != f">={version}":
            problems.append(f"README.md says Python >= {version}; pyproject.toml requires "
                            f"{project['requires-python']}")
    report(problems)


@pytest.mark.parametrize("doc", [p.name for p in DOC_FILES])
def test_docs_are_read(doc: str) -> None:
    """Every doc yields spans, so that a broken parser cannot make the checks above vacuous."""
    d = next(x for x in docs() if x.path.name == doc)
    assert list(spans(d)), f"{d.name}: no code span found"
