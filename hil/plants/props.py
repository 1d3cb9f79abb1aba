"""Fast refrigerant properties for the plants: compact tables built once from CoolProp HEOS.

Why our own table and not ``BICUBIC&HEOS``: CoolProp's tabular backends build a ~20 MB table per
fluid on first use (measured 6.5 s for propane, 5.9 s for R1234ze(E) with CoolProp 8.0.0 on this
project's CI-class machine; see docs/benchmarks.md), which a fresh CI machine pays on every run.
The plants only need a few property paths, so :class:`FluidTable` builds three small tables from
HEOS in about a second and keeps them in memory:

* saturation, uniform in ``ln p``: ``T_sat, h_f, h_g, rho_f, rho_g, s_f, s_g`` (linear
  interpolation on 1500 nodes);
* superheated vapour, uniform in ``(ln p, h - h_g(p))``: ``T, rho, s`` (bilinear, 300 x 121 nodes);
* isentropic compression, uniform in ``(ln p, s - s_g(p))``: ``h`` (bilinear, 300 x 121 nodes);
* optionally (``transport=True``, for the chip cooler's boiling correlations) saturated-liquid and
  vapour transport properties ``mu_f, mu_g, k_f, k_g, sigma, cp_f, cp_g`` on 200 nodes in ``ln p``.

Subcooled liquid is approximated as saturated liquid at the same temperature (``h ~ h_f(T)``,
``rho ~ rho_f(T)``), which is the usual incompressible-liquid approximation; its error against HEOS
is checked in ``tests/test_plant_props.py`` and stated in docs/plants.md.

Start-up cost. Importing CoolProp takes 2-4 s per process and building a table about a second, so
neither happens at import time: CoolProp is imported only when a table is built, and
:func:`fluid_table` keeps each built table in a disk cache (``$THERMOPILOT_CACHE_DIR``, else
``$XDG_CACHE_HOME/thermopilot``, else ``~/.cache/thermopilot``) keyed by fluid, range, table
layout and the installed CoolProp version, so a later process loads it in milliseconds without
importing CoolProp. A cache that cannot be read or written is ignored (the table is rebuilt).

All inputs and outputs are SI: pressure in Pa, temperature in K, enthalpy in J/kg, entropy in
J/(kg K), density in kg/m^3, viscosity in Pa s, conductivity in W/(m K), surface tension in N/m.
"""

import hashlib
import math
import os
import sys
from functools import lru_cache

_N_SAT = 1500
_N_P = 300
_N_X = 121
_N_T = 60
_N_TR = 200
_T_SPAN_VAP = 200.0  # K above saturation covered by the PT rows
_T_SPAN_LIQ = 75.0  # K below saturation covered by the PT rows
_LAYOUT = 2  # bump when the table layout or its construction changes (invalidates the cache)


def _coolprop():
    import CoolProp  # noqa: PLC0415 - deliberately lazy: 2-4 s per process

    return CoolProp


