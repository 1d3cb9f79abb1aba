"""The board application on the real MicroPython VM, below the serial link: parameters with
cross-parameter rules, stored sets that must never keep the board from booting, request
handlers that fail, and saves interrupted by a power cut."""

import json
import os
import random
import signal
import subprocess
import time

import pytest
from vm_driver import MICROPYTHON, ROOT, run_micropython

from thermopilot.hil import resources
from thermopilot.protocol import framing, schema

BOARDS = resources.board_names()

# Builds the App for a board on the VM in a scratch directory, with a byte sink for its output.
PRELUDE = r"""
import sys, json, os
sys.path.insert(0, sys.argv[2])
from tpfw import app, board as boardmod
cases = json.load(open(sys.argv[1]))

class Sink:
    def __init__(self):
        self.data = bytearray()
    def write(self, b):
        self.data += b
        return len(b)

def new_app(b, d=""):
    return app.App(boardmod.check(json.loads(json.dumps(b))), None, Sink(), d)

def clean(d):
    for f in ("params.bin", "params.tmp"):
        try:
            os.remove(d + f)
        except OSError:
            pass
"""

EXTREMES = (
    PRELUDE
    + r"""
# Store every parameter at its min and at its max, alone and in every pairing that the
# rules allow (a refused write is how a host would find a pairing disallowed), save, boot a
# new App from the stored file and run ticks: it must boot, accept the set and keep ticking.
out = {}
for name in cases["boards"]:
    with open(sys.argv[2] + "/../boards/" + name + ".json") as f:
        b = json.load(f)
    b["hal"] = "hil"  # the unix port has no ADC pins; the parameters are what is tested
    d = "/tmp/tp_extremes_" + name + "/"
    try:
        os.mkdir(d[:-1])
    except OSError:
        pass
    clean(d)
    a = new_app(b, d)
    p = a.params
    n = len(p.names)
    ends = []
    for i in range(n):
        ends.append((i, p.mins[i]))
        ends.append((i, p.maxs[i]))
    boots = refused = 0
    combos = [(e,) for e in ends]
    for k in range(len(ends)):
        for m in range(k + 1, len(ends)):
            if ends[k][0] != ends[m][0]:
                combos.append((ends[k], ends[m]))
    for combo in combos:
        p.restore_defaults()
        ok = True
        for i, v in combo:
            if p.set(i, v):
                ok = False
        if not ok:
            refused += 1
            continue
        if p.save() < 0:
            raise SystemExit("save failed")
        a2 = new_app(b, d)
        if a2.params.refused or a2.sup.faults:
            raise SystemExit("%s: stored set %r refused: %s" % (name, combo, a2.params.load_error))
        for t in range(0, 1000, 100):
            a2.run_due(t)
        boots += 1
    out[name] = [boots, refused, len(combos)]
print(json.dumps(out))
"""
)


def test_every_accepted_extreme_pairing_boots(tmp_path):
    got = run_micropython(EXTREMES, tmp_path, {"boards": BOARDS}, heap="8M", timeout=600)
    for name in BOARDS:
        boots, refused, combos = got[name]
        assert boots + refused == combos
        assert boots > 0
    # the rules refuse some pairings (out_min above out_max, setpoint above its alarm)
    assert got["virtual"][1] > 0


RULES = (
    PRELUDE
    + r"""
b = json.load(open(sys.argv[2] + "/../boards/virtual.json"))
d = "/tmp/tp_rules/"
try:
    os.mkdir(d[:-1])
except OSError:
    pass
clean(d)
a = new_app(b, d)
p = a.params
i_lo = p.index["cool.out_min"]
i_hi = p.index["cool.out_max"]
res = {}
res["set_lo"] = p.set(i_lo, 0.9)
res["set_hi"] = p.set(i_hi, 0.2)
res["hi_range"] = [p.err_lo, p.err_hi, p.err_other]
res["values"] = [p.values[i_lo], p.values[i_hi]]
res["nan"] = p.set(p.index["cool.kp"], float("nan"))
res["save"] = p.save()
res["save_again"] = p.save()
# a stored set written by hand (or an older firmware) that breaks a rule
p.values[i_hi] = 0.2
img = p._image()
with open(d + "params.bin", "wb") as f:
    f.write(img)
a2 = new_app(b, d)
res["refused"] = a2.params.refused
res["why"] = a2.params.load_error
res["faults"] = a2.sup.faults
res["boot_values"] = [a2.params.values[i_lo], a2.params.values[i_hi]]
# a directory where params.bin should be
clean(d)
os.mkdir(d + "params.bin")
a3 = new_app(b, d)
res["dir_refused"] = a3.params.refused
res["dir_why"] = a3.params.load_error
res["dir_faults"] = a3.sup.faults
os.rmdir(d + "params.bin")
# a leftover temporary file from a power cut is removed at boot
with open(d + "params.tmp", "wb") as f:
    f.write(b"TPP1\x05")
a4 = new_app(b, d)
try:
    os.stat(d + "params.tmp")
    res["tmp_left"] = True
except OSError:
    res["tmp_left"] = False
res["boot_log"] = a4._boot_log
print(json.dumps(res))
"""
)


