"""What tests/test_docs_code.py and tests/test_docs_refs.py share: reading README.md and
docs/*.md, and the code's side of every quote. The docs cannot drift from the code: every name,
default, option, path and test that README.md and docs/*.md quote is checked against the code
itself.

What is checked (each failure names the doc and line, the quoted text and what the code says):

- module paths (``weather_sr.x.y``, or ``core.x.y`` in backticks) import and name real objects;
  ``Class.attr`` of a weather_sr class names a real attribute;
- signatures quoted in backticks (``f(a, b=1)``) name real parameters with the code's defaults,
  and calls in Python blocks use real keywords;
- defaults quoted in prose (a value followed by "(default)", "`--x` (default V)", the default
  sampler and its steps) are the code's (``weather_sr.core.sampler_defaults``, the config
  dataclasses, the argparse parsers);
- config keys ``section.key`` exist in ``weather_sr.config.RunConfig`` and quoted values fit
  their types and choices;
- command lines (``weather-sr CMD ...``, ``torchrun ... -m weather_sr CMD``, ``python
  benchmarks/x.py ...``, ``scripts/demo.sh ...``) use options of that command's parser (choices
  too) and ``train`` overrides name real keys; a lone ``--option`` exists in some parser;
- file paths (``tests/x.py``, ``core/sampling.py``, ``configs/x.yaml``) exist, test references
  ``tests/test_x.py::test_name`` name a test function of that file, links resolve (anchors too);
- docs/architecture.md has a line for every module, the README's layout every package, and the
  docs' list of what ``--resume`` compares is ``inference.partial.COMPARED``;
- install facts: the torch pin of scripts/setup_venv.sh, the pip extras, the Python version.

Nothing here trains or samples: it reads the docs, imports the package and builds the parsers.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
import types
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml

import weather_sr
from weather_sr.cli import COMMANDS, build_parser
from weather_sr.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "weather_sr"
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SECTIONS = tuple(f.name for f in dataclasses.fields(RunConfig))  # data, model, diffusion, ...
FILE_EXTENSIONS = (".py", ".yaml", ".yml", ".sh", ".md", ".toml", ".png", ".nc", ".grib")
# spans that quote a refusal of a wrong name on purpose (docs/reliability.md)
DELIBERATELY_WRONG = re.compile(r"unknown key|did you mean|'euler'|'tpu'")
MISSING = object()


# ---------------------------------------------------------------- reading the docs


class Doc(NamedTuple):
    name: str  # as it is named in messages: README.md, docs/method.md
    path: Path
    text: str
    prose: str  # the text with fenced code blocks blanked (line numbers kept)
    blocks: list[tuple[str, str, int]]  # fenced blocks: (language, body, first line)


class Span(NamedTuple):
    doc: str
    line: int
    text: str  # the span's text, line breaks as spaces
    after: str  # the text that follows the span (200 characters)
    before: str  # the text before the span (200 characters)

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`]+?)`(?!`)", re.S)


@cache
def docs() -> tuple[Doc, ...]:
    out = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        blocks, prose = [], text
        for m in FENCE.finditer(text):
            blocks.append((m.group(1), m.group(2), text.count("\n", 0, m.start(2)) + 1))
            prose = prose[: m.start()] + re.sub(r"[^\n]", " ", m.group(0)) + prose[m.end():]
        out.append(Doc(str(path.relative_to(ROOT)), path, text, prose, blocks))
    return tuple(out)


def doc_named(name: str) -> Doc:
    return next(d for d in docs() if d.name == name)


def spans(doc: Doc | None = None) -> Iterator[Span]:
    """Every inline code span of the docs' prose."""
    for d in [doc] if doc else docs():
        for m in INLINE.finditer(d.prose):
            yield Span(d.name, d.prose.count("\n", 0, m.start()) + 1,
                       " ".join(m.group(1).split()), d.prose[m.end(): m.end() + 200],
                       d.prose[max(0, m.start() - 200): m.start()])


def code_lines(doc: Doc) -> Iterator[tuple[int, str]]:
    """(line, command) of the shell lines of fenced blocks and of indented blocks, with
    continuation lines joined."""
    chunks = [(first, body) for lang, body, first in doc.blocks
              if lang in ("", "bash", "sh", "shell", "console")]
    indented, start = [], 0
    for i, line in enumerate(doc.prose.splitlines(), 1):
        if line.startswith("    ") and line.strip():
            if not indented:
                start = i
            indented.append(line)
        elif indented:
            chunks.append((start, "\n".join(indented) + "\n"))
            indented = []
    for first, body in chunks:
        pending, at = "", first
        for i, line in enumerate(body.splitlines()):
            if not pending:
                at = first + i
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield at, " ".join((pending + line).split())
            pending = ""


# ---------------------------------------------------------------- the code's side


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


SUBPARSERS = _subparsers()


def options_of(command: str) -> dict[str, argparse.Action]:
    return {o: a for a in SUBPARSERS[command]._actions for o in a.option_strings}


ALL_OPTIONS = {o for c in COMMANDS for o in options_of(c)} | {"--version"}


