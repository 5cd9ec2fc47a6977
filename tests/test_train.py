"""Training loop: exact resume, interruption, NaN stop, checkpoints (safety), CLI end to end."""

from __future__ import annotations

import csv
import math
import pickle
import signal
from pathlib import Path

import pytest
import torch

from weather_sr.cli import main
from weather_sr.config import RunConfig, config_to_yaml, load_config
from weather_sr.errors import UserError
from weather_sr.model.checkpoint import load_checkpoint, save_checkpoint
from weather_sr.model.loading import load_model
from weather_sr.training.kit import EMA, StreamBatchSampler, lr_at, resolve_precision
from weather_sr.training.loop import train
from weather_sr.training.trainer import Trainer, TrainingDivergedError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from weather_sr.data import synthetic_dataset, write_zarr

    path = tmp_path_factory.mktemp("data") / "fields.zarr"
    return write_zarr(synthetic_dataset(24, 32, 32, variables=("t2m",), seed=3), path)


@pytest.fixture(scope="module")
def bundle(data_path: Path):
    from weather_sr.data import build_datasets

    return build_datasets(data_path, ["t2m"], scale_factor=4, patch_size=16)


def tiny(data_path: Path, *overrides: str) -> RunConfig:
    return load_config(
        None,
        [
            f"data.path={data_path}",
            "data.variables=[t2m]",
            "data.scale_factor=4",
            "data.patch_size=16",
            "model.base_channels=8",
            "model.channel_mults=[1, 2]",
            "model.num_res_blocks=1",
            "model.head_channels=8",
            "diffusion.timesteps=50",
            "diffusion.val_sample_steps=2",
            "training.batch_size=2",
            "training.steps=6",
            "training.warmup_steps=2",
            "training.log_every=2",
            "training.val_every=100",
            "training.checkpoint_every=100",
            "training.val_batches=1",
            "training.val_images=1",
            "training.precision=fp32",
            "output.tensorboard=false",
            *overrides,
        ],
    )


def states(path: Path) -> dict[str, torch.Tensor]:
    p = load_checkpoint(path)
    flat = {f"model.{k}": v for k, v in p["model"].items()}
    flat.update({f"ema.{k}": v for k, v in p["ema"].items()})
    for i, s in p["optimizer"]["state"].items():
        flat.update({f"opt.{i}.{k}": v for k, v in s.items()})
    return flat


def test_resume_after_interrupt_is_exact(data_path: Path, bundle, tmp_path: Path) -> None:
    """6 steps straight == 3 steps, SIGINT, checkpoint, --resume, 3 more (same weights)."""
    cfg = tiny(data_path, "model.dropout=0.1", "training.grad_accum=2", "diffusion.lam=1")
    straight = train(cfg, tmp_path / "a", progress=False, bundle=bundle)
    assert straight.status == "finished" and straight.step == 6

    def interrupt(trainer: Trainer) -> None:
        if trainer.state.step == 2:
            signal.raise_signal(signal.SIGINT)  # handled: stop after the next step

    first = train(cfg, tmp_path / "b", progress=False, bundle=bundle, callback=interrupt)
    assert first.status == "interrupted" and first.step == 3
    assert first.checkpoint == tmp_path / "b" / "checkpoints" / "step_00000003.pt"
    second = train(cfg, tmp_path / "b", resume=True, progress=False, bundle=bundle)
    assert second.status == "finished" and second.step == 6
    a, b = states(straight.checkpoint), states(second.checkpoint)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    # the metrics of the resumed run continue the interrupted one without duplicates
    with (tmp_path / "b" / "metrics.csv").open() as fh:
        train_steps = [int(r["step"]) for r in csv.DictReader(fh) if r["split"] == "train"]
    assert train_steps == [2, 4, 6] or train_steps == [2, 3, 4, 6]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    data_path: Path, bundle, tmp_path: Path
) -> None:
    cfg = tiny(data_path, "training.checkpoint_every=2")

    def poison(trainer: Trainer) -> None:
        if trainer.state.step == 2:
            with torch.no_grad():
                next(trainer.net.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDivergedError, match="NaN/Inf at step 3"):
        train(cfg, tmp_path / "r", progress=False, bundle=bundle, callback=poison)
    files = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert files == ["step_00000002.pt"]
    assert all(
        torch.isfinite(v).all() for v in states(tmp_path / "r" / "checkpoints" / files[0]).values()
    )


def test_run_dir_is_protected(data_path: Path, bundle, tmp_path: Path) -> None:
    cfg = tiny(data_path, "training.steps=1")
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="already exists: pass --overwrite"):
        train(cfg, run, progress=False, bundle=bundle)
    with pytest.raises(UserError, match="no complete checkpoint yet"):
        train(cfg, run, resume=True, progress=False, bundle=bundle)
    # --overwrite replaces only a folder that weather-sr created (it carries the marker file)
    with pytest.raises(UserError, match="not a weather-sr run folder"):
        train(cfg, run, overwrite=True, progress=False, bundle=bundle)
    assert (run / "keep.txt").read_text() == "x"
    own = tmp_path / "own"
    assert train(cfg, own, progress=False, bundle=bundle).step == 1
    (own / "extra.txt").write_text("x")
    assert train(cfg, own, overwrite=True, progress=False, bundle=bundle).step == 1
    assert not (own / "extra.txt").exists() and (own / ".weather-sr").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["own", "run"]  # no temp folder left


