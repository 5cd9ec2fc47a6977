"""Verification metrics for deterministic and ensemble downscaling.

Dimension conventions (numpy arrays, torch tensors or xarray DataArrays in this order; all
computations in float64 numpy):

- truth ``[N, C, H, W]`` (N fields, C channels), deterministic prediction ``[N, C, H, W]``,
  ensemble ``[N, M, C, H, W]`` (M members);
- mask ``[N or 1, 1 or C, H, W]``, 1 = valid; pixels where the truth is NaN are invalid too;
- lat ``[H]`` in degrees: cos-latitude area weights.

Every score is a weighted mean over fields and valid pixels, per channel (arrays ``[C]``):
mean_w(q) = Σ w q / Σ w with w = mask · cos(lat) (``pixel_weights`` normalises w to mean 1 over
valid pixels; the normalisation cancels). RMSE is pooled: sqrt(mean_w((pred - truth)²)) over all
N fields, not a mean of per-field RMSEs. "Member" scores are the mean over members of the score of
each member.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity

from weather_sr.errors import UserError
from weather_sr.evaluation import spectra

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


def pixel_weights(shape: Sequence[int], *, mask: Any = None, lat: Any = None) -> np.ndarray:
    """Weights ``[N or 1, C or 1, H, W]`` for fields of ``shape = [N, C, H, W]``.

    mask (1 = valid) times cos-latitude weights, normalised to mean 1 over valid pixels.
    """
    n, c, h, w = shape
    weights = np.ones((1, 1, h, w))
    if lat is not None:
        aw = area_weights(lat)
        if aw.size != h:
            raise UserError(f"lat: has {aw.size} values but the fields have {h} rows")
        weights = weights * aw[None, None, :, None]
    if mask is not None:
        m = to_numpy(mask, "mask")
        ok = m.ndim == 4 and m.shape[0] in (1, n) and m.shape[1] in (1, c) and m.shape[2:] == (h, w)
        if not ok:
            raise UserError(f"mask: shape {m.shape} is not [N|1, 1|C, H, W] for {tuple(shape)}")
        weights = weights * (np.nan_to_num(m) > 0.5)
    valid = weights > 0
    if not np.any(valid):
        raise UserError("mask: no valid pixel left; check the mask and the latitudes")
    return weights / weights[valid].mean()


def _prepare(
    truth: Any, pred: Any, mask: Any, lat: Any, *, ensemble: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate, convert, fold NaN truth into the weights and zero-fill invalid pixels.

    Returns ``(truth [N, C, H, W], pred [N, C, H, W] or [N, M, C, H, W], weights [N, C, H, W])``.
    """
    y = to_numpy(truth, "truth")
    x = to_numpy(pred, "ensemble" if ensemble else "prediction")
    if y.ndim != 4:
        raise UserError(f"truth: expected [N, C, H, W], got shape {y.shape}")
    if ensemble and (x.ndim != 5 or (x.shape[0], *x.shape[2:]) != y.shape):
        raise UserError(f"ensemble: expected [N, M, C, H, W] for truth {y.shape}, got {x.shape}")
    if not ensemble and x.shape != y.shape:
        raise UserError(f"prediction: expected shape {y.shape} like the truth, got {x.shape}")
    w = np.broadcast_to(pixel_weights(y.shape, mask=mask, lat=lat), y.shape).copy()
    w[~np.isfinite(y)] = 0.0
    valid = w > 0
    x_valid = np.isfinite(x).all(axis=1) if ensemble else np.isfinite(x)
    if not np.all(x_valid[valid]):
        raise UserError("prediction: NaN or inf at valid pixels; check the model output")
    if np.any(w.sum(axis=(0, 2, 3)) <= 0):
        raise UserError("mask: a channel has no valid pixel; check the mask and the truth's NaNs")
    y = np.where(valid, y, 0.0)
    x = np.where(valid[:, None] if ensemble else valid, x, 0.0)
    return y, x, w


