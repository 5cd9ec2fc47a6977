"""What users read: every option has a help line with its default and the one sampler list, no
developer text in help/README/configs/docs, train's final line, downscale's warnings and its
``--input sample``."""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from weather_sr.cli import build_parser, main
from weather_sr.core.sampling import SAMPLER_NAMES

ROOT = Path(__file__).resolve().parents[1]
DEVELOPER_TEXT = ("Thin:", "issue 6", "issue 11", "DESIGN", "helper notes", "seed's",
                  "misses the target", "by a helper")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["train", "downscale", "evaluate", "demo"])
def test_every_option_has_help_with_its_default(command: str) -> None:
    parser = _subparsers()[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{command} {action.option_strings or action.dest}: no help"
        takes_value = action.nargs != 0 and action.option_strings and not action.required
        if takes_value and action.default is not None:
            assert "default" in action.help, f"{command} {action.option_strings}: no default"
    text = parser.format_help()
    if command != "train":
        assert all(name in text for name in SAMPLER_NAMES), f"{command}: samplers not all listed"



def test_help_does_not_load_torch() -> None:
    """Building the parser of every command (``--help``, choices, defaults) stays light: the
    sampler names and defaults come from a module without torch (a fresh interpreter)."""
    code = ("import sys\nfrom weather_sr.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('torch', 'xarray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

def test_no_developer_text_for_users() -> None:
    texts = {"--help": build_parser().format_help()}
    texts.update({f"{c} --help": p.format_help() for c, p in _subparsers().items()})
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "configs").glob("*"),
             *(ROOT / "src/weather_sr/configs").glob("*"),
             ROOT / "src/weather_sr/sample_data/README.md",
             ROOT / "src/weather_sr/evaluation/report.py"]
    texts.update({str(f.relative_to(ROOT)): f.read_text() for f in files if f.is_file()})
    found = [(where, word) for where, text in texts.items() for word in DEVELOPER_TEXT
             if word in text]
    assert found == []


def test_train_final_line_names_run_folder_and_checkpoint(tmp_path: Path) -> None:
    from weather_sr.commands.train import finished_line

    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    last = ckpts / "step_00000010.pt"
    last.write_bytes(b"x")
    result = SimpleNamespace(step=10, run_dir=tmp_path / "run", checkpoint=last)
    line = finished_line(result, "diffusion")
    assert str(tmp_path / "run") in line and str(last) in line and "last step" in line
    (ckpts / "best.pt").write_bytes(b"x")
    line = finished_line(result, "regression")
    assert str(ckpts / "best.pt") in line and "lowest validation loss" in line
    assert "regression_checkpoint" in line and "\n" not in line


def _grid(step: float, n: int = 8) -> SimpleNamespace:
    return SimpleNamespace(lat=np.arange(n) * step, lat_attrs={"units": "m"}, shape=(n, n))


def test_downscale_warns_when_the_input_is_finer_than_the_lr_grid() -> None:
    from weather_sr.inference.prepare import warn_if_finer

    meta = SimpleNamespace(grid={"lat": list(np.arange(16) * 10.0), "lat_attrs": {"units": "m"}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_finer(_grid(40.0), meta, 4, "input lr.nc")  # the LR grid: quiet
        warn_if_finer(_grid(10.0), SimpleNamespace(grid=None), 4, "input x.nc")  # unknown: quiet
    with pytest.warns(UserWarning, match=r"input hr.nc: .*finer.*32x32.*--coarsen"):
        warn_if_finer(_grid(10.0), meta, 4, "input hr.nc")


def test_warnings_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from weather_sr.cli import _one_line

    _one_line("weather-sr downscale")(UserWarning("a\nb"), UserWarning, "f.py", 1)
    assert capsys.readouterr().err == "weather-sr downscale: warning: a b\n"


def test_input_sample_is_the_shipped_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import weather_sr.inference.downscale as ds
    from weather_sr.data.sample import sample_data_path

    seen = {}

    def fake(checkpoint, input_path, output, options, **kwargs):
        seen["input"] = input_path
        return Path(output)

    monkeypatch.setattr(ds, "downscale", fake)
    monkeypatch.chdir(tmp_path)
    assert main(["downscale", "--checkpoint", "m.pt", "--input", "sample", "--coarsen",
                 "--output", "out.nc"]) == 0
    assert Path(seen["input"]) == sample_data_path()
