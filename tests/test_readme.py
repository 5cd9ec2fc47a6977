"""The README's walkthrough runs as written: its shell blocks are read from README.md and their
commands run in order in a fresh folder, with only step counts, member counts and model sizes
made tiny (``key=value`` overrides of ``train``, option values of ``downscale``/``evaluate``)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Walkthrough: your first hour"
SETUP = ("bash scripts/setup_venv.sh", "source .venv/bin/activate")

# what changes so that the walk takes seconds: sizes and counts only, never names or paths
TINY_TRAIN = {"training.steps": "4", "training.batch_size": "2", "training.val_batches": "1",
              "training.val_images": "0", "model.base_channels": "8", "model.head_channels": "8",
              "diffusion.val_sample_steps": "2"}
TINY_OPTIONS = {"downscale": {"--members": "2", "--steps": "2"},
                "evaluate": {"--members": "2", "--steps": "2", "--max-fields": "2"}}


def walkthrough_blocks(text: str) -> list[str]:
    """The ```bash blocks between the walkthrough heading and the next ``## `` heading."""
    start = text.index(SECTION) + len(SECTION)
    end = text.find("\n## ", start)
    section = text[start:] if end < 0 else text[start:end]
    return re.findall(r"^[ \t]*```bash\n(.*?)^[ \t]*```", section, flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """One string per command: continuation lines joined, blank and comment lines dropped."""
    out: list[str] = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def walkthrough() -> list[str]:
    return [c for b in walkthrough_blocks((ROOT / "README.md").read_text()) for c in commands(b)]


def tiny(argv: list[str]) -> list[str]:
    """``weather-sr ...`` argv with its counts and sizes replaced by tiny ones."""
    command = argv[1]
    if command == "train":  # replace the README's value of a key, else add the key
        values = dict(TINY_TRAIN)
        out = []
        for a in argv:
            key = a.split("=", 1)[0]
            out.append(f"{key}={values.pop(key)}" if "=" in a and key in values else a)
        return out + [f"{k}={v}" for k, v in values.items()]
    options = dict(TINY_OPTIONS.get(command, {}))  # replace an option's value, else add it
    out = []
    for a in argv:
        if out and out[-1] in options:
            a = options.pop(out[-1])
        out.append(a)
    for k, v in options.items():
        out += [k, v]
    return out


def test_the_walkthrough_names_every_step() -> None:
    cmds = walkthrough()
    assert cmds[: len(SETUP)] == list(SETUP)
    kinds = [shlex.split(c)[:2] for c in cmds]
    for expected in (["weather-sr", "train"], ["weather-sr", "downscale"],
                     ["weather-sr", "evaluate"], ["weather-sr", "score"]):
        assert expected in kinds, f"the walkthrough has no {' '.join(expected)}"
    text = " ".join(cmds)
    for piece in ("--run-dir runs/reg", "model.kind=regression", "--run-dir runs/diff",
                  "diffusion.target=regression_residual",
                  "diffusion.regression_checkpoint=runs/reg/checkpoints/best.pt",
                  "--input sample", "--coarsen",
                  "--checkpoint runs/reg/checkpoints/best.pt",
                  "--checkpoint runs/diff/checkpoints/best.pt"):
        assert piece in text, f"the walkthrough lacks {piece!r}"
    # one rule for the checkpoint to use: best.pt, never a step file
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(SECTION):]
    assert "step_0" not in section.split("\n## ", 1)[0]


def _run(argv: list[str], cwd: Path) -> str:
    if argv[0] == "weather-sr":  # the venv's entry point, as after `source .venv/bin/activate`
        script = Path(sys.executable).with_name("weather-sr")
        start = [str(script)] if script.is_file() else [sys.executable, "-m", "weather_sr"]
        argv = [*start, *tiny(argv)[1:]]
    elif argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    else:
        pytest.fail(f"the walkthrough runs {argv[0]!r}: the test knows only weather-sr and python")
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    outputs: dict[str, str] = {}
    for command in walkthrough():
        if command in SETUP:
            continue  # the test already runs inside the venv
        argv = shlex.split(command)
        outputs[command] = _run(argv, tmp_path)
        if argv[:2] == ["weather-sr", "train"]:
            run_dir = argv[argv.index("--run-dir") + 1]
            best = f"{run_dir}/checkpoints/best.pt"
            assert "checkpoint to use" in outputs[command]
            assert best in outputs[command], outputs[command]  # train names the one to use

    text = " ".join(walkthrough())
    for ckpt in sorted(set(re.findall(r"runs/\S+?\.pt", text))):
        assert (tmp_path / ckpt).is_file(), f"{ckpt} named by the README was not written"

    down = next(shlex.split(c) for c in walkthrough() if c.startswith("weather-sr downscale"))
    output = tmp_path / down[down.index("--output") + 1]
    with xr.open_dataset(output) as ds:
        assert ds.sizes["member"] == 2
        assert {"pwat", "btmp"} <= set(ds.data_vars)
        assert ds["pwat"].dims[-2:] == ("y", "x")
    shows = [c for c in walkthrough() if c.startswith("python") and output.name in c]
    assert shows and "member" in outputs[shows[0]], "the README's look at the output shows it"

    ev = next(shlex.split(c) for c in walkthrough() if c.startswith("weather-sr evaluate"))
    report_dir = tmp_path / ev[ev.index("--out") + 1]
    named = [ev[i + 1] for i, a in enumerate(ev) if a == "--checkpoint"]
    assert len(named) == 2
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert set(metrics["settings"]["checkpoints"]) == set(named)
    report = (report_dir / "report.md").read_text()
    for ckpt in named:  # a table row per checkpoint, named by its run folder (reg, diff)
        assert f"| {Path(ckpt).parents[1].name} |" in report, f"report.md has no row of {ckpt}"

    sc = next(shlex.split(c) for c in walkthrough() if c.startswith("weather-sr score"))
    scored = json.loads((tmp_path / sc[sc.index("--out") + 1] / "metrics.json").read_text())
    files = [Path(sc[i + 1]).stem for i, a in enumerate(sc) if a == "--prediction"]
    assert files == ["hr_sample", "cubic_tool"]
    results = scored["results"]
    assert set(results) == {"nearest", "bilinear", "bicubic", *files}
    assert results["hr_sample"]["kind"] == "ensemble" and "lr_consistency" in results["cubic_tool"]
