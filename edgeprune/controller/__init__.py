"""The controller: the policy contract, the decision rule and the built-in policies (checker: ``edgeprune.checker``).

Pure objects only: nothing here imports SimPy, asyncio, torch or reads a clock (see ``contract.py``).
"""

from edgeprune.controller.contract import (
    Levels,
    Observation,
    OracleView,
    PipelineCurves,
    Policy,
    StageObs,
    wants_oracle,
)
from edgeprune.controller.registry import PolicyKind, PolicySpec, kinds, make_policy, policy_from_table, register

__all__ = [
    "Levels",
    "Observation",
    "OracleView",
    "PipelineCurves",
    "Policy",
    "PolicyKind",
    "PolicySpec",
    "StageObs",
    "kinds",
    "make_policy",
    "policy_from_table",
    "register",
    "wants_oracle",
]
