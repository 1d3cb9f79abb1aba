"""EV battery coolant loop: pump, chiller, PTC heater, pipes with transport delay, cell groups.

Coolant circulates chiller -> PTC heater -> supply pipe -> pack cold plate (cell groups in series,
group 0 first) -> return pipe -> chiller. Every coolant volume is a well-mixed node; the pipes are
chains of nodes (tanks in series), which gives a flow-dependent transport delay with a little
dispersion. Each cell group is one thermal node coupled to its cold-plate coolant node, heated by
``I^2 R(T)`` and by an optional injected fault power (thermal-runaway precursor). See
docs/plants.md for the parameter sources.

Faults a scenario can apply while running (``CHANGEABLE``): chiller capacity (loss), chiller
fouling, pump wear or death, a coolant leak (the expansion reservoir empties first, then air in
the loop starves the pump), a PTC heater failure.

Off-gas: the pack enclosure is one well-mixed gas volume vented through its breather. A group
whose runaway precursor is active (``runaway_w > 0``) releases electrolyte vapour at a fixed
rate, and a group above the vent temperature vents much more, so ``gas_ppm`` rises when the
precursor starts, ahead of the cell temperature, which the group's heat capacity delays. Real
cells give this signal minutes early (electrolyte vapour 5-15 min, H2 2-8 min before the
temperature rise, reference systems.md s.2); a scenario reproduces such a lead with a small
precursor power (gas, hardly any heat) raised later to the runaway power.

Numerics: coolant nodes are updated implicitly in flow order (stable for any flow), cell nodes
explicitly (their time constant is tens of minutes). Every heat flux is applied with the same value
to both nodes it connects, so the stored energy changes by exactly the boundary fluxes; the plant
keeps the books in ``energy_in_j`` and ``stored_energy_j()``.
"""

import math

from ._base import PlantBase

_LPM_PER_M3S = 60e3


