#!/usr/bin/env python
"""fusedrnn.LSTM next to torch.nn.LSTM: same weights, same inputs; do they agree, and how fast is each?

    python bench/compare.py                      # default shape: fastrnns (B=64 T=100 I=H=512) on CUDA, tiny on CPU
    python bench/compare.py --dtype bfloat16 --layers 2 --bidirectional

Agreement: the fused module (in --dtype) and torch.nn (in --dtype) are both compared with torch.nn run in fp32
on the same weights and inputs rounded to --dtype, TF32 off (for fp32 that reference is torch.nn itself). Checked
per tensor, for output, h_n, c_n and the gradients of input, h0, c0 and every parameter:
max|fused - ref| <= atol + rtol * max|ref|. The exit code is 1 if any tensor fails.

Without a GPU the Triton kernels run under the Triton interpreter (TRITON_INTERPRET=1, set below before triton
is first imported): the results are the real kernels' numbers, the timings mean nothing.
"""

import os
import sys

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Triton reads TRITON_INTERPRET when it jits; importing torch (and probing CUDA) does not import triton.
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("compare.py: triton was imported before TRITON_INTERPRET could be set; run it as a script")
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

try:
    import triton  # noqa: E402
    import fusedrnn  # noqa: E402
    from fusedrnn import calls, settings  # noqa: E402
except ImportError as e:
    sys.exit(f"compare.py: {e}. Install fusedrnn first: `pip install -e .` in the repository root.")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# The tolerances of the test suite (tests/_helpers.py TOL), here applied per tensor against max|ref|.
TOL = {torch.float32: (2e-5, 1e-5), torch.float16: (1e-2, 1e-2), torch.bfloat16: (6e-2, 4e-2)}


def parse_args():
    big = HAS_CUDA  # the fastrnns shape on a GPU; a tiny one under the (very slow) interpreter
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64 if big else 4)
    p.add_argument("--seq-len", type=int, default=100 if big else 16)
    p.add_argument("--input-size", type=int, default=512 if big else 32)
    p.add_argument("--hidden-size", type=int, default=512 if big else 32)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--repeats", type=int, default=20 if big else 3, help="timed runs per measurement")
    p.add_argument("--tf32", action="store_true", help="let fp32 matmuls (cuDNN and fusedrnn) use TF32")
    p.add_argument("--backend", choices=["auto", "triton", "aten"], default="auto", help="fusedrnn backend")
    return p.parse_args()


_tf32 = contextlib.ExitStack()


def set_tf32(on: bool) -> None:
    """TF32 on or off from here on, for fp32 matmuls (fusedrnn's dots and F.linear) and cuDNN's fp32 RNN alike:
    through ``fusedrnn.settings.use_tf32``, the one place that sets torch's switch (new API first)."""
    _tf32.close()  # restores what the previous call changed
    _tf32.enter_context(settings.use_tf32(on, cudnn=True))


def fwd_bwd(model, x, hx, grads):
    """Forward, then the gradients of sum(out*g_out) + sum(h_n*g_h) + sum(c_n*g_c) w.r.t. inputs and parameters."""
    out, (h, c) = model(x, hx)
    wrt = [x, *hx, *model.parameters()]
    return [out, h, c], list(torch.autograd.grad([out, h, c], wrt, grads))


