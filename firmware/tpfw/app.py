# The ThermoPilot board application: protocol endpoint, fixed-rate scheduler, controller
# plug-ins and the supervisor. Time is either the board's clock (real time) or the simulated
# time carried by HIL frames (lockstep); controllers never read a clock themselves.
#
# Nothing a host sends can stop the loop: input is read with a byte budget per pass so ticks,
# host-loss detection and telemetry keep their schedule under any input rate; every request is
# answered (unknown ids and wrong lengths with a NACK, a handler's exception with `internal`
# and a LOG line); HIL frames that jump too far in time are refused; every interval derived
# from a parameter is bounded.
import gc
import select
import struct
import sys
import time
from array import array

import micropython
from micropython import const

from . import FW_VERSION, codec, core
from .hal import MAX_ACTUATORS, MAX_SENSORS, HilHal, Sensing
from .link import Link, copy_at, copy_into, crc_ok, get_u16, get_u30
from .loops import F32, controller_class, quantity
from .params import NO_OTHER, SAVED, UNCHANGED, Params
from .supervisor import TIME_MASK, Supervisor, elapsed

_NO_LOOP = const(255)
_MAX_UPLOAD = const(16384)  # bytes: an MPC blob of the largest dimensions fits
_SLOTS = const(8)
_RX_BUDGET = const(512)  # bytes read per pass of the main loop at most
_FREED = const(2048)  # bytes use must fall between two looks to count as a collection
_RESERVE = const(4096)  # smallest margin kept free beyond the next tick (gc_setup)
_TX_BATCH = const(1024)  # bytes of answers and telemetry gathered into one console write
_MAX_CATCHUP = const(10)  # ticks run late in real time before the schedule skips ahead
_HALF = const(0x1FFFFFFF)
_LOG_ERROR = const(3)
_LOG_INFO = const(1)

# board-wide parameters: (name, unit, quantity, type, min, max, default)
_GLOBAL_ROWS = (
    ("hil.timeout_s", "s", "time", F32, 0.1, 60.0, 1.0),
    ("hil.max_jump_s", "s", "time", F32, 0.1, 60.0, 10.0),
    # 1: collect garbage between ticks, before the heap runs low (0: when MicroPython must)
    ("sys.gc_idle", "", "state", codec.PTYPE_BOOL, 0.0, 1.0, 1.0),
)


def _due(t_ms, at_ms):
    # t_ms has reached at_ms on the wrapping board clock
    return ((t_ms - at_ms) & TIME_MASK) <= _HALF


class Upload:
    """A chunked upload in progress: slot, total length, expected CRC-32, bytes received."""

    def __init__(self, slot, total, crc):
        self.slot = slot
        self.total = total
        self.crc = crc
        self.got = 0
        self.buf = bytearray(total + 4)


def param_table(board):
    """(rows, rules, owner) of every loop's controller plus the board-wide rows; owner[i] is
    the loop index of parameter i (255 for board-wide ones)."""
    rows = []
    rules = []
    owner = bytearray()
    for k, lp in enumerate(board["loops"]):
        cls = controller_class(lp["controller"])
        first = len(rows)
        names = {}
        for suffix, unit, q, t, lo, hi, default in cls.rows(lp, board):
            names[suffix] = len(rows)
            rows.append(
                (lp["name"] + "." + suffix, unit, quantity(q or "none"), t, lo, hi, default)
            )
        for a, b, gap in cls.RULES:
            rules.append((names[a], names[b], gap))
        owner.extend(bytes([k]) * (len(rows) - first))
    for name, unit, q, t, lo, hi, default in _GLOBAL_ROWS:
        rows.append((name, unit, quantity(q), t, lo, hi, default))
        owner.append(_NO_LOOP)
    return rows, rules, owner


