"""Signal names of a HIL run (criteria, plots, rows.csv) and what each one measures.

A run records one row per tick with these columns (SCENARIO_V2.md, "Signals"):

* ``t_s``: simulated time, s;
* ``plant.<output>``: every plant output by name (plant truth), SI;
* ``input.<name>``: every plant input as the plant received it (after actuator and plant faults);
* ``loop.<loop>.<x>``: the board's telemetry of every loop: ``setpoint``, ``measurement``,
  ``output``, ``mode``, ``state``, ``p``, ``i``, ``d`` and each extra field by its FIELD_INFO name;
* ``out.<channel>``: the board's actuator output (also ``out.<actuator name>``);
* ``sensed.<channel>``: what the rig sent the board on a wired sensor channel, SI, before encoding;
* ``faults``: the board's fault bitmask.

The output names and quantities of the bundled plants are listed here so that a scenario is
checked in well under a second without building a plant (the heat pump's property tables cost
seconds on a fresh machine); ``tests/test_hil_registries.py`` holds this table to the plants'
real ``outputs()``. A plant not listed here is built once to learn its outputs.
"""

import ast
import functools
import re

from . import resources

C_TO_K = 273.15

#: quantities of the bundled plants' outputs; names not listed fall back to their suffix
_TEMPERATURE_DIFFERENCES = {"superheat_k", "subcooling_k", "cell_spread_k"}
_FRACTIONS = {
    "liquid_at_compressor",
    "hp_switch_open",
    "cop",
    "cop_heating",
    "throttled",
    "thermal_trip",
    "exit_quality",
    "dryout_fraction",
    "dryout_margin",
    "chf_margin",
    "quality_margin",
    "reservoir_level",
    "air_fraction",
}

PLANT_OUTPUTS = {
    "battery_loop": (
        "coolant_out_k coolant_in_k chiller_in_k chiller_out_k cell_max_k cell_min_k "
        "cell_spread_k flow_lpm flow_kg_s loop_dp_pa pump_power_w heat_gen_w chiller_heat_w "
        "heater_w current_a gas_ppm cells_vented reservoir_level air_fraction"
    ).split(),
    "heatpump_r290": (
        "suction_p_pa suction_t_k discharge_p_pa discharge_t_k evap_sat_t_k cond_sat_t_k "
        "superheat_k subcooling_k liquid_at_compressor capacity_w heating_w compressor_power_w "
        "cop cop_heating mass_flow_kg_s valve_flow_kg_s valve_steps compressor_hz hp_switch_open "
        "evap_sec_out_k cond_sec_out_k charge_evap_kg charge_cond_kg charge_kg suction_pipe_k"
    ).split(),
    "chip_cooler": (
        "junction_k case_k cold_plate_k chip_power_w power_demand_w throttled thermal_trip "
        "sat_t_k sat_p_pa outlet_p_pa outlet_t_k exit_quality dryout_fraction dryout_margin "
        "chf_margin quality_margin heat_flux_w_m2 chf_w_m2 htc_w_m2k mass_flux_kg_m2s flow_kg_s "
        "pump_power_w condenser_w fluid_heat_w"
    ).split(),
}

#: telemetry values every loop reports
LOOP_VALUES = ("setpoint", "measurement", "output", "mode", "state", "p", "i", "d")

#: quantity -> SI unit as written in rows.csv and summaries
SI_UNITS = {
    "temperature": "K",
    "temperature_difference": "K",
    "pressure": "Pa",
    "fraction": "-",
    "steps": "steps",
    "speed": "rev/s",
    "power": "W",
    "current": "A",
    "flow": "L/min",
    "mass_flow": "kg/s",
    "mass": "kg",
    "rate": "1/s",
    "time": "s",
    "gain": "-",
    "voltage": "V",
    "concentration": "ppm",
    "state": "-",
    "count": "-",
    "energy": "J",
    "heat_flux": "W/m^2",
    "htc": "W/(m^2 K)",
    "mass_flux": "kg/(m^2 s)",
    "none": "-",
}


def output_quantity(name):
    """What plant output ``name`` measures (a quantity name of protocol.schema.QUANTITIES or
    one of mass_flow, mass, heat_flux, htc, mass_flux), from the plants' naming convention."""
    if name in _TEMPERATURE_DIFFERENCES:
        return "temperature_difference"
    if name in _FRACTIONS:
        return "fraction"
    for suffix, q in (
        ("_w_m2", "heat_flux"),
        ("_w_m2k", "htc"),
        ("_kg_m2s", "mass_flux"),
        ("_kg_s", "mass_flow"),
        ("_k", "temperature"),
        ("_pa", "pressure"),
        ("_w", "power"),
        ("_lpm", "flow"),
        ("_hz", "speed"),
        ("_kg", "mass"),
        ("_a", "current"),
        ("_ppm", "concentration"),
        ("_steps", "steps"),
        ("_j", "energy"),
    ):
        if name.endswith(suffix):
            return q
    if name.startswith("cell_k_"):
        return "temperature"
    if name == "valve_steps":
        return "steps"
    if name == "cells_vented":
        return "count"
    return "none"


