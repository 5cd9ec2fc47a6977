"""Verification metrics for deterministic and ensemble downscaling.

Dimension conventions (numpy arrays, torch tensors or xarray DataArrays in this order; all
computations in float64 numpy):

- truth ``[N, C, H, W]`` (N fields, C channels), deterministic prediction ``[N, C, H, W]``,
  ensemble ``[N, M, C, H, W]`` (M members);
- mask ``[N or 1, 1 or C, H, W]``, 1 = valid; pixels where the truth is NaN are invalid too;
- lat ``[H]`` in degrees: cos-latitude area weights.

Every score is a weighted mean over fields and valid pixels, per channel (arrays ``[C]``):
mean_w(q) = Σ w q / Σ w with w = mask · cos(lat). The scores use w unnormalised (cos(lat) scaled
to mean 1 over the rows, which does not depend on the fields), so that sums over chunks of fields
add up (``evaluation.accumulate``); ``pixel_weights`` also normalises w to mean 1 over valid
pixels, a constant that cancels in every ratio. RMSE is pooled: sqrt(mean_w((pred - truth)²)) over
all N fields, not a mean of per-field RMSEs. "Member" scores are the mean over members of the
score of each member.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity

from weather_sr.errors import UserError

# SSIM as in Wang et al. (2004): 11x11 Gaussian window (sigma 1.5), population covariances.
SSIM_SIGMA = 1.5
SSIM_WIN = 11  # skimage: 2 * int(3.5 * sigma + 0.5) + 1
SSIM_PAD = (SSIM_WIN - 1) // 2


def to_numpy(x: Any, name: str = "array") -> np.ndarray:
    """A float64 numpy copy of a numpy array, torch tensor or xarray DataArray."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    values = getattr(x, "values", x)  # xarray DataArray -> its values, in its dimension order
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise UserError(f"{name}: cannot convert {type(x).__name__} to a float array") from err


def area_weights(lat: Any) -> np.ndarray:
    """cos-latitude weights ``[H]`` for latitudes ``[H]`` in degrees, normalised to mean 1.

    On a regular grid of cell centres, cos(φ_i) is exactly proportional to the cell area
    sin(φ_i + Δ/2) - sin(φ_i - Δ/2) = 2 cos(φ_i) sin(Δ/2).
    """
    phi = to_numpy(lat, "lat")
    if phi.ndim != 1 or not np.all(np.isfinite(phi)) or np.any(np.abs(phi) > 90.0):
        raise UserError("lat: must be a 1-D vector of latitudes in degrees within [-90, 90]")
    w = np.clip(np.cos(np.deg2rad(phi)), 0.0, None)
    if w.sum() <= 0:
        raise UserError("lat: all latitudes are at the poles; area weights are all zero")
    return w / w.mean()


def _mask_weights(shape: Sequence[int], mask: Any, area: np.ndarray | None) -> np.ndarray:
    """Unnormalised weights ``[N or 1, C or 1, H, W]``: mask (1 = valid) times ``area [H]``."""
    n, c, h, w = shape
    weights = np.ones((1, 1, h, w))
    if area is not None:
        if area.size != h:
            raise UserError(f"lat: has {area.size} values but the fields have {h} rows")
        weights = weights * area[None, None, :, None]
    if mask is not None:
        m = to_numpy(mask, "mask")
        ok = m.ndim == 4 and m.shape[0] in (1, n) and m.shape[1] in (1, c) and m.shape[2:] == (h, w)
        if not ok:
            raise UserError(f"mask: shape {m.shape} is not [N|1, 1|C, H, W] for {tuple(shape)}")
        weights = weights * (np.nan_to_num(m) > 0.5)
    return weights


def pixel_weights(shape: Sequence[int], *, mask: Any = None, lat: Any = None) -> np.ndarray:
    """Weights ``[N or 1, C or 1, H, W]`` for fields of ``shape = [N, C, H, W]``.

    mask (1 = valid) times cos-latitude weights, normalised to mean 1 over valid pixels.
    """
    weights = _mask_weights(shape, mask, None if lat is None else area_weights(lat))
    valid = weights > 0
    if not np.any(valid):
        raise UserError("mask: no valid pixel left; check the mask and the latitudes")
    return weights / weights[valid].mean()


