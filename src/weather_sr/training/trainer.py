"""One training step and what it needs: models, optimiser, EMA, autocast, DDP, checkpoint payloads.

:class:`Trainer` holds a run's state. Model kinds: ``diffusion`` (the joint loss of
docs/method.md section 4, :func:`weather_sr.core.loss.joint_loss`) and ``regression`` (the same
backbone predicting x0 of the target with a masked MSE). Only rank 0 writes. The outer loop and
the ``train()`` entry point are in :mod:`weather_sr.training.loop`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from weather_sr import distributed as D
from weather_sr.config import RunConfig
from weather_sr.core.loss import masked_mean
from weather_sr.core.spectral import GridProcess, RadialSpectrum, SpectralProcess, make_process
from weather_sr.core.spectral_options import DEFAULT_NOISE, DEFAULT_SPECTRAL_SCHEDULE
from weather_sr.core.spectral_sampling import training_view
from weather_sr.data import DataBundle
from weather_sr.data.temporal import detail_lag1
from weather_sr.errors import UserError
from weather_sr.model.checkpoint import is_export, load_checkpoint, plain
from weather_sr.model.downscaling_model import (
    DownscalingModel,
    build_unet,
    condition_channels,
)
from weather_sr.model.loading import model_from_payload
from weather_sr.model.meta import CheckpointMeta, RegressionBase, condition_payload
from weather_sr.training.checkpoints import CheckpointManager, rng_state, set_rng_state
from weather_sr.training.kit import (
    EMA,
    autocast,
    lr_at,
    resolve_precision,
    step_seed,
)

SCALE_PATCHES = 64  # training patches that estimate the target's RMS (diffusion.scale_target)


@dataclasses.dataclass
class TrainResult:
    step: int
    status: str  # "finished" | "interrupted"
    run_dir: Path
    checkpoint: Path | None
    best_val: float | None


@dataclasses.dataclass
class TrainState:
    """What changes while a run trains: owned by the :class:`Trainer`, read and set by the
    training loop (:mod:`weather_sr.training.loop`) and saved in its checkpoints."""

    step: int = 0
    best_val: float | None = None  # the lowest validation loss so far
    saved_step: int = -1  # the step of the last checkpoint written (-1: none yet)
    nonfinite_skips: int = 0  # steps dropped for a NaN/Inf loss (training.on_nonfinite: skip)
    stop_requested: bool = False  # a signal on this rank
    stop_agreed: bool = False  # a rank asked to stop (agreed at the last step)
    stop_signal: str | None = None  # the name of that signal, for the final message


class TrainingDivergedError(UserError):
    """The loss or the gradient became NaN/Inf."""


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path, info: D.DistInfo, bundle: DataBundle
                 ) -> None:
        self.cfg, self.run_dir, self.info, self.bundle = cfg, Path(run_dir), info, bundle
        t, dev = cfg.training, info.device
        self.channels = len(bundle.channels)
        self.periodic = bool(getattr(bundle.grid, "periodic", False))
        self._regression_base: RegressionBase | None = None
        self.regression = self._load_regression()
        self.condition = bundle.condition  # None: the targets' own LR field
        cond_channels = condition_channels(self.condition, self.channels,
                                           self.regression is not None)
        torch.manual_seed(t.seed)  # same initial weights on every rank and every run
        unet = (cfg.model, self.channels, cond_channels, self.periodic, self.condition)
        self.net = build_unet(*unet).to(dev)
        self.ema_net = build_unet(*unet)
        self.ema_net.to(dev).eval().requires_grad_(False)
        self._check_sizes()
        self.ema = EMA(self.net, t.ema_decay, t.ema_warmup)
        self.opt = torch.optim.AdamW(
            self.net.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay
        )
        self.amp = resolve_precision(t.precision, dev)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.amp == torch.float16)
        self.wrapped = (
            DistributedDataParallel(self.net, device_ids=[dev] if dev.type == "cuda" else None)
            if info.enabled
            else self.net
        )
        schedule = None
        if cfg.model.kind == "diffusion":
            from weather_sr.core.schedule import make_schedule

            schedule = make_schedule(cfg.diffusion.schedule, cfg.diffusion.timesteps)
        self.schedule = schedule
        common = {
            "kind": cfg.model.kind,
            "target": cfg.diffusion.target,
            "channels": self.channels,
            "schedule": schedule,
            "regression": self.regression,
            "prediction": cfg.diffusion.prediction,
            "base_index": None if self.condition is None else self.condition.base_index,
        }
        self.target_scale, self.spectral = self._target_stats(DownscalingModel(self.net, **common))
        lag1 = detail_lag1(bundle.train) if cfg.model.kind == "diffusion" else None
        self.detail_lag1 = None if lag1 is None else tuple(float(v) for v in lag1)
        common["spectral"] = self.spectral
        self.model = DownscalingModel(self.wrapped, **common, target_scale=self.target_scale)
        self.ema_model = DownscalingModel(self.ema_net, **common, target_scale=self.target_scale)
        self.ckpt = CheckpointManager(run_dir, t.keep_last)
        self.final_run_dir = self.run_dir  # where the run ends up (run_dir: where it is built)
        self.state = TrainState()
        self._weights: dict[tuple[int, int], torch.Tensor] = {}
        self._grids: dict[tuple[int, int], GridProcess] = {}

    def build_in(self, work: Path) -> None:
        """Write the run into ``work`` (``--overwrite``: a hidden sibling of the run folder,
        swapped in when the run ends); :attr:`final_run_dir` stays the folder it ends up in."""
        self.run_dir = Path(work)
        self.ckpt = CheckpointManager(self.run_dir, self.cfg.training.keep_last)

    # -------------------------------------------------------------- setup helpers

    def _load_regression(self) -> DownscalingModel | None:
        if self.cfg.diffusion.target != "regression_residual":
            return None
        path = self.cfg.diffusion.regression_checkpoint
        payload = load_checkpoint(path)
        meta = CheckpointMeta.from_payload(payload, str(path))
        if meta.kind != "regression":
            raise UserError(f"diffusion.regression_checkpoint {path} is not a regression model")
        b = self.bundle
        meta.check_data(b.channels, b.units, "diffusion.regression_checkpoint: this run's data",
                        scale_factor=b.scale_factor, condition=b.condition)
        model = model_from_payload(payload, ema=True, source=str(path))
        model.to(self.info.device).eval().net.requires_grad_(False)
        self._regression_base = RegressionBase(
            model_config=dataclasses.asdict(meta.config.model),
            target=meta.target,
            channels=self.channels,
            state=payload["ema"],
            cond_channels=None if meta.condition is None else len(meta.condition_spec().channels),
        )
        return model

    def _target_stats(self, model: DownscalingModel) -> tuple[torch.Tensor, SpectralProcess | None]:
        """Per-channel RMS s of the diffusion target x0 = hr − model.base(cond) on training
        patches, [C], and the forward process of ``diffusion.noise`` and
        ``diffusion.spectral_schedule`` (docs/method.md §9; its ``equal_snr`` options measure
        the spectrum of z0 = x0 / s on the same patches), None when white and shared.

        The RMS is ones for regression models or ``diffusion.scale_target: false``. The patches
        are a fixed, seeded selection, so every rank (and a resumed run) computes the same
        numbers.
        """
        f = self.cfg.diffusion
        wants_scale = model.kind == "diffusion" and f.scale_target
        wants_process = model.kind == "diffusion" and (
            (f.noise, f.spectral_schedule) != (DEFAULT_NOISE, DEFAULT_SPECTRAL_SCHEDULE))
        if not (wants_scale or wants_process):
            return torch.ones(self.channels), None
        split = self.bundle.train
        picks = torch.linspace(0, len(split) - 1, min(len(split), SCALE_PATCHES)).long()
        total = torch.zeros(self.channels, dtype=torch.float64)
        count = torch.zeros(self.channels, dtype=torch.float64)
        spectrum: RadialSpectrum | None = None  # of the patches, for the process only
        dev = self.info.device
        for n, k in enumerate(picks.tolist()):
            item = split.item(k, torch.Generator().manual_seed(self.cfg.training.seed + n))
            hr, cond = item["hr"][None].to(dev), item["cond"][None].to(dev)
            mask = item["mask"][None].to(dev).expand_as(hr)
            # the regression base sees the patch as training does
            x0 = (hr - model.base(cond, wrap_x=self._whole(hr))) * mask
            total += x0.square().sum((0, 2, 3)).double().cpu()
            count += mask.sum((0, 2, 3)).double().cpu()
            if wants_process:
                spectrum = spectrum or RadialSpectrum(self.channels, *x0.shape[-2:])
                spectrum.add(x0)
        rms = (total / count.clamp(min=1.0)).sqrt().float()
        if not wants_scale:
            rms = torch.ones(self.channels)
        elif not bool((rms > 0).all()):
            raise UserError("diffusion.scale_target: the target is zero on the training split "
                            "for some variable; set diffusion.scale_target=false")
        if spectrum is None:
            return rms, None
        spectrum.sums /= rms.double().square()[:, None]  # the spectrum of z0 = x0 / s
        return rms, make_process(f.noise, f.spectral_schedule, self.channels, spectrum.shape,
                                 spectrum)

    def _grid(self, h: int, w: int) -> GridProcess:
        """The run's process on an h x w patch, cached per patch size."""
        assert self.spectral is not None
        if (h, w) not in self._grids:
            self._grids[(h, w)] = self.spectral.on_grid(self.schedule, h, w)
        return self._grids[(h, w)]

    def _whole(self, hr: torch.Tensor) -> bool:
        """Whether ``hr [..., H, W]`` spans the field's width: the network's ``wrap_x`` (a patch
        narrower than a periodic field is padded with zeros, not circularly)."""
        return hr.shape[-1] >= self.bundle.grid.shape[1]

    def _check_sizes(self) -> None:
        for name in ("train", "val"):
            split = getattr(self.bundle, name)
            if len(split) == 0:
                if name == "train":
                    raise UserError("the training split is empty: check data.split and the data")
                continue
            h, w = split[0]["hr"].shape[-2:]
            try:
                self.net.check_size(h, w)
            except ValueError as error:  # the UNet's rule, said with the keys that set it
                raise UserError(f"{name} fields: {error}: choose a patch/field size that is a "
                                "multiple of it, or fewer levels (model.channel_mults)") from None

    # -------------------------------------------------------------- losses

    def _weight(self, h: int, w: int) -> torch.Tensor | None:
        """W ``[h, w]`` of the Fourier term (``diffusion.weight``), cached per patch size."""
        f = self.cfg.diffusion
        if f.weight == "none":
            return None
        if (h, w) not in self._weights:
            from weather_sr.core.loss import band_weight, radial_weight

            norm = f.weight_normalise
            weight = (
                band_weight(h, w, f.gamma, int(self.bundle.scale_factor), normalise=norm)
                if f.weight == "band"
                else radial_weight(h, w, f.gamma, f.power, normalise=norm)
            )
            self._weights[(h, w)] = weight.to(self.info.device)
        return self._weights[(h, w)]

    def loss(
        self, model: DownscalingModel, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample (loss, loss_x, loss_f), each [B], for one batch of the data contract."""
        dev = self.info.device
        hr, cond = batch["hr"].to(dev, non_blocking=True), batch["cond"].to(dev, non_blocking=True)
        mask = batch["mask"].to(dev, non_blocking=True) if "mask" in batch else None
        whole = self._whole(hr)  # a patch narrower than a periodic field: wrap_x=False
        base = model.base(cond, wrap_x=whole)
        y = model.condition(cond, base)
        x0 = model.scale_target(hr - base)
        if self.cfg.model.kind == "regression":
            with autocast(dev, self.amp):
                pred = model.regress(y, wrap_x=whole)
            lx = masked_mean((pred.float() - x0.float()) ** 2, mask)  # per-sample MSE [B]
            return lx, lx, torch.zeros_like(lx)
        from weather_sr.core.loss import joint_loss

        f = self.cfg.diffusion
        denoiser: Any = functools.partial(model.denoiser, wrap_x=whole)
        schedule: Any = self.schedule
        draws: dict[str, torch.Tensor] = {}
        if self.spectral is not None:  # the process's view of the loss (docs/method.md §9)
            denoiser, x0, schedule, draws = training_view(
                denoiser, x0, self._grid(*hr.shape[-2:]), f.noise_weighting, lam=f.lam,
                generator=generator)
        with autocast(dev, self.amp):
            out = joint_loss(
                denoiser,
                x0,
                y,
                schedule,
                lam=f.lam,
                weight=self._weight(*hr.shape[-2:]),
                mask=mask,
                generator=generator,
                **draws,
                gate=f.gate,
                gate_t=f.gate_t,
                amp_mu=f.amp_mu,
                divide=f.loss_divide,
            )
        return out.loss.float(), out.loss_x.float(), out.loss_f.float()

    # -------------------------------------------------------------- state

    def checkpoint_meta(self) -> CheckpointMeta:
        """The metadata of a checkpoint of the run as it is now."""
        b = self.bundle
        grid = b.grid.to_dict() if hasattr(b.grid, "to_dict") else None
        return CheckpointMeta(
            step=self.state.step,
            config=self.cfg,  # to_payload writes a plain copy
            channels=tuple(b.channels),
            units=tuple(b.units),
            scale_factor=int(b.scale_factor),
            interpolation=b.interpolation,
            normalizer=plain(b.normalizer.to_dict()),
            grid=plain(grid),
            best_val=self.state.best_val,
            nonfinite_skips=self.state.nonfinite_skips,
            regression=self._regression_base,
            target_scale=tuple(self.target_scale.tolist()),
            condition=condition_payload(self.condition),
            spectral=None if self.spectral is None else self.spectral.to_dict(),
            detail_lag1=self.detail_lag1,
        )

    def payload(self) -> dict[str, Any]:
        t = self.cfg.training
        meta = self.checkpoint_meta().to_payload()
        return {  # the order of the file's keys: format, ..., step, weights, state, metadata
            "step": meta.pop("step"),
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "scheduler": {
                "kind": t.lr_schedule,
                "warmup_steps": t.warmup_steps,
                "base_lr": t.lr,
                "total_steps": t.steps,
                "last_step": self.state.step,
            },
            "rng": rng_state(),
            **meta,
        }

    def restore(self, payload: dict[str, Any], source: str) -> None:
        """Continue from a checkpoint of this run: same model settings (the saved config's
        ``model`` section and diffusion settings) and data (:meth:`CheckpointMeta.check_data`)."""
        if is_export(payload):
            raise UserError(f"--resume: {source} is an inference-only checkpoint (weather-sr "
                            "export) without the training state: resume from the run's own "
                            "checkpoints/step_*.pt")
        meta = CheckpointMeta.from_payload(payload, source)
        theirs, mine = meta.config, self.cfg
        for name, a, b in [
            ("model", theirs.model, mine.model),
            *((f"diffusion.{key}", getattr(theirs.diffusion, key), getattr(mine.diffusion, key))
              for key in ("target", "schedule", "timesteps", "prediction", "scale_target",
                          "noise", "spectral_schedule", "noise_weighting")),
        ]:
            if a != b:
                raise UserError(f"--resume: {name} differs from the checkpoint {source}; resume "
                                "with the same model settings")
        b = self.bundle
        meta.check_data(b.channels, b.units, "--resume: this run's data",
                        scale_factor=b.scale_factor, condition=b.condition)
        self.net.load_state_dict(payload["model"])
        self.ema.load_state_dict(payload["ema"])
        self.opt.load_state_dict(payload["optimizer"])
        if payload.get("grad_scaler"):
            self.scaler.load_state_dict(payload["grad_scaler"])
        set_rng_state(payload["rng"])
        self.state.step, self.state.best_val = meta.step, meta.best_val
        self.state.nonfinite_skips = meta.nonfinite_skips

    # -------------------------------------------------------------- one step

    def train_step(self, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        t, info = self.cfg.training, self.info
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.state.step, t.lr, t.warmup_steps, t.steps, t.lr_schedule)
        self.net.train()
        sums = torch.zeros(3, dtype=torch.float64)
        for i, batch in enumerate(batches):
            micro = self.state.step * t.grad_accum + i
            torch.manual_seed(step_seed(t.seed, info.rank, micro, stream=2))  # dropout
            gen = torch.Generator().manual_seed(step_seed(t.seed, info.rank, micro, stream=1))
            sync = i == len(batches) - 1 or not info.enabled
            ctx = self.wrapped.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                loss, lx, lf = self.loss(self.model, batch, gen)
                self.scaler.scale(loss.mean() / len(batches)).backward()
            sums += torch.stack([loss.mean(), lx.mean(), lf.mean()]).detach().cpu().double()
        self.scaler.unscale_(self.opt)
        params = [p for p in self.net.parameters() if p.grad is not None]
        clip = t.grad_clip if t.grad_clip > 0 else math.inf
        gnorm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        bad_loss = not bool(torch.isfinite(sums).all())
        bad_grad = not math.isfinite(gnorm) and self.amp != torch.float16
        flags = D.any_flag(info, bad_loss or bad_grad), D.any_flag(info, self.state.stop_requested)
        self.state.stop_agreed = flags[1]
        if flags[0]:
            return self._nonfinite("loss" if bad_loss else "gradient norm")
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(self.net, self.state.step)
        self.state.step += 1
        out = (sums / len(batches)).tolist()
        return {
            "loss": out[0],
            "loss_x": out[1],
            "loss_f": out[2],
            "grad_norm": gnorm,
            "lr": self.opt.param_groups[0]["lr"],
            "nonfinite_skips": float(self.state.nonfinite_skips),
        }

    def _nonfinite(self, what: str) -> dict[str, float]:
        """A NaN/Inf loss or gradient: stop (TrainingDivergedError, the weights are still those of
        the last good step) or, with ``training.on_nonfinite: skip``, drop this step's update and
        count it, up to ``training.max_nonfinite_skips`` times in the run."""
        t = self.cfg.training
        where = f"the {what} is NaN/Inf at step {self.state.step + 1}"
        if t.on_nonfinite == "skip" and self.state.nonfinite_skips < t.max_nonfinite_skips:
            self.state.nonfinite_skips += 1
            self.opt.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.update()  # unscale_ was called: reset the scaler for the next step
            self.state.step += 1
            if self.info.is_main:
                print(f"weather-sr train: {where}: update skipped ({self.state.nonfinite_skips} "
                      f"of at most training.max_nonfinite_skips = {t.max_nonfinite_skips})",
                      file=sys.stderr)
            return {"nonfinite_skips": float(self.state.nonfinite_skips)}
        limit = (f" after {self.state.nonfinite_skips} skipped steps (training.max_nonfinite_skips)"
                 if t.on_nonfinite == "skip" else "")
        raise TrainingDivergedError(
            f"training diverged: {where}{limit}; lower training.lr or use precision fp32"
            + ("" if t.on_nonfinite == "skip" else ", or set training.on_nonfinite=skip")
        )

    # -------------------------------------------------------------- validation

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """EMA weights, fixed noise: mean (loss, loss_x, loss_f) over ``val_batches`` batches."""
        t, val = self.cfg.training, self.bundle.val
        if len(val) == 0 or t.val_batches == 0:
            return None
        self.ema.copy_to(self.ema_net)
        loader = torch.utils.data.DataLoader(val, batch_size=t.batch_size, shuffle=False)
        sums, n = torch.zeros(3, dtype=torch.float64), 0
        for i, batch in enumerate(loader):
            if i >= t.val_batches:
                break
            gen = torch.Generator().manual_seed(step_seed(t.seed, 0, i, stream=3))
            parts = self.loss(self.ema_model, batch, gen)
            sums += torch.stack([p.sum() for p in parts]).cpu().double()
            n += parts[0].shape[0]
        out = (sums / max(n, 1)).tolist()
        return {"loss": out[0], "loss_x": out[1], "loss_f": out[2]}

    @torch.no_grad()
    def sample_images(self) -> list[dict[str, torch.Tensor]]:
        t, val = self.cfg.training, self.bundle.val
        k = min(t.val_images, len(val))
        if k == 0:
            return []
        self.ema.copy_to(self.ema_net)
        items = [val[i] for i in range(k)]
        cond = torch.stack([it["cond"] for it in items]).to(self.info.device)
        gen = torch.Generator().manual_seed(step_seed(t.seed, 0, 0, stream=4))
        f = self.cfg.diffusion
        with autocast(self.info.device, self.amp):
            pred = self.ema_model.sample(cond, f.val_sampler, f.val_sample_steps, gen).float()
        return [
            {"cond": it["cond"], "hr": it["hr"], "pred": p.cpu()}
            for it, p in zip(items, pred, strict=True)
        ]
