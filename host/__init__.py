"""ThermoPilot host tools: CLI, parameters, tuning, deploy."""
