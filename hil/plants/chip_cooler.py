"""Pumped two-phase chip cooler: junction-case-cold-plate RC network, flow-boiling evaporator,
vapour line, condenser to facility water.

Model structure (docs/plants.md):

* Thermal network: junction (die) -> case (lid) -> cold plate; one node each, with the datasheet-
  style resistances ``R_jc`` and ``R_tim`` between them.
* Evaporator: the cold plate boils refrigerant fed by a positive-displacement pump. Exit vapour
  quality ``x_out = x_in + Q/(m h_fg)``. Where the local quality passes ``dryout_quality`` (a
  project parameter, see reference control.md s.5: no citable exit-quality limit exists) the
  heat-transfer coefficient falls from the flow-boiling to the vapour value; the dried-out fraction
  of the plate follows from the (linear, uniform-flux) quality profile. Past ``x_out = 1`` the
  vapour superheats.
* Loop: the refrigerant inventory (liquid, vapour, reservoir, metal) is one lumped two-phase
  node at the saturation temperature ``T_loop``; the condenser rejects
  ``eps * C_water * (T_loop - T_water_in)`` to facility water.
* Vapour line from evaporator outlet to condenser: a quadratic pressure drop in the vapour volume
  flow, so evaporator outlet pressure and temperature rise when the exit quality rises and the
  outlet superheats at dry-out (reference control.md s.5, HVAC&R 16(1) 2010).

Every heat flux is applied with the same value to both nodes it joins, so stored energy changes by
exactly ``chip power - condenser heat``; ``energy_in_j`` and ``stored_energy_j()`` keep the books.
"""

import math

from ._base import PlantBase
from .props import fluid_table


