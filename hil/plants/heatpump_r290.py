"""R290 (propane) vapour-compression heat pump with a stepper expansion valve.

Model structure (docs/plants.md explains the choice):

* Evaporator and condenser: **finite-volume, wall-dominated** heat exchangers. Each is split into
  ``n_cells`` cells along the refrigerant path; each cell has a dynamic wall temperature. The
  refrigerant side is quasi-static within a time step (its residence time, well under a second, is
  short against the wall's seconds): an enthalpy sweep from the inlet gives the heat each cell
  takes, splitting a cell where the refrigerant changes phase, so the two-phase/superheated
  boundary moves continuously and can leave the evaporator (liquid at the compressor).
  The secondary fluid (brine or coolant on the evaporator, water on the condenser) flows in
  counterflow, also quasi-static.
* Pressures: one per heat exchanger, from the **refrigerant mass balance**. The refrigerant charge
  in each exchanger is a state integrated from the valve and compressor flows (so the total charge
  is conserved to round-off); the pressure is the one at which the charge held by the current
  enthalpy profile (two-phase density from Zivi's void fraction, integrated along each
  cell) equals that
  state, tracked with one Newton step per substep.
* Compressor: displacement x speed x volumetric efficiency x suction density; discharge enthalpy
  from the overall isentropic efficiency (adiabatic shell, so shaft power = enthalpy rise).
* Expansion valve: stepper position 0..``valve_full_steps`` moving at ``valve_step_rate`` steps/s
  toward the command, linear flow area, orifice flow ``m = CdA sqrt(2 rho_in dp)``.
* Suction pipe: a small thermal mass between evaporator and compressor; the refrigerant exchanges
  heat with it, which is what a strap-on sensor sees and gives superheat its few-second lag.

Properties come from :mod:`.props` (tables built from CoolProp HEOS).
"""

import math

from ._base import PlantBase
from .props import propane


class _Exchanger:
    """One heat exchanger: walls, refrigerant charge and pressure, secondary stream."""

    __slots__ = (
        "n", "vol_cell", "ua_tp", "ua_1p", "ua_sec", "cap_wall", "t_wall", "p_pa", "m_kg",
        "dm_dp", "q_ref", "q_sec", "h_out", "h_cell", "m_cell", "t_sec_out", "q_sec_total",
    )  # fmt: skip

    def __init__(self, n, volume_m3, ua_tp, ua_1p, ua_sec, cap_wall, t_wall, p_pa):
        self.n = n
        self.vol_cell = volume_m3 / n
        self.ua_tp = ua_tp / n
        self.ua_1p = ua_1p / n
        self.ua_sec = ua_sec / n
        self.cap_wall = cap_wall / n
        self.t_wall = [t_wall] * n
        self.p_pa = p_pa
        self.m_kg = 0.0
        self.dm_dp = 1e-7
        self.q_ref = [0.0] * n
        self.q_sec = [0.0] * n
        self.h_out = 0.0
        self.h_cell = [0.0] * n
        self.m_cell = [0.0] * n
        self.t_sec_out = t_wall
        self.q_sec_total = 0.0


def _segment_mass(vol, sat, x_a, x_b):
    """Mass in a two-phase segment of volume ``vol`` where quality goes linearly x_a -> x_b.

    Void fraction from Zivi's slip model, ``S = (rho_f/rho_g)^(1/3)`` (Zivi, J. Heat Transfer 86
    (1964) 247), which holds much more liquid than the homogeneous model; mean density by
    Simpson's rule over the segment.
    """
    rho_f, rho_g = sat[3], sat[4]
    k = (rho_g / rho_f) ** (2.0 / 3.0)
    acc = 0.0
    for x, w in ((x_a, 1.0), (0.5 * (x_a + x_b), 4.0), (x_b, 1.0)):
        if x <= 0.0:
            rho = rho_f
        elif x >= 1.0:
            rho = rho_g
        else:
            alpha = x / (x + (1.0 - x) * k)
            rho = alpha * rho_g + (1.0 - alpha) * rho_f
        acc += w * rho
    return vol * acc / 6.0


