"""The configuration a launch uses: tuned entries first, the heuristic otherwise; the tuning policy.

``kernel_config`` is on the launch path of every layer call: after the first call for a shape it is a single dict
lookup (memoized per kernel, cell, dtype, device, H, K, I and power-of-two batch). The first call reads the
cache files (once per process) and walks the lookup order:

    1. the user cache (``FUSEDRNN_CACHE_DIR`` or the user cache directory),
    2. the tables shipped in the package,
    3. with the policy "tune-on-first-use" and a CUDA device: tune this key now, write it to the user cache,
    4. the heuristic ``default_kernel_config``.

The policy is "off" by default: no launch ever pauses to tune. Opt in with
``fusedrnn.autotune.set_policy("tune-on-first-use")`` or ``FUSEDRNN_AUTOTUNE=1`` in the environment (read through
``fusedrnn.settings`` once, at the first lookup, and again after ``reset``). Tuning on first use takes seconds to a
minute per key (compiling and timing candidates); it never runs during CUDA graph capture, and a failure falls
back to the heuristic with a warning.

Who tunes on first use, and why it is a hook
--------------------------------------------
This module is the library: the launcher asks it for every configuration (``fusedrnn.dispatch.config``). The
tuner is a tool above the launcher (it times candidates by running ``fusedrnn.launch``), so this module must not
import it: that arrow would point up and close a circle (runtime -> tuner -> harness -> launch -> dispatch ->
runtime). Instead the tuning is a hook, ``first_use_tuner``, that the tool side provides:

- ``fusedrnn.autotune.tuner`` registers its ``tune_on_first_use`` (``set_first_use_tuner``) when it is imported, so
  any process that has the tool loaded (the CLI, the tests, a script that imported it) tunes with it;
- a plain user process that only sets ``FUSEDRNN_AUTOTUNE=1`` has never imported the tool. There the hook is found
  through the package's metadata: the entry point ``first_use`` of group ``fusedrnn.autotune`` (declared in
  pyproject.toml) names the tool's function, and it is loaded the first time a key needs tuning. The library names
  only the group, never a tool module: the arrow from the library to the tool goes through the installer, which
  already decides what installs where.

Without either (an installation without the entry point and no tool imported), the policy warns once and launches
use the heuristic.
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from . import cache as _cache
from .keys import batch_bucket, make_key
from .spaces import Problem, KernelConfig, default_kernel_config

POLICIES = ("off", "tune-on-first-use")
ENV_POLICY = "FUSEDRNN_AUTOTUNE"
#: Entry point (group, name) of the tuner that "tune-on-first-use" runs when no tool has registered one.
TUNER_ENTRY_POINT = ("fusedrnn.autotune", "first_use")

#: ``tuner(problem, device) -> (KernelConfig, cache entry, summary line)``: what tuning on first use runs.
FirstUseTuner = Callable[[Problem, object], tuple]

_policy: str | None = None  # None: not read from the environment yet
_store: _cache.Store | None = None
_memo: dict = {}
_forced: KernelConfig | None = None
_tuning = False
_failed: set = set()
_first_use_tuner: FirstUseTuner | None = None
_entry_point_read = False
_no_tuner_warned = False


def _policy_from_env() -> str:
    from fusedrnn import settings

    value = settings.autotune_env()
    if value in ("", "0", "off", "false", "no"):
        return "off"
    if value in ("1", "on", "true", "yes", "tune-on-first-use"):
        return "tune-on-first-use"
    warnings.warn(f"fusedrnn: {ENV_POLICY}={value!r} is not understood (use 1 to tune on first use, 0 for off); "
                  f"autotuning stays off.", stacklevel=3)
    return "off"


def get_policy() -> str:
    """The tuning policy: "off" (default) or "tune-on-first-use"."""
    global _policy
    if _policy is None:
        _policy = _policy_from_env()
    return _policy


def set_policy(name: str) -> None:
    """Set the tuning policy for this process: "off" or "tune-on-first-use" (overrides FUSEDRNN_AUTOTUNE)."""
    global _policy
    if name not in POLICIES:
        raise ValueError(f"fusedrnn autotune policy must be one of {POLICIES}, got {name!r}")
    _policy = name
    _memo.clear()


def set_first_use_tuner(tuner: FirstUseTuner | None) -> None:
    """Register the function that tunes a key on first use (``None``: forget it; the entry point is tried again).

    ``tuner(problem, device)`` returns (KernelConfig, cache entry, one-line summary). ``fusedrnn.autotune.tuner``
    registers its own when imported; see the module doc for why the library never imports it."""
    global _first_use_tuner, _entry_point_read, _no_tuner_warned
    _first_use_tuner, _no_tuner_warned = tuner, False
    if tuner is None:
        _entry_point_read = False


def first_use_tuner() -> FirstUseTuner | None:
    """The registered tuner, else the one the entry point ``TUNER_ENTRY_POINT`` names (looked for once), else None."""
    global _first_use_tuner, _entry_point_read
    if _first_use_tuner is None and not _entry_point_read:
        from importlib.metadata import entry_points

        _entry_point_read = True
        group, name = TUNER_ENTRY_POINT
        for point in entry_points(group=group, name=name):
            _first_use_tuner = point.load()  # importing the tool may register it too: the loaded function wins
            break
    return _first_use_tuner


def store() -> _cache.Store:
    """The process's store of tuned entries (created at first use; the files are read at the first lookup)."""
    global _store
    if _store is None:
        _store = _cache.Store()
    return _store


