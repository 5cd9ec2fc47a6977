"""Run folder, metrics (CSV + TensorBoard) and validation images of a training run (rank 0 only)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from weather_sr import distributed as D
from weather_sr.atomic import (
    atomic_output,
    check_output_path,
    create_folder,
    replace_folder,
    sibling_folder,
)
from weather_sr.errors import UserError
from weather_sr.write_errors import io_errors

FIELDS = [
    "step", "split", "loss", "loss_x", "loss_f", "lr", "grad_norm", "seconds", "nonfinite_skips",
]


def prepare_run_dir(
    run_dir: Path, resume: bool, overwrite: bool, info: D.DistInfo, create: bool = True
) -> Path:
    """Refuse to clobber an existing run unless --overwrite or --resume; return the folder to
    write the run into.

    ``create=False`` only checks (nothing is created), so that training can check its data and
    model before it touches the file system. Then (rank 0): a new run gets its folder, created
    with weather-sr's marker file; --resume continues in ``run_dir``; --overwrite of an existing
    run (which must carry the marker) builds the new run in a hidden sibling folder, which
    :func:`finish_run_dir` swaps in when the run ends, so the old run stays whole until then.
    """
    exists = run_dir.exists() and any(run_dir.iterdir()) if run_dir.is_dir() else run_dir.exists()
    message = None
    work = run_dir
    if resume and overwrite:
        message = "--resume and --overwrite exclude each other: choose one"
    elif run_dir.exists() and not run_dir.is_dir():
        message = f"run folder {run_dir} is a file: choose another --run-dir"
    elif resume and not run_dir.is_dir():
        message = f"--resume: run folder {run_dir} does not exist: start a new run without --resume"
    elif resume and not (run_dir / "checkpoints").is_dir():
        message = (f"--resume: run folder {run_dir} has no complete checkpoint yet: start again "
                   "with --overwrite")
    elif exists and not (resume or overwrite):
        message = (
            f"run folder {run_dir} already exists: pass --overwrite to replace it or "
            "--resume to continue it"
        )
    elif exists and overwrite:
        try:
            check_output_path(run_dir, True, "run folder", marker="run", option="--run-dir")
        except UserError as error:
            message = str(error)
    D.barrier()  # every rank has looked before rank 0 changes anything
    if message is None and info.is_main and create and not resume:
        try:
            if exists:
                work = sibling_folder(run_dir, "run", "run folder")
            else:
                create_folder(run_dir, "run", "run folder", "--run-dir")
        except UserError as error:
            message = str(error)
    D.broadcast_error(info, message)
    return work


def finish_run_dir(work: Path, run_dir: Path) -> None:
    """Put the complete new run ``work`` in place of ``run_dir`` (--overwrite; rank 0)."""
    if work != run_dir:
        replace_folder(work, run_dir, "run", "run folder", "--run-dir")


class RunLogger:
    """``metrics.csv`` (one row per log event; split = train | val) and TensorBoard scalars."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, start_step: int) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.csv"
        self.writer = None
        if not enabled:
            return
        rows = []
        if start_step > 0 and self.path.exists():  # resume: forget rows after the checkpoint
            with self.path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
        with (
            atomic_output(self.path, overwrite=True, what="metrics file") as tmp,
            tmp.open("w", newline="") as fh,
        ):
            out = csv.DictWriter(fh, FIELDS)
            out.writeheader()
            out.writerows(rows)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                str(run_dir / "tensorboard"), purge_step=start_step if start_step else None
            )

    def log(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "split": split, **{k: metrics.get(k, "") for k in FIELDS[2:]}}
        with io_errors(self.path, "metrics file"), self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, FIELDS).writerow(row)
        if self.writer is not None:
            for key, value in metrics.items():
                if key != "seconds":
                    self.writer.add_scalar(f"{split}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def save_sample_images(
    path: Path,
    samples: list[dict[str, torch.Tensor]],
    channel: str,
    units: str,
    denormalise: Any = None,
) -> Path:
    """One row per validation field: interpolated LR, model output, truth, error (channel 0).

    Each entry of ``samples`` holds "cond", "hr", "pred" tensors [C, H, W] (normalised).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(samples)
    fig, axes = plt.subplots(rows, 4, figsize=(12, 2.8 * rows), squeeze=False)
    for r, s in enumerate(samples):
        fields = {k: s[k][None].float() for k in ("cond", "hr", "pred")}
        c = s["hr"].shape[0]
        if denormalise is not None:
            fields = {k: denormalise(v[:, :c]) for k, v in fields.items()}
        lr, hr, pred = (torch.as_tensor(fields[k])[0, 0].numpy() for k in ("cond", "hr", "pred"))
        vmin, vmax = float(hr.min()), float(hr.max())
        err = pred - hr
        emax = float(abs(err).max()) or 1.0
        panels = [(lr, "interpolated LR"), (pred, "model"), (hr, "truth")]
        for a, (img, title) in enumerate(panels):
            im = axes[r, a].imshow(img, origin="lower", vmin=vmin, vmax=vmax, cmap="viridis")
            axes[r, a].set_title(f"{title}: {channel}")
        fig.colorbar(im, ax=axes[r, 2], label=units)
        im = axes[r, 3].imshow(err, origin="lower", cmap="RdBu_r", vmin=-emax, vmax=emax)
        axes[r, 3].set_title("model - truth")
        fig.colorbar(im, ax=axes[r, 3], label=units)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output(path, overwrite=True, what="image") as tmp:
            fig.savefig(tmp, dpi=80, format="png")
    except OSError as error:
        raise UserError(f"cannot write {path}: {error}") from None
    finally:
        plt.close(fig)
    return path
