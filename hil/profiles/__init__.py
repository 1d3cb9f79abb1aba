"""Scenario profiles stored as CSV: ``load_profile(name) -> (t_s, columns)`` and interpolation.

Files (first line ``# units``, second line the column names, first column ``t_s``):

* ``drive_cycle``: ``current_a`` (A), ``ambient_k`` (K), ``speed_m_s`` (m/s), 1 s, 30 min;
* ``gpu_power``: ``chip_power_w`` (W), 0.1 s, 20 min;
* ``heatpump_demand``: ``capacity_w`` (W), ``source_k`` (K), 10 s, 2 h.

Regenerate with ``python -m thermopilot.hil.profiles.make_profiles`` (deterministic).
"""

import os

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
PROFILES = ("drive_cycle", "gpu_power", "heatpump_demand")


def load_profile(name):
    """Load profile ``name``.

    Returns
    -------
    t_s : numpy.ndarray
        Sample times, s, strictly increasing.
    columns : dict of str -> numpy.ndarray
        The other columns by name (units in the name).
    """
    if name not in PROFILES:
        raise ValueError("unknown profile %r; expected one of: %s" % (name, ", ".join(PROFILES)))
    path = os.path.join(_HERE, name + ".csv")
    with open(path) as fh:
        fh.readline()
        header = fh.readline().strip().split(",")
        data = np.loadtxt(fh, delimiter=",", ndmin=2)
    t = data[:, 0]
    return t, {h: data[:, i] for i, h in enumerate(header) if i > 0}


def interpolate(t_s, values, at_s):
    """Linear interpolation of ``values`` sampled at ``t_s`` at time(s) ``at_s``; held constant
    outside the profile. Returns a float for a scalar ``at_s``."""
    out = np.interp(at_s, t_s, values)
    return float(out) if np.ndim(out) == 0 else out


class ProfileInput:
    """Callable ``f(t_s) -> dict`` giving the profile's columns at ``t_s`` (for scenarios)."""

    def __init__(self, name, rename=None):
        self.t_s, self.columns = load_profile(name)
        self.rename = dict(rename or {})

    def __call__(self, t_s):
        return {
            self.rename.get(k, k): interpolate(self.t_s, v, t_s) for k, v in self.columns.items()
        }