def reset(cache_dir: str | os.PathLike | None = None, tables_dir: str | os.PathLike | None = None) -> None:
    """Forget everything read or decided in this process: the next lookup reads the files again, the policy is
    read again from the environment, warnings may repeat. ``cache_dir`` / ``tables_dir`` replace the user
    cache directory and the shipped tables' directory (tests, tools)."""
    global _store, _policy, _no_tuner_warned
    user_file = Path(cache_dir) / _cache.FILE_NAME if cache_dir is not None else None
    _store = _cache.Store(user_file=user_file, tables_dir=tables_dir)
    _policy = None
    _memo.clear()
    _failed.clear()
    _no_tuner_warned = False
    _cache._warned.clear()


def record(entries: dict, path=None) -> dict:
    """Write tuned entries to the user cache (or ``path``) and use them from now on in this process."""
    out = store().record(entries, path)
    _memo.clear()
    return out


@contextmanager
def forced(cfg: KernelConfig):
    """Every lookup inside the block returns ``cfg`` (the tuner times candidates this way; tests force tiles)."""
    global _forced
    previous, _forced = _forced, cfg
    try:
        yield cfg
    finally:
        _forced = previous


def _tf32() -> bool:
    from fusedrnn import settings

    return settings.tf32()


def lookup(kernel: str, cell: str, dtype, device, H: int, K: int, B: int, I: int = 0):  # noqa: E741
    """(KernelConfig, source) of a launch; source is "forced", "user", "shipped", "tuned" or "heuristic"."""
    if _forced is not None:
        return _forced, "forced"
    b2 = batch_bucket(B, 1, None)
    tf32 = dtype.itemsize == 4 and device.type == "cuda" and _tf32()  # cheapest test first: this is the hot path
    memo_key = (kernel, cell, dtype, device, H, K, I, b2, tf32)
    hit = _memo.get(memo_key)
    if hit is None:
        hit = _resolve(kernel, cell, dtype, device, H, K, B, I)
        if hit[1] != "skipped":
            _memo[memo_key] = hit
        else:
            hit = (hit[0], "heuristic")
    return hit


def kernel_config(kernel: str, cell: str, dtype, device, H: int, K: int, B: int, I: int = 0) -> KernelConfig:  # noqa: E741
    """Launch configuration of a recurrence kernel.

    Args:
        kernel: "step_fwd", "step_bwd", "tiled_fwd" or "tiled_bwd". cell: "lstm", "gru", "rnn_tanh" or "rnn_relu".
        dtype: torch dtype of the tensors. device: torch device of the launch.
        H: hidden size. K: width of the recurrent matmul (P forward, G*H backward). B: batch (rows of the step).
        I: input width reduced inside the kernel (the layer's input size when the input projection is fused into
           the step), else 0.
    """
    if _forced is None:  # the fast path: a memoized decision
        tf32 = dtype.itemsize == 4 and device.type == "cuda" and _tf32()
        hit = _memo.get((kernel, cell, dtype, device, H, K, I, batch_bucket(B, 1, None), tf32))
        if hit is not None:
            return hit[0]
    return lookup(kernel, cell, dtype, device, H, K, B, I)[0]


def _resolve(kernel, cell, dtype, device, H, K, B, I):
    key = make_key(kernel, cell, dtype, device, H, K, B, I)
    hit = store().lookup(str(key))
    if hit is not None:
        return hit
    heuristic = default_kernel_config(device.type, H, K, B, dtype.itemsize, kernel.split("_")[0])
    if get_policy() == "tune-on-first-use" and device.type == "cuda" and not _tuning and str(key) not in _failed:
        import torch

        if torch.cuda.is_current_stream_capturing():
            return heuristic, "skipped"  # not memoized: tuned at the first launch outside the capture
        tuned = _tune_now(key, device)
        if tuned is not None:
            return tuned, "tuned"
    return heuristic, "heuristic"


def _tune_now(key, device) -> KernelConfig | None:
    global _tuning, _no_tuner_warned
    why = f"no entry point {TUNER_ENTRY_POINT[0]}:{TUNER_ENTRY_POINT[1]}; import fusedrnn.autotune.tuner to register it"
    try:
        tune = first_use_tuner()
    except Exception as e:  # noqa: BLE001 - a broken installation must not break the user's forward pass
        tune, why = None, f"loading it failed: {type(e).__name__}: {e}"
    if tune is None:
        if not _no_tuner_warned:
            _no_tuner_warned = True
            warnings.warn(f"fusedrnn: the autotune policy is tune-on-first-use ({ENV_POLICY} / set_policy), but no "
                          f"tuner is available ({why}); the heuristic configurations are used.",
                          _cache.CacheWarning, stacklevel=4)
        return None
    problem = Problem(key.kernel, key.cell, key.dtype, key.H, key.K, key.B, key.I)
    print(f"fusedrnn.autotune: tuning {key} on first use ({ENV_POLICY} / set_policy) ...", file=sys.stderr, flush=True)
    _tuning = True
    try:
        config, entry, summary = tune(problem, device)
    except Exception as e:  # noqa: BLE001 - tuning must never break the user's forward pass
        _failed.add(str(key))
        warnings.warn(f"fusedrnn: tuning {key} failed ({type(e).__name__}: {e}); the heuristic configuration is "
                      f"used.", _cache.CacheWarning, stacklevel=4)
        return None
    finally:
        _tuning = False
    print(f"fusedrnn.autotune: {summary}", file=sys.stderr, flush=True)
    try:
        store().record({str(key): entry})
    except OSError as e:
        warnings.warn(f"fusedrnn: could not write the autotune cache {store().user_file} ({e}); the tuned "
                      f"configuration is used in this process only.", _cache.CacheWarning, stacklevel=4)
        store().remember(str(key), config)
    return config
