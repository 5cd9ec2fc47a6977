"""Run config: YAML mapping, typed validation, overrides, dry run, example configs."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import yaml

from weather_sr.cli import main
from weather_sr.config import (
    DataConfig,
    RunConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    config_to_yaml,
    load_config,
)
from weather_sr.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
BASE = ["data.variables=[t2m]"]


def test_defaults_and_typed_overrides() -> None:
    cfg = load_config(
        None,
        [
            *BASE,
            "training.steps=200",
            "diffusion.lam=0",
            "model.channel_mults=[1, 2]",
            "data.patch_size=[32, 64]",
            "training.lr=1e-4",
            "diffusion.regression_checkpoint=null",
        ],
    )
    assert isinstance(cfg, RunConfig)
    assert cfg.training.steps == 200 and cfg.diffusion.lam == 0.0
    assert isinstance(cfg.diffusion.lam, float)  # int accepted for float, converted
    assert cfg.model.channel_mults == [1, 2] and cfg.data.patch_size == [32, 64]
    assert cfg.training.lr == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as a string
    assert cfg.diffusion.target == "residual"  # docs/method.md §5: residual is the default target


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, [*BASE, "model.attention_levels=[1]", "training.steps=7"])
    path = tmp_path / "c.yaml"
    path.write_text(config_to_yaml(cfg))
    assert load_config(path) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.stpes=3", r"unknown key training\.stpes \(did you mean training\.steps\?\)"),
        ("trainig.steps=3", r"unknown key trainig \(did you mean training\?\)"),
        ("training.steps=abc", r"training\.steps must be of type int, got 'abc'"),
        ("training.steps=2.5", r"training\.steps must be of type int"),
        ("model.mid_attention=3", r"model\.mid_attention must be of type bool"),
        ("model.kind=difusion", r"model\.kind = 'difusion' is not one of .*'diffusion'"),
        ("diffusion.lam=-1", r"diffusion\.lam = -1\.0 must be >= 0"),
        ("training.steps=0", r"training\.steps = 0 must be >= 1"),
        ("data.patch_size=30", r"patch_size = 30 must be a multiple of 4 = 2\*\*\(levels-1\)"),
        ("data.patch_size=8", r"patch_size = 8 must be a multiple of data\.scale_factor"),
        ("training.ema_decay=1.5", r"training\.ema_decay = 1\.5 must be in \[0, 1\)"),
        ("diffusion.target=regression_residual", r"needs diffusion\.regression_checkpoint"),
        ("model.channel_mults=[]", r"model\.channel_mults"),
        ("model.head_channels=48", r"head_channels = 48 must divide the attention width 128"),
    ],
)
def test_invalid_values_raise_named_errors(override: str, message: str) -> None:
    extra = ["data.scale_factor=16", "data.patch_size=32"] if "scale_factor" in message else []
    with pytest.raises(UserError, match=message):
        load_config(None, [*BASE, *extra, override])


def test_missing_variables_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"data\.variables must list at least one"):
        load_config(None, [])
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("data: 3\n")
    with pytest.raises(UserError, match="data must be a mapping"):
        load_config(bad)
    with pytest.raises(UserError, match=r"must look like section\.key=value"):
        apply_overrides({}, ["training.steps"])


def test_data_section_maps_onto_build_datasets() -> None:
    """Every data key is a keyword argument of build_datasets, and every argument is a key."""
    from weather_sr.data import build_datasets

    params = set(inspect.signature(build_datasets).parameters)
    assert {f.name for f in dataclasses.fields(DataConfig)} == params


@pytest.mark.parametrize("name", ["sample.yaml", "era5_example.yaml",
                                  "era5_to_regional_example.yaml",
                                  "era5_to_lambert_example.yaml"])
def test_example_configs_are_valid(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    raw = yaml.safe_load((ROOT / "configs" / name).read_text())
    cfg = load_config(ROOT / "configs" / name)
    # the files set only known keys, and they load to what they say
    assert config_to_dict(cfg)["training"]["steps"] == raw["training"]["steps"]
    assert main(["train", "--config", str(ROOT / "configs" / name), "--dry-run"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"] == config_to_dict(cfg)["data"]


def test_packaged_sample_config_matches_and_resolves_by_name() -> None:
    packaged = ROOT / "src" / "weather_sr" / "configs" / "sample.yaml"
    assert packaged.read_text() == (ROOT / "configs" / "sample.yaml").read_text()
    assert load_config("sample") == load_config(ROOT / "configs" / "sample.yaml")


def test_cli_dry_run_prints_resolved_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "train",
            "--config",
            str(ROOT / "configs" / "sample.yaml"),
            "--dry-run",
            "training.steps=12",
            "diffusion.lam=0",
            "--run-dir",
            "somewhere",
        ]
    )
    assert code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["training"]["steps"] == 12 and printed["diffusion"]["lam"] == 0.0
    assert printed["output"]["run_dir"] == "somewhere"
    assert main(["train", "--dry-run", "training.stpes=1", *BASE]) == 2
    assert "did you mean training.steps" in capsys.readouterr().err


def test_condition_choices_are_the_data_layers() -> None:
    """The config's choices of data.inputs.regrid, data.features and the gate are the lists the
    code acts on (config imports no data module, so they are written twice and checked here)."""
    import typing

    from weather_sr.config import DataConfig, DiffusionConfig, InputsConfig
    from weather_sr.core.loss import GATES
    from weather_sr.data.features import FEATURES
    from weather_sr.data.regrid import REGRID_METHODS

    hints = typing.get_type_hints
    one, per_variable = typing.get_args(hints(InputsConfig)["regrid"])
    assert typing.get_args(one) == REGRID_METHODS
    assert typing.get_args(typing.get_args(per_variable)[1]) == REGRID_METHODS
    assert typing.get_args(typing.get_args(hints(DataConfig)["features"])[0]) == FEATURES
    assert typing.get_args(hints(DiffusionConfig)["gate"]) == GATES
