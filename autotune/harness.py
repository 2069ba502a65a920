"""A representative launch of a recurrence kernel, through the real launcher, and its recorded kernel launches.

The tuner never calls a kernel with an argument list of its own: it runs ``fusedrnn.launch`` (the same code users
run) on random inputs of the problem's shape under a forced configuration, records the Triton launches the
launcher makes, and times the replay of exactly those launches. So the timing covers the kernels only (not the
input GEMM or the launcher's other torch ops), it captures in a CUDA graph, and kernel signatures can change
without touching the tuner. The launches are recorded where every kernel is launched, ``fusedrnn.calls``
(``calls.recording``): nothing here wraps or replaces the launcher's globals. This file is the one place that
knows the launcher's call signatures.
"""

from __future__ import annotations

import contextlib

from .runtime import forced
from .spaces import Problem, KernelConfig

#: Input width of a non-fused forward (I = 0 in the key): the kernel never reads it, keep its GEMM small.
UNFUSED_INPUT = 16
_DTYPES = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32", "float32-tf32": "float32",
           "float64": "float64"}


@contextlib.contextmanager
def _matmul_precision(problem: Problem, device):
    """TF32 matmuls on for "float32-tf32" problems and off for "float32" ones, for the block."""
    from fusedrnn import settings

    if device.type != "cuda" or problem.dtype not in ("float32", "float32-tf32"):
        yield
        return
    with settings.use_tf32(problem.dtype == "float32-tf32"):
        yield


class Harness:
    """Inputs of one problem on one device, and runs of the launcher on them under a given configuration.

    Forward: a sequence of ``steps`` steps (T = steps) with saved activations and biases, or, when the problem
    fuses the input projection (I > 0), one step (T = 1; the batch-tiled kernel fuses it in inference: T = steps
    without saved activations). Backward: the backward of such a forward (computed once, with the heuristic).
    B is the problem's batch (the bucket's representative). The launcher runs the problem's variant
    (``fusedrnn.use_kernel``).
    """

    def __init__(self, problem: Problem, device, steps: int = 8, seed: int = 0):
        import torch

        from fusedrnn import launch

        self.problem, self.device = problem, device
        p = problem
        G, H, B = p.gates, p.H, p.B
        self.T = 1 if (p.I and p.variant == "step") else steps
        self.save = not (p.I and p.variant == "tiled")
        forward = p.kernel.endswith("_fwd")
        if not forward and p.K != G * H:
            raise ValueError(f"{p.kernel} problems have K = G*H = {G * H}, got K={p.K}")
        P = p.K if forward else H  # a forward K other than H is an LSTM projection size
        if P != H and p.cell != "lstm":
            raise ValueError(f"K={p.K} != H={H}: only LSTM has a projection")
        I = p.I or UNFUSED_INPUT  # noqa: E741
        dtype = getattr(torch, _DTYPES[p.dtype])
        gen = torch.Generator(device="cpu").manual_seed(seed)

        def rand(*shape, scale=1.0):
            return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

        self.x = rand(self.T, B, I)
        self.h0 = rand(B, P, scale=0.5)
        self.c0 = rand(B, H, scale=0.5) if p.cell == "lstm" else None
        self.w_ih = rand(G * H, I, scale=I ** -0.5)
        self.w_hh = rand(G * H, P, scale=P ** -0.5)
        self.b_ih = rand(G * H, scale=0.1)
        self.b_hh = rand(G * H, scale=0.1)
        self.w_hr = rand(P, H, scale=H ** -0.5) if P != H else None
        self._launch = launch
        self._bwd_inputs = None
        if not forward:
            with self._context(p.heuristic(device.type)):
                y, h_n, c_n, saved, cs, hr = self._forward()
            self._bwd_inputs = dict(dy=rand(*y.shape), dh_n=rand(*h_n.shape),
                                    dc_n=rand(*c_n.shape) if p.cell == "lstm" else None,
                                    y=y, saved=saved, cs=cs, hr=hr)

    @contextlib.contextmanager
    def _context(self, cfg: KernelConfig):
        import torch

        import fusedrnn

        with forced(cfg), fusedrnn.use_kernel(self.problem.variant), _matmul_precision(self.problem, self.device), \
                torch.no_grad():
            yield

    def _forward(self):
        return self._launch.recurrence_fwd(
            cell=self.problem.cell, x=self.x, h0=self.h0, c0=self.c0, w_ih=self.w_ih, w_hh=self.w_hh,
            b_ih=self.b_ih, b_hh=self.b_hh, w_hr=self.w_hr, batch_sizes=None, reverse=False, save=self.save)

    def _backward(self):
        b = self._bwd_inputs
        return self._launch.recurrence_bwd(
            cell=self.problem.cell, dy=b["dy"], dh_n=b["dh_n"], dc_n=b["dc_n"], x=self.x, h0=self.h0, c0=self.c0,
            w_ih=self.w_ih, w_hh=self.w_hh, w_hr=self.w_hr, has_bias=True, batch_sizes=None, reverse=False,
            y=b["y"], saved=b["saved"], cs=b["cs"], hr=b["hr"])

    def run(self, cfg: KernelConfig, launch: bool = True):
        """(outputs, launches): copies of the launcher's results under ``cfg`` (what a configuration must not
        change) and the kernel launches it made (``fusedrnn.calls.Launches``; with ``launch=False`` they are only
        recorded, and the outputs hold whatever their buffers held).

        Forward: y, h_n, c_n, the saved activations, the cell states after each step (cs[1:]; cs[0] is not
        written) and h before the projection. Backward: every gradient. Copies, because some results alias
        buffers that replaying the launches overwrites (the backward's carries).
        """
        from fusedrnn import calls

        with self._context(cfg), calls.recording(run=launch) as log:
            if self.problem.kernel.endswith("_fwd"):
                y, h_n, c_n, saved, cs, hr = self._forward()
                out = (y, h_n, c_n, saved, cs[1:] if cs.numel() else cs, hr)
            else:
                out = self._backward()
            out = tuple(t.clone() for t in out)
        if not log:
            raise RuntimeError(f"the launcher made no kernel launch for {self.problem}")
        return out, log

    def replay_fn(self, launches):
        """A function that re-runs exactly the recorded launches (``fusedrnn.calls.Launches``; their arguments
        carry the precision they were recorded in)."""
        def fn():
            launches.replay()
        fn.launches = launches
        return fn
