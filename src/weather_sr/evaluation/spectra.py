"""Radially averaged power spectral density (PSD) of fields and the log-spectral distance (LSD).

Conventions (used by ``accumulate.evaluate_method`` and the PSD plots):

- A field x is ``[H, W]`` on a regular grid, treated as periodic (no window by default).
  Its 2-D DFT is X[ky, kx] = Σ_mn x[m, n] e^{-2πi (ky m / H + kx n / W)}.
- Radial frequency ν = sqrt((ky/H)² + (kx/W)²) in **cycles per grid spacing**, with ky, kx the
  signed integer wavenumbers (``np.fft.fftfreq``).
- Bins have width Δν = 1 / L with L = min(H, W) (tests/test_spectra.py checks the binning and
  normalisation against the orthonormal F_R of ``core.fourier``). A coefficient goes to bin
  k = round(ν / Δν), centred on ν_k = k / L. The spectrum keeps bins k = 0 .. K with
  K = floor(L / 2), i.e. up to ν_max = K / L (= 0.5 cycles per grid spacing, the Nyquist
  frequency, for even L): the largest frequency resolved in every direction. ``full=True``
  keeps the corner bins too (ν ≤ sqrt(0.5)).
- PSD as a density over the (ky/H, kx/W) plane: S = |X|² / (H·W), in (field units)² per
  (cycles per grid spacing)²; the radial PSD P_k is the mean of S over the coefficients of bin k.
  Parseval: mean(x²) = Σ_k counts_k · P_k / (H·W) over all bins (``full=True``).
- LSD = sqrt(mean over bins of (10 log10(P_pred / P_true))²) in dB, over the bins with
  0 < ν_k ≤ ν_max ("all", the DC bin is left out: the mean is scored by the bias) and over the bins
  with ν_max / 2 ≤ ν_k ≤ ν_max ("high", the upper half of resolved frequencies), and over the bins
  with ν_LR < ν_k ≤ ν_max ("above_lr": the scales the LR field does not resolve; ν_LR = 0.5 / s
  cycles per HR grid spacing is the Nyquist frequency of an LR grid s times coarser, s the
  scale factor).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from weather_sr.errors import UserError

# Powers below this fraction of the truth's largest bin are treated as this floor in LSD, so that
# a bin with no power (an exact sinusoid) gives a large finite distance instead of inf or nan.
_LSD_FLOOR = 1e-12


class Spectrum(NamedTuple):
    """A radially averaged PSD: ``freq [K]``, ``power [..., K]``, ``counts [K]`` (int)."""

    freq: np.ndarray
    power: np.ndarray
    counts: np.ndarray


def radial_bin_index(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Radial bin of every 2-D DFT coefficient of an ``[h, w]`` field.

    Returns ``(index [h, w] int, freq [n_bins])`` with ``freq[k] = k / min(h, w)`` in cycles per
    grid spacing; the layout of ``index`` is that of ``np.fft.fft2``.
    """
    if h < 2 or w < 2:
        raise UserError(f"power spectrum: fields must be at least 2x2 pixels, got {h}x{w}")
    length = min(h, w)
    ky = np.fft.fftfreq(h)[:, None]  # cycles per grid spacing
    kx = np.fft.fftfreq(w)[None, :]
    nu = np.sqrt(ky**2 + kx**2)
    index = np.rint(nu * length).astype(np.int64)
    freq = np.arange(int(index.max()) + 1, dtype=np.float64) / length
    return index, freq


def _hann2d(h: int, w: int) -> np.ndarray:
    """Separable Hann window ``[h, w]`` scaled so that mean(window²) = 1 (power preserved)."""
    win = np.outer(np.hanning(h + 2)[1:-1], np.hanning(w + 2)[1:-1])
    return win / np.sqrt(np.mean(win**2))