def is_power(name):
    """A plant output that is a power in W (its energy goes into the run's summary)."""
    return output_quantity(name) == "power"


def plant_outputs(model, params=None):
    """Output names of plant ``model`` built with ``params`` (without building it when the
    plant is one of the bundled ones)."""
    params = params or {}
    if model == "battery_loop":
        from .plants import PLANTS

        n = int(params.get("n_groups", PLANTS[model].PARAMS["n_groups"][0]))
        return PLANT_OUTPUTS[model] + ["cell_k_%d" % i for i in range(n)]
    if model in PLANT_OUTPUTS:
        return list(PLANT_OUTPUTS[model])
    return _built_outputs(model, tuple(sorted(params.items())))


@functools.lru_cache(maxsize=8)
def _built_outputs(model, params):
    from .plants import make_plant

    return list(make_plant(model, **dict(params)).outputs())


# -- the board side --------------------------------------------------------------------------


def sensor_quantity(sensor):
    """Quantity a board sensor definition measures."""
    kind = sensor.get("kind", "ntc")
    default = {"ntc": "temperature", "ratiometric": "pressure"}.get(kind, "temperature")
    return sensor.get("quantity", default)


def actuator_quantity(actuator):
    kind = actuator.get("kind", "pwm")
    default = {"stepper": "steps", "speed": "speed", "digital": "state"}.get(kind, "fraction")
    return actuator.get("quantity", default)


def setpoint_suffix(controller):
    """The suffix of a controller's setpoint parameter (its SP attribute; "sp" by default)."""
    return _controller_attrs(controller)[2] or "sp"


@functools.lru_cache(maxsize=32)
def _controller_attrs(controller):
    """(QUANTITY, FIELDS, SP) a firmware controller declares as literals, read from its source
    without importing it (firmware modules run on MicroPython); None for what is not a plain
    literal (the rig then learns it from the board at run time)."""
    fw = resources.firmware_dir() / "tpfw"
    try:
        reg = ast.parse((fw / "loops.py").read_text())
        registry = {}
        for node in ast.walk(reg):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "REGISTRY" for t in node.targets
            ):
                registry = ast.literal_eval(node.value)
        module = registry.get(controller)
        if module is None:
            return None, None, None
        tree = ast.parse((fw / (module + ".py")).read_text())
    except (OSError, SyntaxError, ValueError):
        return None, None, None
    quantity = fields = sp = None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                    name = getattr(stmt.targets[0], "id", None)
                    try:
                        if name == "FIELDS":
                            fields = tuple(f[0] for f in ast.literal_eval(stmt.value))
                        elif name == "QUANTITY":
                            quantity = ast.literal_eval(stmt.value)
                        elif name == "SP":
                            sp = ast.literal_eval(stmt.value)
                    except ValueError:
                        pass
    if fields is None:
        fields = ()  # the Controller base class declares none
    return quantity, fields, sp


