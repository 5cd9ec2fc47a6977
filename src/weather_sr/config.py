"""Run configuration: one YAML file mapped onto typed dataclasses, validated, with overrides.

Sections: ``data`` (one-to-one with ``weather_sr.data.build_datasets`` keyword arguments),
``model`` (the UNet and the model kind), ``diffusion`` (schedule, joint loss, target),
``training`` (optimiser, EMA, precision, logging, checkpoints) and ``output`` (run folder).
Every problem raises :class:`UserError` naming the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from weather_sr.core.spectral_options import (
    DEFAULT_NOISE,
    DEFAULT_SPECTRAL_SCHEDULE,
    DEFAULT_WEIGHTING,
    NOISE_KINDS,
    SCHEDULE_KINDS,
    parse_spectral,
)
from weather_sr.errors import UserError

RegridMethod = Literal["bilinear", "bicubic", "nearest"]  # data.regrid.REGRID_METHODS


@dataclass
class InputsConfig:
    """``data.inputs``: the predictors (docs/data.md, "Three kinds of condition").

    ``path`` None: the variables come from the targets' file and are coarsened like the targets;
    else a dataset on its own regular grid, regridded onto the targets' grid with ``regrid``.
    """

    path: str | list[str] | None = None
    variables: list[str] = field(default_factory=list)
    regrid: RegridMethod | dict[str, RegridMethod] = "bilinear"  # or {variable: method}


@dataclass
class StaticConfig:
    """``data.static``: fields constant in time on the targets' grid (orography, land-sea mask)."""

    path: str | list[str] = ""
    variables: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    """Keyword arguments of ``weather_sr.data.build_datasets``, one to one (see its docstring).

    ``path: sample`` stands for the shipped sample file (``weather_sr.data.sample_data_path()``).
    ``inputs``, ``static``, ``features``, ``scalars`` and ``transforms`` shape the network's
    condition (docs/data.md); omitted, the condition is the targets' own LR field, as in SR3.
    """

    path: str | list[str] = "sample"
    variables: list[str] = field(default_factory=list)
    scale_factor: int = 4
    patch_size: int | list[int] | None = 64
    lr_path: str | list[str] | None = None
    lr_variables: list[str] | None = None
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    normalisation: Literal["channel", "pixel"] = "channel"
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    gap: int = 0
    lr_noise_std: float = 0.0
    min_valid_fraction: float = 0.5
    flips: bool = False
    seed: int = 0
    load: bool = True
    area_weighted: bool = False
    crop: bool = True
    inputs: InputsConfig | None = None
    static: StaticConfig | None = None
    features: list[Literal["lat", "lon", "doy", "hour"]] = field(default_factory=list)
    scalars: list[str] = field(default_factory=list)  # per-field numbers (lead_time, ...)
    # autoregressive coherence: the previous time's HR targets in the condition (the truth in
    # training, with noise of this std (normalised units) and dropped to zeros this often)
    previous: bool = False
    previous_noise: float = 0.1
    previous_dropout: float = 0.1
    transforms: dict[str, str] = field(default_factory=dict)  # {variable: log1p | power:P}


@dataclass
class ModelConfig:
    kind: Literal["diffusion", "regression"] = "diffusion"
    base_channels: int = 64
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 2
    attention_levels: list[int] = field(default_factory=list)
    mid_attention: bool = True
    head_channels: int = 32
    dropout: float = 0.0
    groups: int = 8
    padding_y: Literal["zeros", "reflect", "circular"] = "zeros"
    # auto: circular when the grid is global in longitude (data grid.periodic), else zeros
    padding_x: Literal["auto", "zeros", "reflect", "circular"] = "auto"


