"""benchmarks/bench_spectral_ablation.py --quick: it runs end to end and prints, per dataset, the
table of every arm with mean ± std over seeds and the table of paired differences to lam0 with
their standard errors; it writes results.json and the PSD plot."""

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
@pytest.mark.timeout(240)
def test_quick_prints_both_tables_with_plus_minus_columns(tmp_path, capsys) -> None:
    bench = _bench()
    arms = list(bench.ARMS)
    assert arms[0] == "lam0" and len(arms) == 8
    assert bench.main(["--quick", "--datasets", "era5", "--jobs", "1", "--out",
                       str(tmp_path)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("arm ")]
    assert len(heads) == 2  # mean ± std, then paired differences
    labels = [bench.LABELS[k] for k in bench.SCORES]
    cell = re.compile(r"[-+]?(\d[\d.e+-]*|nan) ± (\d[\d.e+-]*|nan)")
    for head in heads:
        assert all(label in lines[head] for label in labels)
        rows = lines[head + 1 : head + 1 + len(arms)]
        assert [row.split()[0] for row in rows] == arms
        for row in rows:
            cells = cell.findall(row)
            assert len(cells) == len(labels), row
            assert all(a != "nan" and b != "nan" for a, b in cells), row
    assert "paired difference to lam0" in text and "CPU minutes" in text
    paired_lam0 = lines[heads[1] + 1]
    assert paired_lam0.split()[1:4] == ["+0", "±", "0"]
    results = json.loads((tmp_path / "results.json").read_text())
    summary = results["datasets"]["era5"]["summary"]
    assert list(summary) == arms
    entry = summary["band"]["member_lsd_above_lr"]
    assert len(entry["values"]) == 2 and entry["std"] >= 0 and entry["diff_se"] >= 0
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
    for arm in bench.ARMS:
        if arm != "lam0":
            assert value(arm, "training.batch_size") == "4"  # 2 branches on B
            assert value(arm, "diffusion.loss_divide") == "true"
        assert value(arm, "training.seed") == "1"
        assert value(arm, "training.steps") == str(bench.FULL.steps)
    assert value("band", "diffusion.weight") == "band"
    assert value("amplitude", "diffusion.amp_mu") == "0.1"
