"""Process settings: fusedrnn's own (backend, kernel) and what it reads from outside itself (the Triton interpreter
switch, torch's TF32 switch, the environment).

One place reads each of them, lazily (nothing is read at import time): dispatch, the launcher, the autotune keys and
the benchmarks all ask here. ``SETTINGS`` holds them; the functions below are its public face.

- ``get/set/use_backend``: "auto" (default), "triton" or "aten" (what ``fusedrnn.dispatch.select`` decides from);
- ``get/set/use_kernel``: "auto" (default), "step", "tiled" or "cooperative" (``fusedrnn.dispatch.choose``);
- ``mps_thread_percentage()``: ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``, read once per process ("" when unset);
- ``autotune_env()``: ``FUSEDRNN_AUTOTUNE`` ("" when unset), the tuning policy asked for in the environment;
  ``fusedrnn.autotune.runtime`` reads it at its first lookup and keeps the policy it names;

- ``interpreting()``: whether Triton runs kernels under its interpreter (``TRITON_INTERPRET=1``). Triton reads the
  variable when it jits, so it is read once per process; to torch.compile it is a constant (no guard on it, so a
  compiled model does not recompile when the first call reads it).
- ``tf32()``: whether fp32 matmuls may use TF32, as torch's cuBLAS matmuls would. torch has two APIs for it: the
  legacy ``torch.backends.cuda.matmul.allow_tf32`` and (torch >= 2.9) ``torch.backends.cuda.matmul.fp32_precision``
  / ``torch.backends.fp32_precision``. Once a program has set the new one, *reading* the legacy flag raises
  ("mix of the legacy and new APIs"), so the new API is read where it exists; the legacy setter updates it too.
- ``use_tf32(on)``: set it for a block (benchmarks and the tuner), through the new API where it exists.
"""

from __future__ import annotations

import contextlib
import os

import torch

_TRUE = ("1", "true", "on", "yes")
BACKENDS = ("auto", "triton", "aten")
KERNELS = ("auto", "step", "tiled", "cooperative")


class Settings:
    """The process's settings: set through the functions below, environment variables read at first use."""

    def __init__(self):
        self.backend = "auto"
        self.kernel = "auto"
        self._interpreting: bool | None = None
        self._mps: str | None = None

    def interpreting(self) -> bool:
        if self._interpreting is None:
            self._interpreting = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE
        return self._interpreting

    def mps_thread_percentage(self) -> str:
        if self._mps is None:
            self._mps = os.environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "").strip()
        return self._mps

    def autotune_env(self) -> str:
        # Not kept here: the autotune runtime keeps the policy it parses from it, and reads it again after
        # ``fusedrnn.autotune.reset()``.
        return os.environ.get("FUSEDRNN_AUTOTUNE", "").strip().lower()


SETTINGS = Settings()


@torch.compiler.assume_constant_result
def interpreting() -> bool:
    """Whether Triton kernels run under the interpreter (``TRITON_INTERPRET=1``), read once per process."""
    return SETTINGS.interpreting()


def mps_thread_percentage() -> str:
    """``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` ("" when unset), read once per process."""
    return SETTINGS.mps_thread_percentage()


def autotune_env() -> str:
    """``FUSEDRNN_AUTOTUNE``, stripped and lower-cased ("" when unset): the tuning policy the environment asks for
    (``fusedrnn.autotune.runtime`` parses it, once per process and after each ``reset``)."""
    return SETTINGS.autotune_env()


def _choose(setting: str, choices: tuple, name: str) -> None:
    if name not in choices:
        raise ValueError(f"fusedrnn {setting} must be one of {choices}, got {name!r}")
    setattr(SETTINGS, setting, name)


def get_backend() -> str:
    """The backend setting: "auto", "triton" or "aten"."""
    return SETTINGS.backend


def set_backend(name: str) -> None:
    """Set the backend for the whole process: "auto" (default), "triton" or "aten"."""
    _choose("backend", BACKENDS, name)


def get_kernel() -> str:
    """The kernel setting: "auto", "step", "tiled" or "cooperative"."""
    return SETTINGS.kernel


def set_kernel(name: str) -> None:
    """Set the kernel for the whole process: "auto" (default), "step", "tiled" or "cooperative"."""
    _choose("kernel", KERNELS, name)


@contextlib.contextmanager
def _scoped(get, set_, name: str):
    """Set a setting with ``set_`` for the block, restoring what ``get`` read before it on exit."""
    previous = get()
    set_(name)
    try:
        yield
    finally:
        set_(previous)


def use_backend(name: str):
    """Context manager that sets the backend and restores the previous one on exit."""
    return _scoped(get_backend, set_backend, name)


def use_kernel(name: str):
    """Context manager that sets the kernel and restores the previous one on exit."""
    return _scoped(get_kernel, set_kernel, name)


def tf32() -> bool:
    """Whether fp32 matmuls may run in TF32 (torch's cuBLAS setting, new API first)."""
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)
    if precision is None:  # a torch without the new API
        return bool(matmul.allow_tf32)
    if precision == "none":  # not set for matmuls: the global setting decides
        precision = getattr(torch.backends, "fp32_precision", "none")
    return precision == "tf32"


@contextlib.contextmanager
def use_tf32(on: bool, cudnn: bool = False):
    """TF32 for fp32 matmuls on (``on``) or off for the block, and for cuDNN too with ``cudnn``; restored after."""
    targets = [torch.backends.cuda.matmul] + ([torch.backends.cudnn.rnn] if cudnn else [])
    if any(getattr(t, "fp32_precision", None) is None for t in targets):  # legacy API only
        legacy = [torch.backends.cuda.matmul] + ([torch.backends.cudnn] if cudnn else [])
        previous = [t.allow_tf32 for t in legacy]
        for t in legacy:
            t.allow_tf32 = on
        try:
            yield
        finally:
            for t, p in zip(legacy, previous):
                t.allow_tf32 = p
        return
    previous = [t.fp32_precision for t in targets]
    for t in targets:
        t.fp32_precision = "tf32" if on else "ieee"
    try:
        yield
    finally:
        for t, p in zip(targets, previous):
            t.fp32_precision = p