def radial_psd(
    fields: np.ndarray, *, mean: bool = True, full: bool = False, window: str = "none"
) -> Spectrum:
    """Radially averaged PSD of fields ``[..., H, W]``.

    Args:
        fields: real array ``[..., H, W]`` without NaN (fill masked pixels first).
        mean: average the spectra over all leading dimensions (power ``[K]``); else keep them
            (power ``[..., K]``).
        full: keep the corner bins beyond ν = floor(L/2)/L (needed for an exact Parseval sum).
        window: ``"none"`` (periodic fields, e.g. global in longitude) or ``"hann"`` (separable
            Hann taper scaled to preserve mean power, against edge leakage on regional domains).

    Returns:
        ``Spectrum(freq [K], power [K] or [..., K], counts [K])``, see the module docstring.
    """
    x = np.asarray(fields, dtype=np.float64)
    if x.ndim < 2:
        raise UserError(f"power spectrum: fields must be [..., H, W], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise UserError("power spectrum: fields contain NaN or inf; fill masked pixels first")
    h, w = x.shape[-2:]
    if window == "hann":
        x = x * _hann2d(h, w)
    elif window != "none":
        raise UserError(f"power spectrum: window must be 'none' or 'hann', got {window!r}")
    index, freq = radial_bin_index(h, w)
    density = np.abs(np.fft.fft2(x)) ** 2 / (h * w)  # [..., H, W]
    lead = density.shape[:-2]
    flat = density.reshape(-1, h * w)
    if mean:
        flat = flat.mean(axis=0, keepdims=True)
    n_bins = freq.size
    counts = np.bincount(index.ravel(), minlength=n_bins)
    sums = np.stack([np.bincount(index.ravel(), weights=row, minlength=n_bins) for row in flat])
    # Bins k <= floor(L/2) are never empty (the kx or ky axis alone hits them); a corner bin
    # could be for very elongated fields: NaN there.
    power = np.divide(sums, counts, out=np.full_like(sums, np.nan), where=counts > 0)
    keep = n_bins if full else min(h, w) // 2 + 1
    power = power[:, :keep]
    power = power[0] if mean else power.reshape(*lead, keep)
    return Spectrum(freq[:keep], power, counts[:keep])


def nu_max(freq: np.ndarray) -> float:
    """Largest resolved radial frequency: the largest bin centre not above 0.5 cycles/spacing."""
    f = np.asarray(freq, dtype=np.float64)
    return float(f[f <= 0.5 + 1e-12].max())


def log_spectral_distance(
    power_pred: np.ndarray,
    power_true: np.ndarray,
    freq: np.ndarray,
    *,
    band: str = "all",
    scale_factor: int | None = None,
) -> float:
    """LSD in dB between two radial spectra ``[K]`` on the same bins ``freq [K]``.

    ``band="all"``: bins with 0 < ν ≤ ν_max; ``band="high"``: ν_max / 2 ≤ ν ≤ ν_max
    (``nu_max(freq)``); ``band="above_lr"``: ``core.loss.lr_nyquist(scale_factor)`` < ν ≤ ν_max
    (needs ``scale_factor``, an integer >= 1). Powers are floored at 1e-12 × the truth's
    largest power in the band.
    """
    f = np.asarray(freq, dtype=np.float64)
    p_pred = np.asarray(power_pred, dtype=np.float64)
    p_true = np.asarray(power_true, dtype=np.float64)
    if not (p_pred.shape == p_true.shape == f.shape):
        raise UserError(
            f"log-spectral distance: spectra and freq must have the same shape, got "
            f"{p_pred.shape}, {p_true.shape}, {f.shape}"
        )
    top = nu_max(f)
    if band == "above_lr":
        if scale_factor is None:
            raise UserError("log-spectral distance: band 'above_lr' needs the scale factor")
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, int | np.integer) or (
                scale_factor < 1):
            raise UserError(f"log-spectral distance: scale factor must be an integer >= 1, got "
                            f"{scale_factor!r}")
        from weather_sr.core.loss import lr_nyquist  # the one definition, shared with the loss

        sel = (f <= top + 1e-12) & (f > lr_nyquist(int(scale_factor)) + 1e-12)
    else:
        lower = {"all": 0.0, "high": top / 2.0}.get(band)
        if lower is None:
            raise UserError(
                f"log-spectral distance: band must be 'all', 'high' or 'above_lr', got {band!r}")
        sel = (f <= top + 1e-12) & (f >= lower - 1e-12) & (f > 0)
    if not np.any(sel):
        raise UserError("log-spectral distance: no frequency bin in the band; fields too small")
    floor = _LSD_FLOOR * max(float(p_true[sel].max()), np.finfo(np.float64).tiny)
    db = 10.0 * np.log10(np.maximum(p_pred[sel], floor) / np.maximum(p_true[sel], floor))
    return float(np.sqrt(np.mean(db**2)))
