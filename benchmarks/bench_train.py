"""Training cost, measured side by side in one run.

(a) training steps per second with the joint loss (λ = 1) vs the plain loss (λ = 0) at the same
    batch size, through ``Trainer.train_step`` (target ratio <= 2.1: λ = 1 doubles the network
    batch, nothing more);
(b) forward + backward time of our UNet vs ``diffusers.UNet2DModel`` with the same widths, levels,
    res blocks, attention and scale/shift conditioning (target ours/diffusers <= 1.0). diffusers
    is in the ``bench`` extra (``pip install -e .[bench]`` or ``.venv/bin/pip install diffusers``);
    without it (b) is skipped.

Runs are interleaved (A, B, A, B, ...) and the fastest of the rounds is reported for each side,
so that load from other processes affects both alike and adds as little as possible.

    .venv/bin/python benchmarks/bench_train.py [--device cpu|cuda] [--size 64] [--batch 4] ...
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

from weather_sr.config import load_config
from weather_sr.nn.unet import UNet
from weather_sr.training.kit import autocast, resolve_precision


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, device: torch.device) -> dict:
    """Seconds per call of each function (minimum over rounds: interference from other processes
    only adds time), calls interleaved round by round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            tic = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - tic)
    return {k: min(v) for k, v in times.items()}


class _Fields(torch.utils.data.Dataset):
    """In-memory random fields in the data contract ({"hr", "cond", "mask", "index"})."""

    def __init__(self, n: int, c: int, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.hr = torch.randn(n, c, size, size, generator=g)
        self.cond = torch.nn.functional.avg_pool2d(self.hr, 4).repeat_interleave(4, -1)
        self.cond = self.cond.repeat_interleave(4, -2)

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, k: int) -> dict:
        return {
            "hr": self.hr[k],
            "cond": self.cond[k],
            "mask": torch.ones(1, *self.hr.shape[-2:]),
            "index": k,
        }


def bench_lambda(args: argparse.Namespace, device: torch.device) -> None:
    from weather_sr.distributed import DistInfo
    from weather_sr.training.trainer import Trainer

    data = _Fields(4 * args.batch, 2, args.size)
    bundle = SimpleNamespace(
        train=data,
        val=data,
        channels=["a", "b"],
        units=["", ""],
        grid=SimpleNamespace(periodic=False),
        scale_factor=4,
        interpolation="bilinear",
        normalizer=None,
    )
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=args.batch)))
    fns = {}
    with tempfile.TemporaryDirectory() as tmp:
        for lam in (1.0, 0.0):
            cfg = load_config(
                None,
                [
                    *model_overrides(args),
                    f"diffusion.lam={lam}",
                    "data.variables=[a, b]",
                    f"data.patch_size={args.size}",
                    f"training.batch_size={args.batch}",
                    f"training.device={device}",
                    f"training.precision={args.precision}",
                ],
            )
            trainer = Trainer(cfg, Path(tmp) / f"run{lam}", DistInfo(0, 1, 0, device), bundle)
            fns[f"lam={lam:g}"] = lambda tr=trainer: tr.train_step([batch])
        med = interleaved(fns, args.rounds, device)
    ratio = med["lam=1"] / med["lam=0"]
    print(
        f"(a) train step (AdamW, EMA, clip), batch {args.batch}, {args.size}x{args.size}, "
        f"2 channels, {args.precision}, {device}:"
    )
    print(
        f"    lambda=1: {1 / med['lam=1']:.2f} steps/s   lambda=0: {1 / med['lam=0']:.2f} "
        f"steps/s   time ratio lambda=1 / lambda=0 = {ratio:.2f} (target <= 2.1)"
    )


def model_overrides(args: argparse.Namespace) -> list[str]:
    return [
        f"model.base_channels={args.base}",
        f"model.channel_mults={args.mults}",
        f"model.num_res_blocks={args.res_blocks}",
        f"model.head_channels={args.head}",
        f"model.attention_levels=[{len(args.mults.split(',')) - 1}]",
    ]


def bench_unet(args: argparse.Namespace, device: torch.device) -> None:
    try:
        from diffusers import UNet2DModel
    except ImportError:
        print(
            "(b) skipped: diffusers is not installed (it is in the 'bench' extra: "
            ".venv/bin/pip install diffusers)"
        )
        return
    mults = [int(m) for m in args.mults.strip("[]").split(",")]
    widths = tuple(args.base * m for m in mults)
    c, levels = 2, len(mults)
    ours = UNet(
        c,
        c,
        c,
        base_channels=args.base,
        channel_mults=mults,
        num_res_blocks=args.res_blocks,
        attention_levels=(levels - 1,),
        head_channels=args.head,
        groups=32 if args.base >= 32 else 8,
    ).to(device)
    theirs = UNet2DModel(
        sample_size=args.size,
        in_channels=2 * c,
        out_channels=c,
        block_out_channels=widths,
        layers_per_block=args.res_blocks,
        attention_head_dim=args.head,
        norm_num_groups=32 if args.base >= 32 else 8,
        resnet_time_scale_shift="scale_shift",
        down_block_types=tuple(["DownBlock2D"] * (levels - 1) + ["AttnDownBlock2D"]),
        up_block_types=tuple(["AttnUpBlock2D"] + ["UpBlock2D"] * (levels - 1)),
    ).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, c, args.size, args.size, generator=g).to(device)
    y = torch.randn(args.batch, c, args.size, args.size, generator=g).to(device)
    t = torch.randint(1, 1000, (args.batch,), generator=g).to(device)

    amp = resolve_precision(args.precision, device)

    def run_ours() -> None:
        with autocast(device, amp):
            out = ours(x, t.float(), y)
        out.float().square().mean().backward()

    def run_theirs() -> None:
        with autocast(device, amp):
            out = theirs(torch.cat([x, y], dim=1), t).sample
        out.float().square().mean().backward()

    med = interleaved({"ours": run_ours, "diffusers": run_theirs}, args.rounds, device)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    print(
        f"(b) UNet forward+backward, batch {args.batch}, {args.size}x{args.size}, widths "
        f"{list(widths)}, {args.res_blocks} res blocks/level, attention at level {levels - 1} "
        f"+ middle, {args.precision}, {device}:"
    )
    print(
        f"    ours: {med['ours'] * 1e3:.1f} ms ({n_ours / 1e6:.2f} M params)   diffusers "
        f"UNet2DModel: {med['diffusers'] * 1e3:.1f} ms ({n_theirs / 1e6:.2f} M params)   "
        f"ratio ours / diffusers = {med['ours'] / med['diffusers']:.2f} (target <= 1.0)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--size", type=int, default=64, help="patch size (square)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--base", type=int, default=32, help="base width")
    parser.add_argument("--mults", default="1,2,2", help="channel multipliers, comma separated")
    parser.add_argument("--res-blocks", type=int, default=1)
    parser.add_argument("--head", type=int, default=32, help="attention head width")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--only", choices=["a", "b"], help="run only one part")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16", "auto"],
        help="autocast for (a) and (b)",
    )
    args = parser.parse_args()
    args.mults = f"[{args.mults.strip('[]')}]"
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if args.only in (None, "b"):
        bench_unet(args, device)
    if args.only in (None, "a"):
        bench_lambda(args, device)


if __name__ == "__main__":
    main()