def require_valid_channels(weight_sum: np.ndarray) -> None:
    """Raise unless every channel has a valid pixel; ``weight_sum [C]``: Σ w over fields, pixels."""
    if np.any(weight_sum <= 0):
        raise UserError("mask: a channel has no valid pixel; check the mask, the latitudes and "
                        "the truth's NaNs")


def prepare_chunk(
    truth: Any, pred: Any, mask: Any, area: np.ndarray | None, *, ensemble: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate, convert, fold NaN truth into the weights and zero-fill invalid pixels.

    ``area [H]`` is ``area_weights(lat)`` or None. A channel may have no valid pixel here (a later
    chunk may have some): see ``require_valid_channels``.

    Returns ``(truth [N, C, H, W], pred [N, C, H, W] or [N, M, C, H, W], weights [N, C, H, W])``,
    the weights unnormalised (``_mask_weights``).
    """
    y = to_numpy(truth, "truth")
    x = to_numpy(pred, "ensemble" if ensemble else "prediction")
    if y.ndim != 4:
        raise UserError(f"truth: expected [N, C, H, W], got shape {y.shape}")
    if ensemble and (x.ndim != 5 or (x.shape[0], *x.shape[2:]) != y.shape):
        raise UserError(f"ensemble: expected [N, M, C, H, W] for truth {y.shape}, got {x.shape}")
    if not ensemble and x.shape != y.shape:
        raise UserError(f"prediction: expected shape {y.shape} like the truth, got {x.shape}")
    w = np.broadcast_to(_mask_weights(y.shape, mask, area), y.shape).copy()
    w[~np.isfinite(y)] = 0.0
    valid = w > 0
    x_valid = np.isfinite(x).all(axis=1) if ensemble else np.isfinite(x)
    if not np.all(x_valid[valid]):
        raise UserError("prediction: NaN or inf at valid pixels; check the model output")
    y = np.where(valid, y, 0.0)
    x = np.where(valid[:, None] if ensemble else valid, x, 0.0)
    return y, x, w


def _prepare(
    truth: Any, pred: Any, mask: Any, lat: Any, *, ensemble: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``prepare_chunk`` of all fields at once: every channel must have a valid pixel."""
    area = None if lat is None else area_weights(lat)
    y, x, w = prepare_chunk(truth, pred, mask, area, ensemble=ensemble)
    require_valid_channels(w.sum(axis=(0, 2, 3)))
    return y, x, w


def channel_sum(q: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sum ``[C]`` over fields and pixels of ``q [N, C, H, W]`` (weights broadcast)."""
    return (np.broadcast_to(weights, q.shape) * q).sum(axis=(0, 2, 3))


def channel_mean(q: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean ``[C]`` over fields and pixels of ``q [N, C, H, W]`` (weights broadcast)."""
    return channel_sum(q, weights) / np.broadcast_to(weights, q.shape).sum(axis=(0, 2, 3))


def error_terms(y: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """Pointwise squared, absolute and signed errors ``[N, C, H, W]`` of ``x`` against ``y``."""
    err = x - y
    return {"sq_err": err**2, "abs_err": np.abs(err), "err": err}


def error_scores(means: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """RMSE, MAE and bias ``[C]`` from the weighted means ``[C]`` of ``error_terms``."""
    return {"rmse": np.sqrt(means["sq_err"]), "mae": means["abs_err"], "bias": means["err"]}


def _error_scores(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    return error_scores({k: channel_mean(q, w) for k, q in error_terms(y, x).items()})


def rmse(truth: Any, prediction: Any, *, mask: Any = None, lat: Any = None) -> np.ndarray:
    """Pooled RMSE ``[C]`` of a deterministic prediction ``[N, C, H, W]``."""
    return _error_scores(*_prepare(truth, prediction, mask, lat, ensemble=False))["rmse"]


def mae(truth: Any, prediction: Any, *, mask: Any = None, lat: Any = None) -> np.ndarray:
    """Mean absolute error ``[C]`` of a deterministic prediction ``[N, C, H, W]``."""
    return _error_scores(*_prepare(truth, prediction, mask, lat, ensemble=False))["mae"]


def bias(truth: Any, prediction: Any, *, mask: Any = None, lat: Any = None) -> np.ndarray:
    """Mean error (prediction - truth) ``[C]`` of a prediction ``[N, C, H, W]``."""
    return _error_scores(*_prepare(truth, prediction, mask, lat, ensemble=False))["bias"]


def member_scores(
    truth: Any, ensemble: Any, *, mask: Any = None, lat: Any = None
) -> dict[str, np.ndarray]:
    """RMSE, MAE and bias ``[C]`` of single members: mean over members of each member's score."""
    y, x, w = _prepare(truth, ensemble, mask, lat, ensemble=True)
    per_member = [_error_scores(y, x[:, m], w) for m in range(x.shape[1])]
    return {k: np.mean([s[k] for s in per_member], axis=0) for k in ("rmse", "mae", "bias")}


def _ssim_field(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> float:
    """SSIM of one field ``[H, W]``: the SSIM map averaged with weights ``w [H, W]``.

    data_range = max - min of the truth over valid pixels (1 if the truth is constant there).
    Invalid pixels are filled with the truth's valid mean in both fields. The map's border of
    SSIM_PAD pixels is left out, as skimage does; with uniform weights this is skimage's mean SSIM.
    """
    valid = w > 0
    fill = y[valid].mean()
    y = np.where(valid, y, fill)
    x = np.where(valid, x, fill)
    data_range = float(y[valid].max() - y[valid].min()) or 1.0
    _, smap = structural_similarity(
        y,
        x,
        data_range=data_range,
        gaussian_weights=True,
        sigma=SSIM_SIGMA,
        use_sample_covariance=False,
        full=True,
    )
    p = SSIM_PAD
    wi = w[p:-p, p:-p]
    if wi.sum() <= 0:
        return float("nan")
    return float((smap[p:-p, p:-p] * wi).sum() / wi.sum())


def ssim_values(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """SSIM ``[N, C]`` of every field and channel (``_ssim_field``; NaN where no weight is left)."""
    n, c, h, wd = y.shape
    if min(h, wd) < SSIM_WIN:
        raise UserError(f"SSIM: fields must be at least {SSIM_WIN}x{SSIM_WIN} pixels, got {h}x{wd}")
    return np.array(
        [[_ssim_field(y[i, k], x[i, k], w[i, k]) for k in range(c)] for i in range(n)]
    ).reshape(n, c)


def ssim(truth: Any, prediction: Any, *, mask: Any = None, lat: Any = None) -> np.ndarray:
    """Mean SSIM ``[C]`` over fields of a prediction ``[N, C, H, W]``, one SSIM per field/channel.

    Wang et al. (2004) settings via ``skimage.metrics.structural_similarity``: Gaussian window
    sigma 1.5 (11x11), K1 = 0.01, K2 = 0.03, population covariances, data_range = the truth's
    max - min over valid pixels of that field and channel. Masks and cos-latitude weights weight
    the SSIM map. Fields must be at least 11x11.
    """
    return np.nanmean(ssim_values(*_prepare(truth, prediction, mask, lat, ensemble=False)), axis=0)


def crps_fair_pointwise(truth: np.ndarray, ensemble: np.ndarray) -> np.ndarray:
    """Fair CRPS ``[N, C, H, W]`` of an ensemble ``[N, M, C, H, W]`` at every pixel.

    CRPS_fair = (1/M) Σ_i |x_i - y| - 1/(2 M (M-1)) Σ_i Σ_j |x_i - x_j| (Ferro 2014; Zamo & Naveau
    2018): unbiased for the CRPS of the distribution the members are drawn from. The double sum
    is computed in O(M log M) from the sorted members: Σ_ij |x_i - x_j| = 2 Σ_k (2k - M - 1) x_(k).
    """
    m = ensemble.shape[1]
    if m < 2:
        raise UserError(f"CRPS: the fair ensemble CRPS needs at least 2 members, got {m}")
    skill = np.abs(ensemble - truth[:, None]).mean(axis=1)
    coef = (2.0 * np.arange(1, m + 1) - m - 1).reshape(1, m, *([1] * (ensemble.ndim - 2)))
    pair_sum = 2.0 * (coef * np.sort(ensemble, axis=1)).sum(axis=1)
    return skill - pair_sum / (2.0 * m * (m - 1))


def crps_fair(truth: Any, ensemble: Any, *, mask: Any = None, lat: Any = None) -> np.ndarray:
    """Fair ensemble CRPS ``[C]``: weighted mean of ``crps_fair_pointwise``; M >= 2 members."""
    y, x, w = _prepare(truth, ensemble, mask, lat, ensemble=True)
    return channel_mean(crps_fair_pointwise(y, x), w)


def spread_skill_scores(
    mean_var: np.ndarray, mean_sq_err: np.ndarray, m: int
) -> dict[str, np.ndarray]:
    """``spread_skill``'s scores ``[C]`` of M = ``m`` members from weighted means ``[C]`` of the
    member variance (ddof=1) and of the ensemble mean's squared error."""
    spread = np.sqrt(mean_var)
    skill = np.sqrt(mean_sq_err)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = spread / skill
    return {
        "spread": spread,
        "skill": skill,
        "spread_skill": np.sqrt((m + 1) / m) * raw,
        "spread_skill_uncorrected": raw,
        "rmse_unbiased": np.sqrt(np.maximum(skill**2 - spread**2 / m, 0.0)),
    }


def spread_skill(
    truth: Any, ensemble: Any, *, mask: Any = None, lat: Any = None
) -> dict[str, np.ndarray]:
    """Spread, skill and spread-skill ratio ``[C]`` of an ensemble ``[N, M, C, H, W]``.

    spread = sqrt(mean_w(unbiased member variance, ddof=1)); skill = RMSE of the ensemble mean.
    For M members exchangeable with the truth, E[skill²] = (1 + 1/M) E[spread²], so the ratio
    that is 1 for a calibrated ensemble is ``spread_skill = sqrt((M+1)/M) · spread / skill``
    (Fortin et al. 2014); ``spread_skill_uncorrected = spread / skill`` is also returned.

    ``rmse_unbiased`` = sqrt(max(skill² − spread² / M, 0)) estimates the RMSE of the mean of
    infinitely many members: E[(x̄_M − y)²] = E[(μ − y)²] + E[var] / M for members drawn
    independently around μ (WeatherBench 2's ``UnbiasedEnsembleMeanRMSE``).
    """
    y, x, w = _prepare(truth, ensemble, mask, lat, ensemble=True)
    m = x.shape[1]
    if m < 2:
        raise UserError(f"spread-skill: needs at least 2 members, got {m}")
    return spread_skill_scores(
        channel_mean(x.var(axis=1, ddof=1), w), channel_mean((x.mean(axis=1) - y) ** 2, w), m
    )


def rank_counts(
    y: np.ndarray, x: np.ndarray, w: np.ndarray, seed: int, first_field: int = 0
) -> np.ndarray:
    """Rank counts ``[C, M+1]`` of truth ``y [N, C, H, W]`` among ``x [N, M, C, H, W]`` where
    ``w > 0``; the fields are ``first_field``, ``first_field + 1``, ... of the split.

    Ties are broken per field i with ``np.random.default_rng([seed, i])``, so that the counts of
    a split scored in chunks equal those of the whole split.
    """
    m = x.shape[1]
    rank = (x < y[:, None]).sum(axis=1)
    ties = (x == y[:, None]).sum(axis=1)
    for i in np.flatnonzero(ties.any(axis=(1, 2, 3))):  # no tie: floor(u · 1) = 0, no draw needed
        u = np.random.default_rng([seed, first_field + int(i)]).random(ties.shape[1:])
        rank[i] += np.floor(u * (ties[i] + 1)).astype(rank.dtype)
    valid = w > 0
    return np.stack(
        [np.bincount(rank[:, c][valid[:, c]], minlength=m + 1) for c in range(y.shape[1])]
    )


def rank_histogram(truth: Any, ensemble: Any, *, mask: Any = None, seed: int = 0) -> np.ndarray:
    """Rank histogram ``[C, M+1]`` (int counts over valid pixels) of the truth among members.

    Rank = number of members below the truth, ties broken uniformly at random, for field i with
    ``np.random.default_rng([seed, i])``; bin M means the truth is above every member. Counts are
    not area weighted.
    """
    y, x, w = _prepare(truth, ensemble, mask, None, ensemble=True)
    return rank_counts(y, x, w, seed)
