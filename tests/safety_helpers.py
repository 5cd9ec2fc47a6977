"""What the data-safety tests share: a tiny training config, file digests, the CLI in a
subprocess and the check of a one-line refusal."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

TINY = ["data.variables=[pwat, btmp]", "data.patch_size=16", "model.base_channels=8",
        "model.channel_mults=[1, 2]", "model.num_res_blocks=1", "model.head_channels=8",
        "model.mid_attention=false", "diffusion.timesteps=20", "training.batch_size=2",
        "training.steps=2", "training.warmup_steps=1", "training.val_every=100000",
        "training.val_images=0", "training.precision=fp32", "output.tensorboard=false",
        "training.device=cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # 2 shared CPU cores


def digests(*folders: Path) -> dict[str, str]:
    """SHA-256 of every file below ``folders`` (hidden ones too); folders map to ''."""
    out: dict[str, str] = {}
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            out[dirpath] = ""
            for name in files:
                path = os.path.join(dirpath, name)
                if os.path.isfile(path):
                    out[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                else:
                    out[path] = "special"
    return out


def cli(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m weather_sr ARGS`` in a subprocess, its output captured."""
    return subprocess.run([sys.executable, "-m", "weather_sr", *map(str, args)], cwd=cwd,
                          env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def one_line(proc: subprocess.CompletedProcess[str], command: str, words: list[str]) -> str:
    """The one stderr line of a refusal: exit status 2, no traceback, every word in it."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"weather-sr {command}: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]
