# The supervisor has the last word on every actuator. It latches faults, keeps for each one
# whether its cause is still present, and drives the actuators to the safe state declared by
# the controllers while a tripping fault is latched. Only an explicit reset clears a latched
# fault, and only once its cause is gone. Every latch, clear and notice is an event.
#
# Generic plausibility checks run on every sensor the board declares (board.json), so every
# controller gets them by declaring its sensors:
#   range    reading below min (open) / above max (short) / NaN       latency: 1 tick
#   rate     a step between ticks beyond rate_max * dt + 3 * noise,
#            twice within 1 s (a physically impossible change)        latency: 2 ticks
#   stuck    no change beyond the noise band over stuck_s while an
#            actuator the sensor responds to (moved_by) moved by
#            >= stuck_move of its span, or a sensor that moves with
#            it (moves_with) moved by > 5 noise bands               latency: <= 2 * stuck_s
#   drift    differs from its redundant partner by more than
#            max_diff for delay_s (or from a controller's model)      latency: delay_s + 1 tick
# and on every actuator with feedback (flow vs pump duty, position vs commanded steps):
#   feedback measured differs from the expected curve by more than
#            max(abs_tol, tol * expected) for delay_s                 latency: delay_s + 1 tick
# Controllers add their own checks (control ineffective, protectors, runaway, dry-out).
import math
from array import array

from micropython import const

from . import codec

_EVENTS = const(16)
# Board time t_ms is a count of ms that wraps at 2**30 (12.4 days) so that it stays a small
# int on every port; differences go through elapsed().
TIME_MASK = const(0x3FFFFFFF)
_NO_LOOP = const(255)
_RATE_WINDOW_MS = const(1000)