def test_checkpoint_loading_is_safe(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "weather-sr-checkpoint", "x": Payload()}, evil)
    assert not marker.exists()
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(evil)
    assert not marker.exists()  # the payload did not run
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(UserError):
        load_checkpoint(raw)
    assert not marker.exists()
    good = save_checkpoint(
        tmp_path / "ok.pt", {"step": 1, "model": {}, "ema": {}, "config": {}, "channels": ["a"]}
    )
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated or corrupted"):
        load_checkpoint(cut)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a weather-sr training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_regression_then_corrdiff_residual(data_path: Path, bundle, tmp_path: Path) -> None:
    reg = train(
        tiny(data_path, "model.kind=regression", "training.steps=2"),
        tmp_path / "reg",
        progress=False,
        bundle=bundle,
    )
    model = load_model(reg.checkpoint)
    cond = torch.stack([bundle.val[i]["cond"] for i in range(2)])
    pred = model.predict(cond)
    torch.testing.assert_close(pred, cond + model.regress(cond))  # residual over interpolated LR
    torch.testing.assert_close(model.sample(cond, "ddim", 3), pred)  # deterministic baseline
    with (tmp_path / "reg" / "metrics.csv").open() as fh:
        assert all(float(r["loss_f"]) == 0 for r in csv.DictReader(fh) if r["split"] == "train")
    cfg = tiny(
        data_path,
        "diffusion.target=regression_residual",
        "training.steps=2",
        f"diffusion.regression_checkpoint={reg.checkpoint}",
    )
    diff = train(cfg, tmp_path / "diff", progress=False, bundle=bundle)
    dm = load_model(diff.checkpoint)
    assert dm.net.cond_channels == 2  # cond + regression mean
    torch.testing.assert_close(dm.base(cond), pred)
    g = [torch.Generator().manual_seed(5) for _ in range(2)]
    s1 = dm.sample(cond, "ddim", 3, torch.Generator().manual_seed(5))
    s2 = dm.sample(cond, "ddim", 3, torch.Generator().manual_seed(5))
    assert s1.shape == cond.shape and torch.isfinite(s1).all()
    torch.testing.assert_close(s1, s2)
    del g
    assert dm.meta.channels == ("t2m",) and dm.meta.scale_factor == 4
    assert dm.meta.normalizer["kind"] == "channel"
    # the diffusion target's scale: RMS of (hr - regression mean) over the seeded training
    # patches (patch k drawn with seed + its position), recomputed here by hand
    assert dm.prediction == "v" and model.target_scale.tolist() == [1.0]
    picks = torch.linspace(0, len(bundle.train) - 1, min(len(bundle.train), 64)).long()
    items = [bundle.train.item(int(k), torch.Generator().manual_seed(cfg.training.seed + n))
             for n, k in enumerate(picks)]
    hr = torch.stack([it["hr"] for it in items])
    # patches narrower than the global field: no circular x padding
    residual = hr - model.predict(torch.stack([it["cond"] for it in items]), wrap_x=False)
    torch.testing.assert_close(dm.target_scale, residual.square().mean().sqrt().view(1))
    payload = load_checkpoint(diff.checkpoint)
    payload["target_scale"] = [0.0]  # a hand-edited or corrupted checkpoint
    save_checkpoint(tmp_path / "bad.pt", payload)
    with pytest.raises(UserError, match="target_scale"):
        load_model(tmp_path / "bad.pt")
    # a checkpoint from before these settings existed is what it was then: epsilon, unscaled
    del payload["target_scale"], payload["config"]["diffusion"]["prediction"]
    save_checkpoint(tmp_path / "legacy.pt", payload)
    legacy = load_model(tmp_path / "legacy.pt")
    assert legacy.prediction == "epsilon" and legacy.target_scale.tolist() == [1.0]


