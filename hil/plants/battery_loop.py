"""Lumped EV battery pack with a coolant loop, pump and chiller (seed model)."""

C_TO_K = 273.15


class BatteryCoolantLoop:
    """Pack heat capacity, coolant node, pump flow proportional to duty, fixed-capacity chiller."""

    DEFAULTS = {
        "pack_heat_capacity_j_per_k": 250e3,
        "coolant_heat_capacity_j_per_k": 20e3,
        "pack_to_coolant_w_per_k": 300.0,
        "max_flow_lpm": 20.0,
        "chiller_t_k": 15.0 + C_TO_K,
        "chiller_ua_w_per_k_at_max_flow": 600.0,
        "pack_resistance_ohm": 0.02,
        "ambient_ua_w_per_k": 10.0,
        "initial_t_k": 35.0 + C_TO_K,
    }

    def __init__(self, **params):
        unknown = set(params) - set(self.DEFAULTS)
        if unknown:
            raise ValueError(
                "unknown battery_loop parameter(s) %s; expected some of: %s"
                % (", ".join(sorted(unknown)), ", ".join(sorted(self.DEFAULTS)))
            )
        self.p = dict(self.DEFAULTS, **params)
        self.pack_k = self.p["initial_t_k"]
        self.coolant_k = self.p["initial_t_k"]
        self.flow_lpm = 0.0

    def step(self, dt_s, inputs):
        p = self.p
        duty = min(max(float(inputs.get("pump_duty", 0.0)), 0.0), 1.0)
        current_a = float(inputs.get("current_a", 0.0))
        ambient_k = float(inputs.get("ambient_k", 25.0 + C_TO_K))
        self.flow_lpm = duty * p["max_flow_lpm"]
        q_gen = current_a**2 * p["pack_resistance_ohm"]
        q_pack = p["pack_to_coolant_w_per_k"] * (self.pack_k - self.coolant_k) * (0.2 + duty)
        q_chill = p["chiller_ua_w_per_k_at_max_flow"] * duty * (self.coolant_k - p["chiller_t_k"])
        q_amb = p["ambient_ua_w_per_k"] * (ambient_k - self.pack_k)
        self.pack_k += dt_s * (q_gen + q_amb - q_pack) / p["pack_heat_capacity_j_per_k"]
        self.coolant_k += dt_s * (q_pack - q_chill) / p["coolant_heat_capacity_j_per_k"]
        return self.outputs()

    def outputs(self):
        return {
            "coolant_out_k": self.coolant_k,
            "coolant_in_k": self.coolant_k,
            "cell_max_k": self.pack_k,
            "cell_min_k": self.pack_k,
            "flow_lpm": self.flow_lpm,
        }