class Supervisor:
    def __init__(self, sensors, actuators):
        n = len(sensors)
        m = len(actuators)
        self.n_sensors = n
        self.n_actuators = m
        self.safe = array("f", [a.get("safe", 0.0) for a in actuators])
        self.faults = 0  # latched
        self.trip = 0  # latched faults that force the safe state
        self.present = 0  # causes present at the last tick (and host_lost, set outside ticks)
        self._present_new = 0
        self.ext_present = 0  # causes judged outside the tick (host_lost)
        self.t_trip_ms = 0  # when the safe state began
        # per fault bit: first latch time, loop, value, count
        self.f_t = array("I", [0] * 32)
        self.f_loop = bytearray(32)
        self.f_value = array("f", [0.0] * 32)
        self.f_count = array("H", [0] * 32)
        # events: code, loop, kind, value, t_ms
        self.ev_code = array("H", [0] * _EVENTS)
        self.ev_loop = bytearray(_EVENTS)
        self.ev_kind = bytearray(_EVENTS)
        self.ev_value = array("f", [0.0] * _EVENTS)
        self.ev_t = array("I", [0] * _EVENTS)
        self.ev_head = 0
        self.ev_count = 0
        self.events_lost = 0
        # sensor checks
        f = array
        self.lo = f("f", [s.get("min", -1e30) for s in sensors])
        self.hi = f("f", [s.get("max", 1e30) for s in sensors])
        self.noise = f("f", [s.get("noise", 0.0) for s in sensors])
        self.rate_max = f("f", [s.get("rate_max", 0.0) for s in sensors])
        self.stuck_ms = f("I", [int(s.get("stuck_s", 0) * 1000) for s in sensors])
        self.stuck_move = f("f", [s.get("stuck_move", 0.1) for s in sensors])
        self.critical = bytearray(1 if s.get("critical", True) else 0 for s in sensors)
        self.moved_by = f("I", [0] * n)  # actuator bitmask each sensor responds to
        for i in range(n):
            mb = sensors[i].get("moved_by")
            if mb is not None:
                bits = 0
                for a in mb:
                    bits |= 1 << a
                self.moved_by[i] = bits
        self.red = f("b", [-1] * n)
        self.red_diff = f("f", [0.0] * n)
        self.red_ms = f("I", [0] * n)
        for i in range(n):
            r = sensors[i].get("redundant")
            if r:
                self.red[i] = r["sensor"]
                self.red_diff[i] = r["max_diff"]
                self.red_ms[i] = int(r.get("delay_s", 10) * 1000)
        self.red_since = f("i", [-1] * n)
        self.prev = f("f", [math.nan] * n)
        self.rate_hit_t = f("i", [-1] * n)
        self.w_t0 = f("i", [-1] * n)  # start of each sensor's stuck window
        self.w_min = f("f", [0.0] * n)
        self.w_max = f("f", [0.0] * n)
        self.stuck_flag = bytearray(n)
        self.healthy = 0  # bitmask of sensors that passed every check this tick
        # actuator excursions inside each sensor's stuck window: min/max per (sensor, actuator)
        self.span = f("f", [max(a.get("max", 1.0) - a.get("min", 0.0), 1e-9) for a in actuators])
        self.st_acts = [
            tuple(k for k in range(m) if self.moved_by[i] & (1 << k)) for i in range(n)
        ]
        # a partner sensor whose movement shows the plant moved (e.g. the inlet beside an
        # outlet probe): its min/max inside each stuck window
        self.partner = f("b", [s.get("moves_with", -1) for s in sensors])
        self.p_min = f("f", [0.0] * n)
        self.p_max = f("f", [0.0] * n)
        self.a_min = f("f", [0.0] * (n * m))
        self.a_max = f("f", [0.0] * (n * m))
        self.model_since = f("i", [-1] * n)
        self.fb = []  # (actuator, sensor, xs, ys, tol, abs_tol, delay_ms)
        for k in range(m):
            fb = actuators[k].get("feedback")
            if fb:
                pts = fb["points"]
                self.fb.append(
                    (
                        k,
                        fb["sensor"],
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        fb.get("tol", 0.3),
                        fb.get("abs_tol", 0.0),
                        int(fb.get("delay_s", 10) * 1000),
                    )
                )
        self.fb_since = f("i", [-1] * len(self.fb))

    # ---- faults and events ----------------------------------------------------------------

    def latch(self, bit, loop, value, t_ms, trip=True):
        """Latch fault `bit`; trip: it forces the safe state (else reported, degraded)."""
        mask = 1 << bit
        self._present_new |= mask
        if trip and not self.trip & mask:
            if not self.trip:
                self.t_trip_ms = t_ms
            self.trip |= mask
        if self.faults & mask:
            return
        self.faults |= mask
        self.f_t[bit] = t_ms
        self.f_loop[bit] = loop
        self.f_value[bit] = value
        if self.f_count[bit] < 0xFFFF:
            self.f_count[bit] += 1
        self.event(bit, loop, codec.EVENT_LATCHED, value, t_ms)

    def cause(self, bit):
        """Mark the cause of `bit` present at this tick (no latch)."""
        self._present_new |= 1 << bit

    def event(self, code, loop, kind, value, t_ms):
        if self.ev_count >= _EVENTS:
            self.events_lost += 1
            return
        k = (self.ev_head + self.ev_count) % _EVENTS
        self.ev_code[k] = code
        self.ev_loop[k] = loop
        self.ev_kind[k] = kind
        self.ev_value[k] = value
        self.ev_t[k] = t_ms
        self.ev_count += 1

    def notice(self, code, loop, value, t_ms, warning=False):
        self.event(code, loop, codec.EVENT_WARNING if warning else codec.EVENT_NOTICE, value, t_ms)

    def pop_event(self):
        """Index of the oldest pending event in the ev_* arrays, or -1; the slot stays valid
        until the next event is recorded."""
        if not self.ev_count:
            return -1
        k = self.ev_head
        self.ev_head = (k + 1) % _EVENTS
        self.ev_count -= 1
        return k

    def begin_tick(self):
        self._present_new = 0

    def end_tick(self):
        self.present = self._present_new | self.ext_present

    def reset(self, t_ms):
        """Clear the latched faults whose cause is gone; those still present stay latched."""
        keep = self.present | self.ext_present
        cleared = self.faults & ~keep
        for bit in range(32):
            if cleared & (1 << bit):
                self.event(bit, self.f_loop[bit], codec.EVENT_CLEARED, 0.0, t_ms)
        self.faults &= keep
        self.trip &= keep
        return cleared

    # ---- generic checks -------------------------------------------------------------------

    def check_sensors(self, x, out, t_ms, dt_ms):
        """Run the generic checks on every sensor reading x[i] (SI), given the actuator
        outputs out[] of the previous tick; returns the bitmask of healthy sensors and latches
        what it finds."""
        m = self.n_actuators
        ok = 0
        for i in range(self.n_sensors):
            v = x[i]
            trip = self.critical[i] != 0
            if v != v:
                self.latch(codec.FAULT_SENSOR_IMPLAUSIBLE, _NO_LOOP, i, t_ms, trip)
                self.prev[i] = v
                continue
            if v < self.lo[i]:
                self.latch(codec.FAULT_SENSOR_OPEN, _NO_LOOP, v, t_ms, trip)
                self.prev[i] = math.nan
                continue
            if v > self.hi[i]:
                self.latch(codec.FAULT_SENSOR_SHORT, _NO_LOOP, v, t_ms, trip)
                self.prev[i] = math.nan
                continue
            healthy = True
            # rate: a step no physics allows, seen twice within a second
            rm = self.rate_max[i]
            p = self.prev[i]
            if rm > 0.0 and p == p:
                if abs(v - p) > rm * dt_ms / 1000.0 + 3.0 * self.noise[i]:
                    t0 = self.rate_hit_t[i]
                    if t0 >= 0 and elapsed(t_ms, t0) <= _RATE_WINDOW_MS:
                        self.latch(codec.FAULT_SENSOR_RATE, _NO_LOOP, i, t_ms, trip)
                        healthy = False
                    self.rate_hit_t[i] = t_ms
            self.prev[i] = v
            # stuck: flat over the window while an actuator it responds to moved
            w = self.stuck_ms[i]
            if w:
                acts = self.st_acts[i]
                if self.w_t0[i] < 0:
                    self._start_window(i, v, out, t_ms)
                else:
                    if v < self.w_min[i]:
                        self.w_min[i] = v
                    elif v > self.w_max[i]:
                        self.w_max[i] = v
                    if self.w_max[i] - self.w_min[i] > self.noise[i]:
                        self.stuck_flag[i] = 0
                    moved = 0.0
                    for k in acts:
                        j = i * m + k
                        a = out[k]
                        if a < self.a_min[j]:
                            self.a_min[j] = a
                        elif a > self.a_max[j]:
                            self.a_max[j] = a
                        e = (self.a_max[j] - self.a_min[j]) / self.span[k]
                        if e > moved:
                            moved = e
                    j = self.partner[i]
                    if j >= 0:
                        pv = x[j]
                        if pv < self.p_min[i]:
                            self.p_min[i] = pv
                        elif pv > self.p_max[i]:
                            self.p_max[i] = pv
                        pe = self.p_max[i] - self.p_min[i]
                        if pe > 5.0 * self.noise[j] and pe == pe:
                            moved = 1e9
                    if elapsed(t_ms, self.w_t0[i]) >= w:
                        flat = self.w_max[i] - self.w_min[i] <= self.noise[i]
                        if flat and moved >= self.stuck_move[i]:
                            self.stuck_flag[i] = 1
                        self._start_window(i, v, out, t_ms)
                if self.stuck_flag[i]:
                    self.latch(codec.FAULT_SENSOR_STUCK, _NO_LOOP, i, t_ms, trip)
                    healthy = False
            if healthy:
                ok |= 1 << i
        # drift against a redundant partner
        for i in range(self.n_sensors):
            j = self.red[i]
            if j < 0:
                continue
            if not (ok & (1 << i) and ok & (1 << j)):
                self.red_since[i] = -1
                continue
            d = x[i] - x[j]
            if abs(d) > self.red_diff[i]:
                if self.red_since[i] < 0:
                    self.red_since[i] = t_ms
                if elapsed(t_ms, self.red_since[i]) >= self.red_ms[i]:
                    self.latch(codec.FAULT_SENSOR_DRIFT, _NO_LOOP, d, t_ms, self.critical[i] != 0)
                    ok &= ~(1 << i)
            else:
                self.red_since[i] = -1
        self.healthy = ok
        return ok

    def restart(self, out):
        """A new run on a fresh plant (HIL start): forget the history the checks keep, not
        the latched faults."""
        for i in range(self.n_sensors):
            self.prev[i] = math.nan
            self.rate_hit_t[i] = -1
            self.w_t0[i] = -1
            self.stuck_flag[i] = 0
            self.red_since[i] = -1
            self.model_since[i] = -1
        for n in range(len(self.fb)):
            self.fb_since[n] = -1
        # what the checks and the controllers judged on the last plant is history now: a reset
        # may clear their faults, and a cause still there is found again at the next tick
        # (host_lost, judged outside the ticks, stays in ext_present)
        self.present = 0

    def _start_window(self, i, v, out, t_ms):
        self.w_t0[i] = t_ms
        self.w_min[i] = v
        self.w_max[i] = v
        j = self.partner[i]
        if j >= 0:
            self.p_min[i] = self.prev[j]
            self.p_max[i] = self.prev[j]
        m = self.n_actuators
        for k in self.st_acts[i]:
            self.a_min[i * m + k] = out[k]
            self.a_max[i * m + k] = out[k]

    def check_model(self, i, predicted, max_diff, delay_ms, loop, t_ms):
        """Drift of sensor i against a value a controller's model predicts for it: latches
        sensor_drift once they differ by more than max_diff for delay_ms. Returns False when
        the sensor is judged drifted."""
        if not self.healthy & (1 << i) or predicted != predicted:
            self.model_since[i] = -1
            return True
        d = self.prev[i] - predicted
        if abs(d) <= max_diff:
            self.model_since[i] = -1
            return True
        if self.model_since[i] < 0:
            self.model_since[i] = t_ms
        if elapsed(t_ms, self.model_since[i]) >= delay_ms:
            self.latch(codec.FAULT_SENSOR_DRIFT, loop, d, t_ms, self.critical[i] != 0)
            self.healthy &= ~(1 << i)
            return False
        return True

    def check_feedback(self, out, x, ok, t_ms):
        """Actuators whose feedback sensor disagrees with the expected response."""
        for n in range(len(self.fb)):
            k, s, xs, ys, tol, abs_tol, delay = self.fb[n]
            if not ok & (1 << s):
                self.fb_since[n] = -1
                continue
            exp = _interp(xs, ys, out[k])
            err = abs(x[s] - exp)
            lim = tol * abs(exp)
            if lim < abs_tol:
                lim = abs_tol
            if err > lim:
                if self.fb_since[n] < 0:
                    self.fb_since[n] = t_ms
                if elapsed(t_ms, self.fb_since[n]) >= delay:
                    self.latch(codec.FAULT_ACTUATOR_FEEDBACK, _NO_LOOP, x[s], t_ms)
            else:
                self.fb_since[n] = -1


def elapsed(t_ms, t0_ms):
    """ms from t0_ms to t_ms on the wrapping board clock (valid up to 2**30 ms)."""
    return (t_ms - t0_ms) & TIME_MASK


def _interp(xs, ys, v):
    if v <= xs[0]:
        return ys[0]
    for k in range(1, len(xs)):
        if v <= xs[k]:
            a = (v - xs[k - 1]) / (xs[k] - xs[k - 1])
            return ys[k - 1] + a * (ys[k] - ys[k - 1])
    return ys[-1]
