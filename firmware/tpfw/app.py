# The ThermoPilot board application: protocol endpoint, fixed-rate scheduler, loops and the
# supervisor. Time is either the board's clock (real time) or the simulated time carried by
# HIL frames (lockstep); loops never read a clock themselves.
import gc
import math
import select
import struct
import sys
import time

import micropython
from micropython import const

from . import board as boardmod
from . import codec
from .hal import HilHal
from .link import Link
from .params import Params
from .pid import PID
from .supervisor import Supervisor

try:
    import tpcore  # noqa: F401  (the C core, present on custom board builds)

    _C_CORE = True
except ImportError:
    _C_CORE = False

_NO_LOOP = const(255)
_MAX_UPLOAD = const(16384)  # bytes: an MPC blob of the largest dimensions fits


@micropython.viper
def _copy(dst: ptr8, src: ptr8, n: int):
    i = 0
    while i < n:
        dst[i] = src[i]
        i += 1


def _param_table(board):
    rows = []
    for loop in board["loops"]:
        d = loop.get("defaults", {})
        s = board["sensors"][loop["sensor"]]
        n = loop["name"]
        rows.append(
            (n + ".sp_k", "K", codec.PTYPE_F32, s["min_k"], s["max_k"], d.get("sp_k", 303.15))
        )
        rows.append((n + ".kp", "1/K", codec.PTYPE_F32, 0.0, 100.0, d.get("kp", 0.1)))
        rows.append((n + ".ki", "1/Ks", codec.PTYPE_F32, 0.0, 10.0, d.get("ki", 0.001)))
        rows.append((n + ".kd", "s/K", codec.PTYPE_F32, 0.0, 1000.0, d.get("kd", 0.0)))
        rows.append((n + ".out_min", "1", codec.PTYPE_F32, 0.0, 1.0, d.get("out_min", 0.0)))
        rows.append((n + ".out_max", "1", codec.PTYPE_F32, 0.0, 1.0, d.get("out_max", 1.0)))
        rows.append(
            (n + ".max_k", "K", codec.PTYPE_F32, s["min_k"], s["max_k"], d.get("max_k", 333.15))
        )
    rows.append(("hil.timeout_s", "s", codec.PTYPE_F32, 0.1, 60.0, 1.0))
    return rows


class Loop:
    def __init__(self, idx, cfg, params, sensor):
        self.idx = idx
        self.name = cfg["name"]
        self.sensor = cfg["sensor"]
        self.actuator = cfg["actuator"]
        self.min_k = sensor["min_k"]
        self.max_sensor_k = sensor["max_k"]
        self.p0 = params.index[self.name + ".sp_k"]  # first of this loop's parameters
        v = params.values
        self.pid = PID(
            v[self.p0 + 1],
            v[self.p0 + 2],
            v[self.p0 + 3],
            v[self.p0 + 4],
            v[self.p0 + 5],
            cfg.get("reverse", False),
        )
        self.mode = codec.MODE_AUTO
        self.measurement = math.nan
        self.output = 0.0
        self.manual_output = 0.0

    def apply_params(self, v):
        pid = self.pid
        pid.kp = v[self.p0 + 1]
        pid.ki = v[self.p0 + 2]
        pid.kd = v[self.p0 + 3]
        pid.out_min = v[self.p0 + 4]
        pid.out_max = v[self.p0 + 5]


