"""Device physics: temperature (RC), DVFS throttling, power, co-located tenants and energy (pure, no clock).

``params`` holds the validated parameter dataclasses and the presets (``rpi4b``, ``rpi5``, ``generic``,
all assumptions until calibrated); ``model`` the math every backend and policy shares; ``run`` a node's
state through a run (change instants, service-time factor, energy), the object a backend advances;
``figures`` a node's figures (simulated or measured) and the run's physics summary.  See
``ARCHITECTURE.md``, "Device physics".
"""

from edgeprune.physics.figures import MeasuredNode, NodeFigures, measured_power_w, physics_summary, run_figures
from edgeprune.physics.model import (
    NodeState,
    PeriodEnergy,
    advance,
    dynamic_energy_j,
    dynamic_power_w,
    freq_factor,
    govern,
    initial_state,
    node_power_w,
    rc_step,
    steady_temp_c,
    tenant_schedule,
    tenant_slowdown,
)
from edgeprune.physics.params import (
    DevicePhysics,
    DvfsParams,
    PowerParams,
    TenantParams,
    ThermalParams,
    device_physics_from_table,
    load_preset,
    preset_names,
)
from edgeprune.physics.run import NodeRun, NodeTotals

__all__ = [
    "DevicePhysics",
    "DvfsParams",
    "MeasuredNode",
    "NodeFigures",
    "NodeRun",
    "NodeState",
    "NodeTotals",
    "PeriodEnergy",
    "PowerParams",
    "TenantParams",
    "ThermalParams",
    "advance",
    "device_physics_from_table",
    "dynamic_energy_j",
    "dynamic_power_w",
    "freq_factor",
    "govern",
    "initial_state",
    "load_preset",
    "measured_power_w",
    "node_power_w",
    "physics_summary",
    "preset_names",
    "rc_step",
    "run_figures",
    "steady_temp_c",
    "tenant_schedule",
    "tenant_slowdown",
]
