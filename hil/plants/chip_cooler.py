"""Pumped two-phase chip cooler: junction-case-cold-plate RC network, microchannel flow-boiling
evaporator with a flux-dependent heat-transfer coefficient and a critical-heat-flux limit, vapour
line, condenser to facility water.

Model structure (docs/plants.md):

* Thermal network: junction (die) -> case (lid) -> cold plate; one node each, with the datasheet-
  style resistances ``R_jc`` and ``R_tim`` between them. The chip dissipates
  ``min(chip_power_w, power_cap_w)``: a capped chip throttles (clocks and voltage) within
  milliseconds, far below the 0.1 s tick.
* Evaporator: ``n_channels`` rectangular microchannels (width, height, length, fin width) in a
  copper base, fed by a positive-displacement pump with a subcooled inlet. The cold plate is one
  isothermal node; along the channel the refrigerant goes through a wet (boiling) region, a
  dried-out (mist) region once the local quality passes the critical quality, and a vapour region
  beyond ``x = 1``, each taking heat at its own coefficient; the vapour region is an
  effectiveness-NTU stream heated by the plate, so the outlet can never be hotter than the plate
  (second law).
* Boiling coefficient: Sun & Mishima, Int. J. Heat Mass Transfer 52 (2009) 5323, for
  mini-channels (0.21-6.05 mm, 11 fluids incl. R134a): ``h = 6 Re_lo^1.05 Bo^0.54 /
  (We_lo^0.191 (rho_l/rho_v)^0.142) k_l/D_h``, so it rises with the heat flux (``Bo = q/(G
  h_lv)``); never below the laminar single-phase liquid value.
* Critical heat flux: Wojtan, Revellin & Thome, Exp. Therm. Fluid Sci. 30 (2006) 765, fitted to
  R134a and R245fa in 0.5 and 0.8 mm channels: ``q_CHF = 0.437 (rho_v/rho_l)^0.073 We_L^-0.24
  (L/D_h)^-0.72 G h_lv`` with ``We_L = G^2 L/(sigma rho_l)``. Parallel channels behave like single
  ones with inlet restrictors (Kandlikar, Exp. Therm. Fluid Sci. 30 (2006) 441, reference
  control.md s.5), which this model assumes. Above CHF the boiling crisis starts at the heated
  length ``L_c`` at which the correlation's CHF equals the applied flux (``q_CHF ~ L^-0.96``).
* Dry-out margin: ``min(1 - q/q_CHF, 1 - x_out/dryout_quality)``: the flux criterion (boiling
  crisis) and the exit-quality criterion (``dryout_quality``, a project parameter: reference
  control.md s.5 found no citable exit-quality limit); <= 0 means dry-out.
* Loop: the refrigerant inventory (liquid, vapour, reservoir, metal) is one lumped two-phase
  node at the saturation temperature ``T_loop``; the condenser rejects
  ``eps * C_water * (T_loop - T_water_in)`` to facility water.
* Vapour line from evaporator outlet to condenser: a quadratic pressure drop in the vapour volume
  flow, so evaporator pressure and temperature rise with the exit quality (reference control.md
  s.5, HVAC&R 16(1) 2010).

Every heat flux is applied with the same value to both nodes it joins, so stored energy changes by
exactly ``chip power - condenser heat``; ``energy_in_j`` and ``stored_energy_j()`` keep the books.
"""

import math

from ._base import PlantBase
from .props import fluid_table

_G = 9.81


