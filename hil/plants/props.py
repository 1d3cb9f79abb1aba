"""Fast refrigerant properties for the plants: compact tables built once from CoolProp HEOS.

Why our own table and not ``BICUBIC&HEOS``: CoolProp's tabular backends build a ~20 MB table per
fluid on first use (measured 6.5 s for propane, 5.9 s for R1234ze(E) with CoolProp 8.0.0 on this
project's CI-class machine; see docs/benchmarks.md), which a fresh CI machine pays on every run.
The plants only need a few property paths, so :class:`FluidTable` builds three small tables from
HEOS in well under a second and keeps them in memory:

* saturation, uniform in ``ln p``: ``T_sat, h_f, h_g, rho_f, rho_g, s_f, s_g`` (linear
  interpolation on 1500 nodes);
* superheated vapour, uniform in ``(ln p, h - h_g(p))``: ``T, rho, s`` (bilinear, 160 x 121 nodes);
* isentropic compression, uniform in ``(ln p, s - s_g(p))``: ``h`` (bilinear, 160 x 121 nodes).

Subcooled liquid is approximated as saturated liquid at the same temperature (``h ~ h_f(T)``,
``rho ~ rho_f(T)``), which is the usual incompressible-liquid approximation; its error against HEOS
is checked in ``tests/test_plant_props.py`` and stated in docs/plants.md.

All inputs and outputs are SI: pressure in Pa, temperature in K, enthalpy in J/kg, entropy in
J/(kg K), density in kg/m^3.
"""

import math
from functools import lru_cache

import CoolProp
import numpy as np

_N_SAT = 1500
_N_P = 160
_N_X = 121
_N_T = 60
_T_SPAN_VAP = 200.0  # K above saturation covered by the PT rows
_T_SPAN_LIQ = 75.0  # K below saturation covered by the PT rows


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
        table covers ``0.6 * dh_max_j_kg`` below saturated liquid.
    """

    def __init__(self, fluid, p_min_pa, p_max_pa, dh_max_j_kg=250e3):
        heos = CoolProp.AbstractState("HEOS", fluid)
        self.fluid = fluid
        self.p_crit_pa = heos.p_critical()
        self.t_crit_k = heos.T_critical()
        if not 0 < p_min_pa < p_max_pa <= 0.95 * self.p_crit_pa:
            raise ValueError(
                "table range %g..%g Pa invalid for %s; expected 0 < p_min < p_max <= %g Pa"
                % (p_min_pa, p_max_pa, fluid, 0.95 * self.p_crit_pa)
            )
        self.p_min_pa = p_min_pa
        self.p_max_pa = p_max_pa
        self._heos = heos
        self._dh_liq_max = 0.6 * dh_max_j_kg  # J/kg below h_f covered by the liquid table
        self._lnp0 = math.log(p_min_pa)
        self._build_saturation(heos)
        self._build_vapour(heos, dh_max_j_kg)

    # ------------------------------------------------------------------ build
    def _build_saturation(self, heos):
        lnp = np.linspace(self._lnp0, math.log(self.p_max_pa), _N_SAT)
        cols = np.empty((_N_SAT, 7))
        for i, x in enumerate(lnp):
            p = math.exp(x)
            heos.update(CoolProp.PQ_INPUTS, p, 0.0)
            t, hf, rf, sf = heos.T(), heos.hmass(), heos.rhomass(), heos.smass()
            heos.update(CoolProp.PQ_INPUTS, p, 1.0)
            cols[i] = (t, hf, heos.hmass(), rf, heos.rhomass(), sf, heos.smass())
        self._sat_inv_d = (_N_SAT - 1) / (lnp[-1] - lnp[0])
        self._sat = [list(row) for row in cols]
        # T_sat -> ln p inverse (monotonic), uniform in T.
        t_grid = np.linspace(cols[0, 0], cols[-1, 0], _N_SAT)
        self._t0 = t_grid[0]
        self._t_inv_d = (_N_SAT - 1) / (t_grid[-1] - t_grid[0])
        self._lnp_of_t = list(np.interp(t_grid, cols[:, 0], lnp))

    def _build_vapour(self, heos, dh_max):
        # Rows are computed with fast PT flashes on a temperature grid (denser near saturation)
        # and resampled with a cubic spline onto a uniform grid in h - h_sat.
        from scipy.interpolate import CubicSpline

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
        self._vap_inv_dlnp = (_N_P - 1) / (lnp[-1] - lnp[0])
        self._vap_inv_dh = (_N_X - 1) / dh_max
        self._liq_inv_dh = (_N_X - 1) / self._dh_liq_max
        self._vap_inv_ds = (_N_X - 1) / ds_max
        self.dh_max_j_kg = dh_max
        self.ds_max_j_kgk = ds_max
        self._vap = [tuple(r) for r in vap.reshape(-1, 3)]
        self._liq = [tuple(r) for r in liq.reshape(-1, 2)]
        self._dh_of_ds = hs_tab.ravel().tolist()

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
        """The HEOS ``AbstractState`` the table was built from (for checks and benchmarks)."""
        return self._heos


@lru_cache(maxsize=None)
def fluid_table(fluid, p_min_pa, p_max_pa, dh_max_j_kg=250e3):
    """Shared :class:`FluidTable` for ``fluid`` (built once per process and range)."""
    return FluidTable(fluid, p_min_pa, p_max_pa, dh_max_j_kg)


#: Pressure range of the propane table: 1 bar (about -42 degC) to 38 bar (about 87 degC),
#: 0.89 of the critical pressure; covers evaporating and condensing in the heat pump envelope.
PROPANE_RANGE_PA = (1.0e5, 38.0e5)


def propane():
    """The propane (R290) table used by the heat pump."""
    return fluid_table("Propane", *PROPANE_RANGE_PA)
