# The battery controller's parameter table and board checks (ctl_batt.py). Needed only at boot:
# ctl_batt imports this module for them and forgets it again, so its RAM is given back.
#
# One parameter per row, as the application takes it: suffix, unit, quantity, type, min, max,
# default (temperatures in K). The order is the controller's: ctl_batt addresses each parameter
# by its row number here. Rows no default or noise floor changes are handed over as they are.
import math

from .codec import PTYPE_F32

TABLE = (
    ("heat_on", "K", "temperature", PTYPE_F32, 233.15, 323.15, 283.15),
    ("heat_off", "K", "temperature", PTYPE_F32, 233.15, 323.15, 288.15),
    ("cool_off", "K", "temperature", PTYPE_F32, 253.15, 343.15, 303.15),
    ("cool_on", "K", "temperature", PTYPE_F32, 253.15, 343.15, 305.15),
    ("t_alarm", "K", "temperature", PTYPE_F32, 273.15, 363.15, 328.15),
    ("tin_cool", "K", "temperature", PTYPE_F32, 263.15, 323.15, 293.15),
    ("tin_heat", "K", "temperature", PTYPE_F32, 283.15, 343.15, 308.15),
    ("ch_kp", "K/K", "gain", PTYPE_F32, 0.0, 10.0, 1.0),
    ("ch_ki", "1/s", "gain", PTYPE_F32, 0.0, 1.0, 0.02),
    ("ht_kp", "W/K", "gain", PTYPE_F32, 0.0, 10000.0, 800.0),
    ("ht_ki", "W/Ks", "gain", PTYPE_F32, 0.0, 1000.0, 20.0),
    ("ptc_min_s", "s", "time", PTYPE_F32, 0.0, 600.0, 30.0),
    ("p_min", "", "fraction", PTYPE_F32, 0.0, 1.0, 0.12),
    ("sprd_sp", "K", "temperature_difference", PTYPE_F32, 0.2, 20.0, 2.0),
    ("p_kp", "1/K", "gain", PTYPE_F32, 0.0, 10.0, 0.05),
    ("p_ki", "1/Ks", "gain", PTYPE_F32, 0.0, 1.0, 0.0005),
    ("r_pack", "ohm", "none", PTYPE_F32, 0.0, 10.0, 0.096),
    ("rate_warn", "K/s", "rate", PTYPE_F32, 0.0, 10.0, 0.01),
    ("rate_alarm", "K/s", "rate", PTYPE_F32, 0.0, 10.0, 0.018),
    ("dev_warn", "K", "temperature_difference", PTYPE_F32, 0.0, 100.0, 5.0),
    ("dev_alarm", "K", "temperature_difference", PTYPE_F32, 0.0, 100.0, 8.0),
    ("gas_warn", "ppm", "concentration", PTYPE_F32, 0.0, 1000000.0, 50.0),
    ("gas_alarm", "ppm", "concentration", PTYPE_F32, 0.0, 1000000.0, 200.0),
    ("der_warn", "", "fraction", PTYPE_F32, 0.0, 1.0, 0.5),
    ("der_fault", "", "fraction", PTYPE_F32, 0.0, 1.0, 0.3),
    ("der_alarm", "", "fraction", PTYPE_F32, 0.0, 1.0, 0.0),
    ("flow_full", "L/min", "flow", PTYPE_F32, 0.1, 1000.0, 20.0),
    ("flow_tol", "", "fraction", PTYPE_F32, 0.05, 0.95, 0.5),
    ("ch_ua", "W/K", "none", PTYPE_F32, 1.0, 10000.0, 110.0),
    ("ch_ref", "K", "temperature", PTYPE_F32, 233.15, 323.15, 288.15),
    ("ch_cap", "W", "power", PTYPE_F32, 1.0, 100000.0, 5000.0),
    ("lvl_low", "", "fraction", PTYPE_F32, 0.0, 1.0, 0.5),
)

# a detection level must be this many noise bands above the noise it is judged against
NOISE_FLOOR = 6.0
CELLS = ("c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7")


def _noise(board, cfg, roles):
    sens = cfg.get("sensors", {})
    n = 0.0
    for r in roles:
        ch = sens.get(r, -1)
        if ch >= 0:
            v = board["sensors"][ch].get("noise", 0.0)
            if v > n:
                n = v
    return n


def floors(cfg, board, tau_f, tau_s, dt_s):
    """suffix -> the lowest level noise alone would not cross: the deviation levels against
    the cell sensors' noise, the rate levels against the rate estimate's (about noise *
    sqrt(dt/2 (1/tau_f + 1/tau_s)) / (tau_s - tau_f) for two first-order filters of samples
    every dt_s), the gas levels against the gas sensor's."""
    nc = _noise(board, cfg, CELLS)
    rate = nc * math.sqrt(0.5 * dt_s * (1.0 / tau_f + 1.0 / tau_s)) / (tau_s - tau_f)
    gas = _noise(board, cfg, ("gas",))
    return {
        "dev_warn": (NOISE_FLOOR * nc, nc, "the cell sensors' noise"),
        "dev_alarm": (NOISE_FLOOR * nc, nc, "the cell sensors' noise"),
        "rate_warn": (NOISE_FLOOR * rate, rate, "the rate estimate's noise"),
        "rate_alarm": (NOISE_FLOOR * rate, rate, "the rate estimate's noise"),
        "gas_warn": (NOISE_FLOOR * gas, gas, "the gas sensor's noise"),
        "gas_alarm": (NOISE_FLOOR * gas, gas, "the gas sensor's noise"),
    }


def rows(cfg, board, fl):
    d = cfg.get("defaults", {})
    out = []
    for r in TABLE:
        suffix = r[0]
        f = fl.get(suffix)
        if suffix in d or (f is not None and f[0] > r[4]):
            lo = f[0] if f is not None and f[0] > r[4] else r[4]
            r = (suffix, r[1], r[2], r[3], lo, r[5], d.get(suffix, r[6]))
        out.append(r)
    return out


def board_errors(cfg, board, values, fl):
    errs = []
    hz = board["tick_hz"]
    if hz < 1 or hz != int(hz):
        # the group statistics run once a second: every tick_hz ticks
        errs.append("tick_hz = %g: the battery controller needs a whole number >= 1" % hz)
    for key in fl:
        v = values.get(key)
        floor, noise, what = fl[key]
        if v is not None and v < floor:
            errs.append(
                "%s.%s = %g is below %g x %s (%g): noise alone would cross it"
                % (cfg["name"], key, v, NOISE_FLOOR, what, noise)
            )
    return errs
