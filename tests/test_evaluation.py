"""Evaluation: split loading, baselines, findings, the evaluate command end to end, the demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from weather_sr.cli import main
from weather_sr.data import build_datasets, coarsen, upsample
from weather_sr.evaluation.evalset import baseline_predictions, load_split, method_name, score
from weather_sr.evaluation.report import channel_table, verdicts

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bundle(data_path: Path):
    return build_datasets(data_path, ["t2m", "z"], scale_factor=4, patch_size=16)


def test_split_holds_truth_and_block_mean_lr(bundle) -> None:
    data = load_split(bundle, "test")
    n = len(bundle.test)
    assert data.truth.shape == (n, 2, 32, 32) and data.lr.shape == (n, 2, 8, 8)
    np.testing.assert_allclose(
        data.lr, coarsen(torch.from_numpy(data.truth).double(), 4).numpy(), rtol=0, atol=1e-4
    )
    item = bundle.test[0]  # the dataset's normalised truth is the same field
    np.testing.assert_allclose(
        bundle.normalizer.denormalise(item["hr"].double().numpy()), data.truth[0], atol=1e-3
    )
    assert data.mask.min() == 1.0 and data.channels == ["t2m", "z"]


def test_baselines_are_interpolations_of_the_lr(bundle) -> None:
    data = load_split(bundle, "test", max_fields=2)
    base = baseline_predictions(data)
    assert set(base) == {"nearest", "bilinear", "bicubic"}
    lr = torch.from_numpy(data.lr)
    np.testing.assert_array_equal(base["nearest"], np.repeat(np.repeat(data.lr, 4, 2), 4, 3))
    np.testing.assert_allclose(base["bicubic"], upsample(lr, 4, "bicubic", True).numpy())
    # block means of the nearest baseline give back the LR field exactly (conservative)
    np.testing.assert_allclose(coarsen(torch.from_numpy(base["nearest"]), 4).numpy(), data.lr,
                               rtol=1e-6)


def test_score_of_the_truth_is_perfect(bundle) -> None:
    data = load_split(bundle, "test", max_fields=2)
    result = score(data, data.truth)
    for channel in data.channels:
        assert result["metrics"][channel]["rmse"] == pytest.approx(0.0, abs=1e-9)
        assert result["metrics"][channel]["lsd"] == pytest.approx(0.0, abs=1e-9)


def _result(kind: str, rmse: float, lsd_high: float, **extra: float) -> dict:
    metrics = {"rmse": rmse, "lsd_high": lsd_high, **extra}
    return {"kind": kind, "metrics": {"t": metrics}}


def test_verdicts_state_wins_and_losses() -> None:
    results = {
        "bilinear": _result("deterministic", 3.0, 12.0),
        "bicubic": _result("deterministic", 2.0, 10.0),
        "regression": _result("deterministic", 1.0, 8.0),
        "diff": _result("ensemble", 1.5, 9.0, member_lsd_high=4.0, spread_skill=0.6, crps=0.9),
    }
    results["bicubic"]["metrics"]["t"]["mae"] = 1.2
    results["regression"]["metrics"]["t"]["mae"] = 0.8
    untested = verdicts(results, ["t"])
    cells = [c.strip() for c in untested[2].strip("|").split("|")]
    assert cells[2:4] == ["untested (1.5 vs 2)", "untested (0.9 vs 1.2)"]
    assert "Of the 6 comparisons above the ensembles win 0 and lose 0" in untested[-1]
    assert "0 are ties (not significant) and 6 untested" in untested[-1]

    def test(significant: bool, p: float) -> dict:
        return {"t": {"significant": significant, "p_value": p}}

    results["diff"]["paired"] = {
        "bicubic": {"rmse": test(True, 0.01), "crps": test(False, 0.3),
                    "spectrum": test(True, 0.01)},
        "regression": {"rmse": test(True, 0.01), "crps": test(True, 0.02),
                       "spectrum": test(False, 0.5)}}
    lines = verdicts(results, ["t"])
    head, row = lines[0], lines[2]
    assert "RMSE < bicubic?" in head and "CRPS < regression?" in head
    assert "bilinear" not in head  # one interpolation baseline: bicubic
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["t", "diff", "yes (1.5 vs 2, p = 0.01)", "tie (0.9 vs 1.2, p = 0.3)",
                     "yes (4 vs 10, p = 0.01)", "no (1.5 vs 1, p = 0.01)",
                     "no (0.9 vs 0.8, p = 0.02)", "tie (4 vs 8, p = 0.5)",
                     "under-dispersive (0.60)"]
    assert "win 2 and lose 2, significantly" in lines[-1] and "2 are ties" in lines[-1]
    assert verdicts({"bicubic": results["bicubic"]}, ["t"]) == []  # no ensemble: no table
    table = channel_table(results, "t")
    assert table.count("\n") == 5 and "| diff | 1.5 |" in table


def test_method_names_are_unique(tmp_path: Path) -> None:
    class M:
        kind = "diffusion"

    path = tmp_path / "run" / "checkpoints" / "last.pt"
    assert method_name(path, M(), []) == "run"
    assert method_name(path, M(), ["run"]) == "run-2"


def test_evaluate_command_writes_report(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["evaluate", "--checkpoint", str(checkpoints["regression"]), "--checkpoint",
            str(checkpoints["diffusion"]), "--out", str(out), "--members", "3", "--steps", "2",
            "--max-fields", "2", "--device", "cpu"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    results = metrics["results"]
    assert set(results) == {"nearest", "bilinear", "bicubic", "reg", "dif"}
    assert results["dif"]["kind"] == "ensemble" and results["dif"]["n_members"] == 3
    assert results["reg"]["kind"] == "deterministic"
    assert metrics["settings"]["members"] == 3 and metrics["settings"]["n_fields"] == 2
    report = (out / "report.md").read_text()
    assert "## t2m [K]" in report and "| dif |" in report and "## Findings" in report
    # consistency with the input: nearest interpolation averages back to its LR exactly (the
    # same block mean that made the LR); the others depart from it by a positive amount
    assert "Consistency with the input (t2m [K])" in report
    for name, result in results.items():
        for c, agree in result["lr_consistency"].items():
            assert 0 <= agree["rmse"] <= agree["max_abs"], (name, c)
            assert (agree["max_abs"] < 1e-3) == (name == "nearest"), (name, c, agree)
    for png in ("panels_t2m.png", "psd_z.png", "rank_histogram_dif.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # an existing report folder is not replaced without --overwrite
    before = (out / "report.md").stat().st_mtime_ns
    assert main(args) == 2
    assert (out / "report.md").stat().st_mtime_ns == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]


def test_evaluate_refuses_bad_options(checkpoints: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    base = ["evaluate", "--checkpoint", str(checkpoints["diffusion"]), "--out",
            str(tmp_path / "r")]
    for extra, word in ((["--members", "1"], "--members"), (["--sampler", "euler"], "--sampler"),
                        (["--steps", "0"], "--steps")):
        assert main([*base, *extra]) == 2
        assert word in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _results(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())["results"]


def _assert_close(a: object, b: object, rtol: float, where: str = "") -> None:
    """Nested metric dicts equal: numbers to rtol, the rest exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_close(a[k], b[k], rtol, f"{where}/{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(x, y, rtol, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=rtol, abs=1e-9), where
    else:
        assert a == b, where


def test_evaluate_in_chunks_scores_what_one_pass_does(checkpoints: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """--chunk-fields 1 reads, samples and scores one field at a time; the report's numbers are
    those of one chunk (network batches differ: float32 rounding only; in bf16, which
    --precision auto picks on CPUs with native bf16, the rounding of other batch shapes flips
    rank counts)."""
    common = ["evaluate", "--checkpoint", str(checkpoints["diffusion"]), "--members", "3",
              "--steps", "2", "--max-fields", "3", "--device", "cpu", "--precision", "float32"]
    for k in (1, 8):
        assert main([*common, "--out", str(tmp_path / f"r{k}"), "--chunk-fields", str(k)]) == 0
    one, whole = _results(tmp_path / "r1"), _results(tmp_path / "r8")
    # the members' spread of order statistics (quantile biases) is a difference of nearly
    # equal numbers: float32 rounding of other batch shapes moves it more, relatively
    spreads = [r["dif"].pop("series_spread") for r in (one, whole)]
    _assert_close(*spreads, rtol=1e-2)
    _assert_close(one, whole, rtol=1e-4)
    assert whole["dif"]["n_fields"] == 3
    settings = json.loads((tmp_path / "r1" / "metrics.json").read_text())["settings"]
    assert settings["n_fields"] == 3 and len(settings["times"]) == 2
    assert settings["precision"] == "float32" and settings["tile"] == 0


def test_evaluate_tiles(checkpoints: dict[str, Path], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    """--tile/--overlap sample in tiles (recorded in the settings); bad ones are refused."""
    base = ["evaluate", "--checkpoint", str(checkpoints["diffusion"]), "--members", "2",
            "--steps", "2", "--max-fields", "1", "--device", "cpu", "--precision", "float32"]
    for extra, word in ((["--tile", "15"], "--tile"), (["--tile", "16", "--overlap", "16"],
                                                       "--overlap")):
        assert main([*base, "--out", str(tmp_path / "bad"), *extra]) == 2
        assert word in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main([*base, "--out", str(tmp_path / "t"), "--tile", "16", "--overlap", "8"]) == 0
    assert main([*base, "--out", str(tmp_path / "w")]) == 0
    tiled, whole = _results(tmp_path / "t"), _results(tmp_path / "w")
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["settings"]["tile"] == 16
    assert "tiles of 16 px (overlap 8)" in (tmp_path / "t" / "report.md").read_text()
    assert "network in float32, whole fields" in (tmp_path / "w" / "report.md").read_text()
    assert tiled["bicubic"] == whole["bicubic"]
    assert tiled["dif"]["mean"]["crps"] != whole["dif"]["mean"]["crps"]  # tiles: other samples


def test_torchrun_evaluate_equals_one_process(checkpoints: dict[str, Path],
                                              tmp_path: Path) -> None:
    """2 gloo ranks share the sampling, rank 0 scores and writes: the same report numbers."""
    from test_distributed import torchrun

    argv = ["evaluate", "--checkpoint", str(checkpoints["diffusion"]), "--members", "3",
            "--steps", "2", "--max-fields", "3", "--batch-size", "2", "--chunk-fields", "2",
            "--device", "cpu"]
    for n in (1, 2):
        run = torchrun(n, *argv, "--out", str(tmp_path / f"r{n}"))
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.count("report written") == 1
    assert _results(tmp_path / "r2") == _results(tmp_path / "r1")


@pytest.mark.slow
def test_quick_demo_writes_the_ablation_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    results = json.loads((out / "report" / "metrics.json").read_text())["results"]
    expected = {"nearest", "bilinear", "bicubic", "regression", "diffusion_lam0",
                "diffusion_lam1_w1", "diffusion_lam1_radial"}
    assert set(results) == expected
    report = (out / "report" / "report.md").read_text()
    assert "trains exactly what λ = 0 trains" in report
    shift = next(line for line in report.splitlines() if line.startswith("**Distribution shift"))
    assert all(f"{split} pwat" in shift for split in ("train", "val", "test"))
    assert "RMSE M→∞" in report
    assert main(["demo", "--quick", "--out", str(out)]) == 2  # exists, no --overwrite
