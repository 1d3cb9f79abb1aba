"""``thermopilot vboard``: run a virtual board (``run``, the default), press its reset button
(``reset``), or list the running ones (``list``)."""

import contextlib
import json
import os
import signal
import sys
import time

from thermopilot.hil import resources, vboard

from .console import UserError, print_json

#: the signal ``thermopilot vboard reset`` sends to the process that runs the board
RESET_SIGNAL = signal.SIGUSR1


def _registry_path():
    return vboard._registry_dir() / ("%d.json" % os.getpid())


def _write_registry(entry):
    path = _registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, path)


def cmd_vboard(args):
    if args.action == "reset":
        return _reset(args)
    if args.action == "list":
        return _list(args)
    return _run(args)


def _run(args):
    board_name = args.board or "virtual"
    board_file = resources.board_path(board_name)
    workdir = (
        os.path.abspath(args.workdir) if args.workdir else str(vboard.state_dir(board_file.stem))
    )
    for e in vboard.running_boards():
        if os.path.realpath(e["workdir"]) == os.path.realpath(workdir):
            raise UserError(
                "virtual board %s already runs on %s (pid %d, filesystem %s): use it, stop it, "
                "or give this one another --workdir"
                % (e["board"], ", ".join(e["ports"]), e["pid"], workdir)
            )
    try:
        vb = vboard.VirtualBoard(
            board=board_file,
            heap=args.heap,
            workdir=workdir,
            ports=args.ports,
            native=not args.no_native,
            fresh=args.fresh,
        )
    except vboard.VirtualBoardError as exc:
        raise UserError(str(exc)) from None
    entry = {
        "pid": os.getpid(),
        "board": board_file.stem,
        "workdir": workdir,
        "heap": vb.heap,
        "ports": [],
        "boots": 0,
        "started": time.time(),
    }

    def on_boot(n):
        entry["boots"] = n
        if entry["ports"]:
            with contextlib.suppress(OSError):
                _write_registry(entry)

    vb.on_boot = on_boot
    stop = []
    old_term = signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    old_usr = signal.signal(RESET_SIGNAL, lambda *a: vb.request_reset())
    try:
        try:
            vb.start()
        except vboard.VirtualBoardError as exc:
            raise UserError(str(exc)) from None
        entry["ports"] = list(vb.ports)
        _write_registry(entry)
        print(
            "virtual board %s running MicroPython (heap %s) on port%s:"
            % (board_file.stem, vb.heap, "s" if len(vb.ports) > 1 else "")
        )
        for port in vb.ports:
            print(port)
        print("filesystem: %s (kept across restarts; --fresh starts it empty)" % workdir)
        print("try: thermopilot info --port %s" % vb.port)
        print("reset: thermopilot vboard reset   stop: Ctrl-C", flush=True)
        boots = vb.boots
        while not stop:
            if vb.dead:
                raise UserError("virtual board stopped: %s" % vb.dead)
            if vb.boots != boots:
                boots = vb.boots
                print(
                    "board reset: the VM restarted and boots main.py (boot %d)" % boots, flush=True
                )
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(RESET_SIGNAL, old_usr)
        vb.stop()
        with contextlib.suppress(OSError):
            _registry_path().unlink()
        print("virtual board stopped", file=sys.stderr)
    return 0


def _target(args):
    running = vboard.running_boards()
    if args.port:
        e = vboard.find_running(port=args.port)
        if e is None:
            raise UserError("no virtual board runs on %s%s" % (args.port, _listing(running)))
        return e
    if args.board:
        e = vboard.find_running(board=args.board)
        if e is None:
            raise UserError("no virtual board %s is running%s" % (args.board, _listing(running)))
        return e
    if len(running) == 1:
        return running[0]
    if not running:
        raise UserError("no virtual board is running; start one with thermopilot vboard")
    raise UserError(
        "%d virtual boards are running; say which with --board or --port%s"
        % (len(running), _listing(running))
    )


def _listing(running):
    if not running:
        return " (none is running: thermopilot vboard starts one)"
    return " (running: %s)" % "; ".join(
        "%s on %s" % (e["board"], ", ".join(e["ports"])) for e in running
    )


def _reset(args):
    from thermopilot.protocol.link import LinkError, Session

    e = _target(args)
    boots = e.get("boots", 0)
    os.kill(e["pid"], RESET_SIGNAL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = vboard.find_running(port=e["ports"][0])
        if now is None:
            raise UserError("the virtual board (pid %d) stopped during the reset" % e["pid"])
        if now.get("boots", 0) > boots:
            break
        time.sleep(0.05)
    else:
        raise UserError("the virtual board (pid %d) did not restart within 10 s" % e["pid"])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with Session(e["ports"][0], timeout_s=0.3, retries=0) as s:
                s.hello(check_schema=False)
            break
        except LinkError:
            time.sleep(0.1)
    else:
        raise UserError(
            "virtual board %s restarted but ThermoPilot does not answer on %s: deploy it "
            "(thermopilot deploy --board %s --port %s)"
            % (e["board"], e["ports"][0], e["board"], e["ports"][0])
        )
    print(
        "virtual board %s reset: the VM restarted, ThermoPilot answers on %s"
        % (e["board"], ", ".join(e["ports"]))
    )
    return 0


def _list(args):
    running = vboard.running_boards()
    if args.json:
        print_json(running)
        return 0
    if not running:
        print("no virtual board is running (thermopilot vboard starts one)")
    for e in running:
        print(
            "%-12s pid %-7d heap %-5s ports %s  filesystem %s"
            % (e["board"], e["pid"], e["heap"], ", ".join(e["ports"]), e["workdir"])
        )
    return 0
