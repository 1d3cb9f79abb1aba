"""The board counts the ticks inside which a garbage collection ran (BOARD_STATS gc_in_tick),
on the MicroPython VM with the deployed image: no count while no collection can run (the
tick's own frees would show as false ones), and exactly one per tick that collected."""

import pytest
from board_vm import LOAD_PAYLOAD, run_driver
from test_batt_controller_vm import BASE
from test_batt_controller_vm import raw as batt_raw
from test_chip_controller_vm import raw as chip_raw

from thermopilot.hil import boardio, resources

#: a running R290 heat pump: suction 4.5 bar and 8 degC (about 9 K superheat), discharge 16
#: bar, leaving water 35 degC, compressor 50 rev/s, discharge line 70 degC
HP_RUNNING = [4.5e5, 281.15, 16e5, 308.15, 50.0, 343.15]

COUNT_DRIVER = (
    LOAD_PAYLOAD
    + r"""
p = a.period_ms
a.next_tick_ms = 0
for k in range(50):  # warm: first-call allocations done
    a.run_due(k * p)
gc.collect()
gc.disable()  # no automatic collection from here on; gc.collect() still collects
c0 = a.gc_in_tick
for k in range(50, 650):
    a.run_due(k * p)
off = a.gc_in_tick - c0
gc.collect()
tick = a.tick
forced = [0]


def collecting_tick(t_ms):
    if (t_ms // p) % 7 == 3:
        gc.collect()  # inside the timed tick, as MicroPython's own collection would be
        forced[0] += 1
    tick(t_ms)


a.tick = collecting_tick
c0 = a.gc_in_tick
for k in range(650, 1350):
    a.run_due(k * p)
seen = a.gc_in_tick - c0
a.tick = tick
gc.enable()
print(json.dumps({"without_collection": off, "forced": forced[0], "seen": seen,
                  "ticks": a.ticks, "faults": a.sup.faults}))
"""
)


@pytest.mark.parametrize(
    "board, payload",
    [
        ("virtual", [0.45]),
        ("virtual_chip", "chip"),
        ("virtual_batt", "batt"),
        ("virtual_hp", "hp"),
    ],
)
def test_collections_inside_the_tick_are_counted_one_each_and_no_others(tmp_path, board, payload):
    if payload == "chip":
        payload = chip_raw(323.15, 700.0, flow=0.0105)
    elif payload == "batt":
        payload = batt_raw(BASE)
    elif payload == "hp":
        sensors = resources.load_board(board)["sensors"]
        payload = [boardio.encode(sensors[i], v) for i, v in enumerate(HP_RUNNING)]
    # a heap that holds 600 ticks' garbage with the collector off
    got = run_driver(tmp_path, board, COUNT_DRIVER, payload, heap="16M")
    assert got["ticks"] >= 1350
    assert got["without_collection"] == 0, got
    assert got["forced"] == 100
    assert got["seen"] == got["forced"], got
