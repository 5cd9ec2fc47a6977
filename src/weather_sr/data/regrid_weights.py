"""Bilinear and nearest regridding as a sparse weight matrix, computed once per pair of grids.

The source is a grid with 1-D axes (latitude/longitude in degrees, or projected y/x), the
targets any points in the same coordinates: the outer product of 1-D axes, or the 2-D
latitude/longitude of a projected, rotated-pole or curvilinear grid. The weights are those of
scipy's ``RegularGridInterpolator`` ("linear", "nearest") on the source axes, so a target
equals scipy's value at its point (tests/test_data_regrid.py, to 1e-12), with the geometry rules
of :mod:`weather_sr.data.regrid` (periodic seam, extent, clamping, missing values).

Why not pyresample's bilinear: it interpolates in the plane of the *target's* projection (it
needs one), another definition than bilinear interpolation on the latitude/longitude axes of
the predictors, which is the usual convention for a regular source (CDO's ``remapbil``) and
needs no projection for 2-D latitude/longitude targets.

A :class:`RegridWeights` is applied to whole fields, or to a window of the targets
(:meth:`RegridWeights.window`), reading only the source box that window needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

WEIGHT_METHODS = ("bilinear", "nearest")  # the methods with a sparse weight matrix


@dataclass(frozen=True)
class RegridWeights:
    """``matrix`` [n_targets, h * w] (CSR, no explicit zeros) from a source field [h, w] in its
    stored order to the targets, raveled from ``target_shape``."""

    matrix: sparse.csr_matrix
    source_shape: tuple[int, int]
    target_shape: tuple[int, ...]

    def apply(self, values: np.ndarray) -> np.ndarray:
        """``values`` [..., h, w] -> [..., *target_shape] (float64). A target is NaN where a
        missing source value has a nonzero weight (the missing values spread no farther)."""
        lead = values.shape[:-2]
        a = np.asarray(values, np.float64).reshape(-1, values.shape[-2] * values.shape[-1]).T
        out = _apply(self.matrix, a)
        return out.T.reshape(*lead, *self.target_shape)

    def window(self, ys: slice, xs: slice) -> tuple[sparse.csr_matrix, slice, slice]:
        """The weights of the target window (``ys``, ``xs``) of 2-D targets: (matrix
        [window size, box size], source rows, source columns): the box of the source the
        window reads, whose raveled values the matrix applies to (:func:`apply_box`)."""
        H, W = self.target_shape
        rows = (np.arange(H)[ys, None] * W + np.arange(W)[None, xs]).ravel()
        sub = self.matrix[rows]
        w = self.source_shape[1]
        sy, sx = np.divmod(sub.indices, w)
        if sub.nnz == 0:
            return sub, slice(0, 0), slice(0, 0)
        by = slice(int(sy.min()), int(sy.max()) + 1)
        bx = slice(int(sx.min()), int(sx.max()) + 1)
        local = (sy - by.start) * (bx.stop - bx.start) + (sx - bx.start)
        box = sparse.csr_matrix((sub.data, local, sub.indptr),
                                shape=(sub.shape[0], (by.stop - by.start) * (bx.stop - bx.start)))
        return box, by, bx


def apply_box(matrix: sparse.csr_matrix, box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A window's ``matrix`` (:meth:`RegridWeights.window`) applied to the source ``box``
    [C, by, bx]: [C, *shape] float64, NaN as :meth:`RegridWeights.apply`."""
    a = np.asarray(box, np.float64).reshape(box.shape[0], -1).T
    return _apply(matrix, a).T.reshape(box.shape[0], *shape)


def _apply(matrix: sparse.csr_matrix, a: np.ndarray) -> np.ndarray:
    """``matrix`` [n, m] @ ``a`` [m, F] with NaN where a missing value has a nonzero weight."""
    missing = np.isnan(a)
    out = matrix @ np.where(missing, 0.0, a)
    if missing.any():
        hit = (abs(matrix) @ missing.astype(np.float64)) > 0
        out[hit] = np.nan
    return out


def axis_weights(coords: np.ndarray, targets: np.ndarray, method: str, periodic: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per target, the source indices [n, k] and weights [n, k] along one axis.

    ``coords``: the source centres, increasing (periodic: degrees in [0, 360)); ``targets``
    inside them (clamped by the caller; periodic: anywhere, taken modulo 360). Linear: the
    interval's two ends (k = 2); nearest: the nearer end, ties to the lower (k = 1), as scipy.
    """
    c = np.asarray(coords, np.float64)
    t = np.asarray(targets, np.float64)
    n = c.size
    if periodic:  # one more interval, across the seam: [c[-1] - 360, c[0]] and [c[-1], c[0] + 360]
        t = np.mod(t, 360.0)
        c = np.concatenate([[c[-1] - 360.0], c, [c[0] + 360.0]])
        index = np.concatenate([[n - 1], np.arange(n), [0]])
    else:
        index = np.arange(n)
    if c.size == 1:  # one point (periodic input of one column is caught by the caller)
        return np.zeros((t.size, 1), np.int64), np.ones((t.size, 1))
    i = np.clip(np.searchsorted(c, t, side="right") - 1, 0, c.size - 2)
    f = (t - c[i]) / (c[i + 1] - c[i])
    if method == "nearest":
        pick = np.where(f <= 0.5, i, i + 1)
        return index[pick][:, None], np.ones((t.size, 1))
    return np.stack([index[i], index[i + 1]], 1), np.stack([1.0 - f, f], 1)


def point_weights(
    sorted_y: tuple[np.ndarray, np.ndarray], sorted_x: tuple[np.ndarray, np.ndarray],
    ty: np.ndarray, tx: np.ndarray, method: str, periodic: bool,
    source_shape: tuple[int, int],
) -> RegridWeights:
    """Weights from a source with axes ``sorted_y`` = (increasing centres, the stored index of
    each) and ``sorted_x`` to the targets ``ty``, ``tx`` (same shape; inside the source, already
    clamped as :mod:`weather_sr.data.regrid` does)."""
    (ys, yorder), (xs, xorder) = sorted_y, sorted_x
    shape = np.shape(ty)
    iy, wy = axis_weights(ys, np.ravel(ty), method, False)
    ix, wx = axis_weights(xs, np.ravel(tx), method, periodic)
    iy, ix = yorder[iy], xorder[ix]  # back to the stored order of the source
    w = source_shape[1]
    cols = (iy[:, :, None] * w + ix[:, None, :]).reshape(iy.shape[0], -1)
    vals = (wy[:, :, None] * wx[:, None, :]).reshape(iy.shape[0], -1)
    n = cols.shape[0]
    matrix = sparse.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, n * cols.shape[1] + 1,
                                                                      cols.shape[1])),
                               shape=(n, source_shape[0] * source_shape[1]))
    matrix.eliminate_zeros()  # a zero weight never makes a target missing
    return RegridWeights(matrix, source_shape, tuple(int(s) for s in shape))