class TwoPhaseChipCooler(PlantBase):
    """Two-phase cold plate on a high-power chip.

    ``step(dt_s, inputs) -> outputs``. Inputs (missing ones take their defaults):

    ===================  ========  =============  ==========================================
    name                 default   range          meaning
    ===================  ========  =============  ==========================================
    pump_duty            0.6       0..1 clamp     refrigerant pump speed command
    chip_power_w         300 W     0..5000        chip dissipation
    facility_t_k         303.15 K  275..330       facility water inlet temperature
    facility_flow_kg_s   0.05      0..2           facility water flow through the condenser
    ===================  ========  =============  ==========================================

    Outputs (SI): ``junction_k``, ``case_k``, ``cold_plate_k``, ``sat_t_k`` (loop saturation
    temperature), ``sat_p_pa`` (loop saturation pressure), ``outlet_p_pa`` and ``outlet_t_k``
    (evaporator outlet), ``exit_quality`` (can exceed 1: superheated; then ``outlet_t_k`` >
    saturation), ``dryout_fraction`` (fraction of the plate past ``dryout_quality``),
    ``dryout_margin`` (``1 - x_out/dryout_quality``; <= 0 means dry-out), ``flow_kg_s``,
    ``pump_power_w``, ``condenser_w``, ``fluid_heat_w``.
    """

    NAME = "chip_cooler"
    PARAMS = {
        "fluid": ("R1234ze(E)", "-", "CoolProp name of the loop refrigerant"),
        "r_jc_k_w": (0.03, "K/W", "assumption: junction-to-case of a ~700 W accelerator"),
        "r_tim_k_w": (0.012, "K/W", "assumption: lid-to-cold-plate TIM (~0.2 K cm^2/W, 17 cm^2)"),
        "c_junction_j_k": (20.0, "J/K", "assumption: die and substrate"),
        "c_case_j_k": (150.0, "J/K", "assumption: 0.4 kg copper lid x 385 J/(kg K)"),
        "c_plate_j_k": (190.0, "J/K", "assumption: 0.5 kg copper cold plate x 385 J/(kg K)"),
        "boiling_area_m2": (6e-3, "m^2", "assumption: wetted area of a microchannel cold plate"),
        "htc_boiling_w_m2k": (
            30e3,
            "W/(m^2 K)",
            "assumption: flow boiling in microchannels, 10-50 kW/(m^2 K) range of published data",
        ),
        "htc_dry_w_m2k": (2e3, "W/(m^2 K)", "assumption: vapour-only heat transfer after dry-out"),
        "dryout_quality": (
            0.7,
            "-",
            "project parameter (reference control.md s.5: no citable exit-quality limit)",
        ),
        "quality_lag_s": (
            1.0,
            "s",
            "assumption: refrigerant transit time through the cold plate",
        ),
        "pump_max_flow_kg_s": (0.015, "kg/s", "assumption: gear pump at full speed"),
        "pump_min_duty": (0.05, "-", "assumption: below this the pump does not turn"),
        "pump_max_power_w": (20.0, "W", "assumption: electrical power at full speed"),
        "subcooling_k": (5.0, "K", "assumption: liquid subcooling at the evaporator inlet"),
        "loop_heat_capacity_j_k": (
            2200.0,
            "J/K",
            "assumption: 1 kg refrigerant x 1.4 kJ/(kg K) plus 2 kg metal x 400 J/(kg K)",
        ),
        "condenser_ua_w_k": (300.0, "W/K", "assumption: brazed-plate condenser to water"),
        "vapour_line_k": (
            1.5e10,
            "1/m^4",
            "assumption: dp = k*(m*x)^2/rho_v of the vapour line; ~9 kPa at 4.5 g/s vapour",
        ),
        "initial_t_k": (308.15, "K", "initial temperature of every node (35 degC)"),
    }
    INPUTS = {
        "pump_duty": (0.6, 0.0, 1.0, "clamp", "-"),
        "chip_power_w": (300.0, 0.0, 5000.0, "check", "W"),
        "facility_t_k": (303.15, 275.0, 330.0, "check", "K"),
        "facility_flow_kg_s": (0.05, 0.0, 2.0, "check", "kg/s"),
    }
    WATER_CP_J_KGK = 4180.0  # Incropera Table A.6

    def __init__(self, **params):
        super().__init__(**params)
        self._require_positive(
            "r_jc_k_w", "r_tim_k_w", "c_junction_j_k", "c_case_j_k", "c_plate_j_k",
            "boiling_area_m2", "htc_boiling_w_m2k", "htc_dry_w_m2k", "dryout_quality",
            "pump_max_flow_kg_s", "loop_heat_capacity_j_k", "quality_lag_s",
            "condenser_ua_w_k", "initial_t_k",
        )  # fmt: skip
        try:
            self.props = fluid_table(str(self.p["fluid"]), 1.0e5, 20.0e5, 120e3)
        except ValueError as e:
            raise ValueError("chip_cooler fluid %r unusable: %s" % (self.p["fluid"], e)) from None
        t0 = self.p["initial_t_k"]
        self.t_j = self.t_c = self.t_cp = self.t_loop = t0
        self.x_out = 0.0
        self.t_s = 0.0
        self.energy_in_j = 0.0
        p = self.p
        tau = min(
            p["c_junction_j_k"] * p["r_jc_k_w"],
            p["c_case_j_k"] / (1 / p["r_jc_k_w"] + 1 / p["r_tim_k_w"]),
            p["c_plate_j_k"]
            / (1 / p["r_tim_k_w"] + p["htc_boiling_w_m2k"] * p["boiling_area_m2"]),
        )
        self._h_max = 0.3 * tau
        self._state = {}
        self._evaporator(self.parse_inputs({}))
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

    def _evaporator(self, u):
        """Flow, saturation and quality state; heat-transfer conductance of the plate."""
        p = self.p
        props = self.props
        duty = u["pump_duty"]
        m = p["pump_max_flow_kg_s"] * duty if duty >= p["pump_min_duty"] else 0.0
        p_sat = props.p_sat(self.t_loop)
        sat = props.sat(p_sat)
        h_fg = sat[2] - sat[1]
        # Liquid specific heat near saturation (table difference) for the inlet subcooling.
        t_sub = props.ph(p_sat, sat[1] - 5e3, sat)[0]
        cp_l = 5e3 / max(sat[0] - t_sub, 1e-6)
        x_in = -cp_l * p["subcooling_k"] / h_fg
        x_out = self.x_out
        # Dried-out fraction of the plate from the linear quality profile along the channel.
        xc = p["dryout_quality"]
        if x_out <= xc:
            f_dry = 0.0
        else:
            f_dry = min((x_out - xc) / max(x_out - x_in, 1e-9), 1.0)
        if m <= 0.0:
            f_dry = 1.0
        area = p["boiling_area_m2"]
        # The chip imposes a uniform heat flux, so the wet and dry parts act in series per unit
        # flux (mean wall superheat = q''*((1-f)/h_tp + f/h_dry)), not in parallel.
        ga = area / ((1.0 - f_dry) / p["htc_boiling_w_m2k"] + f_dry / p["htc_dry_w_m2k"])
        # Vapour-line pressure drop: the evaporator sits this much above the loop saturation.
        m_vap = m * min(max(x_out, 0.0), 1.0)
        rho_v = sat[4]
        if x_out > 1.0:  # superheated vapour is less dense: faster, more pressure drop
            rho_v = props.ph(p_sat, sat[2] + (x_out - 1.0) * h_fg, sat)[1]
        dp_line = p["vapour_line_k"] * m_vap * m_vap / rho_v
        p_out = p_sat + dp_line
        sat_out = props.sat(p_out)
        self._state = {
            "m": m, "p_sat": p_sat, "sat": sat, "h_fg": h_fg, "x_in": x_in, "f_dry": f_dry,
            "ga": ga, "p_out": p_out, "sat_out": sat_out,
        }  # fmt: skip

    def step(self, dt_s, inputs):
        """Advance by ``dt_s`` seconds with ``inputs`` (see class docstring); return outputs."""
        dt = self._check_dt(dt_s)
        u = self.parse_inputs(inputs)
        n_sub = max(1, math.ceil(dt / self._h_max))
        h = dt / n_sub
        for _ in range(n_sub):
            self._substep(h, u)
        self.t_s += dt
        self._update_outputs()
        return dict(self._out)

    def _substep(self, h, u):
        p = self.p
        self._evaporator(u)
        s = self._state
        t_evap = s["sat_out"][0]  # boiling happens at the evaporator pressure
        q_jc = (self.t_j - self.t_c) / p["r_jc_k_w"]
        q_cp = (self.t_c - self.t_cp) / p["r_tim_k_w"]
        q_f = s["ga"] * (self.t_cp - t_evap)
        c_w = u["facility_flow_kg_s"] * self.WATER_CP_J_KGK
        if c_w > 0.0:
            eff = 1.0 - math.exp(-p["condenser_ua_w_k"] / c_w)
            q_cond = eff * c_w * (self.t_loop - u["facility_t_k"])
        else:
            q_cond = 0.0
        self.t_j += h * (u["chip_power_w"] - q_jc) / p["c_junction_j_k"]
        self.t_c += h * (q_jc - q_cp) / p["c_case_j_k"]
        self.t_cp += h * (q_cp - q_f) / p["c_plate_j_k"]
        self.t_loop += h * (q_f - q_cond) / p["loop_heat_capacity_j_k"]
        self.energy_in_j += h * (u["chip_power_w"] - q_cond)
        m = s["m"]
        # Exit quality (no flow: the stagnant plate is treated as fully dry).
        x_now = s["x_in"] + q_f / (m * s["h_fg"]) if m > 0.0 else 1.5
        # The profile (and so the dried-out area) follows with the refrigerant transit time.
        self.x_out += (x_now - self.x_out) * min(h / p["quality_lag_s"], 1.0)
        self._q = (q_f, q_cond)
        self._duty = u["pump_duty"]

    def _update_outputs(self):
        p = self.p
        s = self._state
        q_f, q_cond = getattr(self, "_q", (0.0, 0.0))
        sat_out = s["sat_out"]
        x = self.x_out
        if x > 1.0:
            h_out = sat_out[2] + (x - 1.0) * s["h_fg"]
            t_out = self.props.ph(s["p_out"], h_out, sat_out)[0]
        else:
            t_out = sat_out[0]
        duty = getattr(self, "_duty", 0.0)
        self._out = {
            "junction_k": self.t_j,
            "case_k": self.t_c,
            "cold_plate_k": self.t_cp,
            "sat_t_k": self.t_loop,
            "sat_p_pa": s["p_sat"],
            "outlet_p_pa": s["p_out"],
            "outlet_t_k": t_out,
            "exit_quality": x,
            "dryout_fraction": s["f_dry"],
            "dryout_margin": 1.0 - x / p["dryout_quality"],
            "flow_kg_s": s["m"],
            "pump_power_w": p["pump_max_power_w"] * duty**3 if s["m"] > 0 else 0.0,
            "condenser_w": q_cond,
            "fluid_heat_w": q_f,
        }

    def outputs(self):
        """Current outputs without stepping (see class docstring)."""
        return dict(self._out)
