"""Training concerns: mixed precision (torch.autocast), numerical robustness (long sequences, saturating and NaN
inputs), determinism, and scale-out (DistributedDataParallel, FSDP2's fully_shard) on CPU under the interpreter.

Sizes are tiny on purpose: under the Triton interpreter every launch costs ~50 ms whatever its size."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from _helpers import TOL, kernels_ran, make_pair, torch_cpu_lstm_bf16_runs

CPU = torch.device("cpu")


def _dtypes(out):
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        out = out.data
    if isinstance(out, (tuple, list)):
        return tuple(_dtypes(o) for o in out)
    return out.dtype


def _flat(out):
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        return [out.data]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    return [out]


# ---- 1. mixed precision -----------------------------------------------------------------------------------

# (name, torch.nn class, kwargs, kind): "seq" modules take [T, B, I], cells [B, I].
AMP_MODULES = {
    "lstm": ("LSTM", {}, "seq"),
    "lstm_proj": ("LSTM", {"proj_size": 3}, "seq"),
    "lstm_packed": ("LSTM", {}, "packed"),
    "gru": ("GRU", {}, "seq"),
    "rnn": ("RNN", {}, "seq"),
    "lstm_cell": ("LSTMCell", {}, "cell"),
    "gru_cell": ("GRUCell", {}, "cell"),
    "rnn_cell": ("RNNCell", {}, "cell"),
}
# (input dtype, state dtype or None for torch's default zeros)
AMP_CASES = [(torch.float32, None), (torch.float32, torch.float32), (torch.float32, torch.bfloat16),
             (torch.bfloat16, torch.float32)]


def _amp_call(module, name, x, state_dtype):
    cls, kwargs, kind = AMP_MODULES[name]
    H, P = 5, kwargs.get("proj_size") or 5
    batch = x.shape[0] if kind == "cell" else x.shape[1]
    lead = () if kind == "cell" else (1,)
    hx = None
    if state_dtype is not None:
        if cls.startswith("LSTM"):
            hx = (torch.full((*lead, batch, P), 0.1, dtype=state_dtype),
                  torch.full((*lead, batch, H), 0.1, dtype=state_dtype))
        else:
            hx = torch.full((*lead, batch, H), 0.1, dtype=state_dtype)
    if kind == "packed":
        x = pack_padded_sequence(x, [x.shape[0], x.shape[0] - 1])
    return module(x, hx)


@pytest.mark.cpu_only("torch's CPU autocast policy")
@pytest.mark.parametrize("x_dtype,state_dtype", AMP_CASES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("name", list(AMP_MODULES))
def test_autocast_cpu_bf16_follows_torch(name, x_dtype, state_dtype):
    """Under torch.autocast("cpu", bfloat16) every output and state comes back in the dtype torch.nn's does
    (measured against torch, not hard-coded), values agree to bf16 tolerance, parameter gradients are fp32."""
    if (name == "lstm" and x_dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        pytest.skip("torch's CPU LSTM takes its oneDNN path for bf16 input only where the CPU supports bf16")
    if name == "lstm" and not torch_cpu_lstm_bf16_runs():
        pytest.skip("torch's own CPU LSTM (the oracle) cannot run bf16 autocast on this CPU")
    cls, kwargs, kind = AMP_MODULES[name]
    torch.manual_seed(0)
    ref = getattr(torch.nn, cls)(4, 5, **kwargs)
    fused = getattr(fusedrnn, cls)(4, 5, **kwargs)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(*((2, 4) if kind == "cell" else (3, 2, 4))).to(x_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = _amp_call(ref, name, x, state_dtype)
        with kernels_ran("step_fwd"):
            got = _amp_call(fused, name, x, state_dtype)
    assert _dtypes(got) == _dtypes(want)
    for g, w in zip(_flat(got), _flat(want)):
        torch.testing.assert_close(g.float(), w.float(), **TOL[torch.bfloat16])
    sum(t.float().sum() for t in _flat(got)).backward()
    sum(t.float().sum() for t in _flat(want)).backward()
    for (n, p), q in zip(fused.named_parameters(), ref.parameters()):
        assert p.grad.dtype == torch.float32, n
        torch.testing.assert_close(p.grad, q.grad, atol=0.1, rtol=0.05, msg=n)


@pytest.mark.cpu_only("torch's CPU autocast policy")
def test_autocast_functional_and_disabled():
    """The functional API gets the policy too; outside autocast, or with it disabled, nothing is cast."""
    torch.manual_seed(0)
    ref, fused = make_pair("gru", 4, 5)
    weights = [getattr(fused, n) for n in fused._flat_weights_names]
    x = torch.randn(3, 2, 4)
    with kernels_ran("step_fwd"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, h = fusedrnn.functional.fused_gru(x, None, weights)
            assert out.dtype == h.dtype == torch.float32  # GRU on CPU: the fp32 state keeps h in fp32, as torch
            with torch.autocast("cpu", enabled=False):
                out32, _ = fusedrnn.functional.fused_gru(x, None, weights)
        assert out32.dtype == torch.float32
        out, _ = fusedrnn.functional.fused_gru(x, None, weights)
        assert out.dtype == torch.float32


# ---- 2. numerical robustness ------------------------------------------------------------------------------

LONG_T = 10_000  # one launch of the batch-tiled persistent kernel; ~35 ms a step under the interpreter (~6 min)


@pytest.mark.slow
def test_long_sequence_bf16_does_not_drift():
    """bf16 LSTM over LONG_T steps stays as close to an fp32 torch.nn run (same rounded weights and input) at
    the end as at the start: the cell state is kept in fp32, h is rounded once per step, errors do not grow.
    (The input requires grad: the training forward, with its input projection as one GEMM, is the faster
    one under the interpreter.)"""
    torch.manual_seed(0)
    ref = torch.nn.LSTM(4, 8)
    fused = fusedrnn.LSTM(4, 8, dtype=torch.bfloat16)
    fused.load_state_dict({k: v.to(torch.bfloat16) for k, v in ref.state_dict().items()})
    ref.load_state_dict({k: v.float() for k, v in fused.state_dict().items()})
    x = torch.randn(LONG_T, 1, 4).to(torch.bfloat16)
    with torch.no_grad():
        want, (h_want, c_want) = ref(x.float())
    with kernels_ran("tiled_fwd"):
        got, (h_got, c_got) = fused(x.requires_grad_())
    got, c_got = got.detach(), c_got.detach()
    err = (got.float() - want).abs().amax(dim=(1, 2))
    window = LONG_T // 10
    assert err.max() < 3e-2, f"max error {err.max():.3g}"
    assert err[-window:].max() <= max(2 * err[:window].max(), 1e-2), (err[:window].max(), err[-window:].max())
    torch.testing.assert_close(c_got.float(), c_want, atol=5e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_saturating_inputs(cell, dtype):
    """|x| up to 1e4 drive every gate into saturation (exp overflows to inf in tanh/sigmoid): outputs and
    gradients are finite wherever torch.nn's are, and outputs match."""
    torch.manual_seed(0)
    ref, fused = make_pair(cell, 4, 6)
    fused = fused.to(dtype)
    x = (torch.rand(3, 2, 4) * 2 - 1) * 1e4
    x[0, 0, 0], x[1, 1, 1] = 1e4, -1e4
    x = x.to(dtype)
    xr, xf = x.float().clone().requires_grad_(), x.clone().requires_grad_()
    want, _ = ref(xr)
    with kernels_ran("step_fwd", "step_bwd"):
        got, _ = fused(xf)
        got.float().sum().backward()
    want.sum().backward()
    assert torch.isfinite(want).all() and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), want, **TOL[dtype])
    for g, w in [(xf.grad, xr.grad)] + [(p.grad, q.grad) for p, q in zip(fused.parameters(), ref.parameters())]:
        assert torch.equal(torch.isfinite(g.float()), torch.isfinite(w))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_nan_input_propagates_as_in_torch(cell):
    torch.manual_seed(0)
    ref, fused = make_pair(cell, 4, 6)
    x = torch.randn(4, 3, 4)
    x[1, 1, 2] = float("nan")
    want, hw = ref(x)
    with kernels_ran("step_fwd"):
        got, hg = fused(x)
    assert torch.isnan(want).any()
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    hw, hg = (hw[0], hg[0]) if cell == "lstm" else (hw, hg)
    assert torch.equal(torch.isnan(hg), torch.isnan(hw))
    finite = ~torch.isnan(want)
    torch.testing.assert_close(got[finite], want[finite], **TOL[torch.float32])


