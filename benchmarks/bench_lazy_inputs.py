"""Peak memory of training data with predictors on their own grid: 1x against 32x the fields.

Writes a Lambert conformal target file (t2m on a ``--size`` grid, CF grid mapping, no 2-D
latitude/longitude: pyproj gives them) and a 0.25° latitude/longitude predictor file (t2m, u10)
covering it, with N and 32 N times. In a fresh subprocess per case, opens them with
``build_datasets`` (the predictors' statistics and coverage, the regridding weights) and reads
``--items`` training patches, then reports the child's peak RSS (its ``VmHWM``). ``lazy``:
``data.load: false`` (patches read and regridded window by window); ``loaded``: ``true`` (the
targets and the predictors on their own grid held in memory, for contrast).

    python benchmarks/bench_lazy_inputs.py [--fields 16] [--size 256x256] [--items 64]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LAMBERT = {"grid_mapping_name": "lambert_conformal_conic", "standard_parallel": [35.0, 65.0],
           "longitude_of_central_meridian": 10.0, "latitude_of_projection_origin": 50.0,
           "earth_radius": 6371229.0}


def write_files(folder: Path, n: int, size: tuple[int, int]) -> tuple[Path, Path]:
    """Targets (3 km Lambert grid of ``size``) and 0.25° predictors covering it, ``n`` times."""
    import xarray as xr

    h, w = size
    times = np.datetime64("2020-01-01T00") + np.arange(n) * np.timedelta64(1, "h")
    rng = np.random.default_rng(0)
    y, x = (np.arange(h) - h / 2) * 3000.0, (np.arange(w) - w / 2) * 3000.0
    targets = xr.Dataset(
        {"t2m": (("time", "y", "x"), (280 + rng.standard_normal((n, h, w))).astype(np.float32),
                 {"units": "K", "grid_mapping": "crs"}),
         "crs": ((), np.int32(0), LAMBERT)},
        coords={"time": times, "y": ("y", y, {"units": "m"}), "x": ("x", x, {"units": "m"})})
    lat, lon = np.arange(40.0, 60.0, 0.25), np.arange(-10.0, 30.0, 0.25)
    shape = (n, lat.size, lon.size)
    predictors = xr.Dataset(
        {"t2m": (("time", "lat", "lon"), (280 + rng.standard_normal(shape)).astype(np.float32),
                 {"units": "K"}),
         "u10": (("time", "lat", "lon"), rng.standard_normal(shape).astype(np.float32),
                 {"units": "m s-1"})},
        coords={"time": times, "lat": ("lat", lat, {"units": "degrees_north"}),
                "lon": ("lon", lon, {"units": "degrees_east"})})
    paths = folder / f"targets_{n}.nc", folder / f"predictors_{n}.nc"
    targets.to_netcdf(paths[0])
    predictors.to_netcdf(paths[1])
    return paths


def child(targets: str, predictors: str, load: bool, items: int) -> None:
    """Open the data as training does and read ``items`` training patches."""
    from weather_sr.data import build_datasets

    bundle = build_datasets(targets, ["t2m"], scale_factor=8, patch_size=64, load=load,
                            inputs={"path": predictors, "variables": ["t2m", "u10"]},
                            split=(0.8, 0.1, 0.1))
    for i in range(items):
        bundle.train[i % len(bundle.train)]
    # the peak of this process image (VmHWM starts again at exec; getrusage's maxrss of a
    # child would include the parent's memory at the fork)
    status = Path("/proc/self/status").read_text()
    print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def peak_rss(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of a child running :func:`child`."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1]) / 1024.0, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=16, help="N (default: %(default)s)")
    parser.add_argument("--size", default="256x256", help="target grid HxW (default: %(default)s)")
    parser.add_argument("--items", type=int, default=64, help="patches read (default: %(default)s)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        t, p, load, items = args.child
        child(t, p, load == "1", int(items))
        return
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for n in (args.fields, 32 * args.fields):
            t, p = write_files(Path(tmp), n, size)  # type: ignore[arg-type]
            for mode, load in (("lazy", "0"), ("loaded", "1")):
                results[(mode, n)] = peak_rss([str(t), str(p), load, str(args.items)])
        on_disk = {n: sum(f.stat().st_size for f in Path(tmp).glob(f"*_{n}.nc")) / 2**20
                   for n in (args.fields, 32 * args.fields)}
    print(f"targets {size[0]}x{size[1]} (Lambert, 3 km), predictors t2m+u10 on 80x160 0.25° "
          f"cells, {args.items} patches of 64x64; CPU: {_cpu()}")
    print(f"{'mode':8} {'fields':>7} {'on disk MiB':>12} {'peak RSS MiB':>13} {'wall s':>7}")
    for (mode, n), (rss, wall) in results.items():
        print(f"{mode:8} {n:7d} {on_disk[n]:12.1f} {rss:13.1f} {wall:7.1f}")
    for mode in ("lazy", "loaded"):
        ratio = results[(mode, 32 * args.fields)][0] / results[(mode, args.fields)][0]
        print(f"{mode}: peak RSS at 32x the fields / at 1x = {ratio:.2f}")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