class TwoPhaseChipCooler(PlantBase):
    """Two-phase microchannel cold plate on a high-power chip.

    ``step(dt_s, inputs) -> outputs``. Inputs (missing ones take their defaults):

    ===================  ========  =============  ==========================================
    name                 default   range          meaning
    ===================  ========  =============  ==========================================
    pump_duty            0.6       0..1 clamp     refrigerant pump speed command
    chip_power_w         300 W     0..5000        power the chip's workload demands
    power_cap_w          5000 W    0..5000 clamp  power cap requested from the chip
    facility_t_k         303.15 K  275..330       facility water inlet temperature
    facility_flow_kg_s   0.05      0..2           facility water flow through the condenser
    ===================  ========  =============  ==========================================

    Outputs (SI): ``junction_k``, ``case_k``, ``cold_plate_k``, ``chip_power_w`` (dissipated,
    ``min(demand, cap)``), ``power_demand_w``, ``throttled`` (1 while the cap limits the chip),
    ``sat_t_k`` (loop saturation temperature), ``sat_p_pa``, ``outlet_p_pa`` and ``outlet_t_k``
    (evaporator outlet; never above ``cold_plate_k``), ``exit_quality`` (above 1: superheated
    vapour, ``1 + (h - h_v)/h_lv``), ``dryout_fraction`` (heated length past the critical
    quality), ``dryout_margin`` (``min(chf_margin, quality_margin)``, <= 0 means dry-out),
    ``chf_margin`` (``1 - q/q_CHF``), ``quality_margin`` (``1 - x_out/dryout_quality``),
    ``heat_flux_w_m2`` (mean over the heated channel walls), ``chf_w_m2``, ``htc_w_m2k``
    (boiling coefficient), ``mass_flux_kg_m2s``, ``flow_kg_s``, ``pump_power_w``,
    ``condenser_w``, ``fluid_heat_w``.
    """

    NAME = "chip_cooler"
    PARAMS = {
        "fluid": ("R1234ze(E)", "-", "CoolProp name of the loop refrigerant"),
        "r_jc_k_w": (0.03, "K/W", "assumption: junction-to-case of a ~700 W accelerator"),
        "r_tim_k_w": (0.012, "K/W", "assumption: lid-to-cold-plate TIM (~0.2 K cm^2/W, 17 cm^2)"),
        "c_junction_j_k": (20.0, "J/K", "assumption: die and substrate"),
        "c_case_j_k": (150.0, "J/K", "assumption: 0.4 kg copper lid x 385 J/(kg K)"),
        "c_plate_j_k": (190.0, "J/K", "assumption: 0.5 kg copper cold plate x 385 J/(kg K)"),
        "n_channels": (60, "-", "assumption: parallel microchannels across a 30 mm wide plate"),
        "channel_width_m": (0.3e-3, "m", "assumption: 0.3 mm wide channels (skived copper)"),
        "channel_height_m": (1.0e-3, "m", "assumption: 1 mm deep channels"),
        "channel_length_m": (0.04, "m", "assumption: 40 mm heated length"),
        "fin_width_m": (0.2e-3, "m", "assumption: 0.2 mm copper fins between channels"),
        "plate_k_w_mk": (390.0, "W/(m K)", "copper near 300 K, Incropera Table A.1 (401)"),
        "htc_scale": (
            1.0,
            "-",
            "multiplier on the flow-boiling coefficient of Sun & Mishima, Int. J. Heat Mass "
            "Transfer 52 (2009) 5323 (2501 points, 0.21-6.05 mm channels, 11 fluids incl. R134a)",
        ),
        "chf_scale": (
            1.0,
            "-",
            "multiplier on the critical heat flux of Wojtan, Revellin & Thome, Exp. Therm. Fluid "
            "Sci. 30 (2006) 765 (R134a and R245fa in 0.5 and 0.8 mm channels)",
        ),
        "htc_dry_w_m2k": (
            2000.0,
            "W/(m^2 K)",
            "assumption: post-dry-out (mist and vapour) coefficient",
        ),
        "dryout_quality": (
            0.7,
            "-",
            "project parameter (reference control.md s.5: no citable exit-quality limit)",
        ),
        "pump_max_flow_kg_s": (0.015, "kg/s", "assumption: gear pump at full speed"),
        "pump_min_duty": (0.05, "-", "assumption: below this the pump does not turn"),
        "pump_max_power_w": (20.0, "W", "assumption: electrical power at full speed"),
        "pump_health": (
            1.0,
            "-",
            "fraction of the new pump's displacement (wear, internal leakage; 0 = dead)",
        ),
        "subcooling_k": (5.0, "K", "assumption: liquid subcooling at the evaporator inlet"),
        "loop_heat_capacity_j_k": (
            2200.0,
            "J/K",
            "assumption: 1 kg refrigerant x 1.4 kJ/(kg K) plus 2 kg metal x 400 J/(kg K)",
        ),
        "condenser_ua_w_k": (300.0, "W/K", "assumption: brazed-plate condenser to water"),
        "facility_flow_scale": (
            1.0,
            "-",
            "fraction of the facility water flow that reaches the condenser (1 = all)",
        ),
        "vapour_line_k": (
            1.5e10,
            "1/m^4",
            "assumption: dp = k*(m*x)^2/rho_v of the vapour line; ~9 kPa at 4.5 g/s vapour",
        ),
        "stagnant_ua_w_k": (
            3.0,
            "W/K",
            "assumption: plate to loop by conduction and natural convection when nothing flows",
        ),
        "thermal_trip_k": (
            398.15,
            "K",
            "assumption: the chip's own THERMTRIP shutdown at 125 degC junction (hardware, above "
            "any controller limit); it restarts once the junction is 25 K cooler",
        ),
        "initial_t_k": (308.15, "K", "initial temperature of every node (35 degC)"),
    }
    CHANGEABLE = {
        "pump_health": ("-", 0.0, 1.0, "pump wear: fraction of the displacement left; 0 = dead"),
        "condenser_ua_w_k": ("W/K", 5.0, 3000.0, "condenser conductance (fouling lowers it)"),
        "facility_flow_scale": (
            "-",
            0.0,
            1.0,
            "facility water supply: fraction of the commanded flow that arrives; 0 = lost",
        ),
        "r_tim_k_w": ("K/W", 0.002, 0.2, "lid-to-cold-plate TIM resistance (pump-out raises it)"),
    }
    INPUTS = {
        "pump_duty": (0.6, 0.0, 1.0, "clamp", "-"),
        "chip_power_w": (300.0, 0.0, 5000.0, "check", "W"),
        "power_cap_w": (5000.0, 0.0, 5000.0, "clamp", "W"),
        "facility_t_k": (303.15, 275.0, 330.0, "check", "K"),
        "facility_flow_kg_s": (0.05, 0.0, 2.0, "check", "kg/s"),
    }
    WATER_CP_J_KGK = 4180.0  # Incropera Table A.6

    def __init__(self, **params):
        super().__init__(**params)
        self._require_positive(
            "r_jc_k_w", "r_tim_k_w", "c_junction_j_k", "c_case_j_k", "c_plate_j_k",
            "n_channels", "channel_width_m", "channel_height_m", "channel_length_m",
            "fin_width_m", "plate_k_w_mk", "htc_dry_w_m2k", "dryout_quality", "htc_scale",
            "chf_scale",
            "pump_max_flow_kg_s", "loop_heat_capacity_j_k", "condenser_ua_w_k", "initial_t_k",
        )  # fmt: skip
        try:
            self.props = fluid_table(str(self.p["fluid"]), 1.0e5, 30.0e5, 120e3, True)
        except ValueError as e:
            raise ValueError("chip_cooler fluid %r unusable: %s" % (self.p["fluid"], e)) from None
        p = self.p
        w, hch = p["channel_width_m"], p["channel_height_m"]
        self._a_flow = int(p["n_channels"]) * w * hch  # total flow cross-section, m^2
        self._d_h = 4.0 * w * hch / (2.0 * (w + hch))  # hydraulic diameter, m
        self.footprint_m2 = int(p["n_channels"]) * (w + p["fin_width_m"]) * p["channel_length_m"]
        t0 = p["initial_t_k"]
        self.t_j = self.t_c = self.t_cp = self.t_loop = t0
        self.t_s = 0.0
        self.energy_in_j = 0.0
        self._q_f = 0.0
        self._q_boil = 0.0
        self._q_cond = 0.0
        self._power = 0.0
        self._demand = 0.0
        self._duty = 0.0
        self._htc = 0.0
        self._g_eff = 0.0
        self.tripped = False
        self._t_loop_max = self.props.t_sat(self.props.p_max_pa * 0.98)
        u = self.parse_inputs({})
        self._evaporator(u)
        self._update_outputs()

    def stored_energy_j(self):
        """Thermal energy of die, lid, cold plate and loop relative to 0 K, J."""
        p = self.p
        return (
            p["c_junction_j_k"] * self.t_j
            + p["c_case_j_k"] * self.t_c
            + p["c_plate_j_k"] * self.t_cp
            + p["loop_heat_capacity_j_k"] * self.t_loop
        )

    # --------------------------------------------------------------- correlations
    def boiling_htc(self, q_w_m2, g_kg_m2s, sat, tr):
        """Flow-boiling coefficient (Sun & Mishima 2009), W/(m^2 K), at heat flux ``q_w_m2`` and
        mass flux ``g_kg_m2s``; never below the laminar single-phase liquid value."""
        mu_l, _mu_v, k_l, _k_v, sigma = tr[:5]
        rho_l, rho_v, h_lv = sat[3], sat[4], sat[2] - sat[1]
        d = self._d_h
        h_lo = 4.36 * k_l / d  # laminar, fully developed (Incropera Table 8.1)
        if g_kg_m2s <= 0.0 or q_w_m2 <= 0.0:
            return h_lo
        re_lo = g_kg_m2s * d / mu_l
        bo = q_w_m2 / (g_kg_m2s * h_lv)
        we_lo = g_kg_m2s * g_kg_m2s * d / (rho_l * sigma)
        nu = 6.0 * re_lo**1.05 * bo**0.54 / (we_lo**0.191 * (rho_l / rho_v) ** 0.142)
        return max(self.p["htc_scale"] * nu * k_l / d, h_lo)

    def critical_heat_flux(self, g_kg_m2s, sat, tr, length_m=None):
        """Saturated critical heat flux (Wojtan, Revellin & Thome 2006), W/m^2, at mass flux
        ``g_kg_m2s`` for heated length ``length_m`` (default the channel length)."""
        if g_kg_m2s <= 0.0:
            return 0.0
        length = self.p["channel_length_m"] if length_m is None else length_m
        sigma = tr[4]
        rho_l, rho_v, h_lv = sat[3], sat[4], sat[2] - sat[1]
        we_l = g_kg_m2s * g_kg_m2s * length / (sigma * rho_l)
        return (
            self.p["chf_scale"]
            * 0.437
            * (rho_v / rho_l) ** 0.073
            * we_l**-0.24
            * (length / self._d_h) ** -0.72
            * g_kg_m2s
            * h_lv
        )

    def heated_area_m2(self, htc_w_m2k):
        """Heated channel-wall area, m^2: channel floors plus both fin sides at the fin
        efficiency ``tanh(mH)/(mH)``, ``m = sqrt(2 h/(k t_fin))``."""
        p = self.p
        t_fin, hch = p["fin_width_m"], p["channel_height_m"]
        mh = math.sqrt(2.0 * max(htc_w_m2k, 1.0) / (p["plate_k_w_mk"] * t_fin)) * hch
        eta = math.tanh(mh) / mh
        per = p["channel_width_m"] + 2.0 * hch * eta
        return int(p["n_channels"]) * per * p["channel_length_m"]

    # --------------------------------------------------------------- evaporator
    def _evaporator(self, u):
        """Flow, saturation, boiling coefficient, CHF and the wet/mist/vapour split at the
        current plate and loop temperatures. Sets ``self._s``."""
        p = self.p
        props = self.props
        duty = u["pump_duty"]
        m = (
            p["pump_max_flow_kg_s"] * duty * p["pump_health"]
            if duty >= p["pump_min_duty"]
            else 0.0
        )
        # (a loop hotter than the table's top is evaluated at the top: the chip trips long
        # before, this only keeps a lost condenser finite)
        p_sat = props.p_sat(min(self.t_loop, self._t_loop_max))
        sat = props.sat(p_sat)
        h_lv = sat[2] - sat[1]
        tr = props.transport(p_sat)
        x_in = -tr[5] * p["subcooling_k"] / h_lv
        g = m / self._a_flow
        # Evaporator pressure: loop saturation plus the vapour-line drop of the last state.
        x_prev = getattr(self, "_x_out", 0.0)
        m_vap = m * min(max(x_prev, 0.0), 1.0)
        rho_v = sat[4]
        dp_line = p["vapour_line_k"] * m_vap * m_vap / rho_v
        p_out = min(p_sat + dp_line, props.p_max_pa * 0.999)
        sat_out = props.sat(p_out)
        t_e = sat_out[0]
        # Coefficient and CHF at the heat flux of the last substep (the flux moves slowly next
        # to the substep; using it avoids an algebraic loop).
        area = self.heated_area_m2(self._htc if self._htc > 0.0 else 2e4)
        q_flux = max(self._q_boil, 0.0) / area
        htc = self.boiling_htc(q_flux, g, sat, tr)
        area = self.heated_area_m2(htc)
        q_chf = self.critical_heat_flux(g, sat, tr)
        dt = self.t_cp - t_e
        h_dry = p["htc_dry_w_m2k"]
        cp_v = tr[6]
        x_c = p["dryout_quality"]
        if m > 0.0 and q_flux > q_chf:
            # Boiling crisis upstream of the exit: at the heated length where the correlation's
            # CHF equals the applied flux (q_CHF ~ L^-0.96).
            l_frac = (q_chf / q_flux) ** (1.0 / 0.96)
            x_c = min(x_c, x_in + l_frac * q_flux * area / (m * h_lv))
        a_w = area
        if m <= 0.0:
            # Nothing flows: channels vapour-lock, heat leaves only by conduction.
            q = 0.0
            x_out, t_out, f_dry, g_eff = 1.0, t_e, 1.0, 0.0
        elif dt <= 0.0 or htc * area * dt <= m * h_lv * (x_c - x_in):
            q = htc * area * dt  # wet all along (or the plate is colder than the fluid)
            x_out, t_out, f_dry, g_eff = x_in + q / (m * h_lv), t_e, 0.0, htc * area
        else:
            q_w = m * h_lv * (x_c - x_in)
            a_w = q_w / (htc * dt)
            a_r = area - a_w
            q_m_need = m * h_lv * (1.0 - x_c)
            if h_dry * a_r * dt <= q_m_need:
                q = q_w + h_dry * a_r * dt
                x_out, t_out = x_c + h_dry * a_r * dt / (m * h_lv), t_e
            else:
                a_v = a_r - q_m_need / (h_dry * dt)
                mcp = m * cp_v
                q_v = mcp * dt * (1.0 - math.exp(-h_dry * a_v / mcp))
                q = q_w + q_m_need + q_v
                x_out = 1.0 + q_v / (m * h_lv)
                t_out = t_e + q_v / mcp  # < plate temperature: exp(-NTU) > 0
            f_dry = a_r / area
            g_eff = q / dt
        g_st = p["stagnant_ua_w_k"]
        q_boil = q
        q += g_st * (self.t_cp - self.t_loop)
        g_eff += g_st
        self._s = {
            "m": m, "g": g, "p_sat": p_sat, "p_out": p_out, "t_e": t_e, "q": q, "x_out": x_out,
            "q_boil": q_boil,
            "t_out": t_out, "f_dry": f_dry, "htc": htc, "area": area, "q_chf": q_chf,
            "g_eff": g_eff,
        }  # fmt: skip
        self._htc = htc
        self._g_eff = g_eff

    # ------------------------------------------------------------------ step
    def step(self, dt_s, inputs):
        """Advance by ``dt_s`` seconds with ``inputs`` (see class docstring); return outputs."""
        dt = self._check_dt(dt_s)
        u = self.parse_inputs(inputs)
        p = self.p
        # Explicit substeps shorter than a third of the fastest node's time constant.
        g_plate = 1.0 / p["r_tim_k_w"] + max(self._g_eff, 1.0)
        tau = min(
            p["c_junction_j_k"] * p["r_jc_k_w"],
            p["c_case_j_k"] / (1.0 / p["r_jc_k_w"] + 1.0 / p["r_tim_k_w"]),
            p["c_plate_j_k"] / g_plate,
        )
        n_sub = max(1, math.ceil(dt / (0.3 * tau)))
        h = dt / n_sub
        for _ in range(n_sub):
            self._substep(h, u)
        self.t_s += dt
        self._evaporator(u)  # the state the outputs report: the nodes at the end of the step
        self._update_outputs()
        return dict(self._out)

    def _substep(self, h, u):
        p = self.p
        self._evaporator(u)
        s = self._s
        self._demand = u["chip_power_w"]
        if self.t_j >= p["thermal_trip_k"]:
            self.tripped = True
        elif self.tripped and self.t_j < p["thermal_trip_k"] - 25.0:
            self.tripped = False
        power = 0.0 if self.tripped else min(u["chip_power_w"], u["power_cap_w"])
        self._power = power
        q_jc = (self.t_j - self.t_c) / p["r_jc_k_w"]
        q_cp = (self.t_c - self.t_cp) / p["r_tim_k_w"]
        q_f = s["q"]
        c_w = u["facility_flow_kg_s"] * p["facility_flow_scale"] * self.WATER_CP_J_KGK
        if c_w > 0.0:
            eff = 1.0 - math.exp(-p["condenser_ua_w_k"] / c_w)
            q_cond = eff * c_w * (self.t_loop - u["facility_t_k"])
        else:
            q_cond = 0.0
        self.t_j += h * (power - q_jc) / p["c_junction_j_k"]
        self.t_c += h * (q_jc - q_cp) / p["c_case_j_k"]
        self.t_cp += h * (q_cp - q_f) / p["c_plate_j_k"]
        self.t_loop += h * (q_f - q_cond) / p["loop_heat_capacity_j_k"]
        self.energy_in_j += h * (power - q_cond)
        self._q_f = q_f
        self._q_boil = s["q_boil"]
        self._q_cond = q_cond
        self._x_out = s["x_out"]
        self._duty = u["pump_duty"]

    # ------------------------------------------------------------ changes
    def _param_changed(self, name, old, new):
        self._evaporator(self._inputs)
        self._update_outputs()

    # --------------------------------------------------------------- outputs
    def _update_outputs(self):
        p = self.p
        s = self._s
        q_flux = max(s["q_boil"], 0.0) / s["area"]
        x = s["x_out"]
        if s["m"] > 0.0:
            chf_margin = 1.0 - q_flux / s["q_chf"]
        else:
            chf_margin = 1.0 if q_flux <= 0.0 else -1.0
        quality_margin = 1.0 - x / p["dryout_quality"]
        margin = max(min(chf_margin, quality_margin), -10.0)
        duty = self._duty
        self._out = {
            "junction_k": self.t_j,
            "case_k": self.t_c,
            "cold_plate_k": self.t_cp,
            "chip_power_w": self._power,
            "power_demand_w": self._demand,
            "throttled": 1.0 if self._power < self._demand else 0.0,
            "thermal_trip": 1.0 if self.tripped else 0.0,
            "sat_t_k": self.t_loop,
            "sat_p_pa": s["p_sat"],
            "outlet_p_pa": s["p_out"],
            "outlet_t_k": s["t_out"],
            "exit_quality": x,
            "dryout_fraction": s["f_dry"],
            "dryout_margin": margin,
            "chf_margin": max(chf_margin, -10.0),
            "quality_margin": max(quality_margin, -10.0),
            "heat_flux_w_m2": q_flux,
            "chf_w_m2": s["q_chf"],
            "htc_w_m2k": s["htc"],
            "mass_flux_kg_m2s": s["g"],
            "flow_kg_s": s["m"],
            "pump_power_w": p["pump_max_power_w"] * duty**3 if s["m"] > 0 else 0.0,
            "condenser_w": self._q_cond,
            "fluid_heat_w": self._q_f,
        }

    def outputs(self):
        """Current outputs without stepping (see class docstring)."""
        return dict(self._out)
