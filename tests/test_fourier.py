"""F_R against the explicit matrix built row by row from docs/method.md §2, and its identities."""

from __future__ import annotations

import math

import pytest
import torch

from weather_sr.core.fourier import (
    inverse_real_fourier,
    inverse_real_fourier2,
    radial_frequency,
    real_fourier,
    real_fourier2,
    wavenumbers,
)

SIZES = [*range(1, 18), 64]


def explicit_matrix(n: int) -> torch.Tensor:
    """Rows: DC; for k = 1..n//2 the cos(-2 pi k m / n) row then the sin row (no sin at Nyquist)."""
    m = torch.arange(n, dtype=torch.float64)
    rows = [torch.full((n,), 1.0 / math.sqrt(n), dtype=torch.float64)]
    for k in range(1, n // 2 + 1):
        angle = -2.0 * math.pi * k * m / n
        if 2 * k == n:
            rows.append(torch.cos(angle) / math.sqrt(n))
        else:
            rows.append(torch.cos(angle) * math.sqrt(2.0 / n))
            rows.append(torch.sin(angle) * math.sqrt(2.0 / n))
    return torch.stack(rows)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("n", SIZES)
def test_matches_explicit_matrix(n: int) -> None:
    f = explicit_matrix(n)
    x = torch.randn(3, 2, n, generator=_gen(n), dtype=torch.float64)
    torch.testing.assert_close(real_fourier(x), x @ f.T, atol=1e-12, rtol=0)
    torch.testing.assert_close(inverse_real_fourier(x), x @ f, atol=1e-12, rtol=0)
    # along another dim, leading and trailing dims passed through
    z = torch.randn(2, n, 3, generator=_gen(n + 100), dtype=torch.float64)
    torch.testing.assert_close(real_fourier(z, dim=1), torch.einsum("kn,bnc->bkc", f, z))
    torch.testing.assert_close(inverse_real_fourier(z, dim=-2), torch.einsum("nk,bnc->bkc", f, z))


@pytest.mark.parametrize("n", SIZES)
def test_matrix_orthogonal_and_operator_identities(n: int) -> None:
    f = explicit_matrix(n)
    torch.testing.assert_close(f @ f.T, torch.eye(n, dtype=torch.float64), atol=1e-12, rtol=0)
    x = torch.randn(4, n, generator=_gen(n), dtype=torch.float64)
    c = real_fourier(x)
    torch.testing.assert_close(inverse_real_fourier(c), x, atol=1e-12, rtol=0)  # round trip
    torch.testing.assert_close(c.norm(dim=-1), x.norm(dim=-1))  # Parseval
    # the operator's own matrix (applied to the identity) is orthogonal
    op = real_fourier(torch.eye(n, dtype=torch.float64), dim=0)
    torch.testing.assert_close(op.T @ op, torch.eye(n, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize(("h", "w"), [(1, 1), (1, 5), (2, 3), (5, 6), (8, 8), (7, 16), (17, 4)])
def test_2d_matches_explicit_product(h: int, w: int) -> None:
    fh, fw = explicit_matrix(h), explicit_matrix(w)
    x = torch.randn(2, 3, h, w, generator=_gen(h * 31 + w), dtype=torch.float64)
    torch.testing.assert_close(real_fourier2(x), fh @ x @ fw.T, atol=1e-12, rtol=0)
    torch.testing.assert_close(inverse_real_fourier2(x), fh.T @ x @ fw, atol=1e-12, rtol=0)
    torch.testing.assert_close(inverse_real_fourier2(real_fourier2(x)), x, atol=1e-12, rtol=0)
    c = real_fourier2(x)
    torch.testing.assert_close(c.square().sum((-2, -1)), x.square().sum((-2, -1)))


def test_float32_close_to_float64_and_keeps_dtype() -> None:
    x = torch.randn(2, 1, 32, 48, generator=_gen(), dtype=torch.float64)
    for fn in (real_fourier2, inverse_real_fourier2, real_fourier, inverse_real_fourier):
        out32 = fn(x.float())
        assert out32.dtype == torch.float32
        torch.testing.assert_close(out32.double(), fn(x), atol=1e-5, rtol=0)


def test_standard_normal_maps_to_standard_normal() -> None:
    """F_R eps ~ N(0, I): per-coefficient mean 0, variance 1 and no correlation between rows."""
    n_samples, n = 20000, 12
    eps = torch.randn(n_samples, n, generator=_gen(7), dtype=torch.float64)
    c = real_fourier(eps)
    se = 1.0 / math.sqrt(n_samples)
    assert c.mean(0).abs().max() < 5 * se
    cov = c.T @ c / n_samples
    # Var of a sample variance/covariance of N(0,1) data is ~2/N resp. 1/N.
    assert (cov.diagonal() - 1).abs().max() < 5 * math.sqrt(2.0) * se
    off = cov - torch.diag(cov.diagonal())
    assert off.abs().max() < 5 * se
    # and in 2-D, pooled over coefficients
    e2 = torch.randn(2000, 8, 10, generator=_gen(8), dtype=torch.float64)
    c2 = real_fourier2(e2)
    assert abs(c2.mean().item()) < 5 / math.sqrt(c2.numel())
    assert abs(c2.var().item() - 1) < 5 * math.sqrt(2.0 / c2.numel())


@pytest.mark.parametrize("n", [15, 16])
def test_planted_waves_land_on_the_right_coefficient(n: int) -> None:
    m = torch.arange(n, dtype=torch.float64)
    k = 3
    theta = 2 * math.pi * k * m / n
    # cos(-theta) = cos(theta) is the cos row; sin(-theta) = -sin(theta) is the sin row (the
    # founding derivation's signs)
    c_cos = real_fourier(torch.cos(theta))
    c_sin = real_fourier(torch.sin(theta))
    expected = math.sqrt(n / 2)  # <row, row> / ||row|| with rows of norm 1 and amplitude sqrt(n/2)
    assert c_cos[2 * k - 1].item() == pytest.approx(expected)
    assert c_sin[2 * k].item() == pytest.approx(-expected)
    for c, idx in ((c_cos, 2 * k - 1), (c_sin, 2 * k)):
        rest = torch.cat([c[:idx], c[idx + 1 :]])
        assert rest.abs().max() < 1e-12
    if n % 2 == 0:  # the Nyquist wave (-1)^m has only a cos row, the last one
        c_nyq = real_fourier(torch.cos(math.pi * m))
        assert c_nyq[-1].item() == pytest.approx(math.sqrt(n))
        assert c_nyq[:-1].abs().max() < 1e-12
    assert wavenumbers(n)[2 * k - 1] == k and wavenumbers(n)[2 * k] == k


def test_gradients() -> None:
    for shape in [(2, 5, 6), (1, 4, 7), (3, 2, 2), (1, 1, 3)]:
        x = torch.randn(*shape, generator=_gen(), dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(real_fourier2, (x,))
        assert torch.autograd.gradcheck(inverse_real_fourier2, (x,))
        assert torch.autograd.gradcheck(lambda a: real_fourier(a, dim=1), (x,))
        assert torch.autograd.gradcheck(lambda a: inverse_real_fourier(a, dim=-1), (x,))
        assert torch.autograd.gradgradcheck(real_fourier2, (x,))


def test_wavenumbers_and_radial_frequency() -> None:
    assert wavenumbers(1).tolist() == [0]
    assert wavenumbers(6).tolist() == [0, 1, 1, 2, 2, 3]
    assert wavenumbers(7).tolist() == [0, 1, 1, 2, 2, 3, 3]
    assert wavenumbers(6).dtype == torch.long
    nu = radial_frequency(4, 6)
    assert nu.shape == (4, 6) and nu.dtype == torch.float64
    assert nu[0, 0] == 0
    assert nu[3, 5].item() == pytest.approx(math.sqrt(0.5))  # both Nyquist
    assert nu[1, 0].item() == pytest.approx(0.25) and nu[0, 2].item() == pytest.approx(1 / 6)


def test_non_contiguous_and_empty_inputs() -> None:
    x = torch.randn(2, 3, 8, 6, generator=_gen(4), dtype=torch.float64)
    xt = x.transpose(-1, -2)
    torch.testing.assert_close(real_fourier2(xt), real_fourier2(xt.contiguous()))
    torch.testing.assert_close(inverse_real_fourier2(xt), inverse_real_fourier2(xt.contiguous()))
    torch.testing.assert_close(real_fourier(x[..., ::2]), real_fourier(x[..., ::2].contiguous()))
    for fn in (real_fourier, inverse_real_fourier, real_fourier2, inverse_real_fourier2):
        assert fn(torch.zeros(0, 1, 8, 8)).shape == (0, 1, 8, 8)
