"""R290 (propane) vapour-compression heat pump with a stepper expansion valve.

Model structure (docs/plants.md explains the choices and the sources):

* Evaporator and condenser: **dynamic finite volumes**, ``n_cells`` cells along the refrigerant
  path, one pressure per heat exchanger, a specific enthalpy per cell and a wall temperature per
  cell. Mass and energy are both stored in the refrigerant, so zero flow (valve closed,
  compressor stopped), pump-down, start-up from standstill and flooding are ordinary states, not
  special cases (the finite-volume formulation is the robust one through start-up and shut-down,
  Bendapudi, Braun & Groll, Int. J. Refrig. 31 (2008) 1437).
* Per substep and exchanger: enthalpy transport by implicit upwinding along the face flows of the
  previous substep (bounded for any flow), heat from the walls with the two-phase part implicit
  in pressure and the single-phase part implicit in enthalpy, then the pressure that makes the
  cells hold the exchanger's charge, solved to a tolerance (no relaxation), with the
  ``dh = v dp`` compression work of each cell. The charge of each exchanger is a state integrated
  from the valve and compressor flows, so the refrigerant is conserved to round-off and can never
  become negative. Cell density: Zivi's slip void fraction in two-phase (Zivi, J. Heat Transfer
  86 (1964) 247), tables elsewhere.
* Heat transfer per cell along the linear enthalpy profile between the cell's inflow face and its
  node, split where the refrigerant changes phase, so the superheated zone grows and shrinks
  continuously and the superheat gain is smooth in the valve position.
* Compressor: ``m = eta_v(pr) V_disp f rho_suc`` with the clearance volumetric efficiency
  ``eta_v = eta_0 - C (pr^(1/n) - 1)``, which vanishes at the pressure ratio where the re-expanding
  clearance gas fills the stroke (so a pump-down ends at a physical suction pressure). With wet
  suction the entrained liquid flashes in the cylinder and takes swept volume as saturated vapour:
  the total mass moved is that of dry saturated suction and the vapour drawn from the suction
  line falls to ``x`` times that (no dense-gas treatment). Discharge enthalpy from the overall
  isentropic efficiency, then heat exchange with the shell's thermal mass.
* Expansion valve: stepper position moving toward ``valve_steps_cmd`` at ``valve_step_rate``
  (whole steps), linear flow area, orifice flow ``CdA sqrt(2 rho_in dp)`` in either direction
  (pressures equalise through an open valve at standstill).
* Suction pipe: a small thermal mass between evaporator and compressor.
* High-pressure safety switch: stops the compressor above ``hp_cutout_pa`` until the discharge
  pressure falls below ``hp_reset_pa`` (the hardware limiter every such unit has; a controller
  should never reach it).

Properties come from :mod:`.props` (tables built from CoolProp HEOS).
"""

import math

from ._base import PlantBase
from .props import propane

_DP_LAMINAR_PA = 500.0  # valve flow is linear in dp below about this (regularises dp -> 0)
# Two-phase conductance ramps to the single-phase one outside this quality band (assumption:
# dry-out starts near x = 0.85 in plate evaporators; a liquid film below x = 0.05).
_X_LO = 0.05
_X_HI = 0.85


class _Exchanger:
    """One heat exchanger: finite-volume refrigerant, walls, secondary stream."""

    __slots__ = (
        "n", "vol", "vol_total", "ua_tp", "ua_1p", "ua_sec", "cap_wall", "t_wall", "p_pa",
        "h", "mass", "face", "q_ref", "q_sec", "m_kg", "dm_dp", "t_sec_out", "q_sec_total",
        "clamped",
    )  # fmt: skip

    def __init__(self, n, volume_m3, ua_tp, ua_1p, ua_sec, cap_wall, t_wall):
        self.n = n
        self.vol = volume_m3 / n
        self.vol_total = volume_m3
        self.ua_tp = ua_tp / n
        self.ua_1p = ua_1p / n
        self.ua_sec = ua_sec / n
        self.cap_wall = cap_wall / n
        self.t_wall = [t_wall] * n
        self.p_pa = 1e5
        self.h = [0.0] * n
        self.mass = [0.0] * n
        self.face = [0.0] * (n + 1)
        self.q_ref = [0.0] * n
        self.q_sec = [0.0] * n
        self.m_kg = 0.0
        self.dm_dp = 1e-7
        self.t_sec_out = t_wall
        self.q_sec_total = 0.0
        self.clamped = False