# ---- 3. determinism ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
def test_bitwise_deterministic_with_dropout(cls):
    """Two runs under the same seed give bitwise-identical outputs, states and gradients, dropout included."""
    torch.manual_seed(0)
    model = getattr(fusedrnn, cls)(4, 5, num_layers=2, dropout=0.5).train()
    x = torch.randn(3, 2, 4)

    def run():
        model.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        torch.manual_seed(123)
        with kernels_ran("step_fwd", "step_bwd"):
            out, state = model(xi)
            (out.pow(2).sum() + sum(s.sum() for s in _flat(state))).backward()
        return [out, *_flat(state), xi.grad] + [p.grad for p in model.parameters()]

    first, second = run(), run()
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    torch.manual_seed(124)  # the seed matters: another seed drops other units
    with fusedrnn.use_backend("triton"):
        other, _ = model(x)
    assert not torch.equal(other, first[0])


# ---- 4. scale-out -----------------------------------------------------------------------------------------

_COMMON = r'''
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = fusedrnn.LSTM(4, 5, num_layers=2, bidirectional=True)
        self.cell = fusedrnn.GRUCell(10, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.cell(out[-1]).pow(2).mean() + out.pow(2).mean()

def model_and_data():
    torch.manual_seed(0)
    return Net(), torch.randn(2, 4, 4)

def step(model, x):
    return model(x)

def train(model, x):
    """Forward, backward, one SGD step, forward again: the second forward reads the updated weights."""
    with fusedrnn.use_backend("triton"):
        loss = step(model, x)
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        torch.optim.SGD(model.parameters(), lr=0.5).step()
        with torch.no_grad():
            loss2 = step(model, x)
    return grads, loss2
'''

