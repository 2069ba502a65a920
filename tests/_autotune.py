"""What the autotune tests share: an isolated cache per test (``isolated``, autouse where imported) and the
helpers that build keys and cache documents."""

from __future__ import annotations

import json

import pytest
import torch

from fusedrnn.autotune import cache, keys, runtime
from fusedrnn.autotune.spaces import KernelConfig

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own empty user cache and shipped-table directory, policy unset, nothing memoized."""
    monkeypatch.delenv("FUSEDRNN_AUTOTUNE", raising=False)
    monkeypatch.setenv("FUSEDRNN_CACHE_DIR", str(tmp_path / "cache"))
    runtime.reset(tables_dir=tmp_path / "tables")
    yield
    runtime.reset()


def cpu_key(kernel="step_fwd", cell="lstm", H=32, K=32, B=4, I=0, dtype=torch.float32):  # noqa: E741
    return keys.make_key(kernel, cell, dtype, CPU, H, K, B, I)


def entry(cfg: KernelConfig, **extra) -> dict:
    return dict(config=cfg.to_dict(), **extra)


def write_doc(path, entries, version=cache.CACHE_VERSION):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": cache.CACHE_FORMAT, "version": version, "entries": entries}))