class R290HeatPump(PlantBase):
    """Brine-to-water R290 heat pump (or chiller) with an electronic expansion valve.

    ``step(dt_s, inputs) -> outputs``. Inputs (missing ones take their defaults):

    ===================  ========  ==================  ========================================
    name                 default   range               meaning
    ===================  ========  ==================  ========================================
    valve_steps_cmd      150       0..full clamp       EXV target position, steps
    compressor_hz        50        0..120 clamp        compressor speed, rev/s (0 = off;
                                                        below ``compressor_min_hz`` it stops)
    evap_sec_in_k        283.15    250..330 K          evaporator secondary inlet temperature
    evap_sec_flow_kg_s   0.30      0..5                evaporator secondary mass flow
    cond_sec_in_k        303.15    270..350 K          condenser secondary inlet temperature
    cond_sec_flow_kg_s   0.25      0..5                condenser secondary mass flow
    ===================  ========  ==================  ========================================

    Outputs (SI): ``suction_p_pa``, ``suction_t_k``, ``discharge_p_pa``, ``discharge_t_k``,
    ``evap_sat_t_k``, ``cond_sat_t_k``, ``superheat_k`` (signed: negative = wet suction, then the
    enthalpy-based equivalent ``(h - h_g)/cp_g``), ``subcooling_k`` (signed likewise: negative =
    two-phase at the condenser outlet), ``liquid_at_compressor`` (liquid mass fraction arriving at
    the compressor, 0..1), ``capacity_w`` (heat taken from the evaporator secondary),
    ``heating_w`` (heat given to the condenser secondary = ``cond_sec_out_k`` side),
    ``compressor_power_w``, ``cop`` (capacity / power), ``cop_heating``, ``mass_flow_kg_s``
    (compressor), ``valve_flow_kg_s``, ``valve_steps`` (actual position), ``compressor_hz``
    (actual speed), ``hp_switch_open`` (1 while the high-pressure switch holds the compressor
    off), ``evap_sec_out_k``, ``cond_sec_out_k`` (leaving water), ``charge_evap_kg``,
    ``charge_cond_kg``, ``charge_kg``, ``suction_pipe_k``, ``closed_running_s`` (simulated
    seconds the compressor has turned against a fully closed valve: a stop in the wrong order,
    or a valve that failed shut).
    """

    NAME = "heatpump_r290"
    PARAMS = {
        "n_cells": (10, "-", "cells per heat exchanger (resolution of the phase boundary)"),
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
        "evap_sec_flow_scale": (
            1.0,
            "-",
            "fraction of the commanded brine flow that flows (source pump health; 0 = failed)",
        ),
        "cond_sec_flow_scale": (
            1.0,
            "-",
            "fraction of the commanded water flow that flows (sink pump health; 0 = failed)",
        ),
        "displacement_m3": (
            30e-6,
            "m^3/rev",
            "assumption: 30 cm^3 rotary compressor (~4 kW cooling at 50 rev/s)",
        ),
        "compressor_min_hz": (15.0, "rev/s", "assumption: inverter minimum speed"),
        "compressor_max_hz": (120.0, "rev/s", "assumption: inverter maximum speed"),
        "eta_vol_max": (
            0.93,
            "-",
            "assumption: eta_v = eta_0 - C*(pr^(1/n) - 1), clearance volumetric efficiency "
            "(Stoecker & Jones, Refrigeration and Air Conditioning, 2nd ed., ch. 11) with eta_0 "
            "< 1 for suction heating and leakage",
        ),
        "clearance_ratio": (
            0.045,
            "-",
            "assumption: clearance volume / displacement of a small rotary compressor",
        ),
        "polytropic_n": (1.13, "-", "assumption: re-expansion exponent, ~cp/cv of propane vapour"),
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
            600.0,
            "steps/s",
            "fastest rate a driver commands, Dixell XM678D 10-600 steps/s (reference systems.md "
            "s.1), so the motor follows any board rate in 30-600 steps/s; lower it for a slow "
            "valve (generic EXVs 30-90 pps, reference control.md s.4)",
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
        "hp_cutout_pa": (
            31e5,
            "Pa",
            "assumption: high-pressure safety switch (EN 378-2 pressure limiter) below a 32 bar "
            "high-side PS; stops the compressor",
        ),
        "hp_reset_pa": (25e5, "Pa", "assumption: the switch closes again below this pressure"),
        "charge_kg": (
            0.32,
            "kg",
            "assumption: refrigerant charge giving ~5 K subcooling at the default point (below "
            "the 0.988 kg IEC 60335-2-40 m2 limit, reference control.md s.5)",
        ),
        "charge_rate_kg_s": (
            0.01,
            "kg/s",
            "assumption: fastest charge change (a large leak, a service hose); a new charge_kg "
            "is reached at this rate",
        ),
        "initial_valve_steps": (
            150.0,
            "steps",
            "initial valve position (about 13 K superheat at the default inputs)",
        ),
        "initial_state": (
            "running",
            "-",
            "'running': presettled at the default inputs; 'standstill': compressor off for the "
            "presettle time (refrigerant at the wall temperatures, valve where it is)",
        ),
        "max_substep_s": (
            0.1,
            "s",
            "numerical: longest internal substep (0.1 and 0.01 s agree within 0.06 K of "
            "superheat through valve and speed steps)",
        ),
        "pressure_tol": (
            1e-9,
            "-",
            "numerical: relative charge error at which the pressure solve stops",
        ),
        "presettle_s": (
            120.0,
            "s",
            "simulated time run when built (default inputs, valve held where it is)",
        ),
    }
    CHANGEABLE = {
        "charge_kg": (
            "kg",
            0.02,
            0.6,
            "refrigerant charge; lowering it is a leak (refrigerant leaves both exchangers in "
            "proportion to what they hold, with its enthalpy), raising it a recharge (saturated "
            "liquid into the liquid line); reached at up to charge_rate_kg_s",
        ),
        "evap_ua_sec_w_k": (
            "W/K",
            20.0,
            10000.0,
            "brine-side conductance of the evaporator (fouling lowers it)",
        ),
        "cond_ua_sec_w_k": (
            "W/K",
            20.0,
            10000.0,
            "water-side conductance of the condenser (scaling/fouling lowers it)",
        ),
        "evap_sec_flow_scale": ("-", 0.0, 1.0, "source (brine) pump health; 0 = failed"),
        "cond_sec_flow_scale": ("-", 0.0, 1.0, "sink (water) pump health; 0 = failed"),
        "valve_step_rate": ("steps/s", 1.0, 2000.0, "EXV motor speed (a slow or sticky valve)"),
    }
    INPUTS = {
        "valve_steps_cmd": (150.0, 0.0, 480.0, "clamp", "steps"),
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
            "shell_j_k", "shell_ua_w_k", "eta_vol_max", "clearance_ratio", "polytropic_n",
            "max_substep_s", "pressure_tol", "hp_cutout_pa", "hp_reset_pa",
        )  # fmt: skip
        if p["initial_state"] not in ("running", "standstill"):
            raise ValueError(
                "heatpump_r290 parameter initial_state=%r; expected 'running' or 'standstill'"
                % (p["initial_state"],)
            )
        if not p["hp_reset_pa"] < p["hp_cutout_pa"]:
            raise ValueError(
                "heatpump_r290 parameters hp_reset_pa=%g must be below hp_cutout_pa=%g"
                % (p["hp_reset_pa"], p["hp_cutout_pa"])
            )
        if int(p["n_cells"]) < 2:
            raise ValueError("heatpump_r290 parameter n_cells=%r; expected >= 2" % p["n_cells"])
        full = float(p["valve_full_steps"])
        self.INPUTS = dict(self.INPUTS)
        self.INPUTS["valve_steps_cmd"] = (min(150.0, full), 0.0, full, "clamp", "steps")
        self.INPUTS["compressor_hz"] = (50.0, 0.0, p["compressor_max_hz"], "clamp", "rev/s")
        self.props = propane()
        props = self.props
        self._p_lo = props.p_min_pa * 1.0001
        self._p_hi = props.p_max_pa * 0.9999
        n = int(p["n_cells"])
        u0 = self.parse_inputs({})
        standstill = p["initial_state"] == "standstill"
        t_ev_in, t_cd_in = u0["evap_sec_in_k"], u0["cond_sec_in_k"]
        if standstill:
            t_we, t_wc = t_ev_in, t_cd_in
        else:
            t_we, t_wc = t_ev_in - 3.0, t_cd_in + 3.0
        self.evap = ev = _Exchanger(
            n, p["evap_volume_m3"], p["evap_ua_tp_w_k"], p["evap_ua_vap_w_k"],
            p["evap_ua_sec_w_k"], p["evap_wall_j_k"], t_we,
        )  # fmt: skip
        self.cond = cd = _Exchanger(
            n, p["cond_volume_m3"], p["cond_ua_tp_w_k"], p["cond_ua_1p_w_k"],
            p["cond_ua_sec_w_k"], p["cond_wall_j_k"], t_wc,
        )  # fmt: skip
        # Initial refrigerant state: running profiles, or refrigerant at the wall temperatures.
        if standstill:
            ev.p_pa = props.p_sat(t_we)
            cd.p_pa = props.p_sat(t_wc)
            sat = props.sat(ev.p_pa)
            ev.h = [sat[1] + 0.3 * (sat[2] - sat[1])] * n
            sat = props.sat(cd.p_pa)
            cd.h = [sat[1] + 0.3 * (sat[2] - sat[1])] * n
        else:
            ev.p_pa = props.p_sat(t_ev_in - 8.0)
            cd.p_pa = props.p_sat(t_cd_in + 8.0)
            sat = props.sat(ev.p_pa)
            h_a, h_b = sat[1] + 0.25 * (sat[2] - sat[1]), sat[2] + 10e3
            ev.h = [h_a + (h_b - h_a) * (i + 1) / n for i in range(n)]
            sat = props.sat(cd.p_pa)
            h_a, h_b = sat[2] + 50e3, sat[1] - 10e3
            cd.h = [h_a + (h_b - h_a) * (i + 1) / n for i in range(n)]
        for hx in (ev, cd):
            self._cell_masses(hx)
            hx.m_kg = sum(hx.mass)
        total = ev.m_kg + cd.m_kg
        for hx in (ev, cd):
            hx.m_kg *= p["charge_kg"] / total
            self._settle_pressure(hx)
            if hx.clamped:
                raise ValueError(
                    "heatpump_r290 parameter charge_kg=%g cannot be held by the exchangers "
                    "(%g..%g Pa); expected a charge between about 0.02 and 0.6 kg"
                    % (p["charge_kg"], props.p_min_pa, props.p_max_pa)
                )
        self.valve_steps = float(min(max(p["initial_valve_steps"], 0.0), full))
        self._valve_budget = 0.0
        self.t_pipe = t_we if standstill else t_ev_in - 4.0
        self.t_shell = t_wc if standstill else t_cd_in + 30.0
        self.hp_switch_open = False
        self.t_s = 0.0
        self.energy_in_j = 0.0  # integral of heat in + compressor power - leaked energy, J
        self.leaked_kg = 0.0  # refrigerant removed by charge changes (negative: added), kg
        # time the compressor has turned against a shut valve: it pumps the evaporator down to
        # a vacuum, the wrong order of a stop (compressor off first, then the valve)
        self.closed_running_s = 0.0
        self._charge_target = None
        self._h_suc = ev.h[-1]
        self._flows = self._compute_flows(u0, 0.0)
        self._out = {}
        self._update_outputs(u0)
        hold = {"valve_steps_cmd": self.valve_steps}
        if standstill:
            hold["compressor_hz"] = 0.0
        while self.t_s < p["presettle_s"] - 1e-9:
            self.step(min(1.0, p["presettle_s"] - self.t_s), hold)
        self.t_s = 0.0
        self.energy_in_j = 0.0
        self.closed_running_s = 0.0
        self._update_outputs(self.parse_inputs(hold))

    # ------------------------------------------------------------ components
    def eta_vol(self, ratio):
        """Clearance volumetric efficiency at pressure ratio ``ratio``, clipped to 0..1.

        ``eta_0 - C (pr^(1/n) - 1)``: zero at the ratio where re-expanding clearance gas fills
        the whole stroke (about 32 with the defaults).
        """
        p = self.p
        if ratio <= 1.0:
            return min(p["eta_vol_max"], 1.0)
        e = p["eta_vol_max"] - p["clearance_ratio"] * (ratio ** (1.0 / p["polytropic_n"]) - 1.0)
        return min(max(e, 0.0), 1.0)

    def eta_is(self, ratio, hz):
        """Overall isentropic efficiency at ``ratio`` and speed ``hz`` (map, clipped 0.3..0.8)."""
        p = self.p
        e = (
            p["eta_is_peak"]
            - p["eta_is_ratio_curv"] * (ratio - p["eta_is_ratio_opt"]) ** 2
            - p["eta_is_speed_curv"] * (hz - 55.0) ** 2
        )
        return min(max(e, 0.3), 0.8)

    def _density(self, p_pa, h, sat, k_zivi):
        """In-situ density at (p, h): Zivi slip void fraction in two-phase, tables elsewhere."""
        hf, hg = sat[1], sat[2]
        if hf < h < hg:
            x = (h - hf) / (hg - hf)
            alpha = x / (x + (1.0 - x) * k_zivi)
            return alpha * sat[4] + (1.0 - alpha) * sat[3]
        return self.props.ph(p_pa, h, sat)[1]

    def _cell_masses(self, hx):
        sat = self.props.sat(hx.p_pa)
        k = (sat[4] / sat[3]) ** (2.0 / 3.0)
        v = hx.vol
        for i in range(hx.n):
            hx.mass[i] = v * self._density(hx.p_pa, hx.h[i], sat, k)

    def _mass_at(self, hx, p_pa, h0, g):
        """Charge held by ``hx`` at pressure ``p_pa`` with enthalpies ``h0 + g (p - p_old)``.
        Keeps the cell masses of the evaluation in ``self._last_mass`` (reused once solved)."""
        sat = self.props.sat(p_pa)
        k = (sat[4] / sat[3]) ** (2.0 / 3.0)
        dp = p_pa - hx.p_pa
        v = hx.vol
        dens = self._density
        cells = [v * dens(p_pa, h0[i] + g[i] * dp, sat, k) for i in range(hx.n)]
        self._last_mass = (p_pa, cells)
        return sum(cells)

    def _solve_pressure(self, hx, h0, g):
        """Pressure at which the cells hold the exchanger's charge ``hx.m_kg`` (safeguarded
        secant on a monotone function, to ``pressure_tol``). Returns the new pressure."""
        target = hx.m_kg
        tol = self.p["pressure_tol"] * max(target, 1e-6)
        lo, hi = self._p_lo, self._p_hi
        p0 = min(max(hx.p_pa, lo), hi)
        f0 = self._mass_at(hx, p0, h0, g) - target
        hx.clamped = False
        if abs(f0) <= tol:
            return p0
        if f0 < 0.0:
            lo = p0
        else:
            hi = p0
        p1 = p0 - f0 / hx.dm_dp
        if not lo < p1 < hi:
            p1 = min(2.0 * p0, 0.5 * (p0 + hi)) if f0 < 0.0 else max(0.5 * p0, 0.5 * (lo + p0))
        for _ in range(60):
            f1 = self._mass_at(hx, p1, h0, g) - target
            if abs(f1) <= tol:
                break
            if f1 < 0.0:
                lo = p1
            else:
                hi = p1
            if hi - lo <= 1e-9 * hi:
                break
            slope = (f1 - f0) / (p1 - p0) if p1 != p0 else 0.0
            if slope > 0.0:
                hx.dm_dp = slope
                p2 = p1 - f1 / slope
            else:
                p2 = 0.5 * (lo + hi)
            if not lo < p2 < hi:
                p2 = 0.5 * (lo + hi)
            p0, f0, p1 = p1, f1, p2
        if abs(f1) > max(tol, 1e-6 * target) and (p1 <= self._p_lo * 1.001 or p1 >= hi * 0.999):
            hx.clamped = True
        return p1

    def _settle_pressure(self, hx):
        """Pressure that holds ``hx.m_kg`` with the enthalpies held (used when building)."""
        zero = [0.0] * hx.n
        hx.p_pa = self._solve_pressure(hx, list(hx.h), zero)
        self._cell_masses(hx)

    def _compute_flows(self, u, h_sub):
        """Compressor and valve flows and states at the start of a substep of ``h_sub`` s."""
        p = self.p
        props = self.props
        ev, cd = self.evap, self.cond
        p_e, p_c = ev.p_pa, cd.p_pa
        # High-pressure switch (hardware, acts on the compressor contactor).
        if p_c > p["hp_cutout_pa"]:
            self.hp_switch_open = True
        elif self.hp_switch_open and p_c < p["hp_reset_pa"]:
            self.hp_switch_open = False
        hz = u["compressor_hz"]
        if hz < p["compressor_min_hz"] or self.hp_switch_open:
            hz = 0.0
        sat_e = props.sat(p_e)
        sat_c = props.sat(p_c)
        h_suc = self._h_suc
        t_suc, rho_suc, x_suc, s_suc = props.ph(p_e, h_suc, sat_e)
        ratio = p_c / p_e
        if h_suc < sat_e[2]:
            # Wet suction: the liquid flashes in the cylinder and fills swept volume as
            # saturated vapour, so the mass moved is that of dry saturated suction.
            rho_suc = sat_e[4]
        m_comp = self.eta_vol(ratio) * rho_suc * p["displacement_m3"] * hz
        if ratio > 1.0 and hz > 0.0:
            h_is = props.h_ps(p_c, s_suc, sat_c)
            h_dis = h_suc + (h_is - h_suc) / self.eta_is(ratio, hz)
        else:
            h_dis = h_suc
        q_shell = 0.0
        if m_comp > 0.0:
            t_ad = props.ph(p_c, h_dis, sat_c)[0]
            cp = self._cp_vap(p_c, sat_c)
            mcp = m_comp * cp
            q_shell = (1.0 - math.exp(-p["shell_ua_w_k"] / mcp)) * mcp * (self.t_shell - t_ad)
            h_dis += q_shell / m_comp
        # Valve: stepper moves toward the command (whole steps); flow at its mean opening.
        start = self.valve_steps
        if h_sub > 0.0:
            target = round(u["valve_steps_cmd"])
            self._valve_budget += p["valve_step_rate"] * h_sub
            moves = int(self._valve_budget)
            self._valve_budget -= moves
            if target > start:
                self.valve_steps = min(start + moves, target)
            elif target < start:
                self.valve_steps = max(start - moves, target)
            else:
                self._valve_budget = 0.0
        opening = 0.5 * (start + self.valve_steps) / p["valve_full_steps"]
        cda = p["valve_cda_full_m2"] * opening
        dp = p_c - p_e
        if dp >= 0.0:
            h_v = cd.h[-1]  # condenser outlet (liquid, or flashing two-phase) feeds the valve
            rho_v = props.ph(p_c, h_v, sat_c)[1]
        else:  # reverse flow at standstill: evaporator inlet cell back into the condenser
            h_v = ev.h[0]
            rho_v = props.ph(p_e, h_v, sat_e)[1]
        m_valve = cda * math.sqrt(2.0 * rho_v) * dp / math.sqrt(abs(dp) + _DP_LAMINAR_PA)
        return {
            "m_comp": m_comp, "m_valve": m_valve, "h_suc": h_suc, "h_dis": h_dis,
            "t_suc": t_suc, "x_suc": x_suc, "ratio": ratio, "hz": hz, "h_valve": h_v,
            "sat_e": sat_e, "sat_c": sat_c, "q_shell": q_shell,
        }  # fmt: skip

    def _cp_vap(self, p_pa, sat):
        """Mean specific heat of the vapour just above saturation, J/(kg K)."""
        return 10e3 / max(self.props.ph(p_pa, sat[2] + 10e3, sat)[0] - sat[0], 1e-3)

    def _cp_liq(self, p_pa, sat):
        """Mean specific heat of the liquid just below saturation, J/(kg K)."""
        return 10e3 / max(sat[0] - self.props.ph(p_pa, sat[1] - 10e3, sat)[0], 1e-3)

    # ------------------------------------------------------------ exchanger step
    def _cell_heat(self, hx, i, sat, cp_v, cp_l, dtsat_dp):
        """Heat from wall ``i`` into its (well-mixed) cell.

        Returns ``(q_w, dq_dp, c)``: heat (W), its derivative with the pressure through the
        saturation temperature (W/Pa), and ``c`` (W per J/kg), the fall of the heat per unit rise
        of the cell enthalpy (used to treat it implicitly). In two-phase the conductance ramps
        from the two-phase value to the single-phase one below ``_X_LO`` and above ``_X_HI``
        quality (dry-out at high quality, a liquid film at low quality), so the heat is a
        continuous function of the cell enthalpy across both phase boundaries.
        """
        t_sat, hf, hg = sat[0], sat[1], sat[2]
        t_w = hx.t_wall[i]
        h = hx.h[i]
        if hf < h < hg:
            x = (h - hf) / (hg - hf)
            ua_tp, ua_1p = hx.ua_tp, hx.ua_1p
            if x < _X_LO:
                r = x / _X_LO
                dr = 1.0 / (_X_LO * (hg - hf))
            elif x > _X_HI:
                r = (1.0 - x) / (1.0 - _X_HI)
                dr = -1.0 / ((1.0 - _X_HI) * (hg - hf))
            else:
                r = 1.0
                dr = 0.0
            ua = ua_1p + (ua_tp - ua_1p) * r
            dt = t_w - t_sat
            c = -(ua_tp - ua_1p) * dr * dt
            return ua * dt, -ua * dtsat_dp, (c if c > 0.0 else 0.0)
        t_r = self.props.ph(hx.p_pa, h, sat)[0]
        ua = hx.ua_1p
        return ua * (t_w - t_r), 0.0, ua / (cp_v if h >= hg else cp_l)

    def _step_exchanger(self, hx, h_sub, m_in, h_in, m_out, h_out_bc, src=None, h_src=0.0):
        """Advance one exchanger by ``h_sub`` s (see :meth:`_exchanger_pass`). The transport
        uses the face flows of the previous substep; when the flows this substep produces differ
        much from them (a valve or compressor jump), the substep is repeated once with the new
        flows, which keeps the energy books close through violent transients."""
        saved = (list(hx.h), hx.p_pa, list(hx.mass), hx.m_kg, list(hx.face))
        used = list(hx.face)
        e_src = self._exchanger_pass(hx, h_sub, m_in, h_in, m_out, h_out_bc, src, h_src)
        scale = 0.05 * max(abs(m_in), abs(m_out)) + 1e-5
        if max(abs(hx.face[j] - used[j]) for j in range(1, hx.n)) > scale:
            new_faces = list(hx.face)
            hx.h[:], hx.p_pa, hx.mass[:], hx.m_kg, hx.face[:] = (
                saved[0],
                saved[1],
                saved[2],
                saved[3],
                new_faces,
            )
            e_src = self._exchanger_pass(hx, h_sub, m_in, h_in, m_out, h_out_bc, src, h_src)
        return e_src

    def _exchanger_pass(self, hx, h_sub, m_in, h_in, m_out, h_out_bc, src=None, h_src=0.0):
        """Advance one exchanger by ``h_sub`` s with boundary flows ``m_in`` (at the inlet face,
        enthalpy ``h_in`` when it flows in) and ``m_out`` (outlet face, enthalpy ``h_out_bc``
        when it flows back in), and optional mass sources ``src`` per cell (kg/s; a positive one
        brings enthalpy ``h_src``, a negative one leaves at the cell's enthalpy: a leak).
        Updates enthalpies, pressure, masses, face flows and the heat taken from each wall
        (``hx.q_ref``); returns the enthalpy flow the sources brought in, W."""
        n = hx.n
        props = self.props
        sat = props.sat(hx.p_pa)
        cp_v = self._cp_vap(hx.p_pa, sat)
        cp_l = self._cp_liq(hx.p_pa, sat)
        dtsat_dp = props.dtsat_dp(hx.p_pa)
        face = hx.face
        face[0] = m_in
        face[n] = m_out
        h = hx.h
        mass = hx.mass
        # Heat rates and the tridiagonal implicit-upwind system A h' = b0 + b1 dp.
        q0 = [0.0] * n
        qp = [0.0] * n
        cc = [0.0] * n
        lower = [0.0] * n
        diag = [0.0] * n
        upper = [0.0] * n
        b0 = [0.0] * n
        b1 = [0.0] * n
        for i in range(n):
            f_l = face[i]
            f_r = face[i + 1]
            in_l = f_l if f_l > 0.0 else 0.0
            in_r = -f_r if f_r < 0.0 else 0.0
            q, dqdp, c = self._cell_heat(hx, i, sat, cp_v, cp_l, dtsat_dp)
            q0[i], qp[i], cc[i] = q, dqdp, c
            diag[i] = mass[i] + h_sub * (in_l + in_r + c)
            rhs = mass[i] * h[i] + h_sub * (q + c * h[i])
            if i > 0:
                lower[i] = -h_sub * in_l
            else:
                rhs += h_sub * in_l * h_in
            if i < n - 1:
                upper[i] = -h_sub * in_r
            else:
                rhs += h_sub * in_r * h_out_bc
            if src is not None and src[i] > 0.0:
                diag[i] += h_sub * src[i]
                rhs += h_sub * src[i] * h_src
            b0[i] = rhs
            b1[i] = h_sub * dqdp + hx.vol
        # Thomas algorithm, two right-hand sides (diagonally dominant: always stable).
        cp_ = [0.0] * n
        d0 = [0.0] * n
        d1 = [0.0] * n
        for i in range(n):
            m = diag[i] - (lower[i] * cp_[i - 1] if i > 0 else 0.0)
            cp_[i] = upper[i] / m
            d0[i] = (b0[i] - (lower[i] * d0[i - 1] if i > 0 else 0.0)) / m
            d1[i] = (b1[i] - (lower[i] * d1[i - 1] if i > 0 else 0.0)) / m
        for i in range(n - 2, -1, -1):
            d0[i] -= cp_[i] * d0[i + 1]
            d1[i] -= cp_[i] * d1[i + 1]
        # Charge, then the pressure that holds it.
        hx.m_kg += h_sub * (m_in - m_out + (sum(src) if src is not None else 0.0))
        p_old = hx.p_pa
        p_new = self._solve_pressure(hx, d0, d1)
        dp = p_new - p_old
        q_tot = hx.q_ref
        for i in range(n):
            h_new = d0[i] + d1[i] * dp
            q_tot[i] = q0[i] + qp[i] * dp - cc[i] * (h_new - h[i])
            h[i] = h_new
        hx.p_pa = p_new
        old = list(mass)
        last_p, last_mass = self._last_mass
        if last_p == p_new:
            mass[:] = last_mass
        else:
            self._cell_masses(hx)
        # Face flows from the cells' mass change (used by the next substep's transport).
        f = m_in
        for i in range(n - 1):
            f += (src[i] if src is not None else 0.0) - (mass[i] - old[i]) / h_sub
            face[i + 1] = f
        if src is None:
            return 0.0
        return sum(m * (h_src if m > 0.0 else h[i]) for i, m in enumerate(src))

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
        n_sub = max(1, math.ceil(dt / self.p["max_substep_s"] - 1e-9))
        h = dt / n_sub
        for _ in range(n_sub):
            self._substep(h, u)
        self.t_s += dt
        self._update_outputs(u)
        return dict(self._out)

    def _substep(self, h, u):
        p = self.p
        ev, cd = self.evap, self.cond
        f = self._flows = self._compute_flows(u, h)
        m_comp, m_valve = f["m_comp"], f["m_valve"]
        # Secondary streams with the walls at the start of the substep.
        self._secondary(
            ev, u["evap_sec_in_k"], u["evap_sec_flow_kg_s"] * p["evap_sec_flow_scale"],
            p["evap_sec_cp_j_kgk"],
        )  # fmt: skip
        self._secondary(
            cd, u["cond_sec_in_k"], u["cond_sec_flow_kg_s"] * p["cond_sec_flow_scale"],
            p["cond_sec_cp_j_kgk"],
        )  # fmt: skip
        # Refrigerant: evaporator fed by the valve, drained by the compressor; condenser fed by
        # the compressor, drained by the valve (either way round at standstill).
        h_valve = f["h_valve"]
        src_e = src_c = None
        h_inj = 0.0
        if self._charge_target is not None:
            # A charge change, at most charge_rate_kg_s: a leak leaves every cell in proportion
            # to its mass (at the cell's enthalpy); a recharge enters the condenser outlet as
            # saturated liquid (the liquid-line service port).
            delta = self._charge_target - (ev.m_kg + cd.m_kg)
            lim = p["charge_rate_kg_s"] * h
            if abs(delta) <= lim:
                self._charge_target = None
            else:
                delta = lim if delta > 0.0 else -lim
            self.leaked_kg -= delta
            if delta < 0.0:
                total = sum(ev.mass) + sum(cd.mass)
                src_e = [delta * m / total / h for m in ev.mass]
                src_c = [delta * m / total / h for m in cd.mass]
            elif delta > 0.0:
                src_c = [0.0] * cd.n
                src_c[-1] = delta / h
                h_inj = self.props.sat(cd.p_pa)[1]
        if f["hz"] > 0.0 and self.valve_steps <= 0.0:
            self.closed_running_s += h
        e_src = self._step_exchanger(ev, h, m_valve, h_valve, m_comp, ev.h[-1], src_e)
        e_src += self._step_exchanger(cd, h, m_comp, f["h_dis"], m_valve, h_valve, src_c, h_inj)
        # Suction pipe between evaporator outlet and compressor: what a strap-on probe sees.
        props = self.props
        h_e = ev.h[-1]
        sat_e = props.sat(ev.p_pa)
        t_r = props.ph(ev.p_pa, h_e, sat_e)[0]
        if m_comp > 0.0:
            if sat_e[1] < h_e < sat_e[2]:
                q_pipe = p["suction_pipe_ua_w_k"] * (self.t_pipe - t_r)
                q_pipe = min(q_pipe, (sat_e[2] - h_e) * m_comp + 1e-9) if q_pipe > 0 else q_pipe
            else:
                mcp = m_comp * self._cp_vap(ev.p_pa, sat_e)
                q_pipe = (
                    (1.0 - math.exp(-p["suction_pipe_ua_w_k"] / mcp)) * mcp * (self.t_pipe - t_r)
                )
            self._h_suc = h_e + q_pipe / m_comp
        else:
            q_pipe = 0.0
            self._h_suc = h_e
        self.t_pipe -= h * q_pipe / p["suction_pipe_j_k"]
        self.t_shell -= h * f["q_shell"] / p["shell_j_k"]
        # Walls: heat from the secondary minus heat into the refrigerant.
        for hx in (ev, cd):
            tw = hx.t_wall
            for i in range(hx.n):
                tw[i] += h * (hx.q_sec[i] - hx.q_ref[i]) / hx.cap_wall
        w = m_comp * (f["h_dis"] - f["h_suc"]) - f["q_shell"]
        self._power_w = w
        self.energy_in_j += h * (ev.q_sec_total + cd.q_sec_total + w + e_src)

    # ------------------------------------------------------------ changes
    def _param_changed(self, name, old, new):
        ev, cd = self.evap, self.cond
        if name == "charge_kg":
            # Applied as mass sources from the next substep on, at most charge_rate_kg_s (see
            # _substep), so the refrigerant leaves or enters through the same mass and energy
            # equations as any other flow.
            self._charge_target = new
        elif name == "evap_ua_sec_w_k":
            ev.ua_sec = new / ev.n
        elif name == "cond_ua_sec_w_k":
            cd.ua_sec = new / cd.n

    # --------------------------------------------------------------- outputs
    @property
    def charge_kg(self):
        """Refrigerant charge now in the circuit (the two exchangers' charge states), kg."""
        return self.evap.m_kg + self.cond.m_kg

    def refrigerant_mass_kg(self):
        """Charge held by the current thermodynamic state (sum over the cells), kg."""
        return sum(self.evap.mass) + sum(self.cond.mass)

    def stored_energy_j(self):
        """Energy stored in walls, suction pipe, shell and refrigerant (internal energy), J."""
        e = self.p["suction_pipe_j_k"] * self.t_pipe + self.p["shell_j_k"] * self.t_shell
        for hx in (self.evap, self.cond):
            e += sum(hx.cap_wall * t for t in hx.t_wall)
            e += sum(m * h for m, h in zip(hx.mass, hx.h, strict=True))
            e -= hx.p_pa * hx.vol_total
        return e

    def _signed_superheat(self, p_pa, h, sat):
        """Superheat of the state (p, h): ``T - T_sat`` for vapour; for a wet state the
        enthalpy-based equivalent ``(h - h_g) / cp_g`` (negative, continuous through zero)."""
        if h >= sat[2]:
            return self.props.ph(p_pa, h, sat)[0] - sat[0]
        return (h - sat[2]) / self._cp_vap(p_pa, sat)

    def _update_outputs(self, u):
        f = self._flows
        ev, cd = self.evap, self.cond
        props = self.props
        sat_e = props.sat(ev.p_pa)
        sat_c = props.sat(cd.p_pa)
        h_suc = self._h_suc
        t_suc = props.ph(ev.p_pa, h_suc, sat_e)[0]
        if h_suc <= sat_e[1]:
            liquid = 1.0
        elif h_suc < sat_e[2]:
            liquid = (sat_e[2] - h_suc) / (sat_e[2] - sat_e[1])
        else:
            liquid = 0.0
        h_liq = cd.h[-1]
        if h_liq <= sat_c[1]:
            subcool = sat_c[0] - props.ph(cd.p_pa, h_liq, sat_c)[0]
        else:  # two-phase (or vapour) at the condenser outlet: enthalpy-based, negative
            subcool = (sat_c[1] - h_liq) / self._cp_liq(cd.p_pa, sat_c)
        if f["m_comp"] > 0.0:
            t_dis = props.ph(cd.p_pa, f["h_dis"], sat_c)[0]
        else:  # no flow: the discharge line sits at the shell temperature
            t_dis = self.t_shell
        power = f["m_comp"] * (f["h_dis"] - f["h_suc"]) - f["q_shell"]
        cap = ev.q_sec_total
        heat = -cd.q_sec_total
        self._out = {
            "suction_p_pa": ev.p_pa,
            "suction_t_k": t_suc,
            "discharge_p_pa": cd.p_pa,
            "discharge_t_k": t_dis,
            "evap_sat_t_k": sat_e[0],
            "cond_sat_t_k": sat_c[0],
            "superheat_k": self._signed_superheat(ev.p_pa, h_suc, sat_e),
            "subcooling_k": subcool,
            "liquid_at_compressor": liquid,
            "capacity_w": cap,
            "heating_w": heat,
            "compressor_power_w": power,
            "cop": cap / power if power > 1.0 else 0.0,
            "cop_heating": heat / power if power > 1.0 else 0.0,
            "mass_flow_kg_s": f["m_comp"],
            "valve_flow_kg_s": f["m_valve"],
            "valve_steps": float(self.valve_steps),
            "compressor_hz": f["hz"],
            "hp_switch_open": 1.0 if self.hp_switch_open else 0.0,
            "evap_sec_out_k": ev.t_sec_out,
            "cond_sec_out_k": cd.t_sec_out,
            "charge_evap_kg": ev.m_kg,
            "charge_cond_kg": cd.m_kg,
            "charge_kg": ev.m_kg + cd.m_kg,
            "suction_pipe_k": self.t_pipe,
            "closed_running_s": self.closed_running_s,
        }

    def outputs(self):
        """Current outputs without stepping (see class docstring)."""
        return dict(self._out)
