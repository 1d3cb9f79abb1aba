# The chip cooler controller's parameter table (ctl_chip.py). Needed only at boot: ctl_chip
# imports this module for it and forgets it again, so its RAM is given back.
#
# One parameter per row, as the application takes it: suffix, unit, quantity, type, min, max,
# default (temperatures in K). The order is the controller's: ctl_chip addresses each parameter
# by its row number here. Rows the board's defaults do not change are handed over as they are.
from .codec import PTYPE_F32

TABLE = (
    ("tj_lim", "K", "temperature", PTYPE_F32, 273.15, 423.15, 368.15),
    ("tj_alarm", "K", "temperature", PTYPE_F32, 273.15, 423.15, 378.15),
    ("case_lim", "K", "temperature", PTYPE_F32, 273.15, 423.15, 360.15),
    ("case_alarm", "K", "temperature", PTYPE_F32, 273.15, 423.15, 363.15),
    ("r_jc", "K/W", "none", PTYPE_F32, 0.001, 1.0, 0.03),
    ("tau_j", "s", "time", PTYPE_F32, 0.0, 60.0, 0.6),
    ("margin_sp", "", "fraction", PTYPE_F32, 0.05, 0.9, 0.25),
    ("cap_margin", "", "fraction", PTYPE_F32, 0.0, 0.9, 0.1),
    ("x_lim", "", "fraction", PTYPE_F32, 0.1, 1.0, 0.7),
    ("m_full", "kg/s", "none", PTYPE_F32, 0.0001, 1.0, 0.015),
    ("h_lv", "J/kg", "none", PTYPE_F32, 10000.0, 2000000.0, 159000.0),
    ("x_in", "", "none", PTYPE_F32, -0.5, 0.0, -0.045),
    ("p_chf", "W", "power", PTYPE_F32, 1.0, 100000.0, 1200.0),
    ("d_min", "", "fraction", PTYPE_F32, 0.0, 1.0, 0.1),
    ("d_fall", "1/s", "rate", PTYPE_F32, 0.001, 10.0, 0.05),
    ("tsat_sp", "K", "temperature", PTYPE_F32, 273.15, 363.15, 308.15),
    ("cd_kp", "1/K", "gain", PTYPE_F32, 0.0, 10.0, 0.1),
    ("cd_ki", "1/Ks", "gain", PTYPE_F32, 0.0, 1.0, 0.01),
    ("flow_tol", "", "fraction", PTYPE_F32, 0.05, 0.95, 0.3),
    ("pf_delay_s", "s", "time", PTYPE_F32, 0.2, 60.0, 2.0),
    ("r_wet", "K/W", "none", PTYPE_F32, 0.001, 1.0, 0.025),
    ("dry_fac", "", "none", PTYPE_F32, 1.05, 10.0, 1.4),
    ("dry_delay_s", "s", "time", PTYPE_F32, 0.5, 120.0, 5.0),
)


def rows(cfg):
    d = cfg.get("defaults", {})
    return [r if r[0] not in d else r[:6] + (d[r[0]],) for r in TABLE]
