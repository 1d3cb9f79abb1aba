"""Host side of the ThermoPilot control core, one concern per module.

- :mod:`~thermopilot.host.control.pid`: PID step in C (cffi), the board's maths.
- :mod:`~thermopilot.host.control.mpc`: MPC step in C over a model blob.
- :mod:`~thermopilot.host.control.design`: model, weights and limits -> the model blob.
- :mod:`~thermopilot.host.control.blob`: the blob layout (single source) and the generator of
  its C and firmware copies.

Plant identification and relay autotune belong beside these as their own modules
(``identify``, ``tune``), importing the design and blob modules rather than reaching into them.
"""

# the relay autotune rules (tune.py); here so that the command line can offer them without
# importing numpy
RULES = ("zn", "tl", "simc", "amigo")
DEFAULT_RULE = "amigo"