class FluidTable:
    """Tabulated properties of one pure fluid between ``p_min_pa`` and ``p_max_pa``.

    Parameters
    ----------
    fluid : str
        CoolProp fluid name, e.g. ``"Propane"`` or ``"R1234ze(E)"``.
    p_min_pa, p_max_pa : float
        Pressure range of the tables, Pa. ``p_max_pa`` must stay below 0.95 of the critical
        pressure (the tables are not meant for the near-critical region).
    dh_max_j_kg : float
        Largest vapour superheat covered, as enthalpy above saturated vapour, J/kg; the liquid
        table covers ``0.45 * dh_max_j_kg`` below saturated liquid (beyond both ends the
        tables extrapolate linearly).
    """

    def __init__(self, fluid, p_min_pa, p_max_pa, dh_max_j_kg=250e3, transport=False, _data=None):
        self.fluid = fluid
        self.p_min_pa = p_min_pa
        self.p_max_pa = p_max_pa
        self._heos = None
        self._dh_liq_max = 0.45 * dh_max_j_kg  # J/kg below h_f covered by the liquid table
        self._lnp0 = math.log(p_min_pa)
        self.has_transport = bool(transport)
        if _data is not None:
            self._load(_data)
            return
        cp = _coolprop()
        try:
            heos = cp.AbstractState("HEOS", fluid)
        except ValueError as e:
            raise ValueError("unknown CoolProp fluid %r (%s)" % (fluid, e)) from None
        self.p_crit_pa = heos.p_critical()
        self.t_crit_k = heos.T_critical()
        if not 0 < p_min_pa < p_max_pa <= 0.95 * self.p_crit_pa:
            raise ValueError(
                "table range %g..%g Pa invalid for %s; expected 0 < p_min < p_max <= %g Pa"
                % (p_min_pa, p_max_pa, fluid, 0.95 * self.p_crit_pa)
            )
        self._heos = heos
        self._build_saturation(heos)
        self._build_vapour(heos, dh_max_j_kg)
        if transport:
            self._build_transport(heos)

    # ------------------------------------------------------------------ build
    def _build_saturation(self, heos):
        import numpy as np  # noqa: PLC0415 - only needed to build

        CoolProp = _coolprop()
        lnp = np.linspace(self._lnp0, math.log(self.p_max_pa), _N_SAT)
        cols = np.empty((_N_SAT, 7))
        for i, x in enumerate(lnp):
            p = math.exp(x)
            heos.update(CoolProp.PQ_INPUTS, p, 0.0)
            t, hf, rf, sf = heos.T(), heos.hmass(), heos.rhomass(), heos.smass()
            heos.update(CoolProp.PQ_INPUTS, p, 1.0)
            cols[i] = (t, hf, heos.hmass(), rf, heos.rhomass(), sf, heos.smass())
        self._sat_inv_d = float((_N_SAT - 1) / (lnp[-1] - lnp[0]))
        self._sat = cols.tolist()
        # T_sat -> ln p inverse (monotonic), uniform in T.
        t_grid = np.linspace(cols[0, 0], cols[-1, 0], _N_SAT)
        self._t0 = float(t_grid[0])
        self._t_inv_d = float((_N_SAT - 1) / (t_grid[-1] - t_grid[0]))
        self._lnp_of_t = np.interp(t_grid, cols[:, 0], lnp).tolist()

    def _build_vapour(self, heos, dh_max):
        # Rows are computed with fast PT flashes on a temperature grid (denser near saturation)
        # and resampled with a cubic spline onto a uniform grid in h - h_sat.
        import numpy as np  # noqa: PLC0415 - only needed to build
        from scipy.interpolate import CubicSpline  # noqa: PLC0415

        CoolProp = _coolprop()
        lnp = np.linspace(self._lnp0, math.log(self.p_max_pa), _N_P)
        dh_grid = np.linspace(0.0, dh_max, _N_X)
        dhl_grid = np.linspace(0.0, self._dh_liq_max, _N_X)
        theta = np.linspace(0.0, 1.0, _N_T) ** 1.5
        vap = np.empty((_N_P, _N_X, 3))
        liq = np.empty((_N_P, _N_X, 2))
        rows = []
        for i, x in enumerate(lnp):
            p = math.exp(x)
            heos.update(CoolProp.PQ_INPUTS, p, 1.0)
            hg, sg, tsat = heos.hmass(), heos.smass(), heos.T()
            pts = [(hg, tsat, heos.rhomass(), sg)]
            for th in theta[1:]:
                heos.update(CoolProp.PT_INPUTS, p, tsat + 0.02 + _T_SPAN_VAP * th)
                pts.append((heos.hmass(), heos.T(), heos.rhomass(), heos.smass()))
            a = np.array(pts)
            if a[-1, 0] < hg + dh_max:
                raise ValueError("vapour table of %s too short at %g Pa" % (self.fluid, p))
            spl = CubicSpline(a[:, 0], a[:, 1:])
            vap[i] = spl(hg + dh_grid)
            rows.append((hg, sg, a[:, 0], a[:, 3]))
            heos.update(CoolProp.PQ_INPUTS, p, 0.0)
            hf = heos.hmass()
            pts = [(hf, heos.T(), heos.rhomass())]
            for th in theta[1:]:
                heos.update(CoolProp.PT_INPUTS, p, tsat - 0.02 - _T_SPAN_LIQ * th)
                pts.append((heos.hmass(), heos.T(), heos.rhomass()))
            a = np.array(pts[::-1])
            if a[0, 0] > hf - self._dh_liq_max:
                raise ValueError("liquid table of %s too short at %g Pa" % (self.fluid, p))
            liq[i] = CubicSpline(a[:, 0], a[:, 1:])(hf - dhl_grid)
        ds_max = min(s[-1] - sg for hg, sg, h, s in rows)
        ds_grid = np.linspace(0.0, ds_max, _N_X)
        hs_tab = np.empty((_N_P, _N_X))
        for i, (hg, sg, h_row, s) in enumerate(rows):
            hs_tab[i] = CubicSpline(s, h_row)(sg + ds_grid) - hg
        self._vap_inv_dlnp = float((_N_P - 1) / (lnp[-1] - lnp[0]))
        self._vap_inv_dh = (_N_X - 1) / dh_max
        self._liq_inv_dh = (_N_X - 1) / self._dh_liq_max
        self._vap_inv_ds = float((_N_X - 1) / ds_max)
        self.dh_max_j_kg = float(dh_max)
        self.ds_max_j_kgk = float(ds_max)
        self._vap = [tuple(r) for r in vap.reshape(-1, 3).tolist()]
        self._liq = [tuple(r) for r in liq.reshape(-1, 2).tolist()]
        self._dh_of_ds = hs_tab.ravel().tolist()

    def _build_transport(self, heos):
        import numpy as np  # noqa: PLC0415 - only needed to build

        CoolProp = _coolprop()
        lnp = np.linspace(self._lnp0, math.log(self.p_max_pa), _N_TR)
        rows = []
        for x in lnp:
            p = math.exp(x)
            heos.update(CoolProp.PQ_INPUTS, p, 0.0)
            mu_f, k_f, sigma, cp_f = (
                heos.viscosity(),
                heos.conductivity(),
                heos.surface_tension(),
                heos.cpmass(),
            )
            heos.update(CoolProp.PQ_INPUTS, p, 1.0)
            rows.append((mu_f, heos.viscosity(), k_f, heos.conductivity(), sigma, cp_f,
                         heos.cpmass()))  # fmt: skip
        self._tr_inv_d = float((_N_TR - 1) / (lnp[-1] - lnp[0]))
        self._tr = [tuple(float(v) for v in r) for r in rows]

    _SCALARS = (
        "p_crit_pa", "t_crit_k", "_sat_inv_d", "_t0", "_t_inv_d", "_vap_inv_dlnp",
        "_vap_inv_dh", "_liq_inv_dh", "_vap_inv_ds", "dh_max_j_kg", "ds_max_j_kgk",
    )  # fmt: skip
    # (attribute, row width; 0 = flat list of floats)
    _ARRAYS = (("_sat", 7), ("_lnp_of_t", 0), ("_vap", 3), ("_liq", 2), ("_dh_of_ds", 0))

    def _arrays(self):
        arrays = list(self._ARRAYS)
        if self.has_transport:
            arrays.append(("_tr", 7))
        return arrays

    def _dump(self):
        """The table as ``(header dict, flat list of floats)`` (what the disk cache stores)."""
        head = {k: float(getattr(self, k)) for k in self._SCALARS}
        if self.has_transport:
            head["_tr_inv_d"] = float(self._tr_inv_d)
        flat = []
        sizes = []
        for name, width in self._arrays():
            rows = getattr(self, name)
            sizes.append(len(rows))
            if width:
                for r in rows:
                    flat.extend(r)
            else:
                flat.extend(rows)
        head["sizes"] = sizes
        return head, flat

    def _load(self, data):
        head, flat = data
        for k in self._SCALARS:
            setattr(self, k, float(head[k]))
        if self.has_transport:
            self._tr_inv_d = float(head["_tr_inv_d"])
        expected = {"_sat": _N_SAT, "_lnp_of_t": _N_SAT, "_vap": _N_P * _N_X,
                    "_liq": _N_P * _N_X, "_dh_of_ds": _N_P * _N_X, "_tr": _N_TR}  # fmt: skip
        pos = 0
        for (name, width), n in zip(self._arrays(), head["sizes"], strict=True):
            if n != expected[name]:
                raise ValueError(
                    "cached table %s has %d rows, expected %d" % (name, n, expected[name])
                )
            if width:
                seg = flat[pos : pos + n * width]
                rows = [tuple(seg[i : i + width]) for i in range(0, n * width, width)]
                if name == "_sat":
                    rows = [list(r) for r in rows]
                pos += n * width
            else:
                rows = list(flat[pos : pos + n])
                pos += n
            setattr(self, name, rows)
        if pos != len(flat):
            raise ValueError("cached table has %d values, expected %d" % (len(flat), pos))

    # --------------------------------------------------------------- queries
    def _sat_u(self, p_pa):
        if not self.p_min_pa <= p_pa <= self.p_max_pa:
            raise ValueError(
                "%s pressure %g Pa outside table range %g..%g Pa"
                % (self.fluid, p_pa, self.p_min_pa, self.p_max_pa)
            )
        return math.log(p_pa) - self._lnp0

    def sat(self, p_pa):
        """Saturation state at ``p_pa``.

        Returns
        -------
        tuple of float
            ``(t_sat_k, h_f, h_g, rho_f, rho_g, s_f, s_g)`` in K, J/kg, kg/m^3, J/(kg K).
        """
        u = self._sat_u(p_pa) * self._sat_inv_d
        i = int(u)
        if i > _N_SAT - 2:
            i = _N_SAT - 2
        f = u - i
        g = 1.0 - f
        a = self._sat[i]
        b = self._sat[i + 1]
        return (
            g * a[0] + f * b[0],
            g * a[1] + f * b[1],
            g * a[2] + f * b[2],
            g * a[3] + f * b[3],
            g * a[4] + f * b[4],
            g * a[5] + f * b[5],
            g * a[6] + f * b[6],
        )

    def t_sat(self, p_pa):
        """Saturation temperature at ``p_pa``, K."""
        return self.sat(p_pa)[0]

    def dtsat_dp(self, p_pa):
        """Slope of the saturation curve ``dT_sat/dp`` at ``p_pa``, K/Pa."""
        u = self._sat_u(p_pa) * self._sat_inv_d
        i = min(int(u), _N_SAT - 2)
        return (self._sat[i + 1][0] - self._sat[i][0]) * self._sat_inv_d / p_pa

    def transport(self, p_pa):
        """Saturated transport properties at ``p_pa`` (table built with ``transport=True``).

        Returns
        -------
        tuple of float
            ``(mu_f, mu_g, k_f, k_g, sigma, cp_f, cp_g)`` in Pa s, W/(m K), N/m, J/(kg K).
        """
        if not self.has_transport:
            raise ValueError("%s table was built without transport properties" % self.fluid)
        u = self._sat_u(p_pa) * self._tr_inv_d
        i = min(int(u), _N_TR - 2)
        f = u - i
        a, b = self._tr[i], self._tr[i + 1]
        return tuple((1.0 - f) * a[k] + f * b[k] for k in range(7))

    def p_sat(self, t_k):
        """Saturation pressure at ``t_k``, Pa (within the table's temperature range)."""
        u = (t_k - self._t0) * self._t_inv_d
        if not 0.0 <= u <= _N_SAT - 1:
            raise ValueError(
                "%s temperature %g K outside table range %g..%g K"
                % (self.fluid, t_k, self._t0, self._t0 + (_N_SAT - 1) / self._t_inv_d)
            )
        i = min(int(u), _N_SAT - 2)
        f = u - i
        return math.exp((1.0 - f) * self._lnp_of_t[i] + f * self._lnp_of_t[i + 1])

    def ph(self, p_pa, h_j_kg, sat=None):
        """State from pressure and enthalpy.

        Parameters
        ----------
        p_pa, h_j_kg : float
            Pressure (Pa) and specific enthalpy (J/kg).
        sat : tuple, optional
            ``self.sat(p_pa)`` if the caller already has it (saves a lookup).

        Returns
        -------
        tuple of float
            ``(t_k, rho_kg_m3, quality, s_j_kgk)``; quality is clipped to 0 for subcooled liquid
            and to 1 for superheated vapour. For subcooled liquid the entropy returned is
            ``s_f(p)`` (the plants do not use liquid entropy).
        """
        t_sat, hf, hg, rf, rg, sf, sg = sat or self.sat(p_pa)
        if hf < h_j_kg < hg:
            x = (h_j_kg - hf) / (hg - hf)
            return t_sat, 1.0 / ((1.0 - x) / rf + x / rg), x, sf + x * (sg - sf)
        u = (math.log(p_pa) - self._lnp0) * self._vap_inv_dlnp
        i = int(u)
        if i > _N_P - 2:
            i = _N_P - 2
        fp = u - i
        if h_j_kg >= hg:
            xu = (h_j_kg - hg) * self._vap_inv_dh
            j = int(xu)
            if j > _N_X - 2:
                j = _N_X - 2
            fx = xu - j
            k = i * _N_X + j
            tab = self._vap
            a, b, c, d = tab[k], tab[k + 1], tab[k + _N_X], tab[k + _N_X + 1]
            w_a = (1.0 - fp) * (1.0 - fx)
            w_b = (1.0 - fp) * fx
            w_c = fp * (1.0 - fx)
            w_d = fp * fx
            return (
                w_a * a[0] + w_b * b[0] + w_c * c[0] + w_d * d[0],
                w_a * a[1] + w_b * b[1] + w_c * c[1] + w_d * d[1],
                1.0,
                w_a * a[2] + w_b * b[2] + w_c * c[2] + w_d * d[2],
            )
        xu = (hf - h_j_kg) * self._liq_inv_dh
        j = int(xu)
        if j > _N_X - 2:
            j = _N_X - 2
        fx = xu - j
        k = i * _N_X + j
        tab = self._liq
        a, b, c, d = tab[k], tab[k + 1], tab[k + _N_X], tab[k + _N_X + 1]
        w_a = (1.0 - fp) * (1.0 - fx)
        w_b = (1.0 - fp) * fx
        w_c = fp * (1.0 - fx)
        w_d = fp * fx
        return (
            w_a * a[0] + w_b * b[0] + w_c * c[0] + w_d * d[0],
            w_a * a[1] + w_b * b[1] + w_c * c[1] + w_d * d[1],
            0.0,
            sf,
        )

    def h_ps(self, p_pa, s_j_kgk, sat=None):
        """Enthalpy at pressure ``p_pa`` and entropy ``s_j_kgk`` (vapour or two-phase), J/kg."""
        t_sat, hf, hg, rf, rg, sf, sg = sat or self.sat(p_pa)
        if s_j_kgk < sg:
            x = max((s_j_kgk - sf) / (sg - sf), 0.0)
            return hf + x * (hg - hf)
        u = (math.log(p_pa) - self._lnp0) * self._vap_inv_dlnp
        i = min(int(u), _N_P - 2)
        fp = u - i
        xu = min((s_j_kgk - sg) * self._vap_inv_ds, _N_X - 1.0)
        j = min(int(xu), _N_X - 2)
        fx = xu - j
        k = i * _N_X + j
        tab = self._dh_of_ds
        return (
            hg
            + (1.0 - fp) * ((1.0 - fx) * tab[k] + fx * tab[k + 1])
            + fp * ((1.0 - fx) * tab[k + _N_X] + fx * tab[k + _N_X + 1])
        )

    def h_pt(self, p_pa, t_k):
        """Enthalpy at ``(p_pa, t_k)`` of liquid (below saturation) or vapour (above), J/kg.

        Bisection on the table; meant for initial states, not for the time step.
        """
        t_sat, hf, hg = self.sat(p_pa)[:3]
        if t_k >= t_sat:
            lo, hi = hg, hg + self.dh_max_j_kg
        else:
            lo, hi = hf - self._dh_liq_max, hf
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if self.ph(p_pa, mid)[0] < t_k:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    def reference(self):
        """A HEOS ``AbstractState`` of this fluid (for checks and benchmarks; imports CoolProp)."""
        if self._heos is None:
            self._heos = _coolprop().AbstractState("HEOS", self.fluid)
        return self._heos