_WORKER = r'''
import os, sys
os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: it decides at @jit time
import torch, torch.distributed as dist, torch.multiprocessing as mp
import fusedrnn
''' + _COMMON + r'''
def worker(rank, world, port, outdir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.nn.parallel import DistributedDataParallel
    from torch.distributed.fsdp import fully_shard
    for mode in ("ddp", "fsdp2"):
        model, x = model_and_data()
        x = x[:, rank * 2:(rank + 1) * 2]  # each rank its half of the batch
        if mode == "ddp":
            grads, loss2 = train(DistributedDataParallel(model), x)
            grads = {n.removeprefix("module."): g for n, g in grads.items()}
        else:
            fully_shard(model.rnn)
            fully_shard(model)
            assert all(type(p).__name__ == "DTensor" for p in model.parameters())
            grads, loss2 = train(model, x)
            grads = {n: g.full_tensor() for n, g in grads.items()}
        dist.all_reduce(loss2)
        torch.save(dict(grads=grads, loss2=loss2 / world, launches=dict(fusedrnn.launch.launch_counts)),
                   os.path.join(outdir, f"{mode}{rank}.pt"))
    dist.destroy_process_group()

if __name__ == "__main__":
    outdir, port = sys.argv[1], int(sys.argv[2])
    mp.spawn(worker, args=(2, port, outdir), nprocs=2)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reference(script: str):
    """Single-process training of the same model on the whole batch, in this process."""
    ns: dict = {"torch": torch, "fusedrnn": fusedrnn}
    exec(compile(script, "common", "exec"), ns)
    model, x = ns["model_and_data"]()
    grads, loss2 = ns["train"](model, x)
    return grads, loss2


@pytest.mark.cpu_only("gloo processes on CPU tensors under the interpreter")
def test_distributed_matches_single_process(tmp_path):
    """2 processes on gloo: DistributedDataParallel and FSDP2 (fully_shard, parameters become DTensors) give the
    gradients of single-process training on the whole batch, and the forward after an optimizer step reads the
    updated (replicated / re-sharded) weights: fusedrnn's modules read each parameter by name on every call,
    never a cached ``_flat_weights`` list. One pair of processes runs both (process start-up dominates)."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    from torch.distributed import fsdp
    if not hasattr(fsdp, "fully_shard"):
        pytest.skip("this torch has no torch.distributed.fsdp.fully_shard (FSDP2)")
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(_free_port())], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ref_grads, ref_loss2 = _reference(_COMMON)
    for mode in ("ddp", "fsdp2"):
        for rank in range(2):
            res = torch.load(tmp_path / f"{mode}{rank}.pt")
            assert res["launches"].get("step_fwd", 0) > 0 and res["launches"].get("step_bwd", 0) > 0
            assert res["grads"].keys() == ref_grads.keys()
            for n, g in res["grads"].items():
                torch.testing.assert_close(g, ref_grads[n], atol=1e-6, rtol=1e-5, msg=f"rank {rank} {mode} {n}")
            torch.testing.assert_close(res["loss2"], ref_loss2, atol=1e-6, rtol=1e-5)