def test_rules_refuse_a_conflicting_write_and_a_conflicting_stored_set(tmp_path):
    r = run_micropython(RULES, tmp_path, {}, heap="2M")
    conflict = schema.ERRORS["conflict"]
    assert r["set_lo"] == 0 and r["set_hi"] == conflict
    lo, hi, other = r["hi_range"]
    assert lo == pytest.approx(0.9) and hi == 1.0  # allowed: out_min .. its own max
    assert other == 4  # the index of cool.out_min, the parameter that limits it
    assert r["values"] == [pytest.approx(0.9), 1.0]  # the refused value was not stored
    assert r["nan"] == schema.ERRORS["bad_value"]
    assert (r["save"], r["save_again"]) == (0, 1)  # the second save finds nothing changed
    assert r["refused"] and "breaks cool.out_min <= cool.out_max" in r["why"]
    assert r["faults"] & (1 << schema.FAULTS["params_corrupt"])
    assert r["boot_values"] == [pytest.approx(0.1), 1.0]  # the board definition's defaults
    assert r["dir_refused"] and "unreadable" in r["dir_why"]
    assert r["dir_faults"] & (1 << schema.FAULTS["params_corrupt"])
    assert not r["tmp_left"] and any("params.tmp" in line for line in r["boot_log"])


HANDLERS = (
    PRELUDE
    + r"""
from tpfw import codec
b = json.load(open(sys.argv[2] + "/../boards/virtual.json"))
a = new_app(b)
sink = a.stdout
def broken():
    raise KeyError("no such thing")
a.handlers[codec.M_LINK_STATS_REQ] = broken
for hexframe in cases["frames"]:
    for byte in bytes.fromhex(hexframe):
        n = a.link.feed_byte(byte)
        if n >= 0:
            a.dispatch(n)
print(json.dumps({"out": sink.data.hex(), "errors": a.handler_errors}))
"""
)


def _frame(msg_id, payload, seq, session=7):
    return framing.encode_frame(seq, msg_id, payload, session)


def test_every_request_is_answered_even_unknown_ids_and_failing_handlers(tmp_path):
    frames = [
        framing.pack("LINK_STATS_REQ", 1, session=7, flags=0),  # handler raises
        _frame(0x7D, b"\x01\x02\x03", 2),  # unknown id with a payload
        _frame(0x90, b"", 3),  # an id >= 0x80
        _frame(0xFF, bytes(40), 4),
        _frame(schema.by_name("PARAM_SET").id, b"\x00" * 5, 5),  # known id, wrong length
        _frame(schema.by_name("IDENTITY").id, bytes(55), 6),  # the board's own message
    ]
    r = run_micropython(HANDLERS, tmp_path, {"frames": [f.hex() for f in frames]}, heap="2M")
    got = framing.StreamDecoder().feed(bytes.fromhex(r["out"]))
    answers = [(s, m.name, c) for s, _, m, c in got if m.name in ("NACK", "ACK")]
    logs = [bytes(c.text).rstrip(b"\x00").decode() for _, _, m, c in got if m.name == "LOG"]
    names = {v: k for k, v in schema.ERRORS.items()}
    codes = [(c.req_seq, names[c.code]) for _, _, c in answers]
    assert codes == [
        (1, "internal"),
        (2, "unknown_message"),
        (3, "unknown_message"),
        (4, "unknown_message"),
        (5, "bad_length"),
        (6, "unknown_message"),
    ]
    assert all(s == 7 for s, _, _ in answers)  # answered in the request's own session
    assert r["errors"] == 1
    assert any("KeyError" in line and "no such thing" in line for line in logs)


POWER_CUT = r"""
import sys, os
sys.path.insert(0, sys.argv[2])
from tpfw.params import Params
from tpfw import codec
rows = [("p%d" % i, "", 0, codec.PTYPE_F32, 0.0, 1e9, 0.0) for i in range(40)]
p = Params(rows, (), sys.argv[1])
p.cleanup()
p.load()
print("BOOT", int(p.values[0]), "refused" if p.refused else "ok")
k = int(p.values[0])
while True:
    k += 1
    for i in range(40):
        p.values[i] = k
    print("SAVING", k)
    if p.save() != 0:
        print("FAILED", k)
    print("SAVED", k)
"""


