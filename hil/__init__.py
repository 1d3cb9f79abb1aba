"""ThermoPilot hardware-in-the-loop rig: plant models, virtual board, scenarios, reports."""
