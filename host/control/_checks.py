"""Argument checks shared by the control modules: clear errors naming the value."""

import math

import numpy as np

NO_LIMIT = 1e30  # "no limit" as float32 on the board


def finite(name, value):
    """``value`` as a float; ValueError naming it unless it is finite."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError("%s must be a finite number, got %r" % (name, value)) from None
    if not math.isfinite(x):
        raise ValueError("%s must be a finite number, got %r" % (name, value))
    return x


def matrix(name, value, shape):
    """A finite float matrix of exactly ``shape`` (scalars and rows are reshaped)."""
    try:
        a = np.array(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError("%s must be a numeric matrix: %s" % (name, exc)) from None
    if a.ndim == 0 and shape == (1, 1):
        a = a.reshape(1, 1)
    if a.ndim == 1 and shape[0] == 1 and a.shape[0] == shape[1]:
        a = a.reshape(1, -1)
    if a.shape != shape:
        raise ValueError("%s has shape %s, expected %s" % (name, a.shape, shape))
    if not np.all(np.isfinite(a)):
        raise ValueError("%s has non-finite entries" % name)
    if np.any(np.abs(a) >= NO_LIMIT):
        raise ValueError("%s has entries beyond float32 range (|x| >= 1e30)" % name)
    return a


def vector(name, value, n, default):
    """A length-``n`` vector (a scalar is repeated); infinities become +-1e30."""
    if value is None:
        return np.full(n, float(default)).clip(-NO_LIMIT, NO_LIMIT)
    a = np.array(value, dtype=float).reshape(-1)
    if a.size == 1 and n != 1:
        a = np.full(n, float(a[0]))
    if a.shape != (n,):
        raise ValueError("%s has %d entries, expected %d" % (name, a.size, n))
    if np.any(np.isnan(a)):
        raise ValueError("%s has NaN entries" % name)
    return np.clip(a, -NO_LIMIT, NO_LIMIT)


def sym_psd(name, a, definite=False):
    """ValueError unless ``a`` is symmetric positive (semi)definite."""
    if not np.allclose(a, a.T, rtol=1e-9, atol=1e-12):
        raise ValueError("%s must be symmetric" % name)
    if a.size == 0:
        return
    ev = np.linalg.eigvalsh(a)
    if definite and ev.min() <= 0.0:
        raise ValueError(
            "%s must be positive definite (smallest eigenvalue %g)" % (name, ev.min())
        )
    if ev.min() < -1e-9 * max(1.0, abs(ev.max())):
        raise ValueError(
            "%s must be positive semidefinite (smallest eigenvalue %g)" % (name, ev.min())
        )