@cache
def bench_options(path: Path) -> set[str]:
    """The option strings of a benchmark script's argparse parser (read from its source)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            found |= {a.value for a in node.args
                      if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return found | {"-h", "--help"}


ALL_BENCH_OPTIONS = set().union(*(bench_options(p) for p in (ROOT / "benchmarks").glob("*.py")))


@cache
def all_modules() -> dict[str, types.ModuleType]:
    out = {"weather_sr": weather_sr}
    for info in pkgutil.walk_packages(weather_sr.__path__, "weather_sr."):
        if not info.name.endswith("__main__"):
            out[info.name] = importlib.import_module(info.name)
    return out


@cache
def classes() -> dict[str, type]:
    """weather_sr's classes by name (those defined in weather_sr)."""
    out: dict[str, type] = {}
    for module in all_modules().values():
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and obj.__module__.startswith("weather_sr"):
                out.setdefault(name, obj)
    return out


@cache
def callables() -> dict[str, list[Any]]:
    """weather_sr's functions, classes and methods by their own name."""
    out: dict[str, list[Any]] = {}
    for module in all_modules().values():
        for obj in vars(module).values():
            if getattr(obj, "__module__", "") != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                out.setdefault(obj.__name__, []).append(obj)
            if inspect.isclass(obj):
                for name, member in vars(obj).items():
                    fn = member.__func__ if isinstance(member, classmethod | staticmethod) \
                        else member
                    if inspect.isfunction(fn) and not name.startswith("__"):
                        out.setdefault(name, []).append(fn)
    return out


TOP_LEVEL = {p.stem for p in SRC.glob("*.py")} | {p.name for p in SRC.iterdir() if p.is_dir()
                                                   and (p / "__init__.py").is_file()}


def get_attr(obj: Any, attr: str) -> Any:
    if (dataclasses.is_dataclass(obj) and inspect.isclass(obj)
            and attr in {f.name for f in dataclasses.fields(obj)}):
        return getattr(obj, attr, None)
    return getattr(obj, attr, MISSING)


def resolve(dotted: str) -> Any:
    """The object ``dotted`` names (``weather_sr.a.b``, ``a.b`` under weather_sr, or
    ``Class.attr`` of a weather_sr class), else MISSING."""
    parts = dotted.split(".")
    if parts[0] != "weather_sr":
        if parts[0] in classes():
            obj: Any = classes()[parts[0]]
            for p in parts[1:]:
                obj = get_attr(obj, p)
                if obj is MISSING:
                    return MISSING
            return obj
        parts = ["weather_sr", *parts]
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name and (name == error.name or name.startswith(error.name + ".")):
                continue
            raise
        break
    for p in parts[i:]:
        obj = get_attr(obj, p)
        if obj is MISSING:
            return MISSING
    return obj


def config_field(key: str) -> tuple[Any, Any] | None:
    """(annotation, default) of config key ``section.key[.sub]``, else None."""
    cls: Any = RunConfig
    tp: Any = None
    default: Any = None
    for part in key.split("."):
        if cls is None:
            return None
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return None
        f = fields[part]
        tp = typing.get_type_hints(cls)[part]
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        cls = dataclass_in(tp)
    return tp, default


def dataclass_in(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    return next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)


def all_config_fields() -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, annotation, default) of every config key."""
    def walk(cls: Any, prefix: str) -> Iterator[tuple[str, Any, Any]]:
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            tp, default = config_field(key) or (None, None)
            yield key, tp, default
            inner = dataclass_in(tp)
            if inner is not None:
                yield from walk(inner, key + ".")
    yield from walk(RunConfig, "")


def fits(value: Any, tp: Any) -> bool:
    """Whether a YAML value is one the config accepts for annotation ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(fits(v, args[0]) for v in value)
    if origin is dict or dataclass_in(tp) is not None:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text.strip().strip("'\""))
    except yaml.YAMLError:
        return text


def same(quoted: Any, actual: Any) -> bool:
    if isinstance(actual, tuple):
        actual = list(actual)
    if isinstance(quoted, str):
        quoted = yaml_value(quoted) if not isinstance(actual, str) else quoted.strip("'\"")
    if isinstance(actual, float) and isinstance(quoted, int | float):
        return float(quoted) == actual
    return quoted == actual


def report(problems: list[str]) -> None:
    assert not problems, "the docs quote what the code does not say:\n" + "\n".join(problems)


# ---------------------------------------------------------------- names and signatures

DOTTED = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(\(.*\))?(?:\s*->.*)?$")
SIGNATURE = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(\(.*\))(?:\s*->.*)?$")
FULL_PATH = re.compile(r"(?<![\w/.])weather_sr(?:\.[A-Za-z_]\w*)+")
CONFIG_KEY = re.compile(rf"(?<![\w./-])((?:{'|'.join(SECTIONS)})(?:\.[a-z_][a-z0-9_]*)+)")


def is_file_name(text: str) -> bool:
    return text.lower().endswith((*FILE_EXTENSIONS, ".csv", ".json", ".pt", ".lock", ".partial",
                                  ".zarr", ".tmp", ".txt", ".log", ".yml"))


def quoted_names() -> Iterator[tuple[str, str]]:
    """(where, dotted name) of every code path the docs quote."""
    for d in docs():
        for m in FULL_PATH.finditer(d.text):
            yield f"{d.name}:{d.text.count(chr(10), 0, m.start()) + 1}", m.group(0)
    for s in spans():
        m = DOTTED.match(s.text)
        if not m or is_file_name(m.group(1)):
            continue
        head = m.group(1).split(".")[0]
        if head == "weather_sr":
            continue  # checked above
        if head in SECTIONS and config_field(m.group(1)) is not None:
            continue  # a config key
        if head in TOP_LEVEL or head in classes():
            yield s.where(), m.group(1)
