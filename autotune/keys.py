"""Cache keys: what the best configuration of a kernel depends on.

A key is (GPU name, Triton version, kernel, cell, dtype, H, K, I, batch bucket). Never the sequence length:
the recurrence launches the same kernel T times, so T changes nothing about the best tile. The batch enters only
through a bucket, so no batch size is tuned twice.

- GPU: ``torch.cuda.get_device_name`` (e.g. "NVIDIA H100 80GB HBM3"), "cpu-interpreter" off the GPU.
- Triton: ``major.minor`` of ``triton.__version__``: patch releases do not change code generation.
- kernel: the launcher kernel: "step_fwd", "step_bwd" (one launch per step) or "tiled_fwd", "tiled_bwd" (the
  batch-tiled persistent kernel); a config's ``variant`` names its implementation.
- dtype: the tensor dtype's name; fp32 on a GPU with TF32 matmuls allowed is "float32-tf32" (another kernel).
- H: hidden size. K: width of the recurrent matmul (P = proj_size or H forward, G*H backward).
- I: the input width reduced *inside* the kernel: the layer's input size when the launcher fuses the input
  projection into the step (a single step: decode, Cells), else 0. When the input projection is one GEMM over all
  steps before the recurrence (T > 1), the step kernel never sees the input size, and keying on it would only
  split identical entries.
- B: the batch bucket: the power of two at or above the batch, clamped to [16, 256]. On a GPU every batch tile
  is at least 16 rows (tl.dot's minimum), so batches 1..16 launch the same grid; above 256 the grid only grows
  in the batch direction and the same tile stays best.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

BUCKET_MIN = 16
BUCKET_MAX = 256
SEP = "|"
_DTYPE_NAMES = {"torch.float16": "float16", "torch.bfloat16": "bfloat16", "torch.float32": "float32",
                "torch.float64": "float64"}
_gpu_names: dict = {}


def batch_bucket(batch: int, low: int = BUCKET_MIN, high: int | None = BUCKET_MAX) -> int:
    """The power of two at or above ``batch``, clamped to [low, high] (``high`` None: no cap). With the defaults,
    the batch bucket of a key; the heuristic sizes its batch tile with it too (``low=1, high=64``)."""
    b = 1 << max(int(batch) - 1, 0).bit_length()
    b = max(b, low)
    return b if high is None else min(b, high)


def triton_version() -> str:
    import triton

    return ".".join(triton.__version__.split("+")[0].split(".")[:2])


def gpu_name(device) -> str:
    """Name of the device's GPU (cached per device), or "cpu-interpreter" for anything that is not CUDA."""
    if device.type != "cuda":
        return "cpu-interpreter"
    name = _gpu_names.get(device.index)
    if name is None:
        import torch

        name = torch.cuda.get_device_name(device.index if device.index is not None else torch.cuda.current_device())
        _gpu_names[device.index] = name
    return name


def dtype_name(dtype, device_type: str) -> str:
    """Key name of a torch dtype; fp32 on CUDA with TF32 matmuls allowed is "float32-tf32"."""
    name = _DTYPE_NAMES.get(str(dtype))
    if name is None:
        raise ValueError(f"fusedrnn.autotune: unsupported dtype {dtype}")
    if name == "float32" and device_type == "cuda":
        from fusedrnn import settings

        if settings.tf32():
            return "float32-tf32"
    return name


@dataclass(frozen=True)
class Key:
    gpu: str
    triton: str
    kernel: str
    cell: str
    dtype: str
    H: int
    K: int
    I: int  # noqa: E741 - the legend's name
    B: int  # the batch bucket

    def __str__(self) -> str:
        return SEP.join([self.gpu, f"triton-{self.triton}", self.kernel, self.cell, self.dtype, f"H{self.H}",
                         f"K{self.K}", f"I{self.I}", f"B{self.B}"])

    @classmethod
    def parse(cls, text: str) -> "Key":
        """Inverse of ``str(key)``; raises ValueError on anything else."""
        parts = text.split(SEP)
        if len(parts) != 9 or not parts[1].startswith("triton-"):
            raise ValueError(f"not a fusedrnn autotune key: {text!r}")
        gpu, tri, kernel, cell, dtype, *nums = parts
        values = []
        for prefix, part in zip("HKIB", nums):
            if not part.startswith(prefix) or not part[1:].isdigit():
                raise ValueError(f"not a fusedrnn autotune key: {text!r}")
            values.append(int(part[1:]))
        return cls(gpu, tri[len("triton-"):], kernel, cell, dtype, *values)

    def fields(self) -> tuple:
        return astuple(self)


def make_key(kernel: str, cell: str, dtype, device, H: int, K: int, B: int, I: int = 0) -> Key:  # noqa: E741
    """The key of a launch: ``dtype`` a torch dtype, ``device`` a torch device, B the batch (bucketed here)."""
    return Key(gpu_name(device), triton_version(), kernel, cell, dtype_name(dtype, device.type), int(H), int(K),
               int(I), batch_bucket(B))
