"""``thermopilot deploy``: copy the firmware to a board, check it, reset it, wait for it.

Steps, each with its own time limit and a message that says what to do when it fails:

1. check the board definition with the firmware's own checker (on the MicroPython VM);
2. ask a running ThermoPilot application to hand the console back (``release_console``);
   a board at its REPL (fresh, or released before) does not answer and needs nothing;
3. take the raw REPL (mpremote's transport, in this process) and ask the board which
   MicroPython it runs: the ``.mpy`` version and CPU architecture it loads;
4. compile the firmware with mpy-cross for that architecture (cached), clear ``lib/tpfw``,
   copy every file with a progress bar, then the C core's stamp;
5. verify: SHA-256 of every file on the board against the local one;
6. reset the board (``machine.reset()``, what ``mpremote reset`` sends; the virtual board
   restarts its VM) and wait until the application answers HELLO.

Nothing blocks without a limit: each mpremote call runs under a watchdog that closes the port
when its step overruns, so a silent or stuck board ends in a message, never a hang.
"""

import contextlib
import hashlib
import io
import pathlib
import threading
import time

from thermopilot.hil import resources
from thermopilot.protocol import schema
from thermopilot.protocol.link import LinkError, SchemaMismatch, Session

from .console import Progress, UserError, fmt_bytes

#: index in ``sys.implementation._mpy >> 10`` -> mpy-cross ``-march`` name
MPY_ARCHS = [
    None,
    "x86",
    "x64",
    "armv6",
    "armv6m",
    "armv7m",
    "armv7em",
    "armv7emsp",
    "armv7emdp",
    "xtensa",
    "xtensawin",
    "rv32imc",
    "rv64imc",
]
#: the .mpy version mpy-cross writes (MicroPython 1.19 and later load it)
MPY_VERSION = 6

# the board's side of the checks: which MicroPython, and SHA-256 of the copied files
_QUERY = (
    "import sys\n"
    "print('TPQ', getattr(sys.implementation, '_mpy', -1), sys.platform, sys.version)\n"
)
_HASHES = """
import os
try:
    import hashlib, binascii
except ImportError:
    hashlib = None
for p in %r:
    try:
        n = os.stat(p)[6]
    except OSError:
        print('TPH', p, '-', -1)
        continue
    if hashlib is None:
        print('TPH', p, '-', n)
        continue
    h = hashlib.sha256()
    b = bytearray(512)
    with open(p, 'rb') as f:
        while True:
            k = f.readinto(b)
            if not k:
                break
            h.update(memoryview(b)[:k])
    print('TPH', p, binascii.hexlify(h.digest()).decode(), n)
"""
# make lib/tpfw and empty it, so that a stale .py (which MicroPython imports before a .mpy of
# the same name) never shadows the new image; the C core's stamp goes first, so a copy cut
# short leaves a module the firmware does not import
_PREPARE = """
import os
for d in ('lib', 'lib/tpfw'):
    try:
        os.mkdir(d)
    except OSError:
        pass
for f in os.listdir('lib/tpfw'):
    if f.endswith('.py') or f.endswith('.mpy') or f.endswith('.sha256'):
        os.remove('lib/tpfw/' + f)
"""
_RESET = "import time, machine\ntime.sleep_ms(100)\nmachine.reset()\n"


class StepFailed(UserError):
    pass


class _Watchdog:
    """Close the transport's port when a step overruns, so a blocked read returns."""

    def __init__(self, transport, seconds):
        self.fired = False
        self._t = threading.Timer(seconds, self._fire, args=(transport,))
        self._t.daemon = True

    def _fire(self, transport):
        self.fired = True
        with contextlib.suppress(Exception):
            transport.serial.close()

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._t.cancel()


