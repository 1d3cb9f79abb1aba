# The chip cooler controller's parameter table (ctl_chip.py). Needed only at boot: ctl_chip
# imports this module for it and forgets it again, so its RAM is given back.
#
# One parameter per line: suffix, unit, quantity, min, max, default (temperatures in K). The
# order is the controller's: ctl_chip addresses each parameter by its line number here.
from .codec import PTYPE_F32

TABLE = """
tj_lim K temperature 273.15 423.15 368.15
tj_alarm K temperature 273.15 423.15 378.15
case_lim K temperature 273.15 423.15 360.15
case_alarm K temperature 273.15 423.15 363.15
r_jc K/W none 0.001 1 0.03
margin_sp - fraction 0.05 0.9 0.25
cap_margin - fraction 0 0.9 0.1
x_lim - fraction 0.1 1 0.7
m_full kg/s none 0.0001 1 0.015
h_lv J/kg none 10000 2000000 159000
x_in - none -0.5 0 -0.045
p_chf W power 1 100000 1200
d_min - fraction 0 1 0.1
d_fall 1/s rate 0.001 10 0.05
tsat_sp K temperature 273.15 363.15 308.15
cd_kp 1/K gain 0 10 0.1
cd_ki 1/Ks gain 0 1 0.01
flow_tol - fraction 0.05 0.95 0.5
pf_delay_s s time 0.2 60 2
r_wet K/W none 0.001 1 0.025
dry_fac - none 1.05 10 1.4
dry_delay_s s time 0.5 120 5
"""


def rows(cfg):
    d = cfg.get("defaults", {})
    out = []
    for line in TABLE.split("\n"):
        if line:
            suffix, unit, q, lo, hi, default = line.split()
            unit = "" if unit == "-" else unit
            default = d.get(suffix, float(default))
            out.append((suffix, unit, q, PTYPE_F32, float(lo), float(hi), default))
    return out
