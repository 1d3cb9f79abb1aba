# ThermoPilot board firmware (deployed to the board's /lib/tpfw).
