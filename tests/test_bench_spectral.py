"""benchmarks/bench_spectral_ablation.py --quick: it runs end to end and prints, per dataset, the
table of every arm with mean ± std over seeds, the table of paired differences to the reference
with their standard errors and the spread/skill per band; it writes results.json and the PSD
plot."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_spectral_ablation.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_spectral_ablation", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_prints_the_tables_with_plus_minus_columns(tmp_path, capsys) -> None:
    """The process suite (reference white), a sampling-only arm and a --with-lam1 arm: the
    mean ± std table, the paired table and the per-band spread/skill table."""
    bench = _bench()
    arms = ["white", "equal_snr", "sched_blur2", "colour_q1", "equal_snr+lam1"]
    assert bench.main(["--quick", "--datasets", "era5", "--jobs", "1", "--arms", *arms[:4],
                       "--with-lam1", "equal_snr", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("arm ")]
    assert len(heads) == 3  # mean ± std, paired differences, spread/skill per band
    labels = [bench.LABELS[k] for k in bench.SCORES]
    cell = re.compile(r"[-+]?(\d[\d.e+-]*|nan) ± (\d[\d.e+-]*|nan)")
    for head in heads[:2]:
        assert all(label in lines[head] for label in labels)
        rows = lines[head + 1 : head + 1 + len(arms)]
        assert [row.split()[0] for row in rows] == arms
        for row in rows:
            cells = cell.findall(row)
            assert len(cells) == len(labels), row
            assert all(a != "nan" and b != "nan" for a, b in cells), row
    band_rows = lines[heads[2] + 1 : heads[2] + 1 + len(arms)]
    assert "LR Nyquist" in lines[heads[2]]
    assert "paired difference to white" in text and "CPU minutes" in text
    paired_ref = lines[heads[1] + 1]
    assert paired_ref.split()[1:4] == ["+0", "±", "0"]
    results = json.loads((tmp_path / "results.json").read_text())
    summary = results["datasets"]["era5"]["summary"]
    assert list(summary) == arms and results["reference"] == "white"
    entry = summary["equal_snr"]["member_lsd_above_lr"]
    assert len(entry["values"]) == 2 and entry["std"] >= 0 and entry["diff_se"] >= 0
    n_bands = len(summary["white"]["band_spread_skill"]["labels"])
    assert n_bands >= 2
    assert [len(cell.findall(row)) for row in band_rows] == [n_bands] * len(arms)
    assert results["arms"]["colour_q1"]["noise_colour"] == "power:1"
    assert results["arms"]["equal_snr+lam1"]["diffusion.lam"] == 1.0
    runs = results["datasets"]["era5"]["runs"]
    colour = [r for r in runs if r["arm"] == "colour_q1"]
    assert all(r["train_seconds"] == 0.0 for r in colour)  # sampled from white's model
    assert results["datasets"]["era5"]["channels"] == ["t_500", "t_850", "z_500", "z_850"]
    assert (tmp_path / "psd_era5.png").stat().st_size > 0
    assert not list(tmp_path.glob("runs_*"))  # run folders removed


def test_equal_network_evaluation_budget_and_arms() -> None:
    bench = _bench()
    ds = bench.Dataset("x", "sample", ("pwat",), 32, 4)

    def value(arm: str, key: str) -> str:
        items = dict(o.split("=", 1) for o in bench.overrides(ds, arm, 1, bench.FULL, "cpu"))
        return items[key]

    assert value("lam0", "training.batch_size") == "8"  # 1 network pass on 2B
    for arm in bench.LOSS_ARMS:
        if arm != "lam0":
            assert value(arm, "training.batch_size") == "4"  # 2 branches on B
            assert value(arm, "diffusion.loss_divide") == "true"
        assert value(arm, "training.seed") == "1"
        assert value(arm, "training.steps") == str(bench.FULL.steps)
    for arm in bench.PROCESS_ARMS:
        assert value(arm, "training.batch_size") == "8"  # lam = 0: one pass on 2B
    assert value("power2", "diffusion.noise") == "power:2"
    assert value("sched_blur2", "diffusion.spectral_schedule") == "blur:2"
    assert value("equal_snr+lam1", "training.batch_size") == "4"
    assert value("equal_snr+lam1", "diffusion.noise") == "equal_snr"
    assert value("band", "diffusion.weight") == "band"
    assert value("amplitude", "diffusion.amp_mu") == "0.1"
    for arm, (base, options) in bench.SAMPLING_ARMS.items():
        assert base in bench.PROCESS_ARMS and options["sampler"] == "ddim", arm
