"""Kernel configurations of fusedrnn (installed as ``fusedrnn.autotune``): chosen per GPU and shape, tuned, kept.

- ``kernel_config(kernel, cell, dtype, device, H, K, B, I=0)``: what a launch uses. Lookup order: the user cache,
  then the tables shipped in the package, then the heuristic ``default_kernel_config`` (runtime.py).
- ``set_policy("tune-on-first-use")`` or ``FUSEDRNN_AUTOTUNE=1``: tune a key the first time it is used (off by
  default: no launch pauses to tune). The tuning is a hook of runtime.py that the tuner (a tool) provides: the
  library never imports the tools (tuner, harness, cli, presets, precompile), they import it.
- ``python -m fusedrnn.autotune``: the tuning CLI (cli.py): presets or explicit shapes, progress bar, gain over the
  heuristic, results written to the cache (``FUSEDRNN_CACHE_DIR`` overrides its directory).
- spaces.py: the search space per kernel variant and its pruning by shared memory and registers; keys.py: what a
  key holds (never the sequence length; batches by bucket); cache.py: the JSON files; tuner.py: the timing;
  harness.py: a representative launch and its recorded kernel launches; presets.py: the benchmark shape sets.

Nothing here reads a file, the environment or a device at import time, and importing it does not import torch.
"""

from .keys import Key, make_key
from .runtime import POLICIES, forced, get_policy, lookup, reset, set_policy, kernel_config
from .spaces import KernelConfig, default_kernel_config

__all__ = ["KernelConfig", "default_kernel_config", "kernel_config", "lookup", "set_policy", "get_policy", "POLICIES",
           "forced", "reset", "Key", "make_key"]
