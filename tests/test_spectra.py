"""Radial PSD and log-spectral distance against closed forms and an independent implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weather_sr.errors import UserError
from weather_sr.evaluation import spectra


@pytest.mark.parametrize("h, w, ky, kx", [(32, 32, 3, 4), (24, 40, 5, 0), (24, 40, -2, 7)])
def test_sinusoid_puts_its_power_in_its_bin(h, w, ky, kx):
    m, n = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    amp = 2.5
    x = amp * np.cos(2 * np.pi * (ky * m / h + kx * n / w) + 0.4)
    spec = spectra.radial_psd(x, full=True)
    nu = np.hypot(ky / h, kx / w)
    k = int(np.rint(nu * min(h, w)))
    assert spec.freq[k] == pytest.approx(k / min(h, w))
    # two DFT coefficients (±k) of |X|² = (amp·H·W/2)², density |X|²/(HW), averaged over the bin
    expected = 2 * (amp * h * w / 2) ** 2 / (h * w) / spec.counts[k]
    assert spec.power[k] == pytest.approx(expected, rel=1e-10)
    others = np.delete(spec.power, k)
    assert np.all(others < 1e-18 * expected)


@pytest.mark.parametrize("h, w", [(16, 16), (12, 20), (9, 14)])
def test_parseval_sum_of_psd_is_mean_square(h, w):
    x = np.random.default_rng(0).normal(size=(3, h, w)) + 1.5
    spec = spectra.radial_psd(x, full=True, mean=False)
    assert spec.counts.sum() == h * w
    total = (spec.power * spec.counts).sum(axis=-1) / (h * w)
    np.testing.assert_allclose(total, np.mean(x**2, axis=(-2, -1)), rtol=1e-12)
    # mean=True averages the per-field spectra
    np.testing.assert_allclose(spectra.radial_psd(x, full=True).power, spec.power.mean(0))


def test_white_noise_is_flat_at_its_variance_and_bins_are_documented():
    x = np.random.default_rng(1).normal(scale=2.0, size=(64, 48, 40))
    spec = spectra.radial_psd(x)
    np.testing.assert_allclose(spec.freq, np.arange(21) / 40)
    assert spectra.nu_max(spec.freq) == 0.5
    np.testing.assert_allclose(spec.power[1:], 4.0, rtol=0.1)  # E|X|²/(HW) = σ²
    hann = spectra.radial_psd(x, window="hann")
    assert np.mean(hann.power[1:]) == pytest.approx(4.0, rel=0.05)


def _psd_from_real_fourier(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An independent route to the radial PSD: the squared orthonormal F_R coefficients
    (``core.fourier.real_fourier2``), binned by ``round(nu * min(H, W))`` with nu from
    ``core.fourier.radial_frequency``, bins 0..min(H, W)//2, mean per bin."""
    from weather_sr.core.fourier import radial_frequency, real_fourier2

    h, w = x.shape[-2:]
    n = min(h, w)
    bins = torch.round(radial_frequency(h, w) * n).long().flatten()
    nbins = n // 2 + 1
    keep = (bins < nbins).nonzero().squeeze(-1)
    power = real_fourier2(x).flatten(-2).square().index_select(-1, keep)
    sums = power.new_zeros((*power.shape[:-1], nbins)).index_add(-1, bins[keep], power)
    counts = torch.bincount(bins[keep], minlength=nbins).to(x.dtype)
    return torch.arange(nbins, dtype=torch.float64) / n, sums / counts


def test_matches_the_real_fourier_route():
    x = np.random.default_rng(2).normal(size=(2, 20, 28))
    freq_t, power_t = _psd_from_real_fourier(torch.as_tensor(x))
    spec = spectra.radial_psd(x, mean=False)
    np.testing.assert_allclose(spec.freq, freq_t.numpy())
    np.testing.assert_allclose(spec.power, power_t.numpy(), rtol=1e-10)


def test_log_spectral_distance_closed_forms_and_reference():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 32, 32))
    spec = spectra.radial_psd(x)
    for band in ("all", "high"):
        assert spectra.log_spectral_distance(spec.power, spec.power, spec.freq, band=band) == 0.0
        for a in (0.5, 3.0):
            scaled = spectra.radial_psd(a * x).power
            lsd = spectra.log_spectral_distance(scaled, spec.power, spec.freq, band=band)
            assert lsd == pytest.approx(abs(20 * np.log10(a)), rel=1e-10)
    other = spectra.radial_psd(rng.normal(size=(4, 32, 32)) * np.linspace(1, 2, 32)).power
    for band, lo in (("all", 1), ("high", 8)):  # ν_max = 16/32: high band is bins 8..16
        sq = [(10 * np.log10(other[k] / spec.power[k])) ** 2 for k in range(lo, 17)]
        ref = np.sqrt(sum(sq) / len(sq))
        got = spectra.log_spectral_distance(other, spec.power, spec.freq, band=band)
        assert got == pytest.approx(ref, rel=1e-12)