@functools.lru_cache(maxsize=1)
def global_param_names():
    """Names of the board-wide parameters (firmware/tpfw/app.py _GLOBAL_ROWS), or None when
    they are not a literal the host can read."""
    try:
        tree = ast.parse((resources.firmware_dir() / "tpfw" / "app.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_GLOBAL_ROWS" for t in node.targets
            ):
                return tuple(r.elts[0].value for r in node.value.elts)
    except (OSError, SyntaxError, AttributeError, ValueError):
        pass
    return None


def loop_info(board):
    """Static description of every loop of a board definition: list of dicts with name,
    controller, quantity (None when only the board can tell) and fields (None likewise)."""
    out = []
    for k, lp in enumerate(board.get("loops", [])):
        quantity, fields, _sp = _controller_attrs(lp.get("controller", "pid"))
        pv = lp.get("sensors", {}).get("pv")
        if lp.get("controller", "pid") == "pid" and pv is not None:
            # the PID takes its quantity from the sensor it holds (ctl_pid.py)
            quantity = sensor_quantity(board["sensors"][pv])
        out.append(
            {
                "index": k,
                "name": lp.get("name", "loop%d" % k),
                "controller": lp.get("controller", "pid"),
                "quantity": quantity,
                "fields": fields,
                "sensors": dict(lp.get("sensors", {})),
                "actuators": dict(lp.get("actuators", {})),
            }
        )
    return out


# -- names -----------------------------------------------------------------------------------

_SIGNAL = re.compile(r"^(plant|input|loop|out|sensed)\.(.+)$")


class SignalError(ValueError):
    pass


def resolve(name, ctx):
    """Canonical column name of signal ``name`` for a scenario context ``ctx`` (a
    scenario.Context), or SignalError naming the valid choices."""
    if not isinstance(name, str):
        raise SignalError("signal %r is not a string" % (name,))
    if name in ("t_s", "faults"):
        return name
    m = _SIGNAL.match(name)
    if not m:
        raise SignalError(
            "signal %r: expected plant.<output>, input.<name>, loop.<loop>.<value>, "
            "out.<channel>, sensed.<channel> or faults" % name
        )
    kind, rest = m.groups()
    if kind == "plant":
        if rest not in ctx.outputs:
            raise SignalError(
                "signal %r: plant %s has no output %r; it has: %s"
                % (name, ctx.model, rest, ", ".join(ctx.outputs))
            )
        return name
    if kind == "input":
        if rest not in ctx.inputs:
            raise SignalError(
                "signal %r: plant %s has no input %r; it has: %s"
                % (name, ctx.model, rest, ", ".join(ctx.inputs))
            )
        return name
    if kind == "loop":
        loop, _, value = rest.rpartition(".")
        info = ctx.loop(loop) if loop else None
        if info is None:
            raise SignalError(
                "signal %r: board %s has no loop %r; its loops: %s"
                % (name, ctx.board_name, loop, ", ".join(ctx.loop_names))
            )
        valid = list(LOOP_VALUES) + list(info["fields"] or ())
        if value not in valid and info["fields"] is not None:
            raise SignalError(
                "signal %r: loop %s reports %s" % (name, info["name"], ", ".join(valid))
            )
        return "loop.%s.%s" % (info["name"], value)
    if kind == "out":
        ch = ctx.actuator_channel(rest)
        if ch is None:
            raise SignalError(
                "signal %r: board %s has actuator channels %s"
                % (name, ctx.board_name, ", ".join(ctx.actuator_names()))
            )
        return "out.%d" % ch
    # sensed
    if not rest.isdigit() or int(rest) not in ctx.wired_sensors:
        raise SignalError(
            "signal %r: the rig feeds sensor channels %s ([[sensors]])"
            % (name, ", ".join(str(c) for c in sorted(ctx.wired_sensors)) or "none")
        )
    return name


def quantity_of(column, ctx):
    """Quantity of a canonical column for plots and units (best effort)."""
    if column == "t_s":
        return "time"
    if column == "faults":
        return "state"
    kind, _, rest = column.partition(".")
    if kind == "plant":
        return output_quantity(rest)
    if kind == "input":
        unit = ctx.input_unit(rest)
        return {
            "K": "temperature",
            "W": "power",
            "A": "current",
            "steps": "steps",
            "rev/s": "speed",
            "kg/s": "mass_flow",
        }.get(unit, "fraction" if unit == "-" else "none")
    if kind == "loop":
        loop, _, value = rest.rpartition(".")
        info = ctx.loop(loop)
        if value in ("setpoint", "measurement"):
            return (info or {}).get("quantity") or "none"
        if value == "output":
            acts = (info or {}).get("actuators", {})
            if acts:
                first = next(iter(acts.values()))
                return actuator_quantity(ctx.board["actuators"][first])
            return "none"
        if value in ("mode", "state"):
            return "state"
        return (info or {}).get("field_quantities", {}).get(value, "none")
    if kind == "out":
        return actuator_quantity(ctx.board["actuators"][int(rest)])
    if kind == "sensed":
        return sensor_quantity(ctx.board["sensors"][int(rest)])
    return "none"


def display(value, quantity):
    """A value at the user's edge with its unit: absolute temperatures in degC, differences in
    K, pressures in bar, powers in W or kW, others in their SI unit."""
    if value is None:
        return "n/a"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if v != v:
        return "nan"
    if quantity == "temperature":
        return "%.2f °C" % (v - C_TO_K)
    if quantity == "temperature_difference":
        return "%.2f K" % v
    if quantity == "pressure":
        return "%.3f bar" % (v / 1e5)
    if quantity == "power":
        return "%.1f W" % v if abs(v) < 1e4 else "%.2f kW" % (v / 1e3)
    if quantity == "energy":
        return "%.0f J" % v if abs(v) < 1e5 else "%.3f MJ" % (v / 1e6)
    unit = SI_UNITS.get(quantity, "")
    return ("%.4g %s" % (v, unit)).strip() if unit not in ("-", "") else "%.4g" % v


def display_delta(value, quantity):
    """A difference of two values of ``quantity`` with its unit (K for temperatures)."""
    if quantity == "temperature":
        quantity = "temperature_difference"
    return display(value, quantity)
