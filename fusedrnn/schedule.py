"""The time layout of one layer and direction: which rows run at each step, where they lie, and where each step's
state comes from.

Legend as in ``fusedrnn.launch``: T time, B batch, N packed rows. A sequence is dense (``[T, B, .]``) or packed
(``[N, .]``, rows of step t at offsets[t], as in a PackedSequence). Steps count in processing order.
"""

from __future__ import annotations

import torch


def _capturing(device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()



class Schedule:
    """Time layout of one direction: which rows run at each step, and where they lie.

    Dense (``batch_sizes`` None): T steps of B rows, tensors ``[T, B, w]``. Packed: ``batch_sizes[t]`` rows at
    step t (non-increasing, as in a PackedSequence), tensors ``[N, w]`` with the rows of step t at
    ``offsets[t]``. Row b of every step is sequence b. Reverse walks t = T-1 .. 0, so each packed sequence
    starts at its own last element.
    """

    def __init__(self, T: int, B: int, batch_sizes: list[int] | None, reverse: bool):
        self.T, self.B, self.reverse = T, B, reverse
        self.packed = batch_sizes is not None
        self.sizes = list(batch_sizes) if self.packed else [B] * T
        self.offsets = [0] * T
        for t in range(1, T):
            self.offsets[t] = self.offsets[t - 1] + self.sizes[t - 1]

    def time(self, step: int) -> int:
        return self.T - 1 - step if self.reverse else step

    def batch(self, step: int) -> int:
        """Rows that run at ``step`` (0 outside the sequence)."""
        return self.sizes[self.time(step)] if 0 <= step < self.T else 0

    def rows(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """[rows, w] view of the rows of ``x`` (dense [T, B, w] or packed [N, w]) at ``step``."""
        t = self.time(step)
        return x[self.offsets[t]:self.offsets[t] + self.sizes[t]] if self.packed else x[t]

    def alloc(self, width: int, dtype, device) -> torch.Tensor:
        shape = (self.offsets[-1] + self.sizes[-1], width) if self.packed else (self.T, self.B, width)
        return torch.empty(shape, dtype=dtype, device=device)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.packed else x.reshape(-1, x.shape[-1])

    def strides(self, x: torch.Tensor) -> tuple:
        """(time stride, row stride) of a sequence tensor as the persistent kernels address it: a dense step
        t starts at t * time stride, a packed one at offsets[t] * row stride (time stride 0)."""
        return (0, x.stride(0)) if self.packed else (x.stride(0), x.stride(1))

    def _table(self, values: list, device) -> torch.Tensor:
        """``values`` (the packed layout, host lists) as an int64 tensor on ``device``: the only host-to-device copy
        of a launch, made for packed input only. It cannot be captured in a CUDA graph (a graph would replay the
        copy from a host buffer freed after the call), so under capture it is refused with a clear error; dense
        input copies nothing from the host and never synchronizes, and captures."""
        if _capturing(device):
            raise RuntimeError("fusedrnn: packed input (a PackedSequence, or batch_sizes) cannot be captured in a "
                               "CUDA graph: its step layout is copied from the host at every call. Capture padded "
                               "(dense) input, or run packed input outside the graph.")
        return torch.tensor(values, dtype=torch.int64).to(device)

    def tables(self, device) -> tuple:
        """(sizes, offsets) as int64 device tensors for the persistent kernels (packed; else placeholders)."""
        if not self.packed:
            empty = torch.empty(1, dtype=torch.int64, device=device)
            return empty, empty
        both = self._table([self.sizes, self.offsets], device)
        return both[0], both[1]

    def _index(self, device):
        """Per sequence b: its last and first step (processing order); per row: the row holding h_{t-1}
        (an index into ``cat([flat(y), h0])``)."""
        sizes = self._table(self.sizes, device)
        lengths = (sizes[None, :] > torch.arange(self.B, device=device)[:, None]).sum(1)
        if self.reverse:
            last_step = torch.full_like(lengths, self.T - 1)
            first_step = self.T - lengths
        else:
            last_step, first_step = lengths - 1, torch.zeros_like(lengths)
        return last_step, first_step

    def per_sequence(self, x: torch.Tensor, which: str) -> torch.Tensor:
        """[B, w]: for every sequence, its row of ``x`` at its last (``which="last"``) or first step."""
        if not self.packed:
            return x[self.time(self.T - 1 if which == "last" else 0)]
        last_step, first_step = self._index(x.device)
        step = last_step if which == "last" else first_step
        t = self.T - 1 - step if self.reverse else step
        offsets = self._table(self.offsets, x.device)
        return x[offsets[t] + torch.arange(self.B, device=x.device)]

    def last_step(self, device) -> torch.Tensor:
        """[B] the step (processing order) at which each sequence ends."""
        if not self.packed:  # nothing of size T
            return torch.full((self.B, ), self.T - 1, dtype=torch.int64, device=device)
        return self._index(device)[0]

    def entering(self, reset: torch.Tensor) -> torch.Tensor:
        """The reset flags as this direction's kernels read them: uint8, in ``reset``'s layout ([T, B], or packed
        [N] aligned with the rows), 1 where the state *entering* that element is zero. ``reset`` marks where a
        segment starts (bool, the same layout). Forward that is the element itself; in reverse a segment is walked
        from its end, so the state entering t is zero where the next element, t+1, starts one (never at a
        sequence's last element, which starts from the initial state as without resets)."""
        flags = reset.to(torch.uint8).contiguous()  # the kernels index it densely (t * B + b)
        if not self.reverse:
            return flags
        if not self.packed:
            return torch.cat([flags[1:], flags.new_zeros((1, *flags.shape[1:]))])
        sizes = torch.tensor(self.sizes + [0])  # host tensors: the layout is host data; one copy to the device
        offsets = torch.tensor(self.offsets + [self.offsets[-1] + self.sizes[-1]])
        t = torch.repeat_interleave(torch.arange(self.T), sizes[:-1])
        b = torch.arange(t.numel()) - offsets[t]
        valid = b < sizes[t + 1]  # row b of step t enters from row b of step t+1, where that exists
        index = torch.where(valid, offsets[t + 1] + b, 0)
        both = self._table(torch.stack([index, valid.long()]).tolist(), reset.device)
        return torch.where(both[1].bool(), flags[both[0]], 0).to(torch.uint8)

    def previous_rows(self, y: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        """[N, P] (packed): h_{t-1} of every row, from the previous step's output or, for a sequence's first
        step, from h0."""
        device = y.device
        sizes = self._table(self.sizes, device)
        offsets = self._table(self.offsets, device)
        t = torch.repeat_interleave(torch.arange(self.T, device=device), sizes)
        b = torch.arange(t.numel(), device=device) - offsets[t]
        tp = t + 1 if self.reverse else t - 1
        valid = (tp >= 0) & (tp < self.T)
        valid &= b < sizes[tp.clamp(0, self.T - 1)]
        index = torch.where(valid, offsets[tp.clamp(0, self.T - 1)] + b, y.shape[0] + b)
        return torch.cat([y, h0])[index]


def sources(sched: Schedule, step: int, buf: torch.Tensor, init: torch.Tensor):
    """(tensor holding rows < split, tensor holding rows >= split, split, two_sources) for the state that
    ``step`` reads: rows that ran the previous step read ``buf`` (their last output), others ``init``."""
    b_prev, b_now = sched.batch(step - 1), sched.batch(step)
    if b_prev == 0:
        return init, init, 0, False
    if b_prev >= b_now:
        return buf, buf, b_now, False
    return buf, init, b_prev, True
