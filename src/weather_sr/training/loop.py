"""The outer training loop and ``train(cfg, run_dir, ...)``, which runs a whole training.

Resume, data loader, signals, logging, validation and checkpoints around :class:`Trainer`.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from weather_sr import distributed as D
from weather_sr.atomic import atomic_output, remove_folder
from weather_sr.config import RunConfig, config_to_yaml
from weather_sr.data import DataBundle
from weather_sr.errors import UserError
from weather_sr.lock import lock_output
from weather_sr.model.checkpoint import load_checkpoint
from weather_sr.model.data_setup import data_kwargs
from weather_sr.targets import Source, check_target
from weather_sr.training.kit import ItemSeeded, StreamBatchSampler
from weather_sr.training.run_log import (
    RunLogger,
    finish_run_dir,
    prepare_run_dir,
    save_sample_images,
)
from weather_sr.training.trainer import Trainer, TrainingDivergedError, TrainResult
from weather_sr.write_errors import WriteFailedError


def _loader(trainer: Trainer) -> Iterator[dict[str, torch.Tensor]]:
    t, info = trainer.cfg.training, trainer.info
    sampler = StreamBatchSampler(
        len(trainer.bundle.train),
        t.batch_size,
        t.seed,
        start=trainer.state.step * t.grad_accum,
        stop=t.steps * t.grad_accum,
        rank=info.rank,
        world_size=info.world_size,
    )
    return iter(
        torch.utils.data.DataLoader(
            ItemSeeded(trainer.bundle.train),
            batch_sampler=sampler,
            num_workers=t.num_workers,
            pin_memory=info.device.type == "cuda",
            persistent_workers=False,
            generator=torch.Generator().manual_seed(t.seed),
        )
    )


class _Signals:
    """SIGINT/SIGTERM set ``trainer.state.stop_requested``; a second SIGINT interrupts at once."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.trainer.state.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.trainer.state.stop_requested = True
        self.trainer.state.stop_signal = signal.Signals(signum).name

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def _save(trainer: Trainer, best: bool = False) -> Path | None:
    trainer.state.saved_step = trainer.state.step
    if not trainer.info.is_main:
        return None
    return trainer.ckpt.save(trainer.payload(), best=best)


def _validate_and_images(trainer: Trainer, logger: RunLogger) -> bool:
    """Rank 0 evaluates; returns True when the validation loss is the best so far."""
    best = False
    if trainer.info.is_main:
        val = trainer.validate()
        if val is not None:
            logger.log(trainer.state.step, "val", val)
            if trainer.state.best_val is None or val["loss"] < trainer.state.best_val:
                trainer.state.best_val, best = val["loss"], True
        samples = trainer.sample_images()
        if samples:
            b = trainer.bundle
            save_sample_images(
                trainer.run_dir / "samples" / f"step_{trainer.state.step:08d}.png",
                samples,
                b.channels[0],
                b.units[0] if b.units else "",
                getattr(b.normalizer, "denormalise", None),
            )
    D.barrier()
    return best


def _resume(trainer: Trainer) -> None:
    latest = trainer.ckpt.latest()
    if latest is None:
        # killed before its first checkpoint was complete: only a temp file may be there
        if trainer.info.is_main:
            trainer.ckpt.remove_stale_temps()
        raise UserError(
            f"--resume: no complete checkpoint yet in {trainer.ckpt.dir} (the run stopped before "
            "its first one was written): start again with --overwrite"
        )
    trainer.restore(load_checkpoint(latest, map_location="cpu"), str(latest))
    if trainer.info.is_main:
        trainer.ckpt.remove_stale_temps()  # half-written files of a killed run
    if trainer.state.step >= trainer.cfg.training.steps:
        raise UserError(
            f"--resume: {latest} is at step {trainer.state.step}, training.steps = "
            f"{trainer.cfg.training.steps}: raise training.steps to train longer"
        )


def _write_config(trainer: Trainer) -> None:
    if trainer.info.is_main:
        with atomic_output(trainer.run_dir / "config.yaml", overwrite=True, what="config") as tmp:
            tmp.write_text(config_to_yaml(trainer.cfg))