def timed(fn, repeats: int) -> float:
    """Median wall time of fn() in ms, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        if HAS_CUDA:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> int:
    a = parse_args()
    dtype, device = DTYPES[a.dtype], torch.device("cuda" if HAS_CUDA else "cpu")
    fusedrnn.set_backend(a.backend)
    torch.manual_seed(0)
    where = torch.cuda.get_device_name() if HAS_CUDA else "CPU (no GPU; TRITON_INTERPRET=1)"
    print(f"fusedrnn {fusedrnn.__version__} | torch {torch.__version__} | triton {triton.__version__} | {where}")
    dirs = 2 if a.bidirectional else 1
    print(f"LSTM B={a.batch} T={a.seq_len} I={a.input_size} H={a.hidden_size} layers={a.layers} "
          f"bidirectional={a.bidirectional} dtype={a.dtype} tf32={a.tf32} backend={a.backend}")
    if not HAS_CUDA and fusedrnn.dispatch.select(device) == "triton":
        print("NOTE: no GPU here. The Triton kernels run under the Triton interpreter (Python, on the CPU): "
              "their results are real, their timings MEAN NOTHING.")

    kw = dict(num_layers=a.layers, bidirectional=a.bidirectional, device=device)
    base = torch.nn.LSTM(a.input_size, a.hidden_size, dtype=dtype, **kw)
    fused = fusedrnn.LSTM(a.input_size, a.hidden_size, dtype=dtype, **kw)
    fused.load_state_dict(base.state_dict())
    ref = torch.nn.LSTM(a.input_size, a.hidden_size, dtype=torch.float32, **kw)
    ref.load_state_dict(base.state_dict())  # copy_ upcasts: the reference sees the same rounded weights

    shape_h = (a.layers * dirs, a.batch, a.hidden_size)
    x = torch.randn(a.seq_len, a.batch, a.input_size, device=device, dtype=dtype, requires_grad=True)
    hx = tuple(torch.randn(shape_h, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
    grads = [torch.randn(a.seq_len, a.batch, dirs * a.hidden_size, device=device, dtype=dtype),
             torch.randn(shape_h, device=device, dtype=dtype), torch.randn(shape_h, device=device, dtype=dtype)]

    def up(t):  # the same values in fp32, as fresh leaves
        return t.detach().float().requires_grad_(t.requires_grad)

    set_tf32(False)
    ref_outs, ref_grads = fwd_bwd(ref, up(x), tuple(up(h) for h in hx), [g.float() for g in grads])
    set_tf32(a.tf32)
    before = sum(calls.launch_counts.values())
    outs, fgrads = fwd_bwd(fused, x, hx, grads)
    launches = sum(calls.launch_counts.values()) - before
    base_outs, base_grads = fwd_bwd(base, x, hx, grads)
    if launches:
        ran = "triton, compiled" if HAS_CUDA else "triton, under the Triton interpreter"
        print(f"backend that ran: {ran} ({launches} kernel launches in one forward+backward, "
              f"counted by fusedrnn.calls.launch_counts)")
    else:
        print("backend that ran: aten (torch's own implementation; no Triton kernel launched)")

    names = ["output", "h_n", "c_n", "grad input", "grad h0", "grad c0"]
    names += [f"grad {n}" for n, _ in fused.named_parameters()]
    atol, rtol = TOL[torch.float16] if a.tf32 and dtype == torch.float32 else TOL[dtype]
    print(f"\nagreement with torch.nn fp32 on the same rounded weights and inputs; a tensor passes if "
          f"max|diff| <= {atol:g} + {rtol:g} * max|ref|")
    print(f"  {'tensor':<28}{'max|ref|':>11}{'fusedrnn':>11}{'torch.nn':>11}   (max|diff| vs the fp32 reference)")
    failed = []
    for name, r, f, b in zip(names, ref_outs + ref_grads, outs + fgrads, base_outs + base_grads):
        r, f, b = r.detach().double(), f.detach().double(), b.detach().double()
        scale, err, base_err = r.abs().max().item(), (f - r).abs().max().item(), (b - r).abs().max().item()
        ok = err <= atol + rtol * scale  # NaN fails too
        failed += [] if ok else [name]
        print(f"  {name:<28}{scale:>11.3e}{err:>11.3e}{base_err:>11.3e}{'' if ok else '   <-- FAIL'}")
    if failed:
        print(f"FAIL: {len(failed)} tensor(s) beyond tolerance: {', '.join(failed)}. No timings for a wrong result.")
        return 1
    print(f"PASS: all {len(names)} tensors within tolerance")

    def inference(model):
        with torch.no_grad():
            model(x, hx)

    print(f"\ntiming: median of {a.repeats} run(s) after 1 warm-up, ms (input projection included on both sides)")
    print(f"  {'':<20}{'torch.nn':>11}{'fusedrnn':>11}{'speedup':>10}")
    for label, fn in (("forward (no grad)", inference), ("forward+backward", lambda m: fwd_bwd(m, x, hx, grads))):
        t_base, t_fused = timed(lambda: fn(base), a.repeats), timed(lambda: fn(fused), a.repeats)
        print(f"  {label:<20}{t_base:>11.3f}{t_fused:>11.3f}{t_base / t_fused:>9.2f}x")
    if launches and not HAS_CUDA:
        print("  (Triton interpreter: these timings mean nothing about GPU speed.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