@dataclass
class DiffusionConfig:
    schedule: Literal["linear", "cosine"] = "linear"
    timesteps: int = 1000
    lam: float = 0.0  # the Fourier term's weight: 0 by the ablation (README, docs/method.md §4)
    # W of the Fourier term (docs/method.md §4): none (W = 1) | radial: 1 + gamma (nu/nu_max)^power
    # | band: 1 up to the LR grid's Nyquist frequency (0.5 / data.scale_factor), 1 + gamma above
    weight: Literal["none", "radial", "band"] = "none"
    gamma: float = 1.0
    power: float = 2.0
    weight_normalise: bool = False  # divide W by sqrt(mean W^2 over the coefficients): mean W^2 = 1
    # noise-level gate of W and of the amplitude term, per sample: W_t = 1 + g(t) (W - 1);
    # none: g = 1 | time: g = 1 where t <= gate_t * timesteps, else 0 | snr: g = SNR/(1 + SNR)
    gate: Literal["none", "time", "snr"] = "none"
    gate_t: float = 0.5  # with gate: time, the fraction of diffusion.timesteps
    # weight mu of the amplitude term: g(t) x the binned radial log-power difference of the
    # Fourier branch's x0 estimate to x0 (needs lam > 0); 0 = off
    amp_mu: float = 0.0
    loss_divide: bool = False  # divide the total loss by (1 + lam)
    # the forward noise, shaped in F_R space (docs/method.md §9): white | power:P | equal_snr
    noise: str = DEFAULT_NOISE
    # per-coefficient schedule (docs/method.md §9): none | equal_snr | blur:K
    spectral_schedule: str = DEFAULT_SPECTRAL_SCHEDULE
    # the loss of a shaped process (docs/method.md §9): whitened (the eps-loss on Σ^-½ x) | field
    noise_weighting: Literal["whitened", "field"] = DEFAULT_WEIGHTING
    target: Literal["full", "residual", "regression_residual"] = "residual"
    regression_checkpoint: str | None = None
    prediction: Literal["epsilon", "v"] = "v"
    scale_target: bool = True  # diffuse x0 / (its per-channel RMS on the training split)
    # the library's sampling defaults (weather_sr.core.sampling.DEFAULT_SAMPLER / DEFAULT_STEPS;
    # this module imports only errors, so they are repeated here and a test keeps them equal)
    val_sampler: Literal["ancestral", "ddim", "dpmpp_2m"] = "dpmpp_2m"
    val_sample_steps: int = 20


@dataclass
class TrainingConfig:
    steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 100
    lr_schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    val_every: int = 200
    val_batches: int = 4
    val_images: int = 2
    checkpoint_every: int = 200
    keep_last: int = 3
    # a NaN/Inf loss or gradient: stop (keeping the last good checkpoint) or skip the update
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_nonfinite_skips: int = 10  # with skip: stop after this many skipped steps in the run


@dataclass
class OutputConfig:
    run_dir: str = "runs/default"
    tensorboard: bool = True


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


# ---------------------------------------------------------------- dict <-> dataclass, typing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints accepted for floats)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for i, option in enumerate(inner):
            try:
                return _coerce(value, option, key, source)
            except UserError:
                kind = {dict: dict, list: list | tuple}.get(typing.get_origin(option))
                if kind is not None and isinstance(value, kind):
                    raise  # a mapping (list) for the mapping (list) option: what is wrong in it
                if i == len(inner) - 1:
                    names = " or ".join(_type_name(a) for a in args)
                    raise UserError(f"{source}: {key} must be {names}, got {value!r}") from None
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{source}: {key} = {value!r} is not one of {list(args)}{hint}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{source}: {key} must be a mapping, got {value!r}")
        return {
            _coerce(k, args[0], f"{key} (a key)", source): _coerce(v, args[1], f"{key}.{k}", source)
            for k, v in value.items()
        }
    if origin is list:
        if not isinstance(value, list | tuple):
            raise UserError(f"{source}: {key} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise UserError(
        f"{source}: {key} must be of type {_type_name(tp)}, got {value!r} ({type(value).__name__})"
    )