def run_training(
    trainer: Trainer, resume: bool, progress: bool, callback: Callable[[Trainer], None] | None
) -> TrainResult:
    t, info = trainer.cfg.training, trainer.info
    if resume:
        _resume(trainer)
    _write_config(trainer)
    state = trainer.state
    logger = RunLogger(trainer.run_dir, info.is_main, trainer.cfg.output.tensorboard, state.step)
    bar = tqdm(
        total=t.steps,
        initial=state.step,
        disable=not (progress and info.is_main),
        desc="train",
        dynamic_ncols=True,
        file=sys.stderr,
    )
    data = _loader(trainer)
    last_saved: Path | None = trainer.ckpt.latest() if resume else None
    state.saved_step = state.step if resume else -1
    window: list[dict[str, float]] = []
    tic = time.perf_counter()
    status = "finished"
    try:
        with _Signals(trainer):
            while state.step < t.steps:
                batches = [next(data) for _ in range(t.grad_accum)]
                try:
                    metrics = trainer.train_step(batches)
                except TrainingDivergedError:
                    if state.saved_step != state.step:  # the weights are still the good ones
                        last_saved = _save(trainer) or last_saved
                    raise
                if "loss" in metrics:  # a skipped non-finite step has no loss to log
                    window.append(metrics)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                bar.update(1)
                step = state.step
                if window and (step % t.log_every == 0 or step == t.steps):
                    mean = {k: sum(m[k] for m in window) / len(window) for k in window[0]}
                    mean = {k: D.mean_scalar(info, v) for k, v in mean.items()}
                    mean["seconds"] = time.perf_counter() - tic
                    mean["nonfinite_skips"] = float(state.nonfinite_skips)  # a count, not a mean
                    logger.log(step, "train", mean)
                    window = []
                best = False
                if step % t.val_every == 0 or step == t.steps:
                    best = _validate_and_images(trainer, logger)
                if step % t.checkpoint_every == 0 or step == t.steps or best or state.stop_agreed:
                    last_saved = _save(trainer, best=best) or last_saved
                if callback is not None:
                    callback(trainer)
                if state.stop_agreed and step < t.steps:
                    status = "interrupted"
                    break
    finally:
        bar.close()
        logger.close()
    if status == "interrupted" and info.is_main:
        name = state.stop_signal or "a stop request"
        folder = trainer.final_run_dir
        print(
            f"weather-sr train: stopped by {name} at step {state.step}; checkpoint saved in "
            f"{folder / 'checkpoints'}; continue with --resume",
            file=sys.stderr,
        )
    D.barrier()
    return TrainResult(state.step, status, trainer.run_dir, last_saved, state.best_val)


def train(
    cfg: RunConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    bundle: DataBundle | None = None,
    callback: Callable[[Trainer], None] | None = None,
    config_file: str | Path | None = None,
) -> TrainResult:
    """Run (or resume) a training; returns when finished or interrupted (SIGINT/SIGTERM).

    ``bundle`` (a ``weather_sr.data.DataBundle``) skips ``build_datasets`` (tests, notebooks);
    ``callback(trainer)`` is called after every step; ``config_file`` (the YAML the config came
    from) is protected like the data: the run folder may not be, contain or lie inside it.

    The run folder is created only after the data and the model are checked. With
    ``overwrite`` the new run is built in a hidden sibling folder and replaces the old run (which
    must carry weather-sr's marker) only when it ends (finished or stopped by a signal); if it
    fails, the old run is left as it was. A new run that fails before its first complete
    checkpoint leaves nothing behind.
    """
    run_dir = Path(run_dir or cfg.output.run_dir)
    if not resume:
        check_run_target(cfg, run_dir, config_file)
    try:
        info = D.setup(cfg.training.device)
    except UserError as error:  # select_device names --device; here it is the config key
        raise UserError(str(error).replace("--device", "training.device")) from None
    # one writer per run folder (rank 0 writes): a second run to it exits at once
    with lock_output(run_dir, "run folder", info.is_main):
        try:
            prepare_run_dir(run_dir, resume, overwrite, info, create=False)
            if bundle is None:
                from weather_sr.data import build_datasets

                bundle = build_datasets(**data_kwargs(cfg))
            trainer = Trainer(cfg, run_dir, info, bundle)
            # only now, with data and model checked, is the run folder created
            work = prepare_run_dir(run_dir, resume, overwrite, info)
            new = not resume and work == run_dir
            if work != run_dir:
                trainer.build_in(work)
            try:
                result = run_training(trainer, resume, progress, callback)
            except BaseException as error:
                note = _discard(trainer, work, run_dir, new) if info.is_main else ""
                if isinstance(error, WriteFailedError):
                    raise WriteFailedError(f"{error}; {note}") from None
                raise
            if work != run_dir and info.is_main:
                finish_run_dir(work, run_dir)
                moved = result.checkpoint and run_dir / Path(result.checkpoint).relative_to(work)
                result = dataclasses.replace(result, run_dir=run_dir, checkpoint=moved or None)
            return result
        finally:
            D.teardown(info)


def check_run_target(cfg: RunConfig, run_dir: Path, config_file: str | Path | None) -> None:
    """The run folder is not the current/home folder, and holds none of the run's inputs."""
    from weather_sr.config import resolve_config_path

    d = data_kwargs(cfg)
    sources = [
        Source("config file", None if config_file is None else resolve_config_path(config_file)),
        Source("data.path", d["path"], data=True),
        Source("data.lr_path", d["lr_path"], data=True),
        Source("data.inputs.path", (d["inputs"] or {}).get("path"), data=True),
        Source("data.static.path", (d["static"] or {}).get("path"), data=True),
        Source("diffusion.regression_checkpoint", cfg.diffusion.regression_checkpoint),
    ]
    check_target(run_dir, "run folder", "--run-dir", sources, folder=True)


def _discard(trainer: Trainer, work: Path, run_dir: Path, new: bool) -> str:
    """After a failed run: remove what is of no use; say what is left (rank 0)."""
    if work != run_dir:
        remove_folder(work)
        return f"the previous run in {run_dir} is unchanged (the new one was discarded)"
    latest = trainer.ckpt.latest()
    if latest is None and new:
        remove_folder(run_dir)
        return f"no checkpoint was complete, so the new run folder {run_dir} was removed"
    trainer.ckpt.remove_stale_temps()
    if latest is None:
        return f"{run_dir} has no complete checkpoint"
    return f"the run keeps its last complete checkpoint {latest}: continue with --resume"