def cache_dir():
    """Directory of the disk cache of built tables (see the module docstring)."""
    d = os.environ.get("THERMOPILOT_CACHE_DIR")
    if d:
        return d
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "thermopilot")


def _cache_path(fluid, p_min_pa, p_max_pa, dh_max_j_kg, transport):
    try:
        from importlib.metadata import version  # noqa: PLC0415

        cp_version = version("CoolProp")
    except Exception:  # noqa: BLE001 - no metadata: do not cache
        return None
    key = repr(
        (_LAYOUT, sys.byteorder, _N_SAT, _N_P, _N_X, _N_T, _N_TR, _T_SPAN_VAP, _T_SPAN_LIQ, fluid,
         float(p_min_pa), float(p_max_pa), float(dh_max_j_kg), bool(transport), cp_version)
    )  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    safe = "".join(c if c.isalnum() else "_" for c in fluid)
    return os.path.join(cache_dir(), "fluid_%s_%s.bin" % (safe, digest))


def _read_cache(path, fluid, p_min_pa, p_max_pa, dh_max_j_kg, transport):
    import json  # noqa: PLC0415
    from array import array  # noqa: PLC0415

    try:
        with open(path, "rb") as f:
            blob = f.read()
        cut = blob.index(b"\n")
        head = json.loads(blob[:cut])
        flat = array("d")
        flat.frombytes(blob[cut + 1 :])
        return FluidTable(
            fluid, p_min_pa, p_max_pa, dh_max_j_kg, transport, _data=(head, flat.tolist())
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _write_cache(path, table):
    import json  # noqa: PLC0415
    from array import array  # noqa: PLC0415

    head, flat = table._dump()
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(json.dumps(head).encode() + b"\n")
            f.write(array("d", flat).tobytes())
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass


@lru_cache(maxsize=None)
def fluid_table(fluid, p_min_pa, p_max_pa, dh_max_j_kg=250e3, transport=False):
    """Shared :class:`FluidTable` for ``fluid`` (built once per process and range, and kept in
    the disk cache so that later processes skip CoolProp altogether)."""
    path = _cache_path(fluid, p_min_pa, p_max_pa, dh_max_j_kg, transport)
    if path is not None and os.path.exists(path):
        table = _read_cache(path, fluid, p_min_pa, p_max_pa, dh_max_j_kg, transport)
        if table is not None:
            return table
    table = FluidTable(fluid, p_min_pa, p_max_pa, dh_max_j_kg, transport)
    if path is not None:
        _write_cache(path, table)
    return table


#: Pressure range of the propane table: 0.05 bar (about -93 degC, below the lowest suction
#: pressure a pump-down can reach: the compressor's volumetric efficiency vanishes at pressure
#: ratio ~32) to 38 bar (about 87 degC), 0.89 of the critical pressure.
PROPANE_RANGE_PA = (0.05e5, 38.0e5)


def propane():
    """The propane (R290) table used by the heat pump."""
    return fluid_table("Propane", *PROPANE_RANGE_PA)
