"""What cuDNN does with a case: predicted from torch's own rules, and observed with the profiler.

torch decides in C++ that Python cannot call, in two places:

* whether cuDNN runs at all: ``use_cudnn`` in aten/src/ATen/native/RNN.cpp: ``cudnn_is_acceptable(input)``
  (cuDNN enabled, a CUDA tensor, torch built with cuDNN, not empty) and a dtype of fp16/fp32/fp64, or bf16 when
  ``CUDAHooks::supportsBFloat16RNNWithCuDNN()`` holds (recent torch: built with cuDNN >= 9.13, sm_80 or newer).
  Older builds refuse bf16 in ``cudnn_is_acceptable`` itself. Which rule the installed build follows cannot be
  read from Python, so for bf16 the prediction is "unknown" and the observation decides.
* which algorithm: ``get_algo`` in aten/src/ATen/native/cudnn/RNN.cpp, mirrored in ``predict_algo`` below.

The observation runs the checked call once under ``torch.profiler``: the op ``aten::_cudnn_rnn`` appears iff
cuDNN ran, and the names of the CUDA kernels it launched are recorded as the evidence of the algorithm
(``persist_kernel``: whether any of them has "persist" in its name; what the names mean is cuDNN's business,
so the names themselves are kept).
"""

from __future__ import annotations

import torch

from .registry import Case

ALGO_RULE = ("mirror of get_algo() and its persist heuristics in aten/src/ATen/native/cudnn/RNN.cpp "
             "(pytorch main, commit 00fc08aa): C++ that Python cannot call, so a prediction for the installed "
             "torch, right while that code is unchanged; the kernel names under 'observed' are the evidence")
#: Profiling records every kernel launch; past this many recurrent steps (T x layers x directions) it costs
#: more than the measurement, and only the CPU ops are recorded.
MAX_PROFILED_STEPS = 4096


def _small_h(cell: str, H: int, forward: bool) -> bool:
    """use_rnn_persist_small_h (sm_60+)."""
    rnn = cell.startswith("rnn_")
    if forward:
        return H <= 384 if rnn else H <= 192
    return H <= 256 if rnn else H <= 128


def _persist_common(L: int, H: int, bidirectional: bool, I: int) -> bool:  # noqa: E741
    """use_persist_common_heuristics."""
    return L == 1 and H <= 1024 and not bidirectional and H % 128 == 0 and I % 128 == 0


def _persist_device(cell: str, B: int, T: int, H: int, major: int, minor: int, sm_count: int) -> bool:
    """use_persist_device_heuristics."""
    if major == 7:
        if minor == 5:
            return False
        return (((B % 16 == 0 and B not in (80, 112)) or B == 8)
                and ((T >= 40 and B <= 128) or (T >= 20 and B <= 96) or (T >= 10 and B <= 32)))
    if major >= 8 and sm_count >= 98:
        if minor == 6 or cell == "gru":
            return False
        if cell == "lstm":
            return B % 8 == 0 and B <= 128
        return B % 8 == 0 and B <= 128 and (B < 96 or H < 896)
    return False


def predict_algo(case: Case, forward: bool, major: int, minor: int, sm_count: int) -> str:
    """cuDNN RNN algorithm torch's get_algo picks (no projections) for the forward or backward. Packed input (a
    case with resets: its split segments) always gets STANDARD: get_algo tries the persistent ones only unpacked."""
    if case.episode:
        return "STANDARD"
    if case.dtype != "fp64" and major >= 6 and _small_h(case.cell, case.H, forward):
        return "PERSIST_STATIC_SMALL_H"
    if (case.dtype == "fp16" and _persist_common(case.L, case.H, case.bidirectional, case.I)
            and _persist_device(case.cell, case.B, case.T, case.H, major, minor, sm_count)):
        return "PERSIST_STATIC"
    return "STANDARD"


def _compile_version():
    try:
        return ".".join(str(v) for v in torch._C._cudnn.getCompileVersion())
    except Exception as e:  # noqa: BLE001 - a fact we could not read is recorded as such
        return f"unknown: {type(e).__name__}"


def facts(case: Case, device) -> dict:
    """The prediction for ``case`` on ``device`` (a CUDA device), with the facts it rests on."""
    major, minor = torch.cuda.get_device_capability(device)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    if not torch.backends.cudnn.enabled:
        uses = False
    elif case.dtype == "bf16":
        uses = ("unknown: bf16 goes to cuDNN only in builds whose cudnn_is_acceptable accepts bf16 and whose "
                "CUDAHooks::supportsBFloat16RNNWithCuDNN holds (recent torch: cuDNN >= 9.13 at build time, "
                "sm_80+); see observed.used")
    else:
        uses = True
    out = {"cudnn_version": torch.backends.cudnn.version(), "cudnn_compile_version": _compile_version(),
           "sm": f"{major}.{minor}", "sm_count": sms, "uses_cudnn_predicted": uses,
           "tf32": bool(torch.backends.cudnn.allow_tf32) if case.dtype in ("fp32", "tf32") else None,
           "algo_predicted": {"fwd": predict_algo(case, True, major, minor, sms)}, "algo_rule": ALGO_RULE}
    if case.mode == "fwdbwd":
        out["algo_predicted"]["bwd"] = predict_algo(case, False, major, minor, sms)
    return out


def observe(fn, case: Case) -> dict:
    """Run ``fn`` once under the profiler: did cuDNN run, and which kernels did it launch?"""
    cuda = torch.cuda.is_available()
    steps = case.T * case.L * case.D
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda and steps <= MAX_PROFILED_STEPS:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    ran = False
    try:
        with torch.profiler.profile(activities=activities) as prof:
            fn()
            ran = True
            if cuda:
                torch.cuda.synchronize()
        events = list(prof.key_averages())
    except Exception as e:  # noqa: BLE001 - the profiler's failure is recorded; fn's own failure propagates
        if not ran:
            fn()
        return {"observed": {"used": f"unknown: the profiler failed ({type(e).__name__}: {e})"[:300]}}
    names = [e.key for e in events]
    seen = {"used": any("_cudnn_rnn" in n for n in names),
            "ops": sorted({n for n in names if n.startswith("aten::") and any(
                w in n for w in ("rnn", "lstm", "gru"))})}
    if len(activities) == 1:
        seen["kernels"] = ("unknown: CUDA kernels not profiled " +
                           (f"(T x layers x directions = {steps} > {MAX_PROFILED_STEPS})" if cuda else "(no GPU)"))
    else:
        def device_time(e):
            return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0) or 0
        kernels = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
        kernels.sort(key=device_time, reverse=True)
        seen["kernels"] = [e.key[:160] for e in kernels[:8]]
        seen["persist_kernel"] = any("persist" in e.key.lower() for e in kernels)
    return {"observed": seen}