def test_bad_input_raises_user_error():
    with pytest.raises(UserError, match="NaN"):
        spectra.radial_psd(np.full((4, 4), np.nan))
    with pytest.raises(UserError, match="window"):
        spectra.radial_psd(np.zeros((4, 4)), window="kaiser")
    with pytest.raises(UserError, match="band"):
        spectra.log_spectral_distance(np.ones(3), np.ones(3), np.arange(3) / 4, band="low")


@pytest.mark.parametrize("h, w, s", [(32, 32, 4), (24, 40, 2), (30, 60, 3)])
def test_lsd_above_lr_nyquist_brute_force(h, w, s):
    """band='above_lr' against a brute-force loop over every DFT coefficient: its radial
    frequency, bin round(ν L) (half to even), kept when 0.5 / s < ν_k ≤ ν_max, per-bin mean
    power, dB."""
    rng = np.random.default_rng(4)
    truth = rng.normal(size=(3, h, w))
    pred = rng.normal(size=(3, h, w)) * np.linspace(0.5, 2.0, w)
    length = min(h, w)
    sums: dict[int, list[float]] = {}
    for fields, slot in ((truth, 0), (pred, 1)):
        dft = np.fft.fft2(fields)
        for m in range(h):
            for n in range(w):
                ky = m if m <= h // 2 else m - h  # signed wavenumbers (np.fft.fftfreq)
                kx = n if n <= w // 2 else n - w
                nu = np.sqrt((ky / h) ** 2 + (kx / w) ** 2)
                k = round(nu * length)  # half to even, as np.rint (e.g. 2.5 -> 2)
                entry = sums.setdefault(k, [0.0, 0.0, 0])
                entry[slot] += float(np.mean(np.abs(dft[:, m, n]) ** 2) / (h * w))
                entry[2] += slot == 0
    top = (length // 2) / length
    cut = 0.5 / s
    sq = [(10 * np.log10(p / t)) ** 2 for k, (t, p, _) in sums.items()
          if cut + 1e-12 < k / length <= top + 1e-12]
    expected = np.sqrt(np.mean(sq))
    st, sp = spectra.radial_psd(truth), spectra.radial_psd(pred)
    got = spectra.log_spectral_distance(sp.power, st.power, st.freq, band="above_lr",
                                        scale_factor=s)
    assert got == pytest.approx(expected, rel=1e-10)
    from weather_sr.core.loss import lr_nyquist  # the cut-off the band uses

    assert lr_nyquist(s) == cut
    # s = 1: the LR grid resolves everything up to 0.5: no bin left
    with pytest.raises(UserError, match="no frequency bin"):
        spectra.log_spectral_distance(sp.power, st.power, st.freq, band="above_lr",
                                      scale_factor=1)
    with pytest.raises(UserError, match="needs the scale factor"):
        spectra.log_spectral_distance(sp.power, st.power, st.freq, band="above_lr")
    with pytest.raises(UserError, match="integer >= 1"):
        spectra.log_spectral_distance(sp.power, st.power, st.freq, band="above_lr",
                                      scale_factor=0)


def test_evaluate_method_scores_lsd_above_lr():
    from weather_sr.evaluation.accumulate import evaluate_method

    rng = np.random.default_rng(5)
    truth = rng.normal(size=(2, 1, 16, 16))
    ens = truth[:, None] + 0.3 * rng.normal(size=(2, 3, 1, 16, 16))
    plain = evaluate_method(truth, ens)
    assert "member_lsd_above_lr" not in plain["mean"]
    out = evaluate_method(truth, ens, scale_factor=4)
    psd = out["psd"]
    ref = spectra.log_spectral_distance(np.array(psd["member"]["channel_0"]),
                                        np.array(psd["truth"]["channel_0"]),
                                        np.array(psd["freq"]["channel_0"]), band="above_lr",
                                        scale_factor=4)
    assert out["mean"]["member_lsd_above_lr"] == pytest.approx(ref)
    assert out["mean"]["lsd_above_lr"] > 0
    assert out["mean"]["member_lsd"] == plain["mean"]["member_lsd"]
