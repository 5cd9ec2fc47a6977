"""Every metric of ``evaluate_method``, accumulated chunk by chunk of fields.

A split of N fields is scored in chunks of n fields (``ScoreAccumulator.update``) so that memory
does not grow with N; ``result()`` equals ``evaluate_method`` on the concatenated arrays (up to
the order of floating-point sums) and ``evaluate_method`` is the one-chunk case. The state holds
no field, only (C channels, M members, K spectral bins):

- weighted sums ``[C]`` (``[M, C]`` per member) of the pointwise terms of every weighted-mean
  score and the weight sum ``[C]``; the weights are unnormalised (``metrics.prepare_chunk``),
  so the sums of chunks add up to those of the whole split;
- SSIM sums and counts of finite values ``[C]`` (``[M, C]``): a NaN-mean over fields;
- rank-histogram counts ``[C, M+1]``;
- radial PSD power sums ``[C, K]`` over fields (and members); LSDs come from the mean spectra in
  ``result()``;
- for ensembles with a ``scale_factor``, the sums ``[C, B]`` of the calibration per scale in B
  bands of F_R coefficients (:mod:`weather_sr.evaluation.bands`);
- for ensembles, the PIT histogram ``[C, bins]``, the reliability sums ``[C, K, M+1]`` for the
  events truth > ``thresholds`` and, with channel ``scales``, the energy score
  (:mod:`weather_sr.evaluation.calibration`).

It also keeps the per-field sums ``[N, C]`` of the headline scores (``series()``: weight,
squared and absolute error, CRPS, energy score), the numbers of the bootstrap over time
(:mod:`weather_sr.evaluation.bootstrap`), and the per-field radial power ``[N, C, K]``.

Field indices (rank-histogram tie breaking, ``metrics.rank_counts``): the fields of a chunk are
numbered on from those of earlier updates, so give the chunks in the split's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from weather_sr.errors import UserError
from weather_sr.evaluation import bands, calibration, metrics, spectra

_ERR_KEYS = ("sq_err", "abs_err", "err")  # the keys of metrics.error_terms
_LSD_KEYS = {"all": "lsd", "high": "lsd_high", "above_lr": "lsd_above_lr"}


def to_plain(value: Any) -> Any:
    """JSON-able plain Python value: floats (non-finite -> None), ints, strings, lists, dicts;
    None stays None."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray):
        return [to_plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    f = float(value)
    return f if np.isfinite(f) else None


def _nan_ratio(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """total / count, NaN where count is 0 (a NaN-mean from its sum and count)."""
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def _psd_sum(fields: np.ndarray) -> np.ndarray:
    """Sum over fields (and members) of the radial power ``[C, K]`` of ``[n, (M,) C, K]``."""
    return fields.reshape(-1, *fields.shape[-2:]).sum(axis=0)


def _describe(layout: tuple[bool, int, int, int, int]) -> str:
    ensemble, m, c, h, w = layout
    kind = f"an ensemble of {m} members" if ensemble else "a deterministic prediction"
    return f"{kind} with {c} channels on {h}x{w} pixels"


class ScoreAccumulator:
    """Scores of one method over a split given chunk by chunk; see the module docstring.

    Args (as ``evaluate_method``):
        lat: ``[H]`` degrees (cos-latitude weights), or None (uniform).
        channel_names: C names (default ``channel_0`` ...).
        seed: rank-histogram tie breaking (per field, see ``metrics.rank_counts``).
        window: PSD taper, ``"none"`` or ``"hann"`` (see ``spectra.radial_psd``).
        scale_factor: the LR grid's coarsening; given, the LSDs above the LR Nyquist frequency
            are scored too.
        thresholds: ``[C, K]`` event thresholds of the reliability diagram (ensembles), e.g.
            the truth's 0.9 and 0.99 quantiles; ``threshold_levels`` [K] names them.
        scales: ``[C]`` positive channel scales of the energy score (ensembles), e.g. the
            truth's standard deviations.
        pit_bins: bins of the PIT histogram (ensembles; the PIT draws from a Generator seeded
            with ``seed``, in field order).

    Attributes:
        n_fields: the number of fields given to ``update`` so far.
    """

    def __init__(
        self,
        *,
        lat: Any = None,
        channel_names: Sequence[str] | None = None,
        seed: int = 0,
        window: str = "none",
        scale_factor: int | None = None,
        thresholds: Any = None,
        threshold_levels: Sequence[float] = (),
        scales: Any = None,
        pit_bins: int = 10,
    ) -> None:
        self._thresholds = None if thresholds is None else np.asarray(thresholds, np.float64)
        self._levels = [float(q) for q in threshold_levels]
        self._scales = None if scales is None else np.asarray(scales, np.float64)
        self._pit_bins = pit_bins
        self._pit_rng = np.random.default_rng(seed)
        self._series: dict[str, list[np.ndarray]] = {}
        self._area = None if lat is None else metrics.area_weights(lat)
        self._names = None if channel_names is None else list(channel_names)
        self._seed = seed
        self._window = window
        self._scale_factor = scale_factor
        self._layout: tuple[bool, int, int, int, int] | None = None  # (ensemble, M, C, H, W)
        self._freq: np.ndarray | None = None
        self._edges: list[float] | None = None  # the bands' edges (ensembles, scale_factor)
        self._sums: dict[str, np.ndarray] = {}
        self.n_fields = 0

    def update(self, truth: Any, prediction_or_ensemble: Any, mask: Any = None) -> None:
        """Add a chunk of fields: the next ``n`` fields of the split, numbered ``n_fields`` ...
        ``n_fields + n - 1`` for the rank-histogram tie breaking.

        Args:
            truth: ``[n, C, H, W]``.
            prediction_or_ensemble: deterministic ``[n, C, H, W]`` or ensemble
                ``[n, M, C, H, W]`` (one member is scored as deterministic); every chunk must
                have the same kind, M, C, H and W.
            mask: ``[n or 1, 1 or C, H, W]``, 1 = valid; NaN truth is invalid too.

        A chunk of no field changes nothing.
        """
        x = metrics.to_numpy(prediction_or_ensemble, "prediction")
        if x.ndim == 5 and x.shape[1] == 1:
            x = x[:, 0]
        ensemble = x.ndim == 5
        y, x, w = metrics.prepare_chunk(truth, x, mask, self._area, ensemble=ensemble)
        n, c, h, wd = y.shape
        layout = (ensemble, x.shape[1] if ensemble else 1, c, h, wd)
        self._check_layout(layout)
        if n == 0:
            return
        # every sum of the chunk first, so that a chunk that fails leaves the state as it was
        part: dict[str, np.ndarray] = {}
        series = {"weight": w.sum(axis=(2, 3))}  # [n, C] per field
        point = x.mean(axis=1) if ensemble else x
        for key, q in metrics.error_terms(y, point).items():
            series[key] = (w * q).sum(axis=(2, 3))
        can_ssim = min(h, wd) >= metrics.SSIM_WIN
        if can_ssim:
            vals = metrics.ssim_values(y, point, w)  # [n, C]
            part["ssim"] = np.nansum(vals, axis=0)
            part["ssim_count"] = np.isfinite(vals).sum(axis=0)
        # PSDs: invalid pixels filled with the truth's valid mean of that field and channel
        valid = w > 0
        fill = y.sum(axis=(2, 3), keepdims=True) / valid.sum(axis=(2, 3), keepdims=True)
        fields = {"truth": np.where(valid, y, fill), "prediction": np.where(valid, point, fill)}
        if ensemble:
            fields["member"] = np.where(valid[:, None], x, fill[:, None])
            m = x.shape[1]
            members = [metrics.error_terms(y, x[:, i]) for i in range(m)]
            for key in members[0]:
                part[f"member_{key}"] = np.stack([metrics.channel_sum(t[key], w) for t in members])
            if can_ssim:
                vals = np.stack([metrics.ssim_values(y, x[:, i], w) for i in range(m)])  # [M,n,C]
                part["member_ssim"] = np.nansum(vals, axis=1)
                part["member_ssim_count"] = np.isfinite(vals).sum(axis=1)
            series["crps"] = (w * metrics.crps_fair_pointwise(y, x)).sum(axis=(2, 3))
            part.update(self._calibration_sums(y, x, w, series))
            part["var"] = metrics.channel_sum(x.var(axis=1, ddof=1), w)
            part["rank"] = metrics.rank_counts(y, x, w, self._seed, first_field=self.n_fields)
            if self._scale_factor is not None:
                band, self._edges = bands.band_layout(h, wd, self._scale_factor)
                sums = bands.band_sums(fields["truth"], fields["member"], band,
                                       len(self._edges) - 1)
                part.update({f"band_{k}": v for k, v in sums.items()})
        for name, f in fields.items():
            spec = spectra.radial_psd(f, mean=False, window=self._window)
            power = spec.power if name != "member" else spec.power.mean(axis=1)  # [n, C, K]
            series[f"psd_{name}"] = power
            part[f"psd_{name}"] = _psd_sum(spec.power)
        part.update({k: v.sum(axis=0) for k, v in series.items() if not k.startswith("psd")})
        for key, value in part.items():
            self._sums[key] = self._sums.get(key, 0) + value
        for key, value in series.items():
            self._series.setdefault(key, []).append(value)
        self._layout, self._freq = layout, spec.freq
        self.n_fields += n

    def _calibration_sums(self, y: np.ndarray, x: np.ndarray, w: np.ndarray,
                          series: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """PIT, reliability and energy-score sums of an ensemble chunk (module docstring);
        the energy score's per-field sums go into ``series``."""
        part = {"pit": calibration.pit_counts(y, x, w, self._pit_bins, self._pit_rng)}
        if self._thresholds is not None:
            sums = calibration.reliability_sums(y, x, w, self._thresholds)
            part.update({f"reliability_{k}": v for k, v in sums.items()})
        if self._scales is not None:
            num, den = calibration.energy_score_sums(y, x, w, self._scales)
            series["energy"], series["energy_weight"] = num[:, None], den[:, None]
        return part

    def series(self) -> dict[str, np.ndarray]:
        """Per-field sums in field order: ``weight``, ``sq_err``, ``abs_err``, ``err`` ``[N, C]``
        (of the ensemble mean for an ensemble), ``crps`` ``[N, C]`` and ``energy`` /
        ``energy_weight`` ``[N, 1]`` (ensembles), and the radial power ``psd_truth``,
        ``psd_prediction``, ``psd_member`` (mean over members) ``[N, C, K]``."""
        return {k: np.concatenate(v) for k, v in self._series.items()}

    def _check_layout(self, layout: tuple[bool, int, int, int, int]) -> None:
        c = layout[2]
        if self._names is not None and len(self._names) != c:
            raise UserError(f"channel_names: {len(self._names)} names for {c} channels")
        if self._layout is not None and layout != self._layout:
            raise UserError(
                f"update: this chunk is {_describe(layout)}, the earlier ones "
                f"{_describe(self._layout)}; every chunk of a method must match"
            )

    def result(self) -> dict[str, Any]:
        """The scores of all fields given so far, as ``evaluate_method`` returns them."""
        if self._layout is None or self._freq is None:  # set by the first chunk of fields
            raise UserError("no fields to score: give at least one chunk of fields to update")
        s, (ensemble, m, c, _, _) = self._sums, self._layout
        n = self.n_fields
        wsum = s["weight"]
        metrics.require_valid_channels(wsum)
        nan = np.full(c, np.nan)
        scores = metrics.error_scores({k: s[k] / wsum for k in _ERR_KEYS})
        scores["ssim"] = _nan_ratio(s["ssim"], s["ssim_count"]) if "ssim" in s else nan
        psd = {"truth": s["psd_truth"] / n, "prediction": s["psd_prediction"] / n}
        if ensemble:
            members = [
                metrics.error_scores({k: s[f"member_{k}"][i] / wsum for k in _ERR_KEYS})
                for i in range(m)
            ]
            for key in ("rmse", "mae", "bias"):
                scores[f"member_{key}"] = np.mean([t[key] for t in members], axis=0)
            scores["member_ssim"] = (
                _nan_ratio(s["member_ssim"], s["member_ssim_count"]).mean(axis=0)
                if "member_ssim" in s
                else nan
            )
            scores["crps"] = s["crps"] / wsum
            scores.update(metrics.spread_skill_scores(s["var"] / wsum, s["sq_err"] / wsum, m))
            psd["member"] = s["psd_member"] / (n * m)
        lsd_bands = ("all", "high") if self._scale_factor is None else ("all", "high", "above_lr")
        for name, prefix in (("prediction", ""), ("member", "member_")):
            if name not in psd:
                continue
            for band in lsd_bands:
                scores[prefix + _LSD_KEYS[band]] = np.array([
                    spectra.log_spectral_distance(psd[name][k], psd["truth"][k], self._freq,
                                                  band=band, scale_factor=self._scale_factor)
                    for k in range(c)
                ])
        names = self._names if self._names is not None else [f"channel_{i}" for i in range(c)]
        out: dict[str, Any] = {
            "kind": "ensemble" if ensemble else "deterministic",
            "n_fields": n,
            "n_members": m,
            "channels": list(names),
            "weighting": "cos-latitude" if self._area is not None else "uniform",
            "metrics": {nm: {k: to_plain(v[i]) for k, v in scores.items()}
                        for i, nm in enumerate(names)},
            "mean": {k: to_plain(np.nanmean(v)) if np.any(np.isfinite(v)) else None
                     for k, v in scores.items()},
            "psd": {"freq": {nm: to_plain(self._freq) for nm in names}},
        }
        for key, power in psd.items():
            out["psd"][key] = {nm: to_plain(power[i]) for i, nm in enumerate(names)}
        if ensemble and self._edges is not None:
            result = bands.band_result({k: s[f"band_{k}"] for k in bands.SUMS}, m, self._edges,
                                       list(names))
            out["bands"] = to_plain(result)
        if ensemble:
            counts = s["rank"]
            out["rank_histogram"] = {nm: to_plain(counts[i]) for i, nm in enumerate(names)}
            out["rank_histogram"]["all"] = to_plain(counts.sum(axis=0))
            out.update(self._calibration_result(list(names)))
        return out

    def _calibration_result(self, names: list[str]) -> dict[str, Any]:
        """The PIT histogram (frequencies), the reliability diagram with the Brier scores per
        threshold, and the energy score, of an ensemble."""
        s = self._sums
        pit = s["pit"] / s["pit"].sum(axis=1, keepdims=True)
        out: dict[str, Any] = {"pit_histogram": {nm: to_plain(pit[i])
                                                 for i, nm in enumerate(names)}}
        if "reliability_weight" in s and self._thresholds is not None:
            sums = {"weight": s["reliability_weight"], "observed": s["reliability_observed"]}
            prob, freq = calibration.reliability_curve(sums)
            brier = calibration.brier_scores(sums)
            out["reliability"] = {
                "levels": self._levels,
                "forecast_probability": to_plain(prob),
                "channels": {nm: {"thresholds": to_plain(self._thresholds[i]),
                                  "observed_frequency": to_plain(freq[i]),
                                  "weight": to_plain(sums["weight"][i]),
                                  "brier": to_plain(brier["brier_fair"][i]),
                                  "brier_reliability": to_plain(brier["reliability"][i])}
                             for i, nm in enumerate(names)},
            }
        if "energy" in s:
            out["energy_score"] = to_plain(s["energy"][0] / s["energy_weight"][0])
        return out


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

    The one-chunk case of ``accumulate.ScoreAccumulator``, which scores a split chunk by chunk.

    Args:
        truth: ``[N, C, H, W]``.
        prediction_or_ensemble: deterministic ``[N, C, H, W]`` or ensemble ``[N, M, C, H, W]``
            (an ensemble of one member is scored as deterministic).
        mask: ``[N or 1, 1 or C, H, W]``, 1 = valid. lat: ``[H]`` degrees (cos-latitude weights).
        channel_names: C names (default ``channel_0`` ...). seed: rank-histogram tie breaking
            (per field, see ``rank_counts``).
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
    acc = ScoreAccumulator(
        lat=lat, channel_names=channel_names, seed=seed, window=window, scale_factor=scale_factor
    )
    acc.update(truth, prediction_or_ensemble, mask=mask)
    return acc.result()
