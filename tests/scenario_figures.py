"""Figures of the battery and chip scenarios (hil/scenarios/v2): what docs/controllers.md
tabulates, computed from a run on plant truth. ``python tests/scenario_figures.py`` runs every
scenario on fresh virtual boards and prints both tables and the energy baseline."""

import math
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
V2 = HERE.parent / "hil" / "scenarios"
C = 273.15

BATTERY = (
    "battery_drive_hot",
    "battery_drive_cold",
    "battery_runaway",
    "battery_runaway_no_gas",
    "battery_chiller_loss",
    "battery_pump_failure",
    "battery_coolant_leak",
)
CHIP = ("chip_gpu_no_dryout", "chip_pump_failure", "chip_over_capacity")
#: the fault each fault scenario injects, and the fault that must latch for it
TARGET = {
    "battery_runaway": "thermal_runaway",
    "battery_runaway_no_gas": "thermal_runaway",
    "battery_chiller_loss": "cooling_lost",
    "battery_pump_failure": "pump_failure",
    "battery_coolant_leak": "coolant_leak",
    "chip_pump_failure": "pump_failure",
}
MODES = ("idle", "cool", "heat")


def path(name):
    return V2 / (name + ".toml")


def latency(res, fault):
    """Seconds from the first injected fault to the first latch of ``fault`` (None: never)."""
    faults = res.sc.get("faults", [])
    t = res.fault_t.get(fault)
    if t is None or not faults:
        return None
    return t - faults[0]["t_s"]


def modes(res, loop="batt"):
    """The battery controller's mode changes: [(t_s, mode name)]."""
    out = []
    for r in res.rows:
        m = MODES[int(r["loops"][loop]["state"]) & 3]
        if not out or out[-1][1] != m:
            out.append((r["t_s"], m))
    return out


def battery(name, res):
    p = [r["plant"] for r in res.rows]
    fig = {
        "scenario": name,
        "cell_max_c": max(x["cell_max_k"] for x in p) - C,
        "cell_min_c": min(x["cell_min_k"] for x in p) - C,
        "spread_max_k": max(x["cell_spread_k"] for x in p),
        "modes": " > ".join(m for _, m in modes(res)),
        "pump_kj": res.energy_j("plant.pump_power_w") / 1e3,
        "chiller_kj": res.energy_j("plant.chiller_heat_w") / 1e3,
        "heater_kj": res.energy_j("plant.heater_w") / 1e3,
        "faults": sorted(res.fault_t),
        "passed": res.passed,
    }
    fault = TARGET.get(name)
    if fault:
        lat = latency(res, fault)
        fig["latency_s"] = lat
        t = res.fault_t[fault] if lat is not None else math.inf
        fig["cell_max_at_latch_c"] = (
            max((r["plant"]["cell_max_k"] for r in res.rows if r["t_s"] <= t), default=math.nan)
            - C
        )
    return fig


def chip(name, res):
    p = [r["plant"] for r in res.rows]
    dt = res.rows[1]["t_s"] - res.rows[0]["t_s"]
    fig = {
        "scenario": name,
        "junction_max_c": max(x["junction_k"] for x in p) - C,
        "case_max_c": max(x["case_k"] for x in p) - C,
        "margin_min": min(x["dryout_margin"] for x in p),
        "throttled_s": sum(x["throttled"] for x in p) * dt,
        "thermal_trip": max(x["thermal_trip"] for x in p),
        "pump_kj": res.energy_j("plant.pump_power_w") / 1e3,
        "faults": sorted(res.fault_t),
        "passed": res.passed,
    }
    fault = TARGET.get(name)
    if fault:
        fig["latency_s"] = latency(res, fault)
    return fig


def _fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.*f" % (digits, v)
    return str(v)


def battery_table(figs):
    head = (
        "| scenario | modes | cell max °C | cell min °C | spread max K | fault latch (s after "
        "injection) | cell max at latch °C | pump kJ | chiller kJ (heat) | PTC kJ | passed |"
    )
    lines = [head, "|" + "---|" * 11]
    for f in figs:
        lat = f.get("latency_s")
        lines.append(
            "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"
            % (
                f["scenario"], f["modes"], _fmt(f["cell_max_c"]), _fmt(f["cell_min_c"]),
                _fmt(f["spread_max_k"], 2), _fmt(lat), _fmt(f.get("cell_max_at_latch_c")),
                _fmt(f["pump_kj"]), _fmt(f["chiller_kj"], 0), _fmt(f["heater_kj"], 0),
                "yes" if f["passed"] else "NO",
            )
        )  # fmt: skip
    return "\n".join(lines)


def chip_table(figs):
    head = (
        "| scenario | junction max °C | case max °C | dry-out margin min | throttled s | "
        "fault latch (s after injection) | thermal trip | pump kJ | passed |"
    )
    lines = [head, "|" + "---|" * 9]
    for f in figs:
        lines.append(
            "| %s | %s | %s | %s | %s | %s | %s | %s | %s |"
            % (
                f["scenario"], _fmt(f["junction_max_c"]), _fmt(f["case_max_c"]),
                _fmt(f["margin_min"], 3), _fmt(f["throttled_s"]), _fmt(f.get("latency_s")),
                "no" if not f["thermal_trip"] else "YES", _fmt(f["pump_kj"], 2),
                "yes" if f["passed"] else "NO",
            )
        )  # fmt: skip
    return "\n".join(lines)


def main():
    sys.path.insert(0, str(HERE))
    import thermal_rig

    from thermopilot.hil.vboard import VirtualBoard
    from thermopilot.protocol.link import Session

    out = []
    for names, board, fig, table in (
        (BATTERY, "virtual_batt", battery, battery_table),
        (CHIP, "virtual_chip", chip, chip_table),
    ):
        vb = VirtualBoard(board=board).start()
        try:
            s = Session(vb.port)
            figs = [fig(n, thermal_rig.run(thermal_rig.load(path(n)), s)) for n in names]
            s.close()
        finally:
            vb.stop()
        out.append(table(figs))
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