def test_cli_end_to_end(data_path: Path, tmp_path: Path) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(
        config_to_yaml(
            tiny(data_path, "training.steps=2", "training.val_every=2", "output.tensorboard=true")
        )
    )
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(cfg_file),
                "--run-dir",
                str(run),
                "--no-progress",
                "diffusion.weight=radial",
                "diffusion.gamma=2",
            ]
        )
        == 0
    )
    assert load_config(run / "config.yaml").diffusion.weight == "radial"
    with (run / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {"loss_x", "loss_f"} <= set(rows[0]) and {r["split"] for r in rows} == {"train", "val"}
    assert all(math.isfinite(float(r["loss_x"])) for r in rows)
    assert (run / "samples" / "step_00000002.png").stat().st_size > 1000
    assert any((run / "tensorboard").iterdir())
    assert (run / "checkpoints" / "best.pt").is_file()
    assert main(["train", "--config", str(cfg_file), "--run-dir", str(run)]) == 2  # exists
    # --resume without --config continues with the run's own config.yaml
    assert (
        main(["train", "--run-dir", str(run), "--resume", "--no-progress", "training.steps=3"]) == 0
    )
    assert load_checkpoint(run / "checkpoints" / "step_00000003.pt")["step"] == 3


def test_precision_choice() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None and resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(UserError, match="fp16 is for GPUs"):
        resolve_precision("fp16", cpu)


def test_lr_schedule_closed_form() -> None:
    assert lr_at(0, 1.0, 4, 100, "constant") == 0.25
    assert lr_at(3, 1.0, 4, 100, "constant") == 1.0 == lr_at(50, 1.0, 4, 100, "constant")
    assert lr_at(4, 1.0, 4, 104, "cosine") == 1.0
    assert lr_at(54, 1.0, 4, 104, "cosine") == pytest.approx(0.5)
    assert lr_at(104, 1.0, 4, 104, "cosine") == pytest.approx(0.0)


def test_ema_update_closed_form() -> None:
    net = torch.nn.Linear(2, 1)
    old = {k: v.clone() for k, v in net.state_dict().items()}
    ema = EMA(net, decay=0.9, warmup=False)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, step=100)
    torch.testing.assert_close(ema.shadow["weight"], 0.9 * old["weight"] + 0.1 * net.weight)
    assert EMA(net, 0.999, warmup=True).decay_at(0) == pytest.approx(0.1)


def test_stream_sampler_shards_and_covers() -> None:
    n, b = 10, 3
    ranks = [
        StreamBatchSampler(n, b, seed=1, start=0, stop=4, rank=r, world_size=2) for r in range(2)
    ]
    batches = [[k for k, _ in batch] for r in ranks for batch in r]
    flat = [k for m in range(4) for r in ranks for k, _ in r.batch(m)]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert set(ranks[0].batch(0)).isdisjoint(ranks[1].batch(0))
    later = StreamBatchSampler(n, b, seed=1, start=2, stop=4, rank=1, world_size=2)
    assert list(later) == [ranks[1].batch(2), ranks[1].batch(3)]  # resumable by step
    assert len(batches) == 8


def _nan_at(steps: set[int], snapshots: dict[int, list[torch.Tensor]]):
    """Callback: from step 1 on, the training loss is NaN at the given ``trainer.state.step``
    values; records the weights after every step."""

    def callback(trainer: Trainer) -> None:
        snapshots[trainer.state.step] = [p.detach().clone() for p in trainer.net.parameters()]
        if trainer.state.step == 1:
            original = trainer.loss

            def loss(model, batch, generator):
                out = original(model, batch, generator)
                if model is trainer.model and trainer.state.step in steps:
                    return (out[0] * float("nan"), *out[1:])
                return out

            trainer.loss = loss

    return callback


def test_nonfinite_loss_skip_mode_counts_and_limits(
    data_path: Path, bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny(data_path, "training.on_nonfinite=skip", "training.max_nonfinite_skips=2",
               "training.log_every=1")
    weights: dict[int, list[torch.Tensor]] = {}
    result = train(cfg, tmp_path / "skip", progress=False, bundle=bundle,
                   callback=_nan_at({2, 4}, weights))
    assert result.status == "finished" and result.step == 6
    assert load_checkpoint(result.checkpoint)["nonfinite_skips"] == 2
    for skipped in (3, 5):  # the update of a skipped step is dropped: weights unchanged
        for a, b in zip(weights[skipped - 1], weights[skipped], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(weights[3], weights[4], strict=True))
    err = capsys.readouterr().err
    assert "NaN/Inf at step 3: update skipped (1 of at most" in err
    assert "NaN/Inf at step 5: update skipped (2 of at most" in err
    with (tmp_path / "skip" / "metrics.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    assert [int(r["step"]) for r in rows] == [1, 2, 4, 6]  # no loss row for skipped steps
    assert [float(r["nonfinite_skips"]) for r in rows] == [0, 0, 1, 2]
    # a third non-finite step exceeds training.max_nonfinite_skips = 2: the run stops
    with pytest.raises(TrainingDivergedError, match="at step 6 after 2 skipped steps"):
        train(cfg, tmp_path / "limit", progress=False, bundle=bundle,
              callback=_nan_at({2, 3, 5}, {}))
    assert load_checkpoint(tmp_path / "limit" / "checkpoints" / "step_00000005.pt")["step"] == 5
    with pytest.raises(TrainingDivergedError, match=r"at step 3; .*training\.on_nonfinite=skip"):
        train(tiny(data_path), tmp_path / "stop", progress=False, bundle=bundle,
              callback=_nan_at({2}, {}))
