# ThermoPilot board firmware (deployed to the board's /lib/tpfw).
FW_VERSION = "0.2.0"