class Deploy:
    """One deploy to the board on ``port``; :meth:`run` does every step.

    Parameters
    ----------
    port : str
        Serial device of the board (or a virtual board's pty).
    board : str
        Board definition name or path.
    native : bool
        Copy the C core built for the board's CPU when there is one.
    say : callable
        Prints a line for the user.
    progress : bool
        Show a progress bar for the copy (on stderr).
    boot_timeout_s : float
        How long the board may take to answer HELLO after its reset.
    """

    def __init__(self, port, board, native=True, say=print, progress=True, boot_timeout_s=20.0):
        self.port = port
        self.board_file = resources.board_path(board)
        self.board = resources.load_board(self.board_file)
        self.native = native
        self.say = say
        self.progress = progress
        self.boot_timeout_s = boot_timeout_s
        self.transport = None
        self.arch = None
        self.files = []
        self.identity = None

    # -- steps --------------------------------------------------------------------------------

    def _fail(self, what, detail, todo):
        raise StepFailed("deploy to %s: %s (%s). %s" % (self.port, what, detail, todo))

    def _recover_hint(self):
        from thermopilot.hil import vboard

        if vboard.find_running(port=self.port) is not None:
            return "Reset the virtual board (thermopilot vboard reset) and deploy again."
        pin = self.board.get("safe_boot_pin")
        return (
            "Reset the board and deploy again; if ThermoPilot starts and does not answer, "
            "hold %s low during the reset (or create a file named SAFEBOOT on the board) so "
            "that it does not start."
            % ("GPIO %s" % pin if pin is not None else "its safe-boot pin")
        )

    def release(self):
        """Ask a running application for the console; False when none answered."""
        try:
            with Session(self.port, timeout_s=0.4, retries=1) as s:
                s.command("release_console")
        except LinkError as exc:
            if "cannot open" in str(exc):
                raise StepFailed(str(exc)) from None
            return False
        time.sleep(0.2)  # main.py returns and the REPL starts
        return True

    def connect(self, timeout_s=8.0):
        """Take the raw REPL (no soft reset: that would start the application again)."""
        from mpremote.transport_serial import SerialTransport

        try:
            self.transport = SerialTransport(self.port, baudrate=115200, timeout=2)
        except Exception as exc:  # noqa: BLE001 - mpremote raises several kinds
            self._fail(
                "cannot open the port", exc, "Check the path: thermopilot ports lists them."
            )
        t = self.transport
        try:
            # mpremote prints what it read when it fails; the message below says it better
            with _Watchdog(t, timeout_s + 2), contextlib.redirect_stdout(io.StringIO()):
                t.enter_raw_repl(soft_reset=False, timeout_overall=timeout_s)
        except Exception as exc:  # noqa: BLE001
            self.close()
            self._fail(
                "neither ThermoPilot nor a MicroPython REPL answered within %.0f s"
                % (timeout_s + 1),
                str(exc).strip() or type(exc).__name__,
                "Is it the board's port (thermopilot ports lists them)? " + self._recover_hint(),
            )

    def exec(self, code, what, timeout_s=20.0):
        """Run ``code`` on the board; its output, or a StepFailed naming ``what``."""
        from mpremote.transport import TransportError, TransportExecError

        t = self.transport
        try:
            with _Watchdog(t, timeout_s) as wd:
                return t.exec(code).decode(errors="replace")
        except TransportExecError as exc:
            self._fail(what, exc.error_output.strip().splitlines()[-1], self._recover_hint())
        except (TransportError, OSError, ValueError, TypeError) as exc:
            if wd.fired:
                self._fail(what, "no answer within %.0f s" % timeout_s, self._recover_hint())
            self._fail(what, str(exc).strip() or type(exc).__name__, self._recover_hint())
        except Exception as exc:  # noqa: BLE001 - pyserial's errors after a watchdog close
            self._fail(what, str(exc).strip() or type(exc).__name__, self._recover_hint())

    def query(self):
        """The board's .mpy version and architecture; refuses a mismatch with the board
        definition (the virtual board, the unix port, plays any board on x64)."""
        out = self.exec(_QUERY, "asking the board which MicroPython it runs", 10)
        line = [ln for ln in out.splitlines() if ln.startswith("TPQ ")]
        if not line:
            self._fail("unexpected answer to a query", out.strip()[:80], self._recover_hint())
        _, mpy, platform, version = line[0].split(" ", 3)
        mpy = int(mpy)
        want = self.board.get("mpy_arch")
        if mpy < 0:
            self.arch = want  # too old to say; its version check below fails anyway
            self._fail(
                "MicroPython %s on the board is too old for .mpy files" % version,
                "no sys.implementation._mpy",
                "Flash MicroPython 1.19 or later (thermopilot flash --board %s ...)."
                % self.board_file.stem,
            )
        if mpy & 0xFF != MPY_VERSION:
            self._fail(
                "the board's MicroPython (%s) loads .mpy version %d, mpy-cross writes %d"
                % (version, mpy & 0xFF, MPY_VERSION),
                "MicroPython 1.19 or later loads version 6",
                "Flash a current MicroPython (thermopilot flash --board %s ...)."
                % self.board_file.stem,
            )
        arch = MPY_ARCHS[(mpy >> 10) & 0xF] if (mpy >> 10) & 0xF < len(MPY_ARCHS) else None
        self.platform = platform
        if platform == "linux" and arch == "x64":
            if self.board.get("hal") == "machine":
                self._fail(
                    'board definition %s drives real pins ("hal": "machine") and the '
                    "board on this port is the virtual board" % self.board_file.stem,
                    "MicroPython unix port",
                    'Deploy a definition with "hal": "hil" there (%s).'
                    % ", ".join(n for n in resources.board_names() if n.startswith("virtual")),
                )
            self.arch = arch  # the virtual board
            if want and want != arch:
                self.say(
                    "the board is the virtual board (MicroPython unix port, x64): firmware "
                    "compiled for x64, not the definition's %s" % want
                )
        elif want and arch and arch != want:
            self._fail(
                "board definition %s is for %s, the board runs %s MicroPython (%s)"
                % (self.board_file.stem, want, arch, platform),
                "wrong --board?",
                "Pick the definition of this board: %s." % ", ".join(resources.board_names()),
            )
        else:
            self.arch = arch or want

    def image(self):
        """(local path, board path) of every file to copy, compiled for the board's CPU."""
        files = resources.firmware_files(self.arch)
        module, why = (None, "not copied (--no-native)")
        if self.native:
            module, why = resources.native_module({"mpy_arch": self.arch})
        if module is None:
            self.say("C core: %s; the board runs the MicroPython fallback" % why)
        else:
            self.say("C core: %s -> :%s" % (module, resources.NATIVE_REMOTE))
            files.append((module, resources.NATIVE_REMOTE))
        files.append((self.board_file, "board.json"))
        self.files = files
        return files

    def copy(self, stop=None):
        """Clear lib/tpfw and copy every file, with a progress bar; a Ctrl-C (``stop``)
        ends the copy after the current file."""
        from mpremote.transport import TransportError

        self.exec(_PREPARE, "preparing lib/tpfw on the board", 20)
        total = sum(pathlib.Path(p).stat().st_size for p, _ in self.files)
        done = 0
        bar = Progress("copy", total=total, unit="bytes") if self.progress else None
        try:
            for k, (local, remote) in enumerate(self.files):
                if stop is not None and stop.requested:
                    from .console import Interrupted

                    raise Interrupted(
                        "deploy stopped after %d of %d files: the firmware on the board is "
                        "incomplete and ThermoPilot will not start; the REPL stays free. Deploy "
                        "again to finish." % (k, len(self.files))
                    )
                data = pathlib.Path(local).read_bytes()
                base = done
                if bar is not None:
                    bar.update(done, note=remote)

                def step(n, _size, base=base):
                    if bar is not None:
                        bar.update(base + n)

                # about 2 kB/s is the slowest link seen; no file may take longer than that
                limit = 15.0 + len(data) / 2000.0
                try:
                    with _Watchdog(self.transport, limit) as wd:
                        self.transport.fs_writefile(remote, data, progress_callback=step)
                except (TransportError, OSError, ValueError, TypeError) as exc:
                    why = "no progress within %.0f s" % limit if wd.fired else str(exc).strip()
                    self._fail("copying %s stopped" % remote, why, self._recover_hint())
                done += len(data)
            stamp = resources.NATIVE_REMOTE[:-4] + ".sha256"
            module = [p for p, r in self.files if r == resources.NATIVE_REMOTE]
            if module:
                self.exec(
                    "with open(%r, 'w') as f:\n    f.write(%r)\n"
                    % (stamp, resources.native_stamp(module[0])),
                    "writing the C core's stamp",
                )
        finally:
            if bar is not None:
                bar.update(done, note="", force=True)
                bar.finish()
        return total

    def verify(self):
        """SHA-256 (or, on a board without hashlib, the size) of every copied file."""
        paths = [r for _, r in self.files]
        out = self.exec(_HASHES % (paths,), "verifying the copied files", 60)
        got = {}
        for ln in out.splitlines():
            parts = ln.split()
            if len(parts) == 4 and parts[0] == "TPH":
                got[parts[1]] = (parts[2], int(parts[3]))
        by_size = False
        bad = []
        for local, remote in self.files:
            data = pathlib.Path(local).read_bytes()
            h, n = got.get(remote, ("-", -1))
            if n != len(data):
                bad.append("%s (%d bytes on the board, %d here)" % (remote, n, len(data)))
            elif h == "-":
                by_size = True
            elif h != hashlib.sha256(data).hexdigest():
                bad.append("%s (SHA-256 differs)" % remote)
        if bad:
            self._fail(
                "the board holds other files than were copied",
                "; ".join(bad[:3]),
                "Deploy again; if it happens again the board's filesystem may be full or "
                "damaged (mpremote connect %s df)." % self.port,
            )
        return "sizes (the board has no hashlib)" if by_size else "SHA-256"

    def reset(self):
        """``machine.reset()`` (what mpremote reset sends), then the port closes."""
        from mpremote.transport import TransportError

        t = self.transport
        try:
            with _Watchdog(t, 5):
                t.exec_raw_no_follow(_RESET)
        except (TransportError, OSError, ValueError, TypeError):
            pass  # the board may reset before it answers
        self.close()

    def wait_hello(self):
        """Wait until ThermoPilot answers HELLO after the reset (the port may vanish while a
        real board re-enumerates on USB)."""
        deadline = time.monotonic() + self.boot_timeout_s
        last = "no answer to HELLO"
        while time.monotonic() < deadline:
            try:
                with Session(self.port, timeout_s=0.3, retries=0) as s:
                    self.identity = s.hello()
                    return self.identity
            except LinkError as exc:
                if "cannot open" in str(exc):
                    last = "the port did not come back"
                elif isinstance(exc, SchemaMismatch):
                    raise StepFailed(str(exc)) from None
                time.sleep(0.2)
        self._fail(
            "ThermoPilot did not answer within %.0f s of the reset" % self.boot_timeout_s,
            last,
            "Look at the board's console for the reason (mpremote connect %s repl, then "
            "reset it: main.py prints why the application did not start)." % self.port,
        )

    def close(self):
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.serial.close()
            self.transport = None

    # -- all ----------------------------------------------------------------------------------

    def run(self, stop=None):
        """Every step; returns the board's IDENTITY after its reset."""
        t0 = time.monotonic()
        resources.check_board(self.board_file)
        self.say("board definition %s: checked by the firmware's checker" % self.board_file.stem)
        if self.release():
            self.say("the running application released the console")
        try:
            self.connect()
            self.query()
            if stop is not None:
                stop.check("deploy stopped before copying; the board is unchanged")
            self.image()
            self.say(
                "copying %d files (.mpy for %s) to %s" % (len(self.files), self.arch, self.port)
            )
            total = self.copy(stop)
            how = self.verify()
            self.say(
                "copied %s in %d files; verified by %s" % (fmt_bytes(total), len(self.files), how)
            )
            self.reset()
        finally:
            self.close()
        self.say("reset the board; waiting for ThermoPilot to answer")
        ident = self.wait_hello()
        feats = [k for k, v in schema.FEATURES.items() if ident.features & (1 << v)]
        self.say(
            "deployed: board %s, firmware %s, %s control core, answering on %s (%.1f s)"
            % (
                bytes(ident.board).split(b"\0")[0].decode(errors="replace"),
                bytes(ident.fw_version).split(b"\0")[0].decode(errors="replace"),
                "C" if "c_core" in feats else "MicroPython",
                self.port,
                time.monotonic() - t0,
            )
        )
        return ident
