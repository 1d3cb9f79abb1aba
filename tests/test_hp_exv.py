"""The stepper expansion-valve driver (firmware/tpfw/exv.py) on the MicroPython VM: step-rate
limit, overdrive close at start and after every full close, deadband and reversal hysteresis,
tracking of outputs set by someone else."""

import pytest
from vm_driver import run_micropython

DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from tpfw.exv import Stepper, OVERDRIVE
cases = json.load(open(sys.argv[1]))
out = {}
for name, c in cases.items():
    s = Stepper(480)
    s.rate = c.get("rate", 60.0)
    s.hys = c.get("hys", 1.0)
    if c.get("resync"):
        s.resync()
    else:
        s.pos = float(c.get("pos", 0.0))
    trace = []
    for target in c["targets"]:
        trace.append(s.step(target, 0.1))
    out[name] = {"trace": trace, "reversals": s.reversals, "moves": s.moves,
                 "od_left": s.od_left, "state": s.state}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    cases = {
        # 60 steps/s at 10 Hz ticks: 6 steps a tick toward a far target
        "rate60": {"pos": 100, "targets": [200] * 20},
        "rate600": {"pos": 0, "rate": 600.0, "targets": [300] * 6},
        "rate30": {"pos": 100, "rate": 30.0, "targets": [0.0] * 3},
        # power-up: full stroke plus 10 % overdrive at 60 steps/s, output 0 meanwhile; a
        # target given during the overdrive waits
        "resync": {"resync": True, "targets": [150] * 100},
        # every full close overdrives again (48 steps = 0.8 s), then the valve follows
        "close": {"pos": 30, "targets": [0] * 14 + [50] * 10},
        # target noise below a step never moves the valve
        "noise": {"pos": 180, "targets": [180.4, 179.6, 180.9, 179.2, 180.0] * 10},
        # a reversal needs db + hys = 2 steps; continuing needs 1
        "reverse": {"pos": 180, "targets": [181.0, 181.0, 180.2, 179.5, 179.0, 179.0]},
    }
    tmp = tmp_path_factory.mktemp("exv")
    return run_micropython(DRIVER, tmp, cases)


def test_step_rate_is_limited(results):
    t = results["rate60"]["trace"]
    assert t[:4] == [106.0, 112.0, 118.0, 124.0]
    assert t[-1] == 200.0 and all(b - a <= 6.0 for a, b in zip([100.0] + t, t, strict=False))
    assert results["rate600"]["trace"][:6] == [60.0, 120.0, 180.0, 240.0, 300.0, 300.0]
    assert results["rate30"]["trace"] == [97.0, 94.0, 91.0]


def test_power_up_overdrives_closed_before_anything_moves(results):
    t = results["resync"]["trace"]
    # (480 + 48) steps at 60 steps/s = 8.8 s = 88 ticks at 0 steps
    held = next(i for i, v in enumerate(t) if v > 0)
    assert held == 88 and all(v == 0.0 for v in t[:88])
    assert t[88:91] == [6.0, 12.0, 18.0]


def test_each_full_close_overdrives_then_resumes(results):
    t = results["close"]["trace"]
    assert t[:5] == [24.0, 18.0, 12.0, 6.0, 0.0]
    # 48 steps of overdrive at 6 a tick: the next 8 ticks stay closed whatever the target
    assert t[5:13] == [0.0] * 8
    assert t[14:16] == [0.0, 6.0] or t[13:15] == [0.0, 6.0]
    assert t[-1] == 50.0


def test_target_noise_below_a_step_does_not_move_the_valve(results):
    r = results["noise"]
    assert set(r["trace"]) == {180.0} and r["moves"] == 0 and r["reversals"] == 0


def test_reversal_needs_the_hysteresis(results):
    r = results["reverse"]
    # up one step (continuing needs 1), then back: 180.2 and 179.5 are less than 2 away
    # from 181, 179.0 is 2 away: one reversal
    assert r["trace"] == [181.0, 181.0, 181.0, 181.0, 179.0, 179.0]
    assert r["reversals"] == 1 and r["moves"] == 2


def test_parameter_indices_follow_the_table_and_the_docs_name_every_parameter():
    # ctl_hp reads its parameters by constant index (_P_*) into the rows of hp_params.py
    import re
    from pathlib import Path

    fw = Path(__file__).resolve().parent.parent / "firmware" / "tpfw"
    consts = re.findall(r"^_P_([A-Z0-9_]+) = const\((\d+)\)", (fw / "ctl_hp.py").read_text(), re.M)
    text = (fw / "hp_params.py").read_text()
    table = text[text.index('TABLE = """') + 11 : text.index('"""\n\n\ndef rows')]
    names = [line.split()[0] for line in table.strip().splitlines()]
    assert [(n.upper(), str(k)) for k, n in enumerate(names)] == consts
    n_p = re.search(r"^_N_P = const\((\d+)\)", (fw / "ctl_hp.py").read_text(), re.M)
    assert int(n_p.group(1)) == len(names)
    docs = (fw.parent.parent / "docs" / "controllers.md").read_text()
    section = docs[docs.index("## R290 heat pump") : docs.index("## EV battery")]
    missing = [n for n in names if "`%s`" % n not in section]
    assert not missing, "docs/controllers.md does not name: %s" % ", ".join(missing)