class R290HeatPump(PlantBase):
    """Brine-to-water R290 heat pump (or chiller) with an electronic expansion valve.

    ``step(dt_s, inputs) -> outputs``. Inputs (missing ones take their defaults):

    ===================  ========  ==================  ========================================
    name                 default   range               meaning
    ===================  ========  ==================  ========================================
    valve_steps_cmd      200       0..full clamp       EXV target position, steps
    compressor_hz        50        0..120 clamp        compressor speed, rev/s (0 = off;
                                                        below ``compressor_min_hz`` it stops)
    evap_sec_in_k        283.15    250..330 K          evaporator secondary inlet temperature
    evap_sec_flow_kg_s   0.30      0..5                evaporator secondary mass flow
    cond_sec_in_k        303.15    270..350 K          condenser secondary inlet temperature
    cond_sec_flow_kg_s   0.25      0..5                condenser secondary mass flow
    ===================  ========  ==================  ========================================

    Outputs (SI): ``suction_p_pa``, ``suction_t_k``, ``discharge_p_pa``, ``discharge_t_k``,
    ``evap_sat_t_k``, ``cond_sat_t_k``, ``superheat_k``, ``subcooling_k``,
    ``liquid_at_compressor`` (liquid mass fraction at the compressor inlet, 0..1),
    ``capacity_w`` (heat taken from the evaporator secondary), ``heating_w`` (heat given to the
    condenser secondary), ``compressor_power_w``, ``cop`` (cooling COP, capacity / power),
    ``cop_heating``, ``mass_flow_kg_s`` (compressor), ``valve_flow_kg_s``, ``valve_steps``,
    ``evap_sec_out_k``, ``cond_sec_out_k``, ``charge_evap_kg``, ``charge_cond_kg``.
    """

    NAME = "heatpump_r290"
    PARAMS = {
        "n_cells": (6, "-", "cells per heat exchanger (resolution of the phase boundary)"),
        "evap_volume_m3": (1.2e-3, "m^3", "assumption: refrigerant side of a ~4 kW brazed plate"),
        "cond_volume_m3": (1.5e-3, "m^3", "assumption: condenser plus liquid line"),
        "evap_ua_tp_w_k": (
            1500.0,
            "W/K",
            "assumption: 1 m^2 plate at ~1.5 kW/(m^2 K) boiling (typical plate-evaporator range)",
        ),
        "evap_ua_vap_w_k": (150.0, "W/K", "assumption: superheated-vapour side, ~10x lower"),
        "evap_ua_sec_w_k": (2000.0, "W/K", "assumption: brine side of the same plate"),
        "evap_wall_j_k": (3000.0, "J/K", "assumption: 6 kg stainless plates x 500 J/(kg K)"),
        "cond_ua_tp_w_k": (1500.0, "W/K", "assumption: condensing side, ~1.5 kW/(m^2 K), 1 m^2"),
        "cond_ua_1p_w_k": (200.0, "W/K", "assumption: desuperheating and subcooling sides"),
        "cond_ua_sec_w_k": (2500.0, "W/K", "assumption: water side of the condenser plate"),
        "cond_wall_j_k": (3000.0, "J/K", "assumption: 6 kg stainless plates x 500 J/(kg K)"),
        "evap_sec_cp_j_kgk": (
            3800.0,
            "J/(kg K)",
            "30% propylene glycol near 0-10 degC, ASHRAE Handbook Fundamentals ch. 31",
        ),
        "cond_sec_cp_j_kgk": (4180.0, "J/(kg K)", "water, Incropera Table A.6"),
        "displacement_m3": (
            30e-6,
            "m^3/rev",
            "assumption: 30 cm^3 rotary compressor (~4 kW cooling at 50 rev/s)",
        ),
        "compressor_min_hz": (15.0, "rev/s", "assumption: inverter minimum speed"),
        "compressor_max_hz": (120.0, "rev/s", "assumption: inverter maximum speed"),
        "eta_vol_a": (0.95, "-", "assumption: eta_v = a - b*pressure_ratio (clearance-type map)"),
        "eta_vol_b": (0.035, "-", "assumption, see eta_vol_a"),
        "eta_is_peak": (
            0.68,
            "-",
            "assumption: overall isentropic efficiency peak of hermetic R290 compressors",
        ),
        "eta_is_ratio_opt": (3.0, "-", "assumption: pressure ratio of peak efficiency"),
        "eta_is_ratio_curv": (0.012, "-", "assumption: eta_is drop per (ratio - opt)^2"),
        "eta_is_speed_curv": (4e-5, "1/(rev/s)^2", "assumption: eta_is drop per (hz - 55)^2"),
        "valve_full_steps": (
            480,
            "steps",
            "full stroke; Carel EVD ice U3 selects 480 or 960 steps (reference control.md s.4)",
        ),
        "valve_step_rate": (
            50.0,
            "steps/s",
            "generic EXV 30-90 pps for 1.3-3.2 mm seats (reference control.md s.4)",
        ),
        "valve_cda_full_m2": (
            1.2e-6,
            "m^2",
            "assumption: Cd*A of a ~1.5 mm seat (Cd 0.7, within the 1.3-3.2 mm class)",
        ),
        "suction_pipe_j_k": (80.0, "J/K", "assumption: 0.2 kg copper suction pipe x 385 J/(kg K)"),
        "suction_pipe_ua_w_k": (20.0, "W/K", "assumption: refrigerant to suction pipe"),
        "shell_j_k": (
            4600.0,
            "J/K",
            "assumption: 10 kg of compressor shell and oil x 460 J/(kg K)",
        ),
        "shell_ua_w_k": (15.0, "W/K", "assumption: discharge gas to compressor shell"),
        "charge_kg": (0.0, "kg", "refrigerant charge; 0 = the charge of the initial state"),
        "initial_valve_steps": (200.0, "steps", "initial valve position"),
        "max_substep_s": (0.1, "s", "numerical: longest internal substep"),
        "pressure_relaxation": (
            0.5,
            "-",
            "numerical: fraction of the Newton pressure correction applied per substep",
        ),
        "presettle_s": (
            120.0,
            "s",
            "simulated time run when built (default inputs, valve held where it is)",
        ),
    }
    INPUTS = {
        "valve_steps_cmd": (200.0, 0.0, 480.0, "clamp", "steps"),
        "compressor_hz": (50.0, 0.0, 120.0, "clamp", "rev/s"),
        "evap_sec_in_k": (283.15, 250.0, 330.0, "check", "K"),
        "evap_sec_flow_kg_s": (0.30, 0.0, 5.0, "check", "kg/s"),
        "cond_sec_in_k": (303.15, 270.0, 350.0, "check", "K"),
        "cond_sec_flow_kg_s": (0.25, 0.0, 5.0, "check", "kg/s"),
    }

    def __init__(self, **params):
        super().__init__(**params)
        p = self.p
        self._require_positive(
            "n_cells", "evap_volume_m3", "cond_volume_m3", "evap_ua_tp_w_k", "evap_ua_vap_w_k",
            "evap_ua_sec_w_k", "evap_wall_j_k", "cond_ua_tp_w_k", "cond_ua_1p_w_k",
            "cond_ua_sec_w_k", "cond_wall_j_k", "displacement_m3", "valve_full_steps",
            "valve_step_rate", "valve_cda_full_m2", "suction_pipe_j_k", "suction_pipe_ua_w_k",
        )  # fmt: skip
        self.INPUTS = dict(self.INPUTS)
        self.INPUTS["valve_steps_cmd"] = (
            min(200.0, float(p["valve_full_steps"])), 0.0, float(p["valve_full_steps"]),
            "clamp", "steps",
        )  # fmt: skip
        self.INPUTS["compressor_hz"] = (50.0, 0.0, p["compressor_max_hz"], "clamp", "rev/s")
        self.props = propane()
        n = int(p["n_cells"])
        u0 = self.parse_inputs({})
        t_e = u0["evap_sec_in_k"] - 8.0
        t_c = u0["cond_sec_in_k"] + 8.0
        self.evap = _Exchanger(
            n, p["evap_volume_m3"], p["evap_ua_tp_w_k"], p["evap_ua_vap_w_k"],
            p["evap_ua_sec_w_k"], p["evap_wall_j_k"], u0["evap_sec_in_k"] - 3.0,
            self.props.p_sat(t_e),
        )  # fmt: skip
        self.cond = _Exchanger(
            n, p["cond_volume_m3"], p["cond_ua_tp_w_k"], p["cond_ua_1p_w_k"],
            p["cond_ua_sec_w_k"], p["cond_wall_j_k"], u0["cond_sec_in_k"] + 3.0,
            self.props.p_sat(t_c),
        )  # fmt: skip
        self.valve_steps = float(min(max(p["initial_valve_steps"], 0.0), p["valve_full_steps"]))
        self.t_pipe = u0["evap_sec_in_k"] - 4.0
        self.t_shell = u0["cond_sec_in_k"] + 30.0
        self.t_s = 0.0
        self.energy_in_j = 0.0  # integral of (capacity + compressor power - heating), J
        self._n_sub_wall = self._wall_substeps()
        # Initial flows and profiles, then charge from the initial state (or the given one).
        self._flows = self._compute_flows(u0, self.evap.p_pa, self.cond.p_pa)
        self._h_liq = self.props.sat(self.cond.p_pa)[1] - 10e3
        self._sweeps(u0)
        for hx in (self.evap, self.cond):
            hx.m_kg = sum(hx.m_cell)
            hx.dm_dp = self._dm_dp(hx, u0)
        if p["charge_kg"] > 0.0:
            self.cond.m_kg += p["charge_kg"] - (self.evap.m_kg + self.cond.m_kg)
            if self.cond.m_kg <= 0.0:
                raise ValueError("charge_kg=%g too small for the evaporator" % p["charge_kg"])
        self.charge_kg = self.evap.m_kg + self.cond.m_kg
        self._out = {}
        self._update_outputs(u0)
        settle = p["presettle_s"]
        hold = {"valve_steps_cmd": self.valve_steps}
        while self.t_s < settle:
            self.step(0.1, hold)
        self.t_s = 0.0
        self.energy_in_j = 0.0

    # ------------------------------------------------------------ components
    def _wall_substeps(self):
        p = self.p
        tau = min(
            p["evap_wall_j_k"] / (p["evap_ua_tp_w_k"] + p["evap_ua_sec_w_k"]),
            p["cond_wall_j_k"] / (p["cond_ua_tp_w_k"] + p["cond_ua_sec_w_k"]),
        )
        return tau

    def eta_vol(self, ratio):
        """Volumetric efficiency at pressure ratio ``ratio`` (map, clipped to 0.2..1)."""
        p = self.p
        return min(max(p["eta_vol_a"] - p["eta_vol_b"] * ratio, 0.2), 1.0)

    def eta_is(self, ratio, hz):
        """Overall isentropic efficiency at ``ratio`` and speed ``hz`` (map, clipped 0.3..0.8)."""
        p = self.p
        e = (
            p["eta_is_peak"]
            - p["eta_is_ratio_curv"] * (ratio - p["eta_is_ratio_opt"]) ** 2
            - p["eta_is_speed_curv"] * (hz - 55.0) ** 2
        )
        return min(max(e, 0.3), 0.8)

    def _compute_flows(self, u, p_e, p_c):
        """Valve and compressor mass flows and the compressor discharge state."""
        p = self.p
        props = self.props
        hz = u["compressor_hz"]
        if hz < p["compressor_min_hz"]:
            hz = 0.0
        # Compressor suction state = refrigerant leaving the suction pipe.
        h_suc = getattr(self, "_h_suc", None)
        sat_e = props.sat(p_e)
        if h_suc is None:
            h_suc = sat_e[2] + 10e3
        t_suc, rho_suc, x_suc, s_suc = props.ph(p_e, h_suc, sat_e)
        ratio = p_c / p_e
        m_comp = self.eta_vol(ratio) * rho_suc * p["displacement_m3"] * hz
        sat_c = props.sat(p_c)
        h_is = props.h_ps(p_c, s_suc, sat_c)
        h_dis = h_suc + (h_is - h_suc) / self.eta_is(ratio, hz)
        # Compressor shell: gas leaving the compression exchanges heat with the shell's thermal
        # mass (which is why discharge temperature lags and wet compression is smoothed).
        t_shell = getattr(self, "t_shell", None)
        q_shell = 0.0
        if t_shell is not None and m_comp > 0.0:
            t_ad = props.ph(p_c, h_dis, sat_c)[0]
            cp = getattr(self, "_cp_cv", 2500.0)
            mcp = m_comp * cp
            q_shell = (1.0 - math.exp(-p["shell_ua_w_k"] / mcp)) * mcp * (t_shell - t_ad)
            h_dis += q_shell / m_comp
        # Valve: orifice flow from condenser outlet (liquid, or flashing two-phase) to evaporator.
        h_in = getattr(self, "_h_liq", sat_c[1])
        rho_in = props.ph(p_c, h_in, sat_c)[1]
        cda = p["valve_cda_full_m2"] * self.valve_steps / p["valve_full_steps"]
        dp = p_c - p_e
        m_valve = cda * math.sqrt(2.0 * rho_in * dp) if dp > 0 else 0.0
        return {
            "m_comp": m_comp, "m_valve": m_valve, "h_suc": h_suc, "h_dis": h_dis,
            "t_suc": t_suc, "x_suc": x_suc, "ratio": ratio, "hz": hz, "h_valve": h_in,
            "sat_e": sat_e, "sat_c": sat_c, "q_shell": q_shell,
        }  # fmt: skip

    def _sweep_cell(self, hx, i, sat, p_pa, m, h, t_wall, cp_1p):
        """Refrigerant through cell ``i``: returns (h_out, heat to refrigerant W, mass kg)."""
        props = self.props
        t_sat, hf, hg = sat[0], sat[1], sat[2]
        vol = hx.vol_cell
        r = 1.0  # fraction of the cell length still to traverse
        q = 0.0
        mass = 0.0
        for _ in range(4):
            if r <= 1e-9:
                break
            if hf < h < hg:
                rate = hx.ua_tp * (t_wall - t_sat)  # W over the whole cell
                x_a = (h - hf) / (hg - hf)
                if m <= 0.0:
                    mass += _segment_mass(vol * r, sat, x_a, x_a)
                    q += rate * r
                    r = 0.0
                    break
                dh = rate * r / m
                bound = hg if rate > 0 else hf
                if (rate > 0 and h + dh >= hg) or (rate < 0 and h + dh <= hf):
                    f = (bound - h) * m / rate
                    mass += _segment_mass(vol * f, sat, x_a, 1.0 if rate > 0 else 0.0)
                    q += (bound - h) * m
                    h = bound + (1e-3 if rate > 0 else -1e-3)
                    r -= f
                else:
                    h_new = h + dh
                    mass += _segment_mass(vol * r, sat, x_a, (h_new - hf) / (hg - hf))
                    q += dh * m
                    h = h_new
                    r = 0.0
            else:
                t_r, rho_a = props.ph(p_pa, h, sat)[:2]
                ua = hx.ua_1p * r
                if m <= 0.0:
                    q += ua * (t_wall - t_r)
                    mass += vol * r * rho_a
                    r = 0.0
                    break
                mcp = m * cp_1p
                vapour = h >= hg
                crossing = (vapour and t_wall < t_sat) or (not vapour and t_wall > t_sat)
                if crossing and abs(t_r - t_wall) > 1e-9:
                    frac_dt = (t_r - t_sat) / (t_r - t_wall)
                    if 0.0 <= frac_dt < 1.0:
                        f = -math.log(1.0 - frac_dt) * mcp / hx.ua_1p
                        if f < r:
                            q += ((hg if vapour else hf) - h) * m
                            mass += vol * f * 0.5 * (rho_a + (sat[4] if vapour else sat[3]))
                            h = (hg - 1e-3) if vapour else (hf + 1e-3)
                            r -= f
                            continue
                eff = 1.0 - math.exp(-ua / mcp)
                dq = eff * mcp * (t_wall - t_r)
                h_new = h + dq / m
                if vapour and h_new < hg:
                    h_new = hg
                    dq = (hg - h) * m
                elif not vapour and h_new > hf:
                    h_new = hf
                    dq = (hf - h) * m
                rho_b = props.ph(p_pa, h_new, sat)[1]
                mass += vol * r * 0.5 * (rho_a + rho_b)
                q += dq
                h = h_new
                r = 0.0
        return h, q, mass

    def _sweep(self, hx, p_pa, m, h_in, cp_1p):
        """Quasi-static refrigerant profile of ``hx`` at pressure ``p_pa``; returns h_out and
        fills hx.q_ref, hx.m_cell, hx.h_cell."""
        sat = self.props.sat(p_pa)
        h = h_in
        for i in range(hx.n):
            h, q, mass = self._sweep_cell(hx, i, sat, p_pa, m, h, hx.t_wall[i], cp_1p)
            hx.q_ref[i] = q
            hx.m_cell[i] = mass
            hx.h_cell[i] = h
        return h

    def _cp(self, p_pa, vapour):
        """Mean specific heat of the single-phase refrigerant near saturation, J/(kg K)."""
        props = self.props
        sat = props.sat(p_pa)
        if vapour:
            return 15e3 / (props.ph(p_pa, sat[2] + 15e3, sat)[0] - sat[0])
        return 15e3 / (sat[0] - props.ph(p_pa, sat[1] - 15e3, sat)[0])

    def _sweeps(self, u):
        f = self._flows
        ev, cd = self.evap, self.cond
        # Quasi-static refrigerant: the profile carries the compressor flow; the difference to
        # the valve flow is stored as charge (and so moves the pressures).
        m_e = f["m_comp"]
        m_c = m_e
        self._cp_e = self._cp(ev.p_pa, True)
        self._cp_cv = self._cp(cd.p_pa, True)
        self._cp_cl = self._cp(cd.p_pa, False)
        h_evap_out = self._sweep(ev, ev.p_pa, m_e, f["h_valve"], self._cp_e)
        ev.h_out = h_evap_out
        # Condenser: vapour cp for the desuperheating part, liquid cp for subcooling.
        cd.h_out = self._sweep_cond(m_c, f["h_dis"])
        self._m_ref = m_e

    def _sweep_cond(self, m, h_in):
        cd = self.cond
        sat = self.props.sat(cd.p_pa)
        h = h_in
        for i in range(cd.n):
            cp = self._cp_cv if h >= sat[2] else self._cp_cl
            h, q, mass = self._sweep_cell(cd, i, sat, cd.p_pa, m, h, cd.t_wall[i], cp)
            cd.q_ref[i] = q
            cd.m_cell[i] = mass
            cd.h_cell[i] = h
        return h

    def _mass_at(self, hx, p_pa, u):
        """Charge held by ``hx`` at pressure ``p_pa`` with the current walls and flows."""
        f = self._flows
        m = self._m_ref
        saved = (list(hx.q_ref), list(hx.m_cell), list(hx.h_cell))
        if hx is self.evap:
            self._sweep(hx, p_pa, m, f["h_valve"], self._cp_e)
        else:
            p_old = hx.p_pa
            hx.p_pa = p_pa
            self._sweep_cond(m, f["h_dis"])
            hx.p_pa = p_old
        mass = sum(hx.m_cell)
        hx.q_ref[:], hx.m_cell[:], hx.h_cell[:] = saved
        return mass

    def _dm_dp(self, hx, u):
        dp = 0.01 * hx.p_pa
        m0 = self._mass_at(hx, hx.p_pa, u)
        m1 = self._mass_at(hx, hx.p_pa + dp, u)
        return max((m1 - m0) / dp, 1e-10)

    def _secondary(self, hx, t_in, flow, cp):
        """Counterflow secondary stream (enters at the refrigerant outlet end)."""
        t = t_in
        c = flow * cp
        total = 0.0
        for i in range(hx.n - 1, -1, -1):
            if c > 0.0:
                q = (1.0 - math.exp(-hx.ua_sec / c)) * c * (t - hx.t_wall[i])
                t -= q / c
            else:
                q = hx.ua_sec * 0.02 * (t_in - hx.t_wall[i])  # stagnant fluid: weak coupling
            hx.q_sec[i] = q
            total += q
        hx.t_sec_out = t
        hx.q_sec_total = total

    # ------------------------------------------------------------------ step
    def step(self, dt_s, inputs):
        """Advance by ``dt_s`` seconds with ``inputs`` (see class docstring); return outputs."""
        dt = self._check_dt(dt_s)
        u = self.parse_inputs(inputs)
        n_sub = max(1, math.ceil(dt / min(0.8 * self._n_sub_wall, self.p["max_substep_s"])))
        h = dt / n_sub
        for _ in range(n_sub):
            self._substep(h, u)
        self.t_s += dt
        self._update_outputs(u)
        return dict(self._out)

    def _substep(self, h, u):
        p = self.p
        ev, cd = self.evap, self.cond
        # Valve: the stepper moves toward the command at the step rate, whole steps only.
        target = round(u["valve_steps_cmd"])
        self._valve_budget = getattr(self, "_valve_budget", 0.0) + p["valve_step_rate"] * h
        moves = int(self._valve_budget)
        self._valve_budget -= moves
        if target > self.valve_steps:
            self.valve_steps = min(self.valve_steps + moves, target)
        elif target < self.valve_steps:
            self.valve_steps = max(self.valve_steps - moves, target)
        else:
            self._valve_budget = 0.0
        f = self._flows = self._compute_flows(u, ev.p_pa, cd.p_pa)
        self._sweeps(u)
        # Suction pipe between evaporator outlet and compressor.
        m = self._m_ref
        h_e = ev.h_out
        sat_e = f["sat_e"]
        t_r = self.props.ph(ev.p_pa, h_e, sat_e)[0]
        if m > 0.0:
            if sat_e[1] < h_e < sat_e[2]:
                q_pipe = p["suction_pipe_ua_w_k"] * (self.t_pipe - t_r)
            else:
                mcp = m * self._cp_e
                q_pipe = (
                    (1.0 - math.exp(-p["suction_pipe_ua_w_k"] / mcp)) * mcp * (self.t_pipe - t_r)
                )
            self._h_suc = h_e + q_pipe / m
        else:
            q_pipe = 0.0
            self._h_suc = h_e
        self.t_pipe -= h * q_pipe / p["suction_pipe_j_k"]
        self.t_shell -= h * f["q_shell"] / p["shell_j_k"]
        # Liquid leaving the condenser feeds the valve on the next substep.
        self._h_liq = cd.h_out
        # Secondary streams and walls.
        self._secondary(ev, u["evap_sec_in_k"], u["evap_sec_flow_kg_s"], p["evap_sec_cp_j_kgk"])
        self._secondary(cd, u["cond_sec_in_k"], u["cond_sec_flow_kg_s"], p["cond_sec_cp_j_kgk"])
        for hx in (ev, cd):
            tw = hx.t_wall
            for i in range(hx.n):
                tw[i] += h * (hx.q_sec[i] - hx.q_ref[i]) / hx.cap_wall
        # Refrigerant charge of each exchanger, then the pressures that hold it.
        ev.m_kg += h * (f["m_valve"] - f["m_comp"])
        cd.m_kg += h * (f["m_comp"] - f["m_valve"])
        self._steps_since_dmdp = getattr(self, "_steps_since_dmdp", 0) + 1
        refresh = self._steps_since_dmdp >= 10
        if refresh:
            self._steps_since_dmdp = 0
        for hx in (ev, cd):
            if refresh:
                hx.dm_dp = self._dm_dp(hx, u)
            err = hx.m_kg - sum(hx.m_cell)
            dp = self.p["pressure_relaxation"] * err / hx.dm_dp
            lim = 0.05 * hx.p_pa
            dp = lim if dp > lim else -lim if dp < -lim else dp
            lo, hi = self.props.p_min_pa * 1.01, self.props.p_max_pa * 0.99
            hx.p_pa = min(max(hx.p_pa + dp, lo), hi)
        w = f["m_comp"] * (f["h_dis"] - f["h_suc"]) - f["q_shell"]
        self._power_w = w
        self.energy_in_j += h * (ev.q_sec_total + cd.q_sec_total + w)

    # --------------------------------------------------------------- outputs
    def refrigerant_mass_kg(self):
        """Charge held by the current state (sum over cells at the current pressures), kg."""
        return sum(self.evap.m_cell) + sum(self.cond.m_cell)

    def stored_energy_j(self):
        """Energy stored in walls, suction pipe and refrigerant (internal energy), J."""
        e = self.p["suction_pipe_j_k"] * self.t_pipe + self.p["shell_j_k"] * self.t_shell
        for hx in (self.evap, self.cond):
            e += sum(hx.cap_wall * t for t in hx.t_wall)
            h_prev = None
            for i in range(hx.n):
                h_i = hx.h_cell[i]
                h_mean = h_i if h_prev is None else 0.5 * (h_prev + h_i)
                m_i = hx.m_cell[i]
                e += m_i * h_mean - hx.p_pa * hx.vol_cell
                h_prev = h_i
        return e

    def _update_outputs(self, u):
        f = self._flows
        ev, cd = self.evap, self.cond
        props = self.props
        sat_e = props.sat(ev.p_pa)
        sat_c = props.sat(cd.p_pa)
        h_suc = getattr(self, "_h_suc", ev.h_out)
        t_suc, _, x_suc, _ = props.ph(ev.p_pa, h_suc, sat_e)
        if h_suc <= sat_e[1]:
            liquid = 1.0
        elif h_suc < sat_e[2]:
            liquid = 1.0 - x_suc
        else:
            liquid = 0.0
        t_dis = props.ph(cd.p_pa, f["h_dis"], sat_c)[0]
        t_liq = props.ph(cd.p_pa, cd.h_out, sat_c)[0]
        power = f["m_comp"] * (f["h_dis"] - f["h_suc"]) - f.get("q_shell", 0.0)
        cap = ev.q_sec_total
        heat = -cd.q_sec_total
        self._out = {
            "suction_p_pa": ev.p_pa,
            "suction_t_k": t_suc,
            "discharge_p_pa": cd.p_pa,
            "discharge_t_k": t_dis,
            "evap_sat_t_k": sat_e[0],
            "cond_sat_t_k": sat_c[0],
            "superheat_k": max(t_suc - sat_e[0], 0.0),
            "subcooling_k": max(sat_c[0] - t_liq, 0.0),
            "liquid_at_compressor": liquid,
            "capacity_w": cap,
            "heating_w": heat,
            "compressor_power_w": power,
            "cop": cap / power if power > 1.0 else 0.0,
            "cop_heating": heat / power if power > 1.0 else 0.0,
            "mass_flow_kg_s": f["m_comp"],
            "valve_flow_kg_s": f["m_valve"],
            "valve_steps": float(self.valve_steps),
            "evap_sec_out_k": ev.t_sec_out,
            "cond_sec_out_k": cd.t_sec_out,
            "charge_evap_kg": ev.m_kg,
            "charge_cond_kg": cd.m_kg,
            "suction_pipe_k": self.t_pipe,
        }

    def outputs(self):
        """Current outputs without stepping (see class docstring)."""
        return dict(self._out)
