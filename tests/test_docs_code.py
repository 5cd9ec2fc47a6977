"""The docs cannot drift from the code (1/2): the names, signatures, defaults and config keys
that README.md and docs/*.md quote are the code's (the rules: tests/docs_quotes.py)."""

from __future__ import annotations

import ast
import contextlib
import inspect
import re
import typing
from collections.abc import Iterator
from typing import Any, Literal

import yaml
from docs_quotes import (
    ALL_OPTIONS,
    CONFIG_KEY,
    DELIBERATELY_WRONG,
    MISSING,
    SECTIONS,
    SIGNATURE,
    TOP_LEVEL,
    Span,
    all_config_fields,
    callables,
    classes,
    config_field,
    dataclass_in,
    doc_named,
    docs,
    fits,
    is_file_name,
    options_of,
    quoted_names,
    report,
    resolve,
    same,
    spans,
    yaml_value,
)

from weather_sr.cli import COMMANDS
from weather_sr.core import sampler_defaults as sd


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
            if DELIBERATELY_WRONG.search(s.text[: m.start()][-20:]) or is_file_name(key):
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
            elif dataclass_in(found[0]) is not None and isinstance(value, dict):
                walk(value, dotted + ".")
            elif not fits(value, found[0]):
                problems.append(f"{doc}:{first}: YAML block: {dotted}: {value!r} does not fit "
                                f"{found[0]}")

    walk(raw, "")
    return problems


# ---------------------------------------------------------------- command lines
