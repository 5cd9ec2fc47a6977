"""Speed of F_R (weather_sr.core.fourier) measured side by side with its references, in one run.

(a) real_fourier2 + inverse_real_fourier2 vs torch.fft.rfft2 + irfft2 on a (32, 1, 256, 256)
    float32 batch (target: ratio <= 1.5).
(b) real_fourier (1-D) and real_fourier2 (2-D) vs the explicit matrix products at n = 256
    (target: >= 20x faster).

Usage: ``.venv/bin/python benchmarks/bench_fourier.py [--device cpu|cuda] [--threads N]``.
Timing: after warm-up, the candidate and its reference are timed alternately, round after round,
so that both see the same machine load (this machine is shared); we print the median time of each
and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from weather_sr.core.fourier import (
    inverse_real_fourier2,
    real_fourier,
    real_fourier2,
)


def explicit_matrix(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The n x n matrix of F_R, as the columns F_R e_j (tests/test_fourier.py proves it equals the
    matrix built row by row from docs/method.md §2); only its product is timed here."""
    eye = torch.eye(n, dtype=torch.float64)
    return real_fourier(eye, dim=0).to(dtype=dtype, device=device)


def _once(fn: Callable[[], object], device: torch.device, inner: int) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / inner


def side_by_side(
    fast: Callable[[], object], ref: Callable[[], object], device: torch.device, rounds: int
) -> tuple[float, float, float]:
    """(median s of fast, median s of ref, median of per-round fast/ref ratios), alternating."""
    for fn in (fast, ref):  # warm-up (plans, caches, allocator)
        _once(fn, device, 3)
    inner = max(1, int(0.02 / max(_once(ref, device, 1), 1e-6)))
    t_fast, t_ref = [], []
    for _ in range(rounds):
        t_fast.append(_once(fast, device, inner))
        t_ref.append(_once(ref, device, inner))
    ratios = [a / b for a, b in zip(t_fast, t_ref, strict=True)]
    return statistics.median(t_fast), statistics.median(t_ref), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")

    x = torch.randn(32, 1, 256, 256, generator=gen).to(device)
    size = tuple(x.shape[-2:])
    t_fr, t_fft, ratio = side_by_side(
        lambda: inverse_real_fourier2(real_fourier2(x)),
        lambda: torch.fft.irfft2(torch.fft.rfft2(x), s=size),
        device,
        args.rounds,
    )
    verdict = "OK" if ratio <= 1.5 else "MISSED"
    print(
        f"(a) (32,1,256,256) f32 round trip: F_R2+inv {t_fr * 1e3:8.3f} ms | "
        f"rfft2+irfft2 {t_fft * 1e3:8.3f} ms | ratio {ratio:.2f} (target <= 1.5: {verdict})"
    )

    n = 256
    f = explicit_matrix(n, torch.float32, device)
    v = torch.randn(4096, n, generator=gen).to(device)
    img = torch.randn(32, 1, n, n, generator=gen).to(device)
    err1 = (real_fourier(v) - v @ f.T).abs().max().item()
    err2 = (real_fourier2(img) - f @ img @ f.T).abs().max().item()
    cases = [
        ("1-D (4096, 256)   ", lambda: real_fourier(v), lambda: v @ f.T, err1),
        ("2-D (32,1,256,256)", lambda: real_fourier2(img), lambda: f @ img @ f.T, err2),
    ]
    for label, fast, slow, err in cases:
        t_fast, t_mat, ratio = side_by_side(fast, slow, device, args.rounds)
        speedup = 1.0 / ratio
        verdict = "OK" if speedup >= 20 else "MISSED"
        print(
            f"(b) {label} F_R {t_fast * 1e3:8.3f} ms | matrix {t_mat * 1e3:8.3f} ms | "
            f"speed-up {speedup:6.1f}x (target >= 20x: {verdict}) | max |diff| {err:.1e}"
        )


if __name__ == "__main__":
    main()
