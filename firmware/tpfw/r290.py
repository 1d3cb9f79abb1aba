# R290 (propane) saturation temperature from pressure, for the board: no CoolProp, one small
# table. Clausius-Clapeyron makes 1/T_sat nearly linear in ln(p), so linear interpolation of
# 1/T_sat on a uniform ln(p) grid is accurate with few nodes: 48 nodes from 0.2 to 40 bar
# (-70..+93 degC) hold T_sat within 0.004 K of CoolProp 8.0 HEOS over -40..+70 degC, in
# float32 as on the ESP32 and RP2040 (tests/test_hp_saturation.py checks it on the
# MicroPython VM against CoolProp, and regenerates the table and compares).
import math
from array import array

from micropython import const

_N = const(48)
_LNP0 = 9.903487552536127  # ln(0.2e5 Pa)
_DLNP = 0.11273015673506462  # grid step in ln(p)
P_MIN_PA = 0.2e5
P_MAX_PA = 40e5
# 1e9 / T_sat (1/K * 1e9) at p = exp(_LNP0 + k * _DLNP), k = 0.._N-1 (CoolProp 8.0 HEOS),
# written as integers: float literals would each stay in RAM with the module's constants
_INV_T = array(
    "f",
    (
        5003901, 4957826, 4911626, 4865300, 4818848, 4772268, 4725559, 4678720,
        4631751, 4584650, 4537417, 4490053, 4442556, 4394926, 4347164, 4299271,
        4251246, 4203090, 4154805, 4106393, 4057854, 4009192, 3960409, 3911508,
        3862492, 3813367, 3764135, 3714804, 3665379, 3615867, 3566275, 3516614,
        3466892, 3417121, 3367313, 3317484, 3267650, 3217828, 3168042, 3118315,
        3068679, 3019168, 2969826, 2920707, 2871881, 2823440, 2775524, 2728390,
    ),
)  # fmt: skip
for _k in range(_N):
    _INV_T[_k] *= 1e-6  # now 1000 / T_sat
del _k


def tsat_k(p_pa):
    """Saturation temperature (K) of R290 at absolute pressure p_pa; clamped to the table's
    0.2..40 bar (a lower or non-positive reading gives -70 degC, a higher one +93 degC)."""
    if not p_pa > P_MIN_PA:  # also NaN
        if p_pa != p_pa:
            return p_pa
        return 1000.0 / _INV_T[0]
    if p_pa >= P_MAX_PA:
        return 1000.0 / _INV_T[_N - 1]
    x = (math.log(p_pa) - _LNP0) / _DLNP
    k = int(x)
    if k > _N - 2:
        k = _N - 2
    f = x - k
    t = _INV_T
    return 1000.0 / (t[k] + f * (t[k + 1] - t[k]))
