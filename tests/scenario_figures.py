"""The battery and chip scenarios (hil/scenarios/battery_*.toml, chip_*.toml) on the HIL rig
(hil/rig.py): a run of a scenario file, or of a variant of it made in a test, and the figures
docs/controllers.md tabulates, computed on plant truth. ``python tests/scenario_figures.py``
runs every one on fresh virtual boards and prints both tables and the energy baseline."""

import copy

import numpy as np
import tomllib

from thermopilot.hil import resources, rig, scenario
from thermopilot.protocol import schema

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
FAULT_NAMES = {v: k for k, v in schema.FAULTS.items()}


def path(name):
    return resources.scenarios_dir() / (name + ".toml")


def load(name):
    """A bundled scenario as its raw TOML tables, for a test to run as it is or to vary."""
    return tomllib.loads(path(name).read_text())


class Run:
    """A finished rig run: columns by signal name (``run["plant.cell_max_k"]``), ``t``,
    ``verdicts``, ``passed``, ``events`` (dicts), ``fault_t`` (fault name -> the first time
    it showed latched), ``sc`` (the checked scenario)."""

    def __init__(self, sc, res):
        self.sc = sc
        self.res = res
        self.rows = res.rows
        self.t = np.asarray(res.rows.t)
        self.verdicts = res.verdicts
        self.passed = res.passed
        self.events = res.events
        faults = np.asarray(res.rows["faults"]).astype(np.int64)
        self.fault_t = {}
        for bit, name in FAULT_NAMES.items():
            hit = np.nonzero(faults & (1 << bit))[0]
            if len(hit):
                self.fault_t[name] = float(self.t[hit[0]])

    def __getitem__(self, signal):
        return np.asarray(self.rows[signal])

    def at(self, signal, t_s):
        """The signal's value at the row nearest t_s."""
        return float(self[signal][int(np.argmin(np.abs(self.t - t_s)))])

    def energy_j(self, signal):
        v = self[signal]
        return float(np.sum(0.5 * (v[1:] + v[:-1]) * np.diff(self.t)))

    def notices(self, name):
        return [e for e in self.events if e["name"] == name]


def run(raw, session):
    """Check ``raw`` (TOML tables, see load) as the rig does and run it on ``session``."""
    raw = copy.deepcopy(raw)
    sc = scenario.check(raw, raw.get("name", "scenario"), base_dir=resources.scenarios_dir())
    return Run(sc, rig.run(sc, session=session))


def latency(res, fault):
    """Seconds from the first injected fault to the first latch of ``fault`` (None: never)."""
    faults = res.sc["faults"]
    t = res.fault_t.get(fault)
    if t is None or not faults:
        return None
    return t - min(f["t_s"] for f in faults)


def modes(res, loop="batt"):
    """The battery controller's mode changes: [(t_s, mode name)]."""
    st = res["loop.%s.state" % loop].astype(int) & 3
    out = []
    for t, m in zip(res.t, st, strict=True):
        if not out or out[-1][1] != MODES[m]:
            out.append((float(t), MODES[m]))
    return out


def battery(name, res):
    fig = {
        "scenario": name,
        "cell_max_c": float(res["plant.cell_max_k"].max()) - C,
        "cell_min_c": float(res["plant.cell_min_k"].min()) - C,
        "spread_max_k": float(res["plant.cell_spread_k"].max()),
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
        if lat is not None:
            upto = res.t <= res.fault_t[fault] + 1e-9
            fig["cell_max_at_latch_c"] = float(res["plant.cell_max_k"][upto].max()) - C
    return fig


def chip(name, res):
    fig = {
        "scenario": name,
        "junction_max_c": float(res["plant.junction_k"].max()) - C,
        "case_max_c": float(res["plant.case_k"].max()) - C,
        "margin_min": float(res["plant.dryout_margin"].min()),
        "throttled_s": float(res["plant.throttled"].sum()) * float(res.t[1] - res.t[0]),
        "thermal_trip": float(res["plant.thermal_trip"].max()),
        "pump_kj": res.energy_j("plant.pump_power_w") / 1e3,
        "faults": sorted(res.fault_t),
        "passed": res.passed,
    }
    if name in TARGET:
        fig["latency_s"] = latency(res, TARGET[name])
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
        lines.append(
            "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"
            % (
                f["scenario"], f["modes"], _fmt(f["cell_max_c"]), _fmt(f["cell_min_c"]),
                _fmt(f["spread_max_k"], 2), _fmt(f.get("latency_s")),
                _fmt(f.get("cell_max_at_latch_c")), _fmt(f["pump_kj"]),
                _fmt(f["chiller_kj"], 0), _fmt(f["heater_kj"], 0),
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
            figs = [fig(n, run(load(n), s)) for n in names]
            s.close()
        finally:
            vb.stop()
        out.append(table(figs))
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
