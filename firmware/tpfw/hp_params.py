# The heat-pump controller's parameter rows (firmware/tpfw/ctl_hp.py): read once at boot, when
# the parameter table is built, then dropped from RAM (ctl_hp.HeatPump.rows imports this module
# and removes it again), so the table costs nothing while the board runs. One row per line:
# name, unit (- = none), quantity, type (f = float, b = bool), min, max, default; STROKE is
# the valve's full stroke, TOPHZ the compressor's top speed (the board's actuator limits).
# The order is the order of ctl_hp's _P_* indices (a test holds them together); sources of
# the defaults: docs/controllers.md.
from . import codec

TABLE = """
sp        K       temperature_difference f 1 30 6
sp_min    K       temperature_difference f 1 30 4
adapt     -       state                  b 0 1 0
kp        1/K     gain                   f 0 1 0.03
ti_s      s       time                   f 1 1000 15
lead_s    s       time                   f 0 60 8
db_k      K       temperature_difference f 0.05 3 0.4
lowsh     K       temperature_difference f 0.5 20 3
lowsh_ti  s       time                   f 0 800 10
shcls     K       temperature_difference f 0 20 2
lowsh_dly s       time                   f 0 3600 60
lop       K       temperature            f 213.15 303.15 248.15
lop_ti    s       time                   f 0 800 20
lop_dly   s       time                   f 0 3600 120
mop       K       temperature            f 243.15 333.15 288.15
mop_ti    s       time                   f 0 800 10
mop_dly   s       time                   f 0 3600 600
hitc      K       temperature            f 283.15 363.15 338.15
hitc_ti   s       time                   f 0 800 20
hitc_dly  s       time                   f 0 3600 180
p_max     Pa      pressure               f 500000 4.5e+06 2.9e+06
leak_x    -       gain                   f 0 10 1.15
vk_ref    -       gain                   f 0 100 0
exv_rate  steps/s rate                   f 30 600 60
exv_max   steps   steps                  f 0 STROKE 480
exv_nom   steps   steps                  f 1 STROKE 180
exv_hys   steps   steps                  f 0 20 1
st_pc     %       fraction               f 0 200 90
st_s      s       time                   f 0 600 5
lwt_sp    K       temperature            f 283.15 353.15 308.15
c_kp      rev/s/K gain                   f 0 100 5
c_ti_s    s       time                   f 1 3600 60
hz_fix    rev/s   speed                  f 0 TOPHZ 0
hz_min    rev/s   speed                  f 0 TOPHZ 20
hz_max    rev/s   speed                  f 1 TOPHZ 100
hz_st     rev/s   speed                  f 0 TOPHZ 30
hz_up     rev/s2  rate                   f 0.05 50 1
hz_dn     rev/s2  rate                   f 0.05 50 2
on_s      s       time                   f 0 3600 120
off_s     s       time                   f 0 3600 180
pd_s      s       time                   f 0 120 3
dsh_min   K       temperature_difference f 0 40 8
"""


def rows(cfg, board):
    d = cfg.get("defaults", {})
    full = board["actuators"][cfg["actuators"]["exv"]].get("max", 480.0)
    top = board["actuators"][cfg["actuators"]["comp"]].get("max", 120.0)
    out = []
    for line in TABLE.split("\n"):
        if not line:
            continue
        name, unit, q, t, lo, hi, dflt = line.split()
        lo = float(lo)
        hi = full if hi == "STROKE" else top if hi == "TOPHZ" else float(hi)
        dflt = min(float(dflt), hi)
        out.append(
            (
                name,
                "" if unit == "-" else unit,
                q,
                codec.PTYPE_BOOL if t == "b" else codec.PTYPE_F32,
                lo,
                hi,
                d.get(name, dflt),
            )
        )
    return out