def channel_mean(q: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean ``[C]`` over fields and pixels of ``q [N, C, H, W]`` (weights broadcast)."""
    w = np.broadcast_to(weights, q.shape)
    return (w * q).sum(axis=(0, 2, 3)) / w.sum(axis=(0, 2, 3))


def _error_scores(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    err = x - y
    return {
        "rmse": np.sqrt(channel_mean(err**2, w)),
        "mae": channel_mean(np.abs(err), w),
        "bias": channel_mean(err, w),
    }


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


def _ssim_arrays(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    n, c, h, wd = y.shape
    if min(h, wd) < SSIM_WIN:
        raise UserError(f"SSIM: fields must be at least {SSIM_WIN}x{SSIM_WIN} pixels, got {h}x{wd}")
    vals = np.array([[_ssim_field(y[i, k], x[i, k], w[i, k]) for k in range(c)] for i in range(n)])
    return np.nanmean(vals, axis=0)


def ssim(truth: Any, prediction: Any, *, mask: Any = None, lat: Any = None) -> np.ndarray:
    """Mean SSIM ``[C]`` over fields of a prediction ``[N, C, H, W]``, one SSIM per field/channel.

    Wang et al. (2004) settings via ``skimage.metrics.structural_similarity``: Gaussian window
    sigma 1.5 (11x11), K1 = 0.01, K2 = 0.03, population covariances, data_range = the truth's
    max - min over valid pixels of that field and channel. Masks and cos-latitude weights weight
    the SSIM map. Fields must be at least 11x11.
    """
    return _ssim_arrays(*_prepare(truth, prediction, mask, lat, ensemble=False))


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


def _spread_skill(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    m = x.shape[1]
    if m < 2:
        raise UserError(f"spread-skill: needs at least 2 members, got {m}")
    spread = np.sqrt(channel_mean(x.var(axis=1, ddof=1), w))
    skill = np.sqrt(channel_mean((x.mean(axis=1) - y) ** 2, w))
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
    return _spread_skill(*_prepare(truth, ensemble, mask, lat, ensemble=True))


def _rank_counts(y: np.ndarray, x: np.ndarray, w: np.ndarray, seed: int) -> np.ndarray:
    m = x.shape[1]
    rng = np.random.default_rng(seed)
    below = (x < y[:, None]).sum(axis=1)
    ties = (x == y[:, None]).sum(axis=1)
    rank = below + np.floor(rng.random(y.shape) * (ties + 1)).astype(np.int64)
    valid = w > 0
    return np.stack(
        [np.bincount(rank[:, c][valid[:, c]], minlength=m + 1) for c in range(y.shape[1])]
    )


def rank_histogram(truth: Any, ensemble: Any, *, mask: Any = None, seed: int = 0) -> np.ndarray:
    """Rank histogram ``[C, M+1]`` (int counts over valid pixels) of the truth among members.

    Rank = number of members below the truth, ties broken uniformly at random with
    ``np.random.default_rng(seed)``; bin M means the truth is above every member. Counts are not
    area weighted.
    """
    y, x, w = _prepare(truth, ensemble, mask, None, ensemble=True)
    return _rank_counts(y, x, w, seed)


def _spectra_scores(
    y: np.ndarray, fields: dict[str, np.ndarray], w: np.ndarray, window: str,
    scale_factor: int | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Per-channel radial PSDs of the truth and of ``fields`` (each ``[N, (M,) C, H, W]``) + LSDs
    (bands all, high, and above_lr when ``scale_factor`` is given).

    Invalid pixels are filled with the truth's valid mean of that field and channel in all fields.
    """
    valid = w > 0
    fill = (y * valid).sum(axis=(2, 3), keepdims=True) / valid.sum(axis=(2, 3), keepdims=True)
    yf = np.where(valid, y, fill)
    psd: dict[str, Any] = {
        "truth": [spectra.radial_psd(yf[:, c], window=window) for c in range(y.shape[1])]
    }
    lsd: dict[str, dict[str, np.ndarray]] = {}
    for name, x in fields.items():
        xf = np.where(valid[:, None], x, fill[:, None]) if x.ndim == 5 else np.where(valid, x, fill)
        specs = [spectra.radial_psd(xf[..., c, :, :], window=window) for c in range(y.shape[1])]
        psd[name] = specs
        bands = ("all", "high") if scale_factor is None else ("all", "high", "above_lr")
        lsd[name] = {
            band: np.array(
                [
                    spectra.log_spectral_distance(s.power, t.power, t.freq, band=band,
                                                  scale_factor=scale_factor)
                    for s, t in zip(specs, psd["truth"], strict=True)
                ]
            )
            for band in bands
        }
    return psd, lsd


def _plain(value: Any) -> Any:
    """JSON-able plain Python value: floats (non-finite -> None), ints, lists."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    f = float(value)
    return f if np.isfinite(f) else None


def evaluate_method(
    truth: Any,
    prediction_or_ensemble: Any,
    *,
    mask: Any = None,
    lat: Any = None,
    channel_names: Sequence[str] | None = None,
    seed: int = 0,
    window: str = "none",
    scale_factor: int | None = None,
) -> dict[str, Any]:
    """Every applicable metric of one method, as JSON-able plain Python types.

    Args:
        truth: ``[N, C, H, W]``.
        prediction_or_ensemble: deterministic ``[N, C, H, W]`` or ensemble ``[N, M, C, H, W]``
            (an ensemble of one member is scored as deterministic).
        mask: ``[N or 1, 1 or C, H, W]``, 1 = valid. lat: ``[H]`` degrees (cos-latitude weights).
        channel_names: C names (default ``channel_0`` ...). seed: rank-histogram tie breaking.
        window: PSD taper, ``"none"`` or ``"hann"`` (see ``spectra.radial_psd``).
        scale_factor: the LR grid's coarsening; given, ``lsd_above_lr`` (and for ensembles
            ``member_lsd_above_lr``) score the bins above the LR Nyquist frequency.

    Returns:
        ``{"kind", "n_fields", "n_members", "channels", "weighting", "metrics": {channel: {...}},
        "mean": {...}, "rank_histogram": {channel: [M+1 ints], "all": [...]}, "psd": {"freq":
        {channel: [K]}, "truth"|"prediction"|"member": {channel: [K]}}}``. Unprefixed scores are
        those of the deterministic prediction or of the ensemble mean (rmse, mae, bias, ssim,
        lsd, lsd_high); ``member_*`` are mean scores of single members; ensembles add crps,
        spread, spread_skill, spread_skill_uncorrected, rmse_unbiased. "mean" averages each
        score over channels.
    """
    x_raw = to_numpy(prediction_or_ensemble, "prediction")
    if x_raw.ndim == 5 and x_raw.shape[1] == 1:
        x_raw = x_raw[:, 0]
    is_ens = x_raw.ndim == 5
    y, x, w = _prepare(truth, x_raw, mask, lat, ensemble=is_ens)
    n, c, h, wd = y.shape
    names = list(channel_names) if channel_names is not None else [f"channel_{i}" for i in range(c)]
    if len(names) != c:
        raise UserError(f"channel_names: {len(names)} names for {c} channels")
    point = x.mean(axis=1) if is_ens else x
    scores: dict[str, np.ndarray] = dict(_error_scores(y, point, w))
    can_ssim = min(h, wd) >= SSIM_WIN
    scores["ssim"] = _ssim_arrays(y, point, w) if can_ssim else np.full(c, np.nan)
    fields = {"prediction": point}
    if is_ens:
        members = [_error_scores(y, x[:, m], w) for m in range(x.shape[1])]
        for key in ("rmse", "mae", "bias"):
            scores[f"member_{key}"] = np.mean([s[key] for s in members], axis=0)
        scores["member_ssim"] = (
            np.mean([_ssim_arrays(y, x[:, m], w) for m in range(x.shape[1])], axis=0)
            if can_ssim
            else np.full(c, np.nan)
        )
        scores["crps"] = channel_mean(crps_fair_pointwise(y, x), w)
        scores.update(_spread_skill(y, x, w))
        fields["member"] = x
    psd, lsd = _spectra_scores(y, fields, w, window, scale_factor)
    for name, prefix in (("prediction", ""), ("member", "member_")):
        if name in lsd:
            scores[f"{prefix}lsd"] = lsd[name]["all"]
            scores[f"{prefix}lsd_high"] = lsd[name]["high"]
            if "above_lr" in lsd[name]:
                scores[f"{prefix}lsd_above_lr"] = lsd[name]["above_lr"]
    result: dict[str, Any] = {
        "kind": "ensemble" if is_ens else "deterministic",
        "n_fields": n,
        "n_members": int(x.shape[1]) if is_ens else 1,
        "channels": names,
        "weighting": "cos-latitude" if lat is not None else "uniform",
        "metrics": {nm: {k: _plain(v[i]) for k, v in scores.items()} for i, nm in enumerate(names)},
        "mean": {
            k: _plain(np.nanmean(v)) if np.any(np.isfinite(v)) else None for k, v in scores.items()
        },
        "psd": {"freq": {nm: _plain(s.freq) for nm, s in zip(names, psd["truth"], strict=True)}},
    }
    for key, specs in psd.items():
        result["psd"][key] = {nm: _plain(s.power) for nm, s in zip(names, specs, strict=True)}
    if is_ens:
        counts = _rank_counts(y, x, w, seed)
        result["rank_histogram"] = {nm: _plain(counts[i]) for i, nm in enumerate(names)}
        result["rank_histogram"]["all"] = _plain(counts.sum(axis=0))
    return result