class BatteryCoolantLoop(PlantBase):
    """Battery pack with a liquid cooling loop.

    ``step(dt_s, inputs) -> outputs``. Inputs (missing ones take their defaults):

    ================  =======  ============  =============================================
    name              default  range         meaning
    ================  =======  ============  =============================================
    pump_duty         0.5      0..1 clamp    coolant pump PWM duty
    current_a         0 A      +-2000        pack current (either sign heats, I^2 R)
    ambient_k         298.15   200..360 K    ambient air temperature
    heater_w          0 W      0..max clamp  PTC heater power command
    chiller_cmd       1        0..1 clamp    chiller request (EXV opening / compressor
                                             request) as a fraction of its capacity
    chiller_w         1e6 W    0..1e6 clamp  extra limit on the chiller (e.g. the coupled
                                             heat pump's capacity); default: none
    chiller_ref_k     288.15   240..320 K    refrigerant evaporating temperature in chiller
    runaway_group     n-1      -1..n-1       cell group with injected heat (-1: none)
    runaway_w         0 W      0..1e5 clamp  injected heat in that group (> 0: its
                                             precursor is active and it off-gasses)
    ================  =======  ============  =============================================

    Outputs (SI): ``coolant_out_k`` (pack outlet), ``coolant_in_k`` (pack inlet),
    ``chiller_in_k``, ``chiller_out_k``, ``cell_max_k``, ``cell_min_k``, ``cell_spread_k``,
    ``cell_k_0`` .. ``cell_k_{n-1}``, ``flow_lpm``, ``flow_kg_s``, ``loop_dp_pa``,
    ``pump_power_w``, ``heat_gen_w``, ``chiller_heat_w`` (heat removed), ``heater_w`` (heat
    given), ``current_a`` (pack current, for a current sensor), ``gas_ppm`` (off-gas volume
    fraction in the pack enclosure, ppm), ``cells_vented`` (groups past their vent
    temperature), ``reservoir_level`` (expansion reservoir, 1 full .. 0 empty),
    ``air_fraction`` (air in the loop after a leak has emptied the reservoir).

    When coupled to the R290 heat pump, pass the heat pump's ``capacity_w`` as ``chiller_w`` and
    set ``chiller_ref_k`` to its evaporating temperature; the heat pump takes ``chiller_in_k`` and
    ``flow_kg_s`` as its evaporator's secondary inlet (see ``coupled.py``).
    """

    NAME = "battery_loop"
    PARAMS = {
        "n_groups": (
            8,
            "-",
            "assumption: pack modelled as 8 cell groups along the cold plate (one temperature "
            "sensor each fits the HIL frame)",
        ),
        "cell_mass_kg": (
            300.0,
            "kg",
            "assumption: 75 kWh pack at ~250 Wh/kg cell level (typical NMC cells)",
        ),
        "cell_cp_j_kgk": (
            1000.0,
            "J/(kg K)",
            "Li-ion cells 0.8-1.1 kJ/(kg K), Maleki et al., J. Electrochem. Soc. 146 (1999) 947",
        ),
        "cell_to_plate_w_k": (
            240.0,
            "W/K",
            "assumption: whole-pack cells-to-coolant conductance (bottom cold plate + TIM)",
        ),
        "pack_resistance_ohm": (
            0.096,
            "ohm",
            "assumption: 96 series elements of 1.0 mOhm at 25 degC",
        ),
        "resistance_ref_k": (298.15, "K", "reference temperature of pack_resistance_ohm"),
        "resistance_activation_k": (
            2800.0,
            "K",
            "assumption: Arrhenius E_a/R, R(T)=R_ref*exp(E_a/R*(1/T-1/T_ref)); "
            "E_a ~ 23 kJ/mol, within the 20-35 kJ/mol usually reported for Li-ion",
        ),
        "group_resistance_scale": (
            (1.0, 1.02, 0.98, 1.04, 0.99, 1.01, 1.03, 0.97),
            "-",
            "assumption: cell-to-cell resistance spread of a few percent (one value per group)",
        ),
        "pack_ambient_w_k": (15.0, "W/K", "assumption: pack enclosure to ambient"),
        "pipe_ambient_w_k": (2.0, "W/K", "assumption: hoses to ambient, whole loop"),
        "coolant_rho_kg_m3": (
            1070.0,
            "kg/m^3",
            "50% ethylene glycol at 20 degC, ASHRAE Handbook Fundamentals ch. 31",
        ),
        "coolant_cp_j_kgk": (
            3300.0,
            "J/(kg K)",
            "50% ethylene glycol at 20-30 degC, ASHRAE Handbook Fundamentals ch. 31",
        ),
        "plate_volume_m3": (2.0e-3, "m^3", "assumption: coolant in the pack cold plate"),
        "plate_heat_capacity_j_k": (
            7200.0,
            "J/K",
            "assumption: 8 kg aluminium cold plate x 900 J/(kg K) (Incropera, Table A.1)",
        ),
        "supply_pipe_m3": (1.0e-3, "m^3", "assumption: chiller-to-pack hose, 1 L"),
        "return_pipe_m3": (1.0e-3, "m^3", "assumption: pack-to-chiller hose, 1 L"),
        "pipe_nodes": (8, "-", "tanks in series per hose (dispersion of the transport delay)"),
        "chiller_volume_m3": (0.4e-3, "m^3", "assumption: coolant side of a plate chiller"),
        "chiller_ua_w_k": (
            120.0,
            "W/K",
            "assumption: chiller conductance, sized so the default scenario needs 20-90% duty",
        ),
        "chiller_capacity_w": (
            5000.0,
            "W",
            "assumption: refrigerant-side capacity of the chiller at full request",
        ),
        "heater_volume_m3": (0.2e-3, "m^3", "assumption: PTC heater coolant volume"),
        "heater_max_w": (7000.0, "W", "assumption: 7 kW high-voltage PTC coolant heater"),
        "heater_health": (1.0, "-", "fraction of the commanded heater power delivered"),
        "pump_shutoff_dp_pa": (
            60e3,
            "Pa",
            "assumption: 12 V electric coolant pump, 0.6 bar shut-off head at full duty",
        ),
        "pump_free_flow_lpm": (30.0, "L/min", "assumption: same pump, free-delivery flow"),
        "pump_min_duty": (0.08, "-", "assumption: below this PWM duty the pump does not run"),
        "pump_health": (
            1.0,
            "-",
            "fraction of the new pump's head (impeller wear; 0 = dead pump)",
        ),
        "pump_efficiency": (0.3, "-", "assumption: wire-to-water efficiency of a small pump"),
        "loop_k_pa_per_lpm2": (
            83.3,
            "Pa/(L/min)^2",
            "assumption: loop resistance giving 20 L/min at full duty with the pump above",
        ),
        "reservoir_l": (
            1.0,
            "L",
            "assumption: coolant in the expansion reservoir between its full and empty marks",
        ),
        "coolant_lost_l": (0.0, "L", "coolant lost through a leak (0 = none)"),
        "air_lock_fraction": (
            0.1,
            "-",
            "assumption: air volume fraction in the loop at which the centrifugal pump air-binds "
            "(pumps are built for liquid; entrained gas lowers and then stops their flow, Budris, "
            "WaterWorld 26(1) 2010)",
        ),
        "pack_gas_volume_l": (
            100.0,
            "L",
            "assumption: free gas volume of the pack enclosure",
        ),
        "breather_l_min": (
            0.5,
            "L/min",
            "assumption: air exchange through the enclosure's pressure-equalisation breather",
        ),
        "precursor_gas_l_min": (
            0.2,
            "L/min",
            "assumption: electrolyte vapour released by a group whose runaway precursor is "
            "active (early off-gassing ahead of the temperature rise, reference systems.md s.2)",
        ),
        "vent_t_k": (
            393.15,
            "K",
            "assumption: cell vent opening temperature (120 degC)",
        ),
        "vent_gas_l_min": (
            30.0,
            "L/min",
            "assumption: gas released by a vented group",
        ),
        "initial_t_k": (308.15, "K", "initial temperature of cells and coolant (35 degC)"),
    }
    CHANGEABLE = {
        "chiller_capacity_w": (
            "W",
            0.0,
            20000.0,
            "chiller capacity at full request (0 = chiller lost: compressor or refrigerant "
            "side failed)",
        ),
        "chiller_ua_w_k": ("W/K", 1.0, 2000.0, "chiller conductance (fouling lowers it)"),
        "pump_health": ("-", 0.0, 1.0, "pump head left (wear; 0 = dead pump)"),
        "coolant_lost_l": (
            "L",
            0.0,
            20.0,
            "coolant lost through a leak: the reservoir empties first, then air enters the loop "
            "and the pump's flow falls to zero at air_lock_fraction",
        ),
        "heater_health": ("-", 0.0, 1.0, "PTC heater: fraction of the command delivered"),
        "pack_ambient_w_k": ("W/K", 0.0, 200.0, "pack enclosure to ambient conductance"),
    }
    INPUTS = {
        "pump_duty": (0.5, 0.0, 1.0, "clamp", "-"),
        "current_a": (0.0, -2000.0, 2000.0, "check", "A"),
        "ambient_k": (298.15, 200.0, 360.0, "check", "K"),
        "heater_w": (0.0, 0.0, 7000.0, "clamp", "W"),
        "chiller_cmd": (1.0, 0.0, 1.0, "clamp", "-"),
        "chiller_w": (1e6, 0.0, 1e6, "clamp", "W"),
        "chiller_ref_k": (288.15, 240.0, 320.0, "check", "K"),
        "runaway_group": (-1.0, -1.0, 63.0, "check", "-"),
        "runaway_w": (0.0, 0.0, 1e5, "clamp", "W"),
    }

    def __init__(self, **params):
        super().__init__(**params)
        p = self.p
        self._require_positive(
            "n_groups", "cell_mass_kg", "cell_cp_j_kgk", "cell_to_plate_w_k",
            "pack_resistance_ohm", "coolant_rho_kg_m3", "coolant_cp_j_kgk", "plate_volume_m3",
            "supply_pipe_m3", "return_pipe_m3", "pipe_nodes", "chiller_volume_m3",
            "heater_volume_m3", "pump_shutoff_dp_pa", "pump_free_flow_lpm", "pump_efficiency",
            "loop_k_pa_per_lpm2", "initial_t_k", "resistance_ref_k", "reservoir_l",
            "air_lock_fraction", "pack_gas_volume_l", "vent_t_k",
        )  # fmt: skip
        for k in ("breather_l_min", "precursor_gas_l_min", "vent_gas_l_min"):
            if p[k] < 0.0:
                raise ValueError(
                    "%s parameter %s=%r out of range; expected >= 0" % (self.NAME, k, p[k])
                )
        n = self.n_groups = int(p["n_groups"])
        scale = tuple(float(s) for s in p["group_resistance_scale"])
        if len(scale) < n:
            scale = tuple(scale[i % len(scale)] for i in range(n))
        self._scale = scale[:n]
        self.INPUTS = dict(self.INPUTS)
        # Injected heat goes to the last (downstream, warmest) group unless another is named.
        self.INPUTS["runaway_group"] = (n - 1.0, -1.0, n - 1.0, "check", "-")
        self.INPUTS["heater_w"] = (0.0, 0.0, p["heater_max_w"], "clamp", "W")
        rc = p["coolant_rho_kg_m3"] * p["coolant_cp_j_kgk"]
        k = int(p["pipe_nodes"])
        # Coolant nodes in flow order: chiller, heater, supply pipe, plate groups, return pipe.
        caps = [rc * p["chiller_volume_m3"], rc * p["heater_volume_m3"]]
        caps += [rc * p["supply_pipe_m3"] / k] * k
        self._i_plate = len(caps)
        caps += [(rc * p["plate_volume_m3"] + p["plate_heat_capacity_j_k"]) / n] * n
        caps += [rc * p["return_pipe_m3"] / k] * k
        self._cap = caps
        self._pipe_ua = p["pipe_ambient_w_k"] / (2 * k)
        self._pipe_nodes = set(range(2, 2 + k)) | set(range(self._i_plate + n, len(caps)))
        self._cell_cap = p["cell_mass_kg"] * p["cell_cp_j_kgk"] / n
        self._cell_ua = p["cell_to_plate_w_k"] / n
        self._cell_amb_ua = p["pack_ambient_w_k"] / n
        self.loop_volume_l = 1e3 * (
            p["plate_volume_m3"] + p["supply_pipe_m3"] + p["return_pipe_m3"]
            + p["chiller_volume_m3"] + p["heater_volume_m3"]
        )  # fmt: skip
        self.gas_fraction = 0.0  # off-gas volume fraction in the pack enclosure
        self.vented = [False] * n
        self._current_a = 0.0
        t0 = p["initial_t_k"]
        self.coolant_k = [t0] * len(caps)
        self.cell_k = [t0] * n
        self.t_s = 0.0
        self.energy_in_j = 0.0
        self._out = {}
        self._flows(0.0)
        self._q = {"gen": 0.0, "chill": 0.0, "heater": 0.0}
        self._ambient_k = self.INPUTS["ambient_k"][0]
        self._update_outputs()

    # ----------------------------------------------------------- components
    def pump_flow_lpm(self, duty):
        """Operating point of pump and loop: flow in L/min for PWM ``duty``.

        Pump curve scaled by the affinity laws, ``dp = dp0*d^2 - (dp0/Q0^2)*Q^2``, against the
        loop ``dp = k*Q^2``: ``Q = d*sqrt(dp0 / (k + dp0/Q0^2))``.
        """
        p = self.p
        if duty < p["pump_min_duty"] or p["pump_health"] <= 0.0:
            return 0.0
        # A worn pump's curve is the new one scaled in head: dp = w (dp0 d^2 - dp0 Q^2/Q0^2).
        dp0 = p["pump_shutoff_dp_pa"] * p["pump_health"]
        q = duty * math.sqrt(dp0 / (p["loop_k_pa_per_lpm2"] + dp0 / p["pump_free_flow_lpm"] ** 2))
        return q * max(0.0, 1.0 - self.air_fraction() / p["air_lock_fraction"])

    def reservoir_level(self):
        """Expansion reservoir level after a leak, 1 (full) .. 0 (empty)."""
        return max(0.0, 1.0 - self.p["coolant_lost_l"] / self.p["reservoir_l"])

    def air_fraction(self):
        """Air volume fraction in the loop once a leak has emptied the reservoir, 0..1."""
        lost = self.p["coolant_lost_l"] - self.p["reservoir_l"]
        return min(max(lost, 0.0) / self.loop_volume_l, 1.0)

    def _flows(self, duty):
        p = self.p
        q_lpm = self.pump_flow_lpm(duty)
        self.flow_lpm = q_lpm
        self.flow_kg_s = q_lpm / _LPM_PER_M3S * p["coolant_rho_kg_m3"]
        self.loop_dp_pa = p["loop_k_pa_per_lpm2"] * q_lpm * q_lpm
        self.pump_power_w = self.loop_dp_pa * q_lpm / _LPM_PER_M3S / p["pump_efficiency"]

    def resistance_ohm(self, group, t_k):
        """Electrical resistance of one cell group at ``t_k`` (Arrhenius), ohm."""
        p = self.p
        r = p["pack_resistance_ohm"] / self.n_groups * self._scale[group]
        return r * math.exp(
            p["resistance_activation_k"] * (1.0 / t_k - 1.0 / p["resistance_ref_k"])
        )

    # ------------------------------------------------------------------ step
    def step(self, dt_s, inputs):
        """Advance by ``dt_s`` seconds with ``inputs`` (see class docstring); return outputs."""
        dt = self._check_dt(dt_s)
        u = self.parse_inputs(inputs)
        rg = u["runaway_group"]
        if rg != int(rg):
            raise ValueError(
                "runaway_group=%r must be an integer -1..%d" % (rg, self.n_groups - 1)
            )
        self._flows(u["pump_duty"])
        mcp = self.flow_kg_s * self.p["coolant_cp_j_kgk"]
        # The last node's outflow is taken explicitly (closes the ring conservatively); keep its
        # Courant number below 0.5 with substeps.
        n_sub = max(1, math.ceil(dt * mcp / (0.5 * self._cap[-1])))
        h = dt / n_sub
        for _ in range(n_sub):
            self._substep(h, u, mcp)
        self._off_gas(dt, u)
        self.t_s += dt
        self._ambient_k = u["ambient_k"]
        self._current_a = u["current_a"]
        self._update_outputs()
        return dict(self._out)

    def _substep(self, h, u, mcp):
        p = self.p
        cap = self._cap
        tc = self.coolant_k
        amb = u["ambient_k"]
        n = self.n_groups
        ip = self._i_plate
        # Chiller: effectiveness-NTU against refrigerant evaporating at chiller_ref_k, limited
        # by the capacity available; it only removes heat.
        t_in = tc[-1]
        if mcp > 0.0:
            eff = 1.0 - math.exp(-p["chiller_ua_w_k"] / mcp)
            q_chill = eff * mcp * (t_in - u["chiller_ref_k"])
        else:  # no flow: the stagnant chiller volume still exchanges heat
            q_chill = p["chiller_ua_w_k"] * (tc[0] - u["chiller_ref_k"])
        capacity = min(u["chiller_w"], p["chiller_capacity_w"] * u["chiller_cmd"])
        q_chill = min(max(q_chill, 0.0), capacity)
        q_heater = u["heater_w"] * p["heater_health"]
        e_in = -q_chill + q_heater
        # Node sources (W) and extra implicit conductances to a fixed temperature.
        t_up = t_in
        cells = self.cell_k
        q_gen_total = 0.0
        for i in range(len(tc)):
            c = cap[i]
            if i == len(tc) - 1:  # explicit outflow closes the ring exactly
                src = mcp * (t_up - tc[i])
                if i in self._pipe_nodes:
                    q_amb = self._pipe_ua * (amb - tc[i])
                    src += q_amb
                    e_in += q_amb
                tc[i] += h * src / c
                continue
            src = 0.0
            g = mcp
            if i == 0:
                src -= q_chill
            elif i == 1:
                src += q_heater
            if i in self._pipe_nodes:
                # Implicit exchange with ambient: flux is pipe_ua*(amb - T_new).
                g_amb = self._pipe_ua
            else:
                g_amb = 0.0
            if ip <= i < ip + n:
                gi = i - ip
                g_cell = self._cell_ua
            else:
                g_cell = 0.0
                gi = -1
            t_new = (
                c * tc[i]
                + h * (mcp * t_up + src + g_amb * amb + (g_cell * cells[gi] if gi >= 0 else 0.0))
            ) / (c + h * (g + g_amb + g_cell))
            if g_amb:
                e_in += g_amb * (amb - t_new)
            if gi >= 0:
                q_cell = g_cell * (cells[gi] - t_new)
                t_cell = cells[gi]
                q_gen = u["current_a"] ** 2 * self.resistance_ohm(gi, t_cell)
                if gi == rg_int(u["runaway_group"]):
                    q_gen += u["runaway_w"]
                q_amb = self._cell_amb_ua * (amb - t_cell)
                cells[gi] = t_cell + h * (q_gen + q_amb - q_cell) / self._cell_cap
                q_gen_total += q_gen
                e_in += q_gen + q_amb
            tc[i] = t_new
            t_up = t_new
        self.energy_in_j += h * e_in
        self._q = {"gen": q_gen_total, "chill": q_chill, "heater": q_heater}

    def _off_gas(self, dt, u):
        """Well-mixed enclosure: gas released by active precursors and vented groups, diluted by
        the breather's air exchange (exact exponential update over the step)."""
        p = self.p
        q_gas = 0.0  # L/min
        if u["runaway_w"] > 0.0 and u["runaway_group"] >= 0:
            q_gas += p["precursor_gas_l_min"]
        for g, t in enumerate(self.cell_k):
            if t >= p["vent_t_k"]:
                self.vented[g] = True
                q_gas += p["vent_gas_l_min"]
        q_out = q_gas + p["breather_l_min"]  # L/min leaving through the breather
        if q_out <= 0.0:
            return
        c_eq = q_gas / q_out
        tau_s = 60.0 * p["pack_gas_volume_l"] / q_out
        self.gas_fraction = c_eq + (self.gas_fraction - c_eq) * math.exp(-dt / tau_s)

    def _param_changed(self, name, old, new):
        if name == "pack_ambient_w_k":
            self._cell_amb_ua = new / self.n_groups
        self._flows(self._inputs.get("pump_duty", 0.0))
        self._update_outputs()

    # --------------------------------------------------------------- outputs
    def stored_energy_j(self):
        """Thermal energy stored in coolant, plate and cells relative to 0 K, J."""
        e = sum(c * t for c, t in zip(self._cap, self.coolant_k, strict=True))
        return e + sum(self._cell_cap * t for t in self.cell_k)

    def _update_outputs(self):
        ip, n = self._i_plate, self.n_groups
        cells = self.cell_k
        out = {
            "coolant_out_k": self.coolant_k[ip + n - 1],
            "coolant_in_k": self.coolant_k[ip - 1],
            "chiller_in_k": self.coolant_k[-1],
            "chiller_out_k": self.coolant_k[0],
            "cell_max_k": max(cells),
            "cell_min_k": min(cells),
            "cell_spread_k": max(cells) - min(cells),
            "flow_lpm": self.flow_lpm,
            "flow_kg_s": self.flow_kg_s,
            "loop_dp_pa": self.loop_dp_pa,
            "pump_power_w": self.pump_power_w,
            "heat_gen_w": self._q["gen"],
            "chiller_heat_w": self._q["chill"],
            "heater_w": self._q["heater"],
            "current_a": self._current_a,
            "gas_ppm": 1e6 * self.gas_fraction,
            "cells_vented": float(sum(self.vented)),
            "reservoir_level": self.reservoir_level(),
            "air_fraction": self.air_fraction(),
        }
        for i, t in enumerate(cells):
            out["cell_k_%d" % i] = t
        self._out = out

    def outputs(self):
        """Current outputs without stepping (see class docstring)."""
        return dict(self._out)


def rg_int(x):
    """Runaway group index as int (-1 for none)."""
    return int(x)
