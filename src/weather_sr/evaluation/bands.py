"""Calibration per scale: an ensemble scored in radial bands of its F_R coefficients.

Is the small-scale variance right where the LR field cannot constrain it? Every field of the truth
and of each member is taken to the orthonormal real Fourier basis (``core.fourier.real_fourier2``,
docs/method.md §2), and its coefficients are grouped by radial frequency nu (cycles per HR grid
spacing) into bands: nu <= the LR grid's Nyquist frequency nu_LR = 0.5 / s, then octaves above
it, (nu_LR, 2 nu_LR], (2 nu_LR, 4 nu_LR], ..., up to nu = sqrt(0.5). In each band and channel:

- ``spread_skill``: sqrt((M+1)/M) x spread / skill over the band's coefficients (spread: the
  members' unbiased variance; skill: the ensemble mean's squared error; 1 when calibrated, as
  ``metrics.spread_skill`` in grid space);
- ``crps_contribution``: the band's sum of the coefficients' fair CRPS divided by the number of
  all coefficients, so that the bands add up to the mean fair CRPS over the whole spectrum;
- ``power_ratio``: the members' mean power in the band over the truth's.

F_R is orthonormal, so the bands' squared errors and variances add up to those in grid space
(Parseval): the band scores split the grid-space ones by scale. Coefficients are weighted
uniformly (no cos-latitude weights in spectral space), and missing pixels are filled with the
truth's valid mean of that field and channel, as for the power spectra.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from weather_sr.core.fourier import radial_frequency, real_fourier2
from weather_sr.core.loss import lr_nyquist
from weather_sr.evaluation.metrics import crps_fair_pointwise, spread_skill_scores

SUMS = ("count", "var", "sq_err", "crps", "power_member", "power_truth")


def band_layout(h: int, w: int, scale_factor: int) -> tuple[np.ndarray, list[float]]:
    """The band of every F_R coefficient of an ``h`` x ``w`` field, int ``[h, w]``, and the band
    edges in cycles per grid spacing (band b: edges[b] < nu <= edges[b + 1]; band 0 from 0)."""
    nu = radial_frequency(h, w).numpy()
    edges = [0.0, lr_nyquist(scale_factor)]
    while edges[-1] < float(nu.max()):
        edges.append(2.0 * edges[-1])
    if len(edges) > 2:
        edges[-1] = float(nu.max())  # the last octave ends at the highest frequency
    return np.digitize(nu, edges[1:-1], right=True), edges


def band_labels(edges: list[float]) -> list[str]:
    """"<= LR Nyquist", "1-2x LR Nyquist", ..., "> 4x LR Nyquist" (the last band, which ends at
    the highest frequency) for the bands of ``edges``."""
    last = len(edges) - 2
    return ["<= LR Nyquist", *(f"{2 ** (b - 1)}-{2 ** b}x LR Nyquist" if b < last
                               else f"> {2 ** (b - 1)}x LR Nyquist" for b in range(1, last + 1))]


def coefficients(fields: np.ndarray) -> np.ndarray:
    """F_R coefficients of ``fields [..., H, W]`` (float64, same shape)."""
    return real_fourier2(torch.from_numpy(np.asarray(fields, np.float64))).numpy()


def band_sums(truth: np.ndarray, members: np.ndarray, band: np.ndarray, n_bands: int
              ) -> dict[str, np.ndarray]:
    """Sums ``[C, B]`` over fields and a band's coefficients (:data:`SUMS`) of filled fields:
    truth ``[n, C, H, W]``, members ``[n, M, C, H, W]``; ``band`` from :func:`band_layout`."""
    y, x = coefficients(truth), coefficients(members)
    out = {k: np.zeros((y.shape[1], n_bands)) for k in SUMS}
    for b in range(n_bands):
        sel = band == b
        yb, xb = y[..., sel], x[..., sel]  # [n, C, K], [n, M, C, K]
        out["count"][:, b] = yb.shape[0] * yb.shape[-1]
        out["var"][:, b] = xb.var(axis=1, ddof=1).sum(axis=(0, 2))
        out["sq_err"][:, b] = ((xb.mean(axis=1) - yb) ** 2).sum(axis=(0, 2))
        out["crps"][:, b] = crps_fair_pointwise(yb, xb).sum(axis=(0, 2))
        out["power_member"][:, b] = (xb**2).mean(axis=1).sum(axis=(0, 2))
        out["power_truth"][:, b] = (yb**2).sum(axis=(0, 2))
    return out


def band_scores(sums: dict[str, np.ndarray], m: int) -> dict[str, np.ndarray]:
    """The band scores ``[C, B]`` (module doc) from accumulated :func:`band_sums` of M = ``m``
    members."""
    count = sums["count"]
    ss = spread_skill_scores(sums["var"] / count, sums["sq_err"] / count, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "spread_skill": ss["spread_skill"],
            "spread": ss["spread"],
            "skill": ss["skill"],
            "crps_contribution": sums["crps"] / count.sum(axis=1, keepdims=True),
            "power_ratio": sums["power_member"] / sums["power_truth"],
        }


def band_result(sums: dict[str, np.ndarray], m: int, edges: list[float],
                channels: list[str]) -> dict[str, Any]:
    """The ``bands`` entry of a method's results: edges, labels and scores per channel."""
    scores = band_scores(sums, m)
    return {"edges": list(edges), "labels": band_labels(edges),
            "metrics": {name: {k: v[c] for k, v in scores.items()}
                        for c, name in enumerate(channels)}}
