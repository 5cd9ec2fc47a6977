"""The docs cannot drift from the code: every name, default, option, path and test that README.md
and docs/*.md quote is checked against the code itself.

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
import contextlib
import dataclasses
import importlib
import inspect
import pkgutil
import re
import shlex
import tomllib
import types
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pytest
import yaml

import weather_sr
from weather_sr.cli import COMMANDS, build_parser
from weather_sr.config import RunConfig
from weather_sr.core import sampler_defaults as sd

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


def _get(obj: Any, attr: str) -> Any:
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
                obj = _get(obj, p)
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
        obj = _get(obj, p)
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
        cls = _dataclass_in(tp)
    return tp, default


def _dataclass_in(tp: Any) -> type | None:
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
            inner = _dataclass_in(tp)
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
    if origin is dict or _dataclass_in(tp) is not None:
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


def _is_file_name(text: str) -> bool:
    return text.lower().endswith((*FILE_EXTENSIONS, ".csv", ".json", ".pt", ".lock", ".partial",
                                  ".zarr", ".tmp", ".txt", ".log", ".yml"))


def quoted_names() -> Iterator[tuple[str, str]]:
    """(where, dotted name) of every code path the docs quote."""
    for d in docs():
        for m in FULL_PATH.finditer(d.text):
            yield f"{d.name}:{d.text.count(chr(10), 0, m.start()) + 1}", m.group(0)
    for s in spans():
        m = DOTTED.match(s.text)
        if not m or _is_file_name(m.group(1)):
            continue
        head = m.group(1).split(".")[0]
        if head == "weather_sr":
            continue  # checked above
        if head in SECTIONS and config_field(m.group(1)) is not None:
            continue  # a config key
        if head in TOP_LEVEL or head in classes():
            yield s.where(), m.group(1)


def test_quoted_modules_and_objects_exist() -> None:
    problems = [f"{where}: `{name}`: no such module or attribute in weather_sr"
                for where, name in quoted_names() if resolve(name) is MISSING]
    report(problems)


def _doc_parameters(args: str) -> list[ast.arg | tuple[ast.arg, ast.expr]] | None:
    """The parameters of a quoted signature ``(a, b=1, *, c=2)``, None if it is not Python."""
    try:
        fn = ast.parse(f"def f{args}: pass").body[0]
    except SyntaxError:
        return None
    assert isinstance(fn, ast.FunctionDef)
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    out: list[Any] = list(positional[: len(positional) - len(a.defaults)])
    out += list(zip(positional[len(positional) - len(a.defaults):], a.defaults, strict=True))
    out += [arg if d is None else (arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults,
                                                             strict=True)]
    return out


def test_quoted_signatures_match_the_code() -> None:
    problems, checked = [], 0
    for s in spans():
        m = SIGNATURE.match(s.text)
        if not m or "..." in m.group(2):
            continue
        quoted = _doc_parameters(m.group(2))
        if quoted is None:
            continue
        name = m.group(1)
        if "." in name:  # a path: that object
            head = name.split(".")[0]
            if head not in TOP_LEVEL and head not in classes() and head != "weather_sr":
                continue
            obj = resolve(name)
            candidates = [] if obj is MISSING or not callable(obj) else [obj]
        else:  # a bare name: any weather_sr function, class or method of that name
            candidates = callables().get(name, [])
        signatures = []
        for obj in candidates:
            with contextlib.suppress(TypeError, ValueError):
                signatures.append(inspect.signature(obj))
        if not signatures:
            continue  # a missing path is test_quoted_modules_and_objects_exist's
        checked += 1
        found = [_signature_problems(quoted, sig) for sig in signatures]
        if all(found):
            problems.append(f"{s.where()}: `{s.text}`: " + "; ".join(min(found, key=len)))
    for d in docs():
        for lang, body, first in d.blocks:
            if lang == "python":
                problems += _check_calls(d.name, body, first)
    report(problems)
    assert checked, "no quoted signature was found: has the pattern stopped matching?"


def _signature_problems(quoted: list[Any], sig: inspect.Signature) -> list[str]:
    """How a quoted parameter list differs from ``sig`` (names, literal defaults)."""
    params = sig.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    problems = []
    for item in quoted:
        arg, default = item if isinstance(item, tuple) else (item, None)
        if arg.arg not in params:
            if not var_kw:
                problems.append(f"the code has no parameter {arg.arg!r} (it has "
                                f"{', '.join(params)})")
            continue
        if default is None:
            continue
        try:
            value = ast.literal_eval(default)
        except ValueError:
            continue
        actual = params[arg.arg].default
        if actual is inspect.Parameter.empty:
            problems.append(f"{arg.arg}={value!r} is quoted as a default but the code has none")
        elif not same(value, actual):
            problems.append(f"{arg.arg}={value!r} but the code's default is {actual!r}")
    return problems


def _check_calls(doc: str, body: str, first: int) -> list[str]:
    """Calls of weather_sr.* in a Python block use keywords the function takes."""
    problems = []
    for node in ast.walk(ast.parse(body)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if not name.startswith("weather_sr."):
            continue
        obj = resolve(name)
        where = f"{doc}:{first + node.lineno - 1}"
        if obj is MISSING:
            problems.append(f"{where}: {name}: no such function in weather_sr")
            continue
        params = inspect.signature(obj).parameters
        for kw in node.keywords:
            if kw.arg is not None and kw.arg not in params:
                problems.append(f"{where}: {name}(..., {kw.arg}=...): the function has no "
                                f"parameter {kw.arg!r} (it has {', '.join(params)})")
    return problems


# ---------------------------------------------------------------- defaults

SAMPLER_WORDS = r"(?:DPM-Solver\+\+\(2M\)|`dpmpp_2m`|`ddim`|`ancestral`)"
DEFAULT_NEAR_SAMPLER = re.compile(rf"\bdefault\b[^.]{{0,40}}{SAMPLER_WORDS}|"
                                  rf"{SAMPLER_WORDS}[^.]{{0,40}}\bdefault\b", re.I)
PAREN_DEFAULT = re.compile(r"\bdefault:?\s+`?([\w.+-]+)`?\s*[),;]")


def _parenthesis_after(after: str) -> str | None:
    """The parenthetical that follows a span (', the default' counts too), else None."""
    m = re.match(r"\s*,\s*((?:the )?default\b[^.;)]*)", after)
    if m:
        return m.group(1)
    m = re.match(r"\s*\(", after)
    if not m:
        return None
    depth, i = 0, m.end() - 1
    for j, ch in enumerate(after[i:], i):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return after[i + 1: j]
    return after[i + 1:]


def _says_default(paren: str) -> bool:
    return bool(re.match(r"\s*(the )?default\b", paren) or re.search(r",\s*the default\b", paren)
                or re.match(r"\s*`?[\w.]+`?\s*;\s*default\b", paren))


def _choice_defaults(word: str) -> list[tuple[str, Any]]:
    """(what, default) of every setting that has ``word`` among its choices."""
    out = [(key, default) for key, tp, default in all_config_fields()
           if typing.get_origin(tp) is Literal and word in typing.get_args(tp)]
    if word in sd.SAMPLER_NAMES:
        out.append(("core.sampler_defaults.DEFAULT_SAMPLER", sd.DEFAULT_SAMPLER))
    if word in sd.PRECISIONS:
        out.append(("core.sampler_defaults.DEFAULT_PRECISION", sd.DEFAULT_PRECISION))
    return out


def _option_defaults(option: str) -> list[tuple[str, Any]]:
    return [(f"weather-sr {c} {option}", options_of(c)[option].default)
            for c in COMMANDS if option in options_of(c)]


def quoted_defaults() -> Iterator[tuple[Span, str, Any, list[tuple[str, Any]]]]:
    """(span, what is quoted, the quoted default, [(setting, the code's default)]).

    Two forms: a span with its value and "(default)" / ", the default" after it (`--x V`,
    `key: V`, a choice such as `residual`), or a span with "(default V)" after it (`--x`,
    `key`, `section.key`).
    """
    for s in spans():
        if DELIBERATELY_WRONG.search(s.text):
            continue
        paren = _parenthesis_after(s.after)
        if paren is None or "default" not in paren:
            continue
        m = PAREN_DEFAULT.search(paren + ")")
        value = m.group(1) if m else None  # "(default V)"
        bare = value is None and _says_default(paren)  # "(default)", ", the default"
        text = s.text
        opt = re.match(r"^(--[\w-]+)(?:[ =](\S+))?$", text)
        kv = re.match(r"^([a-z_][\w.]*)(?::\s+|=)(\S.*)$", text)
        if opt and opt.group(1) in ALL_OPTIONS:
            quoted = value if value is not None else opt.group(2) if bare else None
            if quoted is not None:
                yield s, opt.group(1), quoted, _option_defaults(opt.group(1))
        elif kv and bare:
            yield s, kv.group(1), kv.group(2), _key_defaults(kv.group(1))
        elif re.match(r"^[a-z_][\w.]*$", text) and value is not None:
            targets = _key_defaults(text)
            if targets:
                yield s, text, value, targets
        elif re.match(r"^[\w-]+$", text) and bare:
            choices = _choice_defaults(text)
            if choices:
                yield s, text, text, choices
        if text in sd.SAMPLER_NAMES and bare:
            steps = re.search(r"(\d+) steps", paren)
            if steps:
                yield s, f"{text} steps", steps.group(1), [
                    ("core.sampler_defaults.DEFAULT_STEPS", sd.DEFAULT_STEPS)]


def _key_defaults(key: str) -> list[tuple[str, Any]]:
    """Config keys named ``key`` (dotted, or the last part alone) and their defaults."""
    if "." in key and key.split(".")[0] in SECTIONS:
        found = config_field(key)
        return [] if found is None else [(key, found[1])]
    found = [(k, default) for k, _, default in all_config_fields() if k.split(".")[-1] == key]
    if found or "." in key:
        return found
    for objs in callables().values():  # else a parameter of that name: variance="beta"
        for obj in objs:
            with contextlib.suppress(TypeError, ValueError):
                param = inspect.signature(obj).parameters.get(key)
                if param is not None and param.default is not inspect.Parameter.empty:
                    found.append((f"{obj.__module__}.{obj.__qualname__}({key}=)", param.default))
    return found


def test_quoted_defaults_are_the_codes() -> None:
    problems, readme_sampler = [], False
    for s, what, quoted, candidates in quoted_defaults():
        if s.doc == "README.md" and what in sd.SAMPLER_NAMES:
            readme_sampler = True
        if not candidates:
            problems.append(f"{s.where()}: `{s.text}` (default {quoted}): no setting {what}")
        elif not any(same(quoted, default) for _, default in candidates):
            said = "; ".join(f"{k} = {d!r}" for k, d in candidates)
            problems.append(f"{s.where()}: `{s.text}` is quoted with the default {quoted!r}; "
                            f"the code says {said}")
    # prose: "the defaults ... DPM-Solver++(2M), N steps" in one sentence
    for d in docs():
        for sentence in re.split(r"(?<=\.)\s+(?=[A-Z*`])", d.prose):
            if not ("DEFAULT_SAMPLER" in sentence or re.search(DEFAULT_NEAR_SAMPLER, sentence)):
                continue
            for n in re.findall(r"\b(\d+) steps\b", sentence):
                if int(n) != sd.DEFAULT_STEPS:
                    line = d.prose.count("\n", 0, d.prose.index(sentence)) + 1
                    problems.append(f"{d.name}:{line}: the default sampler is quoted with {n} "
                                    f"steps; core.sampler_defaults.DEFAULT_STEPS is "
                                    f"{sd.DEFAULT_STEPS}")
            for name in set(re.findall(r"`(ancestral|ddim|dpmpp_2m|\w+)`\s*\(?\s*(?:the )?"
                                       r"default\b", sentence)) & set(sd.SAMPLER_NAMES):
                if name != sd.DEFAULT_SAMPLER:
                    problems.append(f"{d.name}: `{name}` is called the default sampler; "
                                    f"core.sampler_defaults.DEFAULT_SAMPLER is "
                                    f"{sd.DEFAULT_SAMPLER!r}")
    report(problems)
    assert readme_sampler, ("README.md no longer quotes the default sampler as `NAME` (the "
                            "default, N steps): say which sampler is the default")


def test_the_readme_names_every_sampler() -> None:
    readme = doc_named("README.md")
    quoted = {s.text for s in spans(readme)}
    missing = [n for n in sd.SAMPLER_NAMES if n not in quoted]
    assert not missing, (f"README.md does not quote the sampler(s) {missing} of "
                         f"core.sampler_defaults.SAMPLER_NAMES {sd.SAMPLER_NAMES}")


# ---------------------------------------------------------------- config keys


def test_quoted_config_keys_exist() -> None:
    problems = []
    for s in spans():
        for m in CONFIG_KEY.finditer(s.text):
            key = m.group(1)
            if DELIBERATELY_WRONG.search(s.text[: m.start()][-20:]) or _is_file_name(key):
                continue
            if config_field(key) is None and resolve(key) is MISSING:
                section = key.split(".")[0]
                keys = [k for k, _, _ in all_config_fields() if k.startswith(section + ".")]
                problems.append(f"{s.where()}: `{s.text}`: {key} is no key of the config "
                                f"(weather_sr.config) nor a module path; {section} has "
                                f"{', '.join(keys)}")
        kv = re.match(rf"^((?:{'|'.join(SECTIONS)})(?:\.\w+)+)(?::\s+|=)(\S.*)$", s.text)
        if kv and config_field(kv.group(1)) is not None:
            tp, _ = config_field(kv.group(1))
            value = yaml_value(kv.group(2))
            if not fits(value, tp):
                problems.append(f"{s.where()}: `{s.text}`: {value!r} does not fit "
                                f"{kv.group(1)}: {tp}")
    for d in docs():
        for lang, body, first in d.blocks:
            if lang in ("yaml", "yml"):
                problems += _check_yaml(d.name, body, first)
    report(problems)


def _check_yaml(doc: str, body: str, first: int) -> list[str]:
    """A YAML block of config sections has only the config's keys, with values that fit."""
    raw = yaml.safe_load(body)
    if not isinstance(raw, dict) or not set(raw) <= set(SECTIONS):
        return []
    problems = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            found = config_field(dotted)
            if found is None:
                problems.append(f"{doc}:{first}: YAML block: {dotted} is no key of the config")
            elif _dataclass_in(found[0]) is not None and isinstance(value, dict):
                walk(value, dotted + ".")
            elif not fits(value, found[0]):
                problems.append(f"{doc}:{first}: YAML block: {dotted}: {value!r} does not fit "
                                f"{found[0]}")

    walk(raw, "")
    return problems


# ---------------------------------------------------------------- command lines

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
                "overlap": "overlap", "precision": "precision", "input": "input",
                "input_fields": "number of fields", "input_times_sha256": "times",
                "coarsen": "coarsen", "target_grid": "target grid"}


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
