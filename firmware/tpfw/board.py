# The board definition (boards/NAME.json, deployed as /board.json): MCU, pins, channels, loops.
import json

FW_VERSION = "0.1.0"


def load(path="board.json"):
    with open(path) as f:
        board = json.load(f)
    for key in ("name", "tick_hz", "sensors", "actuators", "loops"):
        if key not in board:
            raise ValueError("board.json lacks %r" % key)
    for loop in board["loops"]:
        if len(loop["name"]) > 5:
            raise ValueError("loop name longer than 5 chars: %s" % loop["name"])
        if not 0 <= loop["sensor"] < len(board["sensors"]):
            raise ValueError("loop %s: no sensor %d" % (loop["name"], loop["sensor"]))
        if not 0 <= loop["actuator"] < len(board["actuators"]):
            raise ValueError("loop %s: no actuator %d" % (loop["name"], loop["actuator"]))
    return board
