# ThermoPilot board entry point. Safe boot: hold the board's safe_boot_pin low at reset, or
# create a file named SAFEBOOT, and the application does not start (the REPL stays free
# for mpremote).
import os
import sys

if "lib" not in sys.path:
    sys.path.append("lib")  # the unix port's path lacks the board's /lib


def _safe_boot(board):
    try:
        os.stat("SAFEBOOT")
        return True
    except OSError:
        pass
    pin = board.get("safe_boot_pin")
    if pin is None:
        return False
    from machine import Pin

    return Pin(pin, Pin.IN, Pin.PULL_UP).value() == 0


def start():
    import json

    try:
        with open("board.json") as f:
            b = json.load(f)
    except (OSError, ValueError) as e:
        print("ThermoPilot: board.json unreadable (%s); application not started" % e)
        return
    if _safe_boot(b):
        print("ThermoPilot: safe boot, application not started")
        return
    del b
    from tpfw import app

    try:
        app.main()
    except app.BoardError as e:
        print("ThermoPilot: %s; application not started (fix board.json and reset)" % e)


start()