def test_a_power_cut_during_saves_keeps_the_old_or_the_new_set(tmp_path):
    """Kill the VM at 50 random moments while it saves parameters in a loop; every restart
    must find either the last saved set or the one being saved, never a mix or nothing."""
    script = tmp_path / "saver.py"
    script.write_text(POWER_CUT)
    fs = str(tmp_path) + "/"
    fw = str(ROOT / "firmware")
    rng = random.Random(50)
    last_seen = 0
    for _ in range(50):
        proc = subprocess.Popen(
            [str(MICROPYTHON), "-X", "heapsize=256K", str(script), fs, fw],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        boot = proc.stdout.readline().split()
        if not boot:
            proc.wait()
            raise AssertionError("the VM printed nothing: " + proc.stderr.read())
        assert boot[0] == "BOOT" and boot[2] == "ok", boot
        loaded = int(boot[1])
        assert loaded >= last_seen  # never older than a set known to be saved
        time.sleep(rng.uniform(0.0, 0.05))
        os.killpg(proc.pid, signal.SIGKILL)
        # complete lines only: the kill may cut the last one short
        out = proc.stdout.read().split("\n")[:-1]
        proc.wait()
        saved = [int(line.split()[1]) for line in out if line.startswith("SAVED")]
        saving = [int(line.split()[1]) for line in out if line.startswith("SAVING")]
        assert not any(line.startswith("FAILED") for line in out)
        if saved:
            last_seen = saved[-1]
        # what the next boot may load: the last completed save or the one in flight
        allowed = {last_seen} | ({saving[-1]} if saving else set()) | {loaded}
        nxt = subprocess.run(
            [str(MICROPYTHON), "-X", "heapsize=256K", "-c", _BOOT_ONLY, fs, fw],
            capture_output=True,
            text=True,
            timeout=30,
        )
        value, state = nxt.stdout.split()
        assert state == "ok", nxt.stdout
        assert int(value) in allowed
        last_seen = int(value)
    assert last_seen > 0


_BOOT_ONLY = r"""
import sys
sys.path.insert(0, sys.argv[2])
from tpfw.params import Params
from tpfw import codec
rows = [("p%d" % i, "", 0, codec.PTYPE_F32, 0.0, 1e9, 0.0) for i in range(40)]
p = Params(rows, (), sys.argv[1])
p.cleanup()
p.load()
vals = set(int(v) for v in p.values)
print(int(p.values[0]), "ok" if len(vals) == 1 and not p.refused else "mixed")
"""


def test_board_definitions_are_checked_with_every_problem_named(tmp_path):
    b = json.loads((ROOT / "boards" / "virtual.json").read_text())
    b["loops"][0]["defaults"]["out_min"] = 0.9
    b["loops"][0]["defaults"]["out_max"] = 0.2
    b["loops"][0]["defaults"]["kpp"] = 1.0
    b["sensors"][0]["kind"] = "thermocouple"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(b))
    with pytest.raises(ValueError) as err:
        resources.check_board(path)
    msg = str(err.value)
    assert "thermocouple" in msg and "ntc" in msg
    b = json.loads((ROOT / "boards" / "virtual.json").read_text())
    b["loops"][0]["controller"] = "fuzzy"
    path.write_text(json.dumps(b))
    with pytest.raises(ValueError, match="unknown controller 'fuzzy'; known: .*pid"):
        resources.check_board(path)
    b = json.loads((ROOT / "boards" / "virtual.json").read_text())
    b["loops"][0]["defaults"]["out_min"] = 0.9
    b["loops"][0]["defaults"]["out_max"] = 0.2
    b["loops"][0]["defaults"]["kpp"] = 1.0
    b["loops"][0]["actuators"] = {"out": 0, "heater": 0}
    path.write_text(json.dumps(b))
    with pytest.raises(ValueError) as err:
        resources.check_board(path)
    msg = str(err.value)
    assert "unknown role 'heater'" in msg
    del b["loops"][0]["actuators"]["heater"]
    path.write_text(json.dumps(b))
    with pytest.raises(ValueError) as err:
        resources.check_board(path)
    msg = str(err.value)
    assert "unknown parameter 'kpp'" in msg and "out_min" in msg and "out_max" in msg
    for name in BOARDS:
        resources.check_board(name)  # every bundled board passes