class App:
    def __init__(self, board, stdin, stdout, path_dir=""):
        self.board = board
        self.stdin = stdin
        self.stdout = stdout
        self.link = Link(self._emit)
        # what one pass of input makes the board send (answers, the telemetry and events
        # of the ticks a HIL frame ran) goes out in one write: one wake-up for the host, one
        # USB transfer on a board
        self.txbuf = bytearray(_TX_BATCH)
        self.tx_n = 0
        self.batching = False
        self.sup = Supervisor(board["sensors"], board["actuators"])
        rows, rules, self.p_owner = param_table(board)
        self.params = p = Params(rows, rules, path_dir)
        del rows, rules  # the rows were copied into the table: free them before the loops
        self.path_dir = path_dir
        leftover = p.cleanup()
        p.load()
        self.ctls = []
        for k, lp in enumerate(board["loops"]):
            self.ctls.append(controller_class(lp["controller"])(k, lp, board, p))
        p.on_change = self._param_changed
        self.i_timeout = p.index["hil.timeout_s"]
        self.i_jump = p.index["hil.max_jump_s"]
        self.i_gc = p.index["sys.gc_idle"]
        self._param_changed(-1)
        self.sensing = Sensing(board["sensors"])
        n_s = len(board["sensors"])
        n_a = len(board["actuators"])
        self.hal = HilHal(n_s, n_a)
        self.machine = board.get("hal") == "machine"
        if self.machine:
            from .hal_machine import MachineHal

            self.hal = MachineHal(board["sensors"], board["actuators"])
        self.x = array("f", [0.0] * MAX_SENSORS)  # SI sensor values of the current tick
        self.out = array("f", [0.0] * MAX_ACTUATORS)  # actuator outputs of the current tick
        for i in range(n_a):
            self.out[i] = self.sup.safe[i]
        # which loop drives each actuator (255: none; it rests at its safe value)
        self.a_owner = bytearray([_NO_LOOP] * n_a)
        for c in self.ctls:
            for a in c.acts:
                self.a_owner[a] = c.idx
        self.hil = False
        # a board without real sensors ticks only once the HIL rig feeds it; until then its
        # actuators rest at their safe values
        self.waits_for_rig = not self.machine
        self.period_ms = int(1000 // board["tick_hz"])
        self.dt_s = self.period_ms / 1000.0
        self.next_tick_ms = 0
        self.now_ms = 0
        self.wall_ms = 0
        self.wall_last = time.ticks_ms()
        self.ticks = 0
        self.hil_wall = 0
        self.hil_t = -1  # time of the last accepted HIL frame; -1: the next one sets the base
        self.hil_rejected = 0
        self.handler_errors = 0
        # heap and tick statistics (BOARD_STATS)
        self.gc_idle = 0  # collections run between ticks
        self.gc_in_tick = 0  # ticks inside which a collection ran (see _timed_tick)
        self.ticks_slow = 0  # ticks longer than 3x the mean: a collection inside, or a stall
        self.tick_us_max = 0
        self.tick_us_mean = 0.0
        self.ticks_late = 0
        self.heap_min_free = 0  # heap total - the highest heap use seen (the high-water)
        self.heap_total = 0
        self.heap_peak = 0  # highest gc.mem_alloc() seen: just before each collection
        self.gc_budget = 0
        self.gc_alloc0 = 0  # heap in use after the last collection
        self.gc_last = 0  # heap in use at the last look
        self.gc_seen = -1  # self.ticks at the last look
        self.gc_step = 0  # largest growth of the heap between two looks (decays)
        self.gc_mode = True
        self.tlm_period_ms = 500
        self.next_tlm_ms = 0
        self.rxbuf = bytearray(1)
        self.running = True
        self.upload = None
        self.handlers = {
            codec.M_HELLO: self.on_hello,
            codec.M_LOOP_INFO_REQ: self.on_loop_info,
            codec.M_FIELD_INFO_REQ: self.on_field_info,
            codec.M_FAULT_STATUS_REQ: self.on_fault_status,
            codec.M_FAULT_INFO_REQ: self.on_fault_info,
            codec.M_PARAM_INFO_REQ: self.on_param_info,
            codec.M_PARAM_GET: self.on_param_get,
            codec.M_PARAM_SET: self.on_param_set,
            codec.M_PARAM_SAVE: self.on_param_save,
            codec.M_PARAM_DEFAULTS: self.on_param_defaults,
            codec.M_COMMAND: self.on_command,
            codec.M_STREAM_RATE: self.on_stream_rate,
            codec.M_HIL_SENSORS: self.on_hil,
            codec.M_UPLOAD_BEGIN: self.on_upload_begin,
            codec.M_UPLOAD_CHUNK: self.on_upload_chunk,
            codec.M_UPLOAD_END: self.on_upload_end,
            codec.M_LINK_STATS_REQ: self.on_link_stats,
            codec.M_BOARD_STATS_REQ: self.on_board_stats,
        }
        if p.refused:
            self.sup.latch(codec.FAULT_PARAMS_CORRUPT, _NO_LOOP, 0.0, 0)
            self.sup.notice(codec.NOTICE_PARAMS_REFUSED, _NO_LOOP, 0.0, 0, True)
        self._boot_log = []
        if p.load_error:
            self._boot_log.append(p.load_error)
        if leftover:
            self._boot_log.append("removed params.tmp left by an interrupted save")
        if not core.NATIVE:
            # the MicroPython fallback runs the same maths, slower and allocating per tick
            self.sup.notice(codec.NOTICE_C_CORE_MISSING, _NO_LOOP, 0.0, 0)
            self._boot_log.append("C core not used: " + core.NATIVE_REASON)
        for c in self.ctls:
            c.start()

    # ---- parameters --------------------------------------------------------------------------

    def _param_changed(self, i):
        v = self.params.values
        self.hil_timeout_ms = int(v[self.i_timeout] * 1000)
        self.max_jump_ms = int(v[self.i_jump] * 1000)
        if hasattr(self, "gc_mode") and self.gc_mode != (v[self.i_gc] != 0.0):
            self.gc_setup()
        if i < 0:
            for c in self.ctls:
                c.configure()
        elif self.p_owner[i] != _NO_LOOP:
            self.ctls[self.p_owner[i]].configure()

    # ---- control -----------------------------------------------------------------------------

    def tick(self, t_ms):
        sup = self.sup
        x = self.x
        out = self.out
        hal = self.hal
        dt = self.dt_s
        valid = hal.read()
        self.sensing.decode(hal.raw, valid, x)
        sup.begin_tick()
        ok = sup.check_sensors(x, out, t_ms, self.period_ms)
        for c in self.ctls:
            try:
                c.sense(x, ok, dt, t_ms)
                c.watch(sup, x, ok, t_ms)
                if not sup.trip and c.mode == codec.MODE_AUTO:
                    c.check(sup, x, ok, t_ms)
            except Exception as e:  # noqa: BLE001 - a controller bug must not stop the loop
                self._internal(c, e, t_ms)
        if sup.trip:
            since = elapsed(t_ms, sup.t_trip_ms) / 1000.0
            for c in self.ctls:
                try:
                    c.safe(sup.trip, since, out)
                except Exception as e:  # noqa: BLE001
                    self._internal(c, e, t_ms)
                    self._fallback_safe(c)
        else:
            for c in self.ctls:
                try:
                    if c.mode == codec.MODE_AUTO:
                        c.step(x, ok, dt, out, sup, t_ms)
                    elif c.mode == codec.MODE_MANUAL:
                        c.manual(x, ok, dt, out, sup, t_ms)
                    else:
                        c.off(out, elapsed(t_ms, c.mode_t) / 1000.0)
                except Exception as e:  # noqa: BLE001
                    self._internal(c, e, t_ms)
                    self._fallback_safe(c)
            sup.check_feedback(out, x, ok, t_ms)
        for i in range(hal.n_actuators):
            if self.a_owner[i] == _NO_LOOP:
                out[i] = sup.safe[i]
            hal.write(i, out[i])
        sup.end_tick()
        self.ticks += 1

    def _fallback_safe(self, c):
        for a in c.acts:
            self.out[a] = self.sup.safe[a]

    def _internal(self, c, e, t_ms):
        self.sup.latch(codec.FAULT_INTERNAL, c.idx, 0.0, t_ms)
        self.log(_LOG_ERROR, "loop %s: %s %s" % (c.name, type(e).__name__, e))

    def run_due(self, t_ms):
        """Run the ticks due up to board time t_ms."""
        n = 0
        while _due(t_ms, self.next_tick_ms):
            if not self.hil and n >= _MAX_CATCHUP:
                # far behind in real time (a long flash write, a stall): skip ahead
                self.sup.latch(codec.FAULT_LOOP_OVERRUN, _NO_LOOP, n, t_ms, False)
                self.next_tick_ms = t_ms
                break
            if not self.hil and elapsed(t_ms, self.next_tick_ms) * 2 > self.period_ms:
                self.ticks_late += 1  # started more than half a period after its time
            self._timed_tick(self.next_tick_ms)
            self.next_tick_ms = (self.next_tick_ms + self.period_ms) & TIME_MASK
            n += 1
            if _due(t_ms, self.next_tick_ms):
                # another tick follows at once (a HIL frame carries several, or a catch-up):
                # the heap is watched between them too, or their garbage could fill it inside one
                self.idle_gc()
        self.now_ms = t_ms

    def _timed_tick(self, t_ms):
        # the tick with its duration (the heap is watched by idle_gc: gc.mem_free() and
        # gc.mem_alloc() scan the whole heap's allocation table, tens of us each)
        #
        # A collection inside the tick is seen by where MicroPython puts a one-block object:
        # py/gc.c allocates it at the lowest free block (its search start has no free block
        # below it), so while the tick only allocates, a probe after the tick lands above the
        # probe taken before it (that block is still taken: garbage is freed only by a
        # collection). A collection frees the first probe and every dead block below it, so the
        # second probe lands at or below the first. An explicit free (gc_free, a shrinking
        # realloc) could do the same; the tick code does none (a test runs ticks with the
        # collector off and sees no count). A collection that finds nothing dead below the
        # first probe is missed. Cost: two small objects per tick, no heap scan.
        probe = id(object())
        t0 = time.ticks_us()
        self.tick(t_ms)
        us = time.ticks_diff(time.ticks_us(), t0)
        if id(object()) <= probe:
            self.gc_in_tick += 1
        if us > self.tick_us_max:
            self.tick_us_max = us
        if self.ticks > 64 and us > 3 * self.tick_us_mean:
            self.ticks_slow += 1  # a collection inside the tick, or another stall
        self.tick_us_mean += (us - self.tick_us_mean) * 0.015625  # over about 64 ticks

    def gc_setup(self):
        """Collect now and decide how garbage collection runs from here: between ticks
        (sys.gc_idle = 1), once the free heap would not hold the next tick's growth (the
        largest seen lately) and a margin of an eighth of the free heap after boot, or whenever
        MicroPython needs memory, possibly inside a tick (0). The margin leaves room for
        requests and for a fragmented heap, where the allocator runs out of room ahead of it
        before the heap is full. MicroPython's own allocation trigger (gc.threshold) is off in
        both: set beyond the previous budget, collections still came inside 3929 of 6001 ticks
        of a heat-pump run (it counts every allocation, also blocks freed again at once; the
        previous looks were spaced by a rate estimate). Now every tick is followed by a look.
        """
        gc.collect()
        free = gc.mem_free()
        a = gc.mem_alloc()
        self.heap_total = free + a
        self.tick_us_max = 0  # the statistics describe the policy in force
        # free heap kept beyond the next tick's growth at the look before a tick: an eighth of
        # the free heap after boot, at least _RESERVE (requests, a fragmented heap)
        self.gc_budget = max(free // 8, _RESERVE)
        self.gc_mode = self.params.values[self.i_gc] != 0.0
        gc.threshold(-1)
        self.heap_watch_reset(a)

    def heap_watch_reset(self, alloc=-1):
        """Start the heap high-water over (a HIL run starts, the policy changes)."""
        if alloc < 0:
            alloc = gc.mem_alloc()
        if not self.heap_total:
            self.heap_total = gc.mem_free() + alloc
        self.heap_peak = alloc
        self.heap_min_free = self.heap_total - alloc
        self.gc_alloc0 = alloc
        self.gc_last = alloc
        self.gc_seen = -1
        self.gc_step = 0

    def idle_gc(self):
        """Between ticks: watch the heap and collect once the free heap would not hold the next
        tick's growth and the margin (sys.gc_idle = 1; see gc_setup).

        Heap use only grows between collections, so its highest point in a cycle is just
        before the collection: the look that decides to collect is that point, and the
        high-water (BOARD_STATS heap_min_free = total - highest use) is exact. One look (a
        scan of the allocation table, tens of us) after each new tick. A collection
        MicroPython ran by itself (its use fell back towards the last collection's without
        ours) means the heap could not serve an allocation inside a tick or a request: with
        sys.gc_idle = 0 the high-water is then the whole heap; with it on (a fragmented heap,
        or a burst beyond the margin) the last look before it, a lower bound."""
        t = self.ticks
        if t == self.gc_seen:
            return  # no tick since the last look
        self.gc_seen = t
        a = gc.mem_alloc()
        if a < self.gc_last - _FREED and a < (self.gc_alloc0 + self.gc_last) // 2:
            # collected by MicroPython since the last look (use also falls a little when the
            # VM frees a buffer it resized; a collection takes back the cycle's garbage)
            # gc_idle = 0: MicroPython collects only when an allocation fails, so the heap
            # was full; with ours on, it did because the heap was too fragmented for one
            # allocation (or a burst beyond the margin): the use before it is at least the last
            # look
            self._heap_use(self.gc_last if self.gc_mode else self.heap_total)
            self.gc_alloc0 = a
            self.gc_last = a
            return
        self._heap_use(a)
        step = a - self.gc_last
        self.gc_last = a
        if step > self.gc_step:
            self.gc_step = step
        else:
            self.gc_step -= self.gc_step >> 8  # forget a burst over a few hundred ticks
        if not self.gc_mode:
            return
        if self.heap_total - a < self.gc_step + self.gc_budget:
            gc.collect()
            a = gc.mem_alloc()
            self.gc_alloc0 = a
            self.gc_last = a
            self.gc_idle += 1

    def collect(self):
        """A collection outside idle_gc (before a large allocation, after an error): the
        heap's use before it counts for the high-water, and it is not taken for one
        MicroPython ran by itself."""
        self._heap_use(gc.mem_alloc())
        gc.collect()
        a = gc.mem_alloc()
        self.gc_alloc0 = a
        self.gc_last = a

    def _heap_use(self, a):
        if a > self.heap_peak:
            self.heap_peak = a
            self.heap_min_free = self.heap_total - a

    def safe_now(self):
        for i in range(self.hal.n_actuators):
            self.out[i] = self.sup.safe[i]
            self.hal.write(i, self.sup.safe[i])
        for c in self.ctls:
            c.hold(self.out)

    # ---- HIL ---------------------------------------------------------------------------------

    def hil_start(self):
        """Sensors and actuators now come from and go to the rig; the next frame sets the
        simulated time (a new run may restart at 0)."""
        if not isinstance(self.hal, HilHal):
            self.safe_now()  # the real outputs rest at their safe values
            self.hal = HilHal(self.hal.n_sensors, self.hal.n_actuators)
        self.hil = True
        self.hil_t = -1
        self.hil_wall = time.ticks_ms()
        # the heap high-water and the longest tick describe this run
        self.tick_us_max = 0
        self.heap_watch_reset()
        self.sup.ext_present &= ~(1 << codec.FAULT_HOST_LOST)
        self.sup.restart(self.out)
        for c in self.ctls:
            c.start()
        self.sup.notice(codec.NOTICE_HIL_STARTED, _NO_LOOP, 0.0, self.now_ms)

    def hil_stop(self, lost):
        """Leave lockstep: the board waits for a rig again (virtual board) or returns to its
        own sensors (real board); outputs rest at their safe values meanwhile."""
        self.hil = False
        if lost:
            self.sup.ext_present |= 1 << codec.FAULT_HOST_LOST
            self.sup.latch(codec.FAULT_HOST_LOST, _NO_LOOP, 0.0, self.now_ms)
        else:
            self.sup.notice(codec.NOTICE_HIL_STOPPED, _NO_LOOP, 0.0, self.now_ms)
        self.safe_now()
        if self.machine:
            from .hal_machine import MachineHal

            self.hal = MachineHal(self.board["sensors"], self.board["actuators"])
            self.next_tick_ms = self.wall_ms
        self.waits_for_rig = not self.machine
        self.now_ms = self.wall_ms
        self.next_tlm_ms = self.now_ms

    def on_hil(self):
        lk = self.link
        rx = lk.rx
        if not self.hil:
            self.hil_start()
        t_ms = get_u30(rx, codec.O_HIL_SENSORS_T_MS)  # the board clock wraps at 2**30 ms
        valid = get_u16(rx, codec.O_HIL_SENSORS_VALID)
        if self.hil_t < 0:
            self.next_tick_ms = t_ms
            self.now_ms = t_ms
            self.next_tlm_ms = t_ms
        else:
            jump = (t_ms - self.hil_t) & TIME_MASK
            if jump > self.max_jump_ms:
                # backwards, or further ahead than the board may run in one frame
                self.hil_rejected += 1
                back = jump > _HALF
                self.nack(
                    codec.ERR_TIME_JUMP,
                    (jump - TIME_MASK - 1) if back else jump,
                    0.0,
                    self.max_jump_ms,
                )
                return
        self.hil_t = t_ms
        hal = self.hal
        copy_at(hal.raw, rx, codec.O_HIL_SENSORS_VALUES, 4 * MAX_SENSORS)
        hal.valid = valid
        self.hil_wall = time.ticks_ms()
        self.sup.ext_present &= ~(1 << codec.FAULT_HOST_LOST)
        t0 = self.ticks
        self.run_due(t_ms)
        self.stream()  # telemetry and events of these ticks go out before the answer
        o = hal.outputs
        struct.pack_into(
            codec.F_HIL_ACTUATORS,
            lk.tx,
            codec.HDR,
            rx[1],
            t_ms,
            (self.ticks - t0) & 0xFFFF,
            self.sup.faults,
            o[0],
            o[1],
            o[2],
            o[3],
            o[4],
            o[5],
            o[6],
            o[7],
        )
        lk.answer(codec.M_HIL_ACTUATORS, codec.S_HIL_ACTUATORS)
        self.idle_gc()  # the rig is busy with its plant now: the board's idle moment

    # ---- protocol ----------------------------------------------------------------------------

    def ack(self, code=0):
        rx = self.link.rx
        struct.pack_into(codec.F_ACK, self.link.tx, codec.HDR, rx[1], rx[2], code)
        self.link.answer(codec.M_ACK, codec.S_ACK)

    def nack(self, code, value=0.0, lo=0.0, hi=0.0, other=NO_OTHER):
        rx = self.link.rx
        struct.pack_into(
            codec.F_NACK, self.link.tx, codec.HDR, rx[1], rx[2], code, value, lo, hi, other
        )
        self.link.answer(codec.M_NACK, codec.S_NACK)

    def log(self, level, text):
        """A LOG line to every listener (text cut to 60 bytes)."""
        struct.pack_into(codec.F_LOG, self.link.tx, codec.HDR, level, text.encode()[:60])
        self.link.send(codec.M_LOG, codec.S_LOG)

    def dispatch(self, size):
        lk = self.link
        if lk.is_retry():
            # a retry of the request just answered in this session: same answer, done once
            lk.resend()
            return
        msg = lk.rx[2]
        h = self.handlers.get(msg)
        if h is None:
            self.nack(codec.ERR_UNKNOWN_MESSAGE, msg)
            return
        want = codec.SIZE_BY_ID[msg]
        if size != want:
            lk.rx_bad_len += 1
            self.nack(codec.ERR_BAD_LENGTH, size, want, want)
            return
        try:
            h()
        except Exception as e:  # noqa: BLE001 - a bad request must never stop the loops
            self.handler_errors += 1
            self.nack(codec.ERR_INTERNAL, msg)
            self.log(_LOG_ERROR, "request 0x%02x: %s %s" % (msg, type(e).__name__, e))

    def on_hello(self):
        b = self.board
        features = 1 << codec.FEATURE_HIL | 1 << codec.FEATURE_FLASH_PARAMS
        if core.NATIVE:
            features |= 1 << codec.FEATURE_C_CORE
        # a new session: a host that vanished is back (the fault still needs a reset)
        self.sup.ext_present &= ~(1 << codec.FAULT_HOST_LOST)
        rx = self.link.rx
        struct.pack_into(
            codec.F_IDENTITY,
            self.link.tx,
            codec.HDR,
            rx[1],
            codec.PROTOCOL_VERSION,
            FW_VERSION.encode(),
            b["name"].encode(),
            (codec.SCHEMA_HASH_HI << 16) | codec.SCHEMA_HASH_LO,
            features,
            len(self.ctls),
            len(self.params.names),
            b["tick_hz"],
            len(b["sensors"]),
            len(b["actuators"]),
            self.max_jump_ms,
        )
        self.link.answer(codec.M_IDENTITY, codec.S_IDENTITY)
        for line in self._boot_log:
            self.log(_LOG_INFO, line)
        self._boot_log = []

    def _loop_arg(self, k):
        if k >= len(self.ctls):
            self.nack(codec.ERR_BAD_LOOP, k, 0, len(self.ctls) - 1)
            return None
        return self.ctls[k]

    def on_loop_info(self):
        c = self._loop_arg(self.link.rx[codec.O_LOOP_INFO_REQ_LOOP])
        if c is None:
            return
        b = self.board
        s = b["sensors"][c.s[c.SENSORS[0]]]
        a = b["actuators"][c.main]
        struct.pack_into(
            codec.F_LOOP_INFO,
            self.link.tx,
            codec.HDR,
            self.link.rx[1],
            c.idx,
            len(self.ctls),
            c.name.encode(),
            c.KIND.encode(),
            quantity(c.QUANTITY),
            quantity(a["quantity"]),
            a["min"],
            a["max"],
            s.get("resolution", 0.01),
            len(c.FIELDS),
        )
        self.link.answer(codec.M_LOOP_INFO, codec.S_LOOP_INFO)

    def on_field_info(self):
        rx = self.link.rx
        c = self._loop_arg(rx[codec.O_FIELD_INFO_REQ_LOOP])
        if c is None:
            return
        j = rx[codec.O_FIELD_INFO_REQ_INDEX]
        if j >= len(c.FIELDS):
            self.nack(codec.ERR_OUT_OF_RANGE, j, 0, len(c.FIELDS) - 1)
            return
        name, q = c.FIELDS[j]
        struct.pack_into(
            codec.F_FIELD_INFO,
            self.link.tx,
            codec.HDR,
            rx[1],
            c.idx,
            j,
            len(c.FIELDS),
            name.encode(),
            quantity(q),
        )
        self.link.answer(codec.M_FIELD_INFO, codec.S_FIELD_INFO)

    def send_fault_status(self):
        s = self.sup
        struct.pack_into(
            codec.F_FAULT_STATUS,
            self.link.tx,
            codec.HDR,
            self.link.rx[1],
            s.faults,
            s.present | s.ext_present,
            s.trip,
            self.now_ms,
        )
        self.link.answer(codec.M_FAULT_STATUS, codec.S_FAULT_STATUS)

    def on_fault_status(self):
        self.send_fault_status()

    def on_fault_info(self):
        bit = self.link.rx[codec.O_FAULT_INFO_REQ_BIT]
        if bit >= 32:
            self.nack(codec.ERR_OUT_OF_RANGE, bit, 0, 31)
            return
        s = self.sup
        m = 1 << bit
        struct.pack_into(
            codec.F_FAULT_INFO,
            self.link.tx,
            codec.HDR,
            self.link.rx[1],
            bit,
            1 if s.faults & m else 0,
            1 if (s.present | s.ext_present) & m else 0,
            s.f_loop[bit],
            s.f_t[bit],
            s.f_value[bit],
            s.f_count[bit],
        )
        self.link.answer(codec.M_FAULT_INFO, codec.S_FAULT_INFO)

    def on_param_info(self):
        (i,) = struct.unpack_from(codec.F_PARAM_INFO_REQ, self.link.rx, codec.HDR)
        p = self.params
        n = len(p.names)
        if i >= n:
            self.nack(codec.ERR_UNKNOWN_PARAM, i, 0, n - 1)
            return
        struct.pack_into(
            codec.F_PARAM_INFO,
            self.link.tx,
            codec.HDR,
            self.link.rx[1],
            i,
            n,
            p.names[i].encode(),
            p.units[i].encode(),
            p.types[i],
            p.quantities[i],
            p.mins[i],
            p.maxs[i],
            p.defaults[i],
            p.values[i],
        )
        self.link.answer(codec.M_PARAM_INFO, codec.S_PARAM_INFO)

    def _send_param_value(self, i):
        p = self.params
        struct.pack_into(
            codec.F_PARAM_VALUE,
            self.link.tx,
            codec.HDR,
            self.link.rx[1],
            i,
            p.names[i].encode(),
            p.values[i],
        )
        self.link.answer(codec.M_PARAM_VALUE, codec.S_PARAM_VALUE)

    def on_param_get(self):
        (name,) = struct.unpack_from(codec.F_PARAM_GET, self.link.rx, codec.HDR)
        i = self.params.find(name)
        if i < 0:
            self.nack(codec.ERR_UNKNOWN_PARAM)
            return
        self._send_param_value(i)

    def on_param_set(self):
        name, value = struct.unpack_from(codec.F_PARAM_SET, self.link.rx, codec.HDR)
        p = self.params
        i = p.find(name)
        if i < 0:
            self.nack(codec.ERR_UNKNOWN_PARAM)
            return
        err = p.set(i, value)
        if err:
            self.nack(err, value, p.err_lo, p.err_hi, p.err_other)
            return
        self._send_param_value(i)

    def on_param_save(self):
        r = self.params.save()
        if r == SAVED:
            self.ack()
        elif r == UNCHANGED:
            self.ack(1)
        else:
            self.nack(codec.ERR_FLASH_ERROR)

    def on_param_defaults(self):
        self.params.restore_defaults()
        self.ack()

    def on_command(self):
        loop_i, cmd, value = struct.unpack_from(codec.F_COMMAND, self.link.rx, codec.HDR)
        if cmd == codec.CMD_FAULT_RESET:
            self.sup.reset(self.now_ms)
            self.send_fault_status()
            return
        if cmd == codec.CMD_RELEASE_CONSOLE:
            self.ack()
            self.running = False
            return
        if cmd == codec.CMD_HIL_START:
            self.hil_start()
            self.ack()
            return
        if cmd == codec.CMD_HIL_STOP:
            if self.hil:
                self.hil_stop(False)
            self.ack()
            return
        if cmd not in (codec.CMD_MODE, codec.CMD_MANUAL_OUTPUT, codec.CMD_SETPOINT):
            self.nack(codec.ERR_BAD_COMMAND, cmd)
            return
        c = self._loop_arg(loop_i)
        if c is None:
            return
        if cmd == codec.CMD_MODE:
            if value not in (codec.MODE_OFF, codec.MODE_MANUAL, codec.MODE_AUTO):
                # autotune runs on the host (thermopilot tune), not as a board mode
                self.nack(codec.ERR_BAD_VALUE, value, codec.MODE_OFF, codec.MODE_AUTO)
                return
            if int(value) != c.mode:
                c.mode = int(value)
                c.mode_t = self.now_ms
        elif cmd == codec.CMD_MANUAL_OUTPUT:
            if not (c.out_min <= value <= c.out_max):
                self.nack(codec.ERR_OUT_OF_RANGE, value, c.out_min, c.out_max)
                return
            c.manual_output = value
        else:
            p = self.params
            err = p.set(c.i_sp, value)
            if err:
                self.nack(err, value, p.err_lo, p.err_hi, p.err_other)
                return
        self.ack()

    def on_stream_rate(self):
        mid, hz = struct.unpack_from(codec.F_STREAM_RATE, self.link.rx, codec.HDR)
        if mid != codec.M_TELEMETRY:
            self.nack(codec.ERR_BAD_VALUE, mid, codec.M_TELEMETRY, codec.M_TELEMETRY)
            return
        if hz != 0.0 and not (0.0099 <= hz <= 100.0):
            # bounded so that the period is a small positive number of ms (0 = off); the
            # lower bound allows for 0.01 arriving as a float32 just below it
            self.nack(codec.ERR_OUT_OF_RANGE, hz, 0.01, 100.0)
            return
        self.tlm_period_ms = int(1000.0 / hz) if hz > 0.0 else 0
        self.next_tlm_ms = self.now_ms
        self.ack()

    def on_link_stats(self):
        lk = self.link
        struct.pack_into(
            codec.F_LINK_STATS,
            lk.tx,
            codec.HDR,
            lk.rx[1],
            lk.rx_ok,
            lk.rx_bad_crc,
            lk.rx_bad_cobs,
            lk.rx_bad_len,
            lk.rx_dropped,
            lk.rx_overflow,
            lk.rx_duplicate,
            lk.tx_frames,
            self.hil_rejected,
            self.handler_errors,
            self.sup.events_lost,
        )
        lk.answer(codec.M_LINK_STATS, codec.S_LINK_STATS)

    def on_board_stats(self):
        free = gc.mem_free()
        self._heap_use(self.heap_total - free)
        struct.pack_into(
            codec.F_BOARD_STATS,
            self.link.tx,
            codec.HDR,
            self.link.rx[1],
            free,
            self.heap_min_free,
            free + gc.mem_alloc(),
            self.gc_idle,
            self.gc_in_tick,
            self.ticks_slow,
            self.ticks,
            self.tick_us_max,
            self.tick_us_mean,
            self.ticks_late,
        )
        self.link.answer(codec.M_BOARD_STATS, codec.S_BOARD_STATS)

    # ---- uploads ----------------------------------------------------------------------------

    def on_upload_begin(self):
        slot, total, crc = struct.unpack_from(codec.F_UPLOAD_BEGIN, self.link.rx, codec.HDR)
        if slot >= _SLOTS:
            self.nack(codec.ERR_OUT_OF_RANGE, slot, 0, _SLOTS - 1)
            return
        if not 1 <= total <= _MAX_UPLOAD:
            self.nack(codec.ERR_OUT_OF_RANGE, total, 1, _MAX_UPLOAD)
            return
        self.upload = None
        self.collect()
        try:
            self.upload = Upload(slot, total, crc)
        except MemoryError:
            self.nack(codec.ERR_FLASH_ERROR, total, 0, gc.mem_free())
            return
        self.ack()

    def on_upload_chunk(self):
        up = self.upload
        if up is None:
            self.nack(codec.ERR_UPLOAD_ORDER)
            return
        rx = self.link.rx
        slot, off, n, data = struct.unpack_from(codec.F_UPLOAD_CHUNK, rx, codec.HDR)
        if slot != up.slot or off != up.got or n > len(data) or off + n > up.total:
            self.nack(codec.ERR_UPLOAD_ORDER, off, up.got, up.total)
            return
        up.buf[off : off + n] = data[:n]
        up.got = off + n
        self.ack()

    def on_upload_end(self):
        import os

        up = self.upload
        if up is None:
            self.nack(codec.ERR_UPLOAD_ORDER)
            return
        self.upload = None
        data = up.buf
        total = up.total
        struct.pack_into("<I", data, total, up.crc)
        if up.got != total or not crc_ok(data, total):
            self.nack(codec.ERR_UPLOAD_CRC, up.got, total, total)
            return
        name = self.path_dir + "slot%d.bin" % up.slot
        try:
            with open(name + ".tmp", "wb") as f:
                f.write(memoryview(data)[:total])
            os.rename(name + ".tmp", name)
        except OSError:
            self.nack(codec.ERR_FLASH_ERROR)
            return
        for c in self.ctls:
            c.on_upload(up.slot)
        self.ack()

    # ---- streaming ---------------------------------------------------------------------------

    def send_telemetry(self):
        lk = self.link
        sup = self.sup
        for c in self.ctls:
            f = c.fields
            struct.pack_into(
                codec.F_TELEMETRY,
                lk.tx,
                codec.HDR,
                c.idx,
                codec.MODE_SAFE if sup.trip else c.mode,
                c.state,
                self.now_ms,
                c.setpoint,
                c.measurement,
                c.output,
                c.p,
                c.i,
                c.d,
                sup.faults,
                f[0],
                f[1],
                f[2],
                f[3],
                f[4],
                f[5],
                f[6],
                f[7],
            )
            lk.send(codec.M_TELEMETRY, codec.S_TELEMETRY)

    def send_events(self):
        sup = self.sup
        lk = self.link
        while True:
            k = sup.pop_event()
            if k < 0:
                return
            struct.pack_into(
                codec.F_EVENT,
                lk.tx,
                codec.HDR,
                sup.ev_code[k],
                sup.ev_loop[k],
                sup.ev_kind[k],
                sup.ev_t[k],
                sup.ev_value[k],
            )
            lk.send(codec.M_EVENT, codec.S_EVENT)

    def stream(self):
        if self.tlm_period_ms and _due(self.now_ms, self.next_tlm_ms):
            self.send_telemetry()
            nxt = (self.next_tlm_ms + self.tlm_period_ms) & TIME_MASK
            if _due(self.now_ms, nxt):
                nxt = (self.now_ms + self.tlm_period_ms) & TIME_MASK
            self.next_tlm_ms = nxt
        if self.sup.ev_count:
            self.send_events()

    # ---- main loop ---------------------------------------------------------------------------

    def _emit(self, view):
        # the link's writer: straight to the console, or gathered while batching
        n = len(view)
        if not self.batching:
            self.stdout.write(view)
            return
        if self.tx_n + n > _TX_BATCH:
            self.flush()
            if n > _TX_BATCH:
                self.stdout.write(view)
                return
        copy_into(self.txbuf, self.tx_n, view, n)
        self.tx_n += n

    def flush(self):
        """Write what batching gathered (write(buf, n) allocates no slice)."""
        if self.tx_n:
            self.stdout.write(self.txbuf, self.tx_n)
            self.tx_n = 0

    def poll_input(self, poller, timeout_ms):
        # At most _RX_BUDGET bytes per pass: the schedule runs whatever the input rate. A
        # stream read blocks until its buffer is full, so a board reads one byte per ready
        # poll; where the console can return what is there (a pty with VMIN = VTIME = 0, the
        # virtual board), a read takes everything waiting up to a chunk, and Link.feed takes
        # a frame's bytes in one viper pass. What the requests make the board send goes out
        # in one write at the end of the pass.
        link = self.link
        buf = self.rxbuf
        stdin = self.stdin
        ready = False
        for _ in poller.ipoll(timeout_ms):
            ready = True
        budget = _RX_BUDGET
        self.batching = True
        try:
            while ready and budget > 0:
                n = stdin.readinto(buf)
                if not n:
                    # end of file: the console is gone (the virtual board's host exited)
                    self.running = False
                    return
                budget -= n
                i = 0
                while i < n:
                    size = link.feed(buf, i, n)
                    i = link.next_i
                    if size >= 0:
                        self.dispatch(size)
                ready = False
                for _ in poller.ipoll(0):
                    ready = True
        finally:
            self.batching = False
            self.flush()

    def clock(self):
        """Advance the board's wall clock (ms, wrapping at 2**30)."""
        wall = time.ticks_ms()
        d = time.ticks_diff(wall, self.wall_last)
        self.wall_last = wall
        if d > 0:
            self.wall_ms = (self.wall_ms + d) & TIME_MASK
        return wall

    def run(self):
        poller = select.poll()
        poller.register(self.stdin, select.POLLIN)
        self.clock()
        self.next_tick_ms = self.wall_ms
        self.now_ms = self.wall_ms
        self.next_tlm_ms = self.now_ms
        if self.waits_for_rig:
            self.safe_now()
        self.gc_setup()
        timeout_ms = self.period_ms // 4 or 1
        while self.running:
            try:
                self.poll_input(poller, timeout_ms)
                wall = self.clock()
                if self.hil:
                    if time.ticks_diff(wall, self.hil_wall) > self.hil_timeout_ms:
                        self.hil_stop(True)
                elif not self.waits_for_rig:
                    self.run_due(self.wall_ms)
                else:
                    self.now_ms = self.wall_ms
                self.stream()
                self.idle_gc()
            except Exception as e:  # noqa: BLE001 - the loop must outlive any bug
                self._loop_error(e)

    def _loop_error(self, e):
        # anything that escaped the request and tick guards (e.g. memory exhaustion): the
        # actuators go safe, the fault is latched and reported, and the loop carries on
        self.collect()
        try:
            self.sup.latch(codec.FAULT_INTERNAL, _NO_LOOP, 0.0, self.now_ms)
            self.safe_now()
            self.log(_LOG_ERROR, "main loop: %s %s" % (type(e).__name__, e))
        except Exception:  # noqa: BLE001, S110 - nothing more can be done; keep running
            pass


class BoardError(ValueError):
    """board.json does not describe a board this firmware can run (the message says why)."""


def main(board_path="board.json"):
    from . import board as boardmod

    try:
        board = boardmod.load(board_path)
    except ValueError as e:
        raise BoardError(str(e)) from None
    # the checker is needed once, at boot: give its RAM back (the package's attribute holds
    # the module too)
    del sys.modules["tpfw.board"]
    pkg = sys.modules.get("tpfw")
    if hasattr(pkg, "board"):
        delattr(pkg, "board")
    del boardmod
    gc.collect()
    app = App(board, sys.stdin.buffer, sys.stdout.buffer)
    micropython.kbd_intr(-1)  # the console carries binary frames: 0x03 must not interrupt
    restore = _read_what_is_there(app)
    try:
        app.run()
    finally:
        micropython.kbd_intr(3)
        if restore is not None:
            restore()
        app.safe_now()
    return app


def _read_what_is_there(app):
    """On a console that is a terminal (the unix port behind a pty), make a read return the
    bytes waiting instead of blocking for a full buffer (VMIN = VTIME = 0), and read in chunks.
    Returns a function that restores the terminal for the REPL, or None where there is no
    terminal control (real boards: one byte per read)."""
    try:
        import termios
    except ImportError:
        return None
    try:
        old = termios.tcgetattr(0)
        new = termios.tcgetattr(0)
        new[6][6] = 0  # VMIN (Linux index)
        new[6][5] = 0  # VTIME
        termios.tcsetattr(0, termios.TCSANOW, new)
    except Exception:  # noqa: BLE001 - not a terminal: keep byte-by-byte reads
        return None
    app.rxbuf = bytearray(256)

    def restore():
        termios.tcsetattr(0, termios.TCSANOW, old)

    return restore
