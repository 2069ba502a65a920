"""Kernel configurations for fusedrnn (installed as ``fusedrnn.autotune``).

For now this holds the default heuristic; the tuning run, the search space and the on-disk cache build on it.
"""

from .spaces import StepConfig, default_step_config

__all__ = ["StepConfig", "default_step_config"]
