# Stepper expansion-valve driver: the position the board believes the valve is at, moved
# toward a target at a limited step rate, with a deadband and a reversal hysteresis so that
# the valve does not dither (every reversal wears the motor and the seat), and an overdrive
# close that re-synchronises the count against the closed stop:
#   - at start the position is unknown: the driver closes by the full stroke plus the
#     overdrive, then counts from 0 (Carel's stop state: close to 0 plus extra steps,
#     reference control.md s.4);
#   - every time the position reaches 0 the driver issues the overdrive steps again, so
#     steps lost while running (a stalled motor, a sticky valve) are forgotten at each close.
# The output is the believed position in whole steps; an overdrive shows as 0.
from micropython import const

IDLE = const(0)
MOVING = const(1)
OVERDRIVE = const(2)


class Stepper:
    """Position tracking of a stepper valve of `full` steps (all values in steps, s)."""

    def __init__(self, full):
        self.full = float(full)
        self.rate = 60.0  # steps/s
        self.db = 1.0  # smallest move, steps
        self.hys = 1.0  # extra distance before a reversal, steps
        self.od = 0.1 * full  # overdrive steps issued at each full close
        self.pos = 0.0
        self.state = IDLE
        self.dir = 0  # direction of the last move: 1 opening, -1 closing, 0 none yet
        self.od_left = 0.0
        self._budget = 0.0
        self.moves = 0  # count of moves (a reversal starts a new one)
        self.reversals = 0

    def resync(self, assume=None):
        """The position is not known (power-up, HIL start): close by the full stroke (or from
        `assume` steps if the caller knows better) plus the overdrive; output 0 meanwhile."""
        self.pos = 0.0
        self.od_left = (self.full if assume is None else assume) + self.od
        self.state = OVERDRIVE
        self.dir = -1
        self._budget = 0.0

    def synced(self):
        return self.od_left <= 0.0

    def set_position(self, pos):
        """Someone else moved the valve to `pos` (manual mode, a safe value): track it."""
        pos = float(round(pos))
        if pos < 0.0:
            pos = 0.0
        elif pos > self.full:
            pos = self.full
        if pos != self.pos:
            d = 1 if pos > self.pos else -1
            if self.dir and d != self.dir:
                self.reversals += 1
            self.dir = d
            if pos == 0.0 and self.pos > 0.0:
                self.od_left = self.od
        self.pos = pos

    def step(self, target, dt_s):
        """Advance one tick toward `target` (steps, clamped to 0..full); returns the position.
        A target <= 0 closes fully and then overdrives."""
        if self.od_left > 0.0:
            # the close stop first: nothing else moves until the overdrive is done
            self.od_left -= self.rate * dt_s
            self.state = OVERDRIVE
            if self.od_left <= 0.0:
                # done: this tick's steps went to the stop, the next tick moves
                self.od_left = 0.0
                self._budget = 0.0
                self.state = IDLE
            return self.pos
        if target < 0.0:
            target = 0.0
        elif target > self.full:
            target = self.full
        goal = float(round(target))
        d = goal - self.pos
        if d == 0.0:
            self.state = IDLE
            self._budget = 0.0
            return self.pos
        s = 1 if d > 0.0 else -1
        dist = d if d > 0.0 else -d
        if self.state != MOVING:
            # a new move starts only when the target itself (not its rounding) is db steps
            # away, db + hys to reverse: target noise below a step never moves the valve; a
            # full close always goes (the overdrive must find the stop)
            need = self.db if s == self.dir or self.dir == 0 else self.db + self.hys
            away = target - self.pos if s > 0 else self.pos - target
            if away < need and goal > 0.0:
                return self.pos
            if self.dir and s != self.dir:
                self.reversals += 1
            self.moves += 1
            self.state = MOVING
            self.dir = s
        elif s != self.dir:
            # the target crossed back over the position while moving: stop here; a
            # reversal has to clear the hysteresis as a new move
            self.state = IDLE
            self._budget = 0.0
            return self.pos
        self._budget += self.rate * dt_s
        n = float(int(self._budget))
        if n > dist:
            n = dist
        self._budget -= n
        self.pos += s * n
        if self.pos == goal:
            self.state = IDLE
            self._budget = 0.0
            if goal == 0.0:
                self.od_left = self.od  # full close: overdrive against the stop
        return self.pos