class App:
    def __init__(self, board, stdin, stdout):
        self.board = board
        self.stdin = stdin
        self.stdout = stdout
        self.link = Link(stdout.write)
        self.params = Params(_param_table(board))
        self.params.load()
        self.params.on_change = self._param_changed
        self.loops = [
            Loop(i, c, self.params, board["sensors"][c["sensor"]])
            for i, c in enumerate(board["loops"])
        ]
        self.sup = Supervisor([a.get("safe", 0.0) for a in board["actuators"]])
        self.hal = HilHal(len(board["sensors"]), len(board["actuators"]))
        if board.get("hal") == "machine":
            from .hal import MachineHal

            self.hal = MachineHal(board["sensors"], board["actuators"])
        self.hil = False
        # a board without real sensors ticks only once the HIL rig feeds it; until then its
        # actuators rest at their safe values
        self.waits_for_rig = board.get("hal", "hil") == "hil"
        self.period_ms = int(1000 // board["tick_hz"])
        self.dt_s = self.period_ms / 1000.0
        self.next_tick_ms = 0
        self.now_ms = 0
        self.ticks = 0
        self.hil_wall_ms = 0
        self.tlm_period_ms = 500
        self.next_tlm_ms = 0
        self.ans = bytearray(len(self.link.tx_enc))
        self.ans_n = 0
        self.last_req = -1  # (seq << 8) | msg_id of the last answered request
        self.rxbuf = bytearray(1)
        self.running = True
        self.upload = None
        if self.params.load_error:
            self.sup.latch(codec.FAULT_PARAMS_CORRUPT, _NO_LOOP, 0.0, 0)

    # ---- control -------------------------------------------------------------------------

    def _param_changed(self, name, value):
        for loop in self.loops:
            loop.apply_params(self.params.values)

    def tick(self, t_ms):
        sup = self.sup
        v = self.params.values
        for loop in self.loops:
            m = self.hal.read(loop.sensor)
            loop.measurement = m
            healthy = sup.check_sensor(loop.idx, m, loop.min_k, loop.max_sensor_k, t_ms)
            if healthy and m > v[loop.p0 + 6]:
                sup.latch(codec.FAULT_OVER_TEMPERATURE, loop.idx, m, t_ms)
            pid = loop.pid
            if sup.faults:
                # hold the controller in manual at the safe value: bumpless on fault reset
                out = sup.clamp(loop.actuator, 0.0)
                if pid.auto:
                    pid.set_auto(False, out)
            elif loop.mode == codec.MODE_AUTO:
                if not pid.auto:
                    pid.set_auto(True)
                out = pid.update(v[loop.p0], m, self.dt_s)
            elif loop.mode == codec.MODE_MANUAL:
                out = loop.manual_output
                pid.set_auto(False, out)
            else:
                out = 0.0
                pid.set_auto(False, out)
            loop.output = out
            self.hal.write(loop.actuator, out)
        self.ticks += 1

    def run_due(self, t_ms):
        while time.ticks_diff(t_ms, self.next_tick_ms) >= 0:
            self.tick(self.next_tick_ms)
            self.next_tick_ms = time.ticks_add(self.next_tick_ms, self.period_ms)
        self.now_ms = t_ms

    def safe_now(self):
        for i in range(self.hal.n_actuators):
            self.hal.write(i, self.sup.safe[i])

    # ---- protocol ------------------------------------------------------------------------

    def _answer(self, size, msg_id):
        self.link.send(msg_id, size)
        n = self.link.tx_n
        _copy(self.ans, self.link.tx_enc, n)
        self.ans_n = n

    def ack(self, seq, req, code=0):
        struct.pack_into(codec.F_ACK, self.link.tx, 3, seq, req, code)
        self._answer(codec.S_ACK, codec.M_ACK)

    def nack(self, seq, req, code, value=0.0, lo=0.0, hi=0.0):
        struct.pack_into(codec.F_NACK, self.link.tx, 3, seq, req, code, value, lo, hi)
        self._answer(codec.S_NACK, codec.M_NACK)

    def send_param_value(self, seq, i):
        p = self.params
        struct.pack_into(
            codec.F_PARAM_VALUE, self.link.tx, 3, seq, i, p.names[i].encode(), p.values[i]
        )
        self._answer(codec.S_PARAM_VALUE, codec.M_PARAM_VALUE)

    def handle(self, size):
        rx = self.link.rx
        seq = rx[0]
        msg = rx[1]
        key = (seq << 8) | msg
        if key == self.last_req:
            # a retry of the request just answered: send the same answer, do it only once
            self.link.rx_duplicate += 1
            self.stdout.write(self._ans_view())
            self.link.tx_frames += 1  # the re-sent answer is a frame on the wire too
            return
        self.last_req = key
        if msg == codec.M_HIL_SENSORS:
            self.on_hil(seq)
        elif msg == codec.M_HELLO:
            b = self.board
            features = 1 << codec.FEATURE_HIL | 1 << codec.FEATURE_FLASH_PARAMS
            if _C_CORE:
                features |= 1 << codec.FEATURE_C_CORE
            struct.pack_into(
                codec.F_IDENTITY,
                self.link.tx,
                3,
                seq,
                codec.PROTOCOL_VERSION,
                boardmod.FW_VERSION.encode(),
                b["name"].encode(),
                (codec.SCHEMA_HASH_HI << 16) | codec.SCHEMA_HASH_LO,
                features,
                len(self.loops),
                len(self.params.names),
                b["tick_hz"],
            )
            self._answer(codec.S_IDENTITY, codec.M_IDENTITY)
        elif msg == codec.M_PARAM_INFO_REQ:
            (i,) = struct.unpack_from(codec.F_PARAM_INFO_REQ, rx, 3)
            p = self.params
            n = len(p.names)
            if i >= n:
                self.nack(seq, msg, codec.ERR_UNKNOWN_PARAM, i, 0, n - 1)
                return
            struct.pack_into(
                codec.F_PARAM_INFO,
                self.link.tx,
                3,
                seq,
                i,
                n,
                p.names[i].encode(),
                p.units[i].encode(),
                p.types[i],
                p.mins[i],
                p.maxs[i],
                p.defaults[i],
                p.values[i],
            )
            self._answer(codec.S_PARAM_INFO, codec.M_PARAM_INFO)
        elif msg == codec.M_PARAM_GET or msg == codec.M_PARAM_SET:
            i = self.params.find(bytes(rx[3:19]))
            if i < 0:
                self.nack(seq, msg, codec.ERR_UNKNOWN_PARAM)
                return
            if msg == codec.M_PARAM_SET:
                (value,) = struct.unpack_from("<f", rx, 19)
                err = self.params.set(i, value)
                if err:
                    self.nack(seq, msg, err, value, self.params.mins[i], self.params.maxs[i])
                    return
            self.send_param_value(seq, i)
        elif msg == codec.M_PARAM_SAVE:
            if self.params.save():
                self.ack(seq, msg)
            else:
                self.nack(seq, msg, codec.ERR_FLASH_ERROR)
        elif msg == codec.M_PARAM_DEFAULTS:
            self.params.restore_defaults()
            self.ack(seq, msg)
        elif msg == codec.M_COMMAND:
            self.on_command(seq, msg)
        elif msg == codec.M_STREAM_RATE:
            mid, hz = struct.unpack_from(codec.F_STREAM_RATE, rx, 3)
            if mid != codec.M_TELEMETRY or not (0.0 <= hz <= 100.0):
                self.nack(seq, msg, codec.ERR_BAD_VALUE, hz, 0.0, 100.0)
                return
            self.tlm_period_ms = int(1000 / hz) if hz > 0 else 0
            self.next_tlm_ms = self.now_ms
            self.ack(seq, msg)
        elif msg == codec.M_LINK_STATS_REQ:
            lk = self.link
            struct.pack_into(
                codec.F_LINK_STATS,
                lk.tx,
                3,
                seq,
                lk.rx_ok,
                lk.rx_bad_crc,
                lk.rx_bad_cobs,
                lk.rx_bad_len,
                lk.rx_dropped,
                lk.rx_overflow,
                lk.rx_duplicate,
                lk.tx_frames,
            )
            self._answer(codec.S_LINK_STATS, codec.M_LINK_STATS)
        elif msg in (codec.M_UPLOAD_BEGIN, codec.M_UPLOAD_CHUNK, codec.M_UPLOAD_END):
            self.on_upload(seq, msg)
        else:
            self.nack(seq, msg, codec.ERR_UNKNOWN_MESSAGE, msg)

    def _ans_view(self):
        return memoryview(self.ans)[: self.ans_n]

    def on_command(self, seq, msg):
        loop_i, cmd, value = struct.unpack_from(codec.F_COMMAND, self.link.rx, 3)
        if cmd == codec.CMD_FAULT_RESET:
            self.sup.reset()
            self.ack(seq, msg)
            return
        if cmd == codec.CMD_RELEASE_CONSOLE:
            self.ack(seq, msg)
            self.running = False
            return
        if loop_i >= len(self.loops):
            self.nack(seq, msg, codec.ERR_BAD_LOOP, loop_i, 0, len(self.loops) - 1)
            return
        loop = self.loops[loop_i]
        if cmd == codec.CMD_MODE:
            if value not in (codec.MODE_OFF, codec.MODE_MANUAL, codec.MODE_AUTO):
                # autotune runs on the host (thermopilot tune), not as a board mode
                self.nack(seq, msg, codec.ERR_BAD_VALUE, value, codec.MODE_OFF, codec.MODE_AUTO)
                return
            loop.mode = int(value)
        elif cmd == codec.CMD_MANUAL_OUTPUT:
            if not (0.0 <= value <= 1.0):
                self.nack(seq, msg, codec.ERR_OUT_OF_RANGE, value, 0.0, 1.0)
                return
            loop.manual_output = value
        elif cmd == codec.CMD_SETPOINT:
            err = self.params.set(loop.p0, value)
            if err:
                i = loop.p0
                self.nack(seq, msg, err, value, self.params.mins[i], self.params.maxs[i])
                return
        else:
            self.nack(seq, msg, codec.ERR_BAD_COMMAND, cmd)
            return
        self.ack(seq, msg)

    def on_hil(self, seq):
        rx = self.link.rx
        hal = self.hal
        if not self.hil:
            # first HIL frame: sensors and actuators now come from and go to the rig
            self.hil = True
            if not isinstance(hal, HilHal):
                self.safe_now()
                self.hal = hal = HilHal(hal.n_sensors, hal.n_actuators)
            self.next_tick_ms = struct.unpack_from("<I", rx, 3)[0]
            self.next_tlm_ms = self.next_tick_ms
        t_ms, valid = struct.unpack_from("<IH", rx, 3)
        vals = hal.values
        for k in range(8):
            vals[k] = struct.unpack_from("<f", rx, 9 + 4 * k)[0]
        hal.valid = valid
        self.hil_wall_ms = time.ticks_ms()
        t0 = self.ticks
        self.run_due(t_ms)
        self.stream()  # telemetry and events of these ticks go out before the answer
        out = hal.outputs
        struct.pack_into(
            codec.F_HIL_ACTUATORS,
            self.link.tx,
            3,
            seq,
            t_ms,
            (self.ticks - t0) & 0xFFFF,
            self.sup.faults,
            out[0],
            out[1],
            out[2],
            out[3],
        )
        self._answer(codec.S_HIL_ACTUATORS, codec.M_HIL_ACTUATORS)

    def on_upload(self, seq, msg):
        import os

        rx = self.link.rx
        if msg == codec.M_UPLOAD_BEGIN:
            slot, total, crc = struct.unpack_from(codec.F_UPLOAD_BEGIN, rx, 3)
            if total > _MAX_UPLOAD:
                self.nack(seq, msg, codec.ERR_OUT_OF_RANGE, total, 0, _MAX_UPLOAD)
                return
            self.upload = None
            gc.collect()
            try:
                self.upload = [slot, total, crc, 0, bytearray(total + 4)]
            except MemoryError:
                self.nack(seq, msg, codec.ERR_FLASH_ERROR, total, 0, gc.mem_free())
                return
            self.ack(seq, msg)
            return
        up = self.upload
        if up is None:
            self.nack(seq, msg, codec.ERR_UPLOAD_ORDER)
            return
        if msg == codec.M_UPLOAD_CHUNK:
            slot, off, n = struct.unpack_from("<BIB", rx, 3)
            if slot != up[0] or off != up[3] or n > 48 or off + n > up[1]:
                self.nack(seq, msg, codec.ERR_UPLOAD_ORDER, off, up[3], up[1])
                return
            up[4][off : off + n] = rx[9 : 9 + n]
            up[3] = off + n
            self.ack(seq, msg)
            return
        data = up[4]
        total = up[1]
        struct.pack_into("<I", data, total, up[2])
        self.upload = None
        from .link import crc_ok

        if up[3] != total or not crc_ok(data, total):
            self.nack(seq, msg, codec.ERR_UPLOAD_CRC, up[3], total, total)
            return
        name = "slot%d.bin" % up[0]
        try:
            with open(name + ".tmp", "wb") as f:
                f.write(memoryview(data)[:total])
            os.rename(name + ".tmp", name)
        except OSError:
            self.nack(seq, msg, codec.ERR_FLASH_ERROR)
            return
        self.ack(seq, msg)

    def send_telemetry(self):
        lk = self.link
        faults = self.sup.faults
        for loop in self.loops:
            pid = loop.pid
            struct.pack_into(
                codec.F_TELEMETRY,
                lk.tx,
                3,
                loop.idx,
                codec.MODE_SAFE if faults else loop.mode,
                self.now_ms,
                self.params.values[loop.p0],
                loop.measurement,
                loop.output,
                pid.p,
                pid.i,
                pid.d,
                faults,
            )
            lk.send(codec.M_TELEMETRY, codec.S_TELEMETRY)

    def send_events(self):
        sup = self.sup
        lk = self.link
        while sup.ev_count:
            k = sup.ev_head
            struct.pack_into(
                codec.F_EVENT,
                lk.tx,
                3,
                sup.ev_code[k],
                sup.ev_loop[k],
                1,
                sup.ev_t[k],
                sup.ev_value[k],
            )
            lk.send(codec.M_EVENT, codec.S_EVENT)
            sup.ev_head = (k + 1) % len(sup.ev_code)
            sup.ev_count -= 1

    # ---- main loop -----------------------------------------------------------------------

    def poll_input(self, poller, timeout_ms):
        # Stream reads block until the buffer is full, so read one byte per ready poll.
        link = self.link
        buf = self.rxbuf
        stdin = self.stdin
        ready = False
        for _ in poller.ipoll(timeout_ms):
            ready = True
        while ready:
            if not stdin.readinto(buf):
                # end of file: the console is gone (the virtual board's host exited)
                self.running = False
                return
            size = link.feed_byte(buf[0])
            if size >= 0:
                try:
                    self.handle(size)
                except Exception:  # noqa: BLE001 - a bad request must never stop the loops
                    self.nack(self.link.rx[0], self.link.rx[1], codec.ERR_BAD_VALUE)
            ready = False
            for _ in poller.ipoll(0):
                ready = True

    def run(self):
        poller = select.poll()
        poller.register(self.stdin, select.POLLIN)
        self.next_tick_ms = time.ticks_ms()
        if self.waits_for_rig:
            self.safe_now()
            for loop in self.loops:
                loop.output = self.sup.safe[loop.actuator]
        timeout_ms = self.period_ms // 4 or 1
        while self.running:
            self.poll_input(poller, timeout_ms)
            wall = time.ticks_ms()
            if self.hil:
                limit = int(self.params.get("hil.timeout_s") * 1000)
                if time.ticks_diff(wall, self.hil_wall_ms) > limit:
                    self.sup.latch(codec.FAULT_HOST_LOST, _NO_LOOP, 0.0, self.now_ms)
                    self.safe_now()
            elif not self.waits_for_rig:
                self.run_due(wall)
            else:
                self.now_ms = wall
            self.stream()

    def stream(self):
        if self.tlm_period_ms and time.ticks_diff(self.now_ms, self.next_tlm_ms) >= 0:
            self.send_telemetry()
            self.next_tlm_ms = time.ticks_add(self.next_tlm_ms, self.tlm_period_ms)
            if time.ticks_diff(self.now_ms, self.next_tlm_ms) >= 0:
                self.next_tlm_ms = time.ticks_add(self.now_ms, self.tlm_period_ms)
        if self.sup.ev_count:
            self.send_events()


def main(board_path="board.json"):
    board = boardmod.load(board_path)
    app = App(board, sys.stdin.buffer, sys.stdout.buffer)
    micropython.kbd_intr(-1)  # the console carries binary frames: 0x03 must not interrupt
    try:
        app.run()
    finally:
        micropython.kbd_intr(3)
        app.safe_now()
    return app