def _section_type(tp: Any) -> type | None:
    """The dataclass of a (possibly optional) nested section, else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return inner[0] if inner else None
    return None


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: {prefix or 'the config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""
            raise UserError(f"{source}: unknown key {dotted}{hint}; known: {', '.join(names)}")
        section = _section_type(hints[key])
        if section is not None and (value is not None or section is hints[key]):
            kwargs[key] = _build(section, value, dotted, source)
        else:
            kwargs[key] = _coerce(value, hints[key], dotted, source)
    return cls(**kwargs)


def model_config_from_dict(raw: dict[str, Any], source: str = "config") -> ModelConfig:
    """A ``model`` section alone (a CorrDiff regression base's, in its checkpoint), typed; the
    UNet rules that involve other sections are checked where the whole config is."""
    return _build(ModelConfig, dict(raw), "model", source)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Build and validate a RunConfig from a plain dict (as read from YAML)."""
    cfg = _build(RunConfig, raw, "", source)
    validate(cfg, source)
    return cfg


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain nested dict of str/int/float/bool/None/list (safe for YAML and weights_only)."""
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            raise UserError(f"override {item!r}: value is not valid YAML ({_yaml_problem(error)})"
                            ) from None
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"override {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line: what PyYAML found wrong and where (its own message spans several lines)."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (PyYAML keeps the
    last silently, so a second ``training:`` section would drop the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:  # a complex key: PyYAML itself refuses it
                continue
            if key in seen:
                raise DuplicateKeyError(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"duplicate key {key!r} at line {line} (first at line {first})")
        self.key, self.line, self.first = key, line, first


def read_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (:class:`DuplicateKeyError`)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds plain data only


PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"


def resolve_config_path(path: str | Path) -> Path:
    """A file path, or the name of a config shipped with the package (``sample``)."""
    p = Path(path)
    if not p.exists() and p.suffix == "" and (PACKAGE_CONFIGS / f"{p.name}.yaml").is_file():
        return PACKAGE_CONFIGS / f"{p.name}.yaml"
    return p


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (a path, a packaged name such as ``sample``, or None = defaults),
    apply ``section.key=value`` overrides, validate."""
    raw: Any = {}
    source = "config"
    if path is not None:
        path = resolve_config_path(path)
        source = str(path)
        try:
            raw = read_yaml(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise UserError(f"config file {path} does not exist") from None
        except DuplicateKeyError as error:
            raise UserError(
                f"config file {path}: key {error.key!r} appears twice (line {error.first} and "
                f"line {error.line}): merge them into one"
            ) from None
        except yaml.YAMLError as error:
            raise UserError(
                f"config file {path} is not valid YAML ({_yaml_problem(error)}): fix the file"
            ) from None
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not a text file"
            raise UserError(f"config file {path} cannot be read ({reason})") from None
        if not isinstance(raw, dict):
            raise UserError(f"config file {path} must contain a mapping of sections")
    if overrides:
        raw = apply_overrides(raw, overrides)
        source += " (with overrides)"
    return config_from_dict(raw, source)


# ---------------------------------------------------------------- validation


def _require(ok: bool, source: str, message: str) -> None:
    if not ok:
        raise UserError(f"{source}: {message}")


SEED_MAX = 2**63 - 1  # seeds are stored as 64-bit integers (NetCDF attribute, torch generator)


def check_seed(seed: int, option: str = "--seed") -> None:
    """UserError unless ``seed`` lies in 0..2**63-1 (checked before any work)."""
    if not 0 <= seed <= SEED_MAX:
        raise UserError(f"{option} {seed}: give an integer from 0 to 2**63-1 ({SEED_MAX})")


def validate(cfg: RunConfig, source: str = "config") -> None:
    """Range and consistency checks that the types alone cannot express."""
    d, m, f, t = cfg.data, cfg.model, cfg.diffusion, cfg.training
    r = lambda ok, msg: _require(ok, source, msg)  # noqa: E731
    r(len(d.variables) >= 1, "data.variables must list at least one variable (e.g. [t2m])")
    r(d.scale_factor >= 1, f"data.scale_factor = {d.scale_factor} must be >= 1")
    r(
        len(d.split) == 3 and all(x >= 0 for x in d.split) and d.split[0] > 0,
        f"data.split = {d.split} must be three fractions (train, val, test) with train > 0",
    )
    _validate_condition(cfg, source)
    r(
        len(m.channel_mults) >= 1 and all(c >= 1 for c in m.channel_mults),
        f"model.channel_mults = {m.channel_mults} must be a non-empty list of positive integers",
    )
    r(
        m.base_channels >= 1 and m.num_res_blocks >= 1 and m.groups >= 1 and m.head_channels >= 1,
        "model.base_channels, model.num_res_blocks, model.groups, model.head_channels must be >= 1",
    )
    for c in m.channel_mults:
        width = c * m.base_channels
        r(
            width % min(m.groups, width) == 0,
            f"model.groups = {m.groups} must divide every level width ({width})",
        )
    levels = len(m.channel_mults)
    r(
        all(0 <= a < levels for a in m.attention_levels),
        f"model.attention_levels = {m.attention_levels} must lie in 0..{levels - 1}",
    )
    for a in [*m.attention_levels, *([levels - 1] if m.mid_attention else [])]:
        width = m.channel_mults[a] * m.base_channels
        r(
            width % m.head_channels == 0,
            f"model.head_channels = {m.head_channels} must divide the attention width {width}",
        )
    r(0 <= m.dropout < 1, f"model.dropout = {m.dropout} must be in [0, 1)")
    patch = [d.patch_size] * 2 if isinstance(d.patch_size, int) else d.patch_size
    if patch is not None:
        need = 2 ** (levels - 1)
        r(len(patch) == 2, f"data.patch_size = {d.patch_size} must be one size or [height, width]")
        for p in patch:
            r(
                p >= 1 and p % need == 0,
                f"data.patch_size = {d.patch_size} must be a multiple of {need} = 2**(levels-1) "
                f"for {levels} UNet levels (model.channel_mults)",
            )
            r(
                p % d.scale_factor == 0,
                f"data.patch_size = {d.patch_size} must be a multiple "
                f"of data.scale_factor = {d.scale_factor}",
            )
    r(f.timesteps >= 1, f"diffusion.timesteps = {f.timesteps} must be >= 1")
    for value, kinds, key in ((f.noise, NOISE_KINDS, "diffusion.noise"),
                              (f.spectral_schedule, SCHEDULE_KINDS, "diffusion.spectral_schedule")):
        try:
            parse_spectral(value, kinds, key)
        except ValueError as error:
            r(False, str(error))
        r(m.kind == "diffusion" or value in (DEFAULT_NOISE, DEFAULT_SPECTRAL_SCHEDULE),
          f"{key} = {value} applies to diffusion models only (model.kind: {m.kind})")
    r(f.lam >= 0, f"diffusion.lam = {f.lam} must be >= 0")
    r(f.gamma >= 0, f"diffusion.gamma = {f.gamma} must be >= 0")
    r(f.power > 0, f"diffusion.power = {f.power} must be > 0")
    r(0 < f.gate_t <= 1, f"diffusion.gate_t = {f.gate_t} must be in (0, 1]")
    r(f.amp_mu >= 0, f"diffusion.amp_mu = {f.amp_mu} must be >= 0 (0 = off)")
    r(
        f.amp_mu == 0 or f.lam > 0,
        f"diffusion.amp_mu = {f.amp_mu} needs diffusion.lam > 0 (the amplitude term is computed "
        "on the Fourier branch, which lam = 0 skips)",
    )
    r(
        f.gate == "none" or (f.lam > 0 and (f.weight != "none" or f.amp_mu > 0)),
        f"diffusion.gate = {f.gate} acts on W and the amplitude term of the Fourier branch: it "
        "needs diffusion.lam > 0 and diffusion.weight radial or band, or diffusion.amp_mu > 0",
    )
    r(
        1 <= f.val_sample_steps <= f.timesteps,
        f"diffusion.val_sample_steps = {f.val_sample_steps} must be in 1..diffusion.timesteps",
    )
    if f.target == "regression_residual":
        r(
            m.kind == "diffusion",
            "diffusion.target = regression_residual needs model.kind = "
            "diffusion (a regression model uses target full or residual)",
        )
        r(
            bool(f.regression_checkpoint),
            "diffusion.target = regression_residual needs "
            "diffusion.regression_checkpoint (a checkpoint of a trained regression model)",
        )
    r(t.steps >= 1, f"training.steps = {t.steps} must be >= 1")
    r(t.batch_size >= 1, f"training.batch_size = {t.batch_size} must be >= 1")
    r(t.grad_accum >= 1, f"training.grad_accum = {t.grad_accum} must be >= 1")
    r(t.lr > 0, f"training.lr = {t.lr} must be > 0")
    r(t.weight_decay >= 0, f"training.weight_decay = {t.weight_decay} must be >= 0")
    r(
        len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas),
        f"training.betas = {t.betas} must be two numbers in [0, 1)",
    )
    r(t.warmup_steps >= 0, f"training.warmup_steps = {t.warmup_steps} must be >= 0")
    r(t.grad_clip >= 0, f"training.grad_clip = {t.grad_clip} must be >= 0 (0 = no clipping)")
    r(0 <= t.ema_decay < 1, f"training.ema_decay = {t.ema_decay} must be in [0, 1)")
    r(
        t.device in ("auto", "cpu") or t.device.startswith("cuda"),
        f"training.device = {t.device!r} must be auto, cpu, cuda or cuda:N",
    )
    for name in ("log_every", "val_every", "checkpoint_every", "keep_last"):
        r(getattr(t, name) >= 1, f"training.{name} = {getattr(t, name)} must be >= 1")
    for name, seed in (("data.seed", d.seed), ("training.seed", t.seed)):
        r(0 <= seed <= SEED_MAX, f"{name} = {seed} must be in 0..2**63-1")
    for name in ("num_workers", "val_batches", "val_images", "max_nonfinite_skips"):
        r(getattr(t, name) >= 0, f"training.{name} = {getattr(t, name)} must be >= 0")


def _validate_condition(cfg: RunConfig, source: str) -> None:
    """The rules of ``data.inputs`` / ``data.static`` that need no data (docs/data.md)."""
    d, target = cfg.data, cfg.diffusion.target
    r = lambda ok, msg: _require(ok, source, msg)  # noqa: E731
    for name, values in (("data.variables", d.variables), ("data.features", d.features),
                         ("data.scalars", d.scalars)):
        r(len(set(values)) == len(values), f"{name} = {values} lists a name twice")
    if d.previous:
        r(cfg.model.kind == "diffusion" and target != "regression_residual",
          "data.previous (the previous time's HR field as a condition) is for diffusion models "
          f"with target residual or full, not {cfg.model.kind} / {target}")
        r(d.previous_noise >= 0, f"data.previous_noise = {d.previous_noise} must be >= 0")
        r(0 <= d.previous_dropout < 1,
          f"data.previous_dropout = {d.previous_dropout} must be in [0, 1)")
    if d.static is not None:
        r(bool(d.static.path), "data.static.path: give the file of the static fields")
        r(bool(d.static.variables), "data.static.variables: list at least one (e.g. [orog])")
        r(len(set(d.static.variables)) == len(d.static.variables),
          f"data.static.variables = {d.static.variables} lists a name twice")
    if d.inputs is None:
        return
    inputs = d.inputs.variables
    r(bool(inputs), "data.inputs.variables: list at least one predictor (e.g. [t2m, u10])")
    r(len(set(inputs)) == len(inputs), f"data.inputs.variables = {inputs} lists a name twice")
    r(d.lr_path is None and d.lr_variables is None,
      "data.inputs replaces data.lr_path / data.lr_variables: give one of the two")
    r(d.normalisation == "channel", "data.normalisation = pixel needs the targets' own LR "
      "field as condition: use channel with data.inputs")
    missing = [v for v in d.variables if v not in inputs]
    r(target != "residual" or not missing,
      f"diffusion.target = residual needs an input of the same name for every target (missing: "
      f"{', '.join(missing)}): add them to data.inputs.variables or use regression_residual "
      "or full")
