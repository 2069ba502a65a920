"""The autotune cache files on the CPU: lookup order (user, shipped, heuristic), lazy reads, corrupt files and other
versions (warned once, ignored), unknown variants (kept), missing folders, atomic concurrent writes."""

from __future__ import annotations

import json
import multiprocessing
import os
import textwrap
import warnings

import pytest
import torch

from fusedrnn import dispatch
from fusedrnn.autotune import cache, runtime, spaces
from fusedrnn.autotune.cache import CacheWarning
from fusedrnn.autotune.spaces import KernelConfig

from _autotune import CPU, cpu_key, entry, isolated, write_doc  # noqa: F401  (isolated: autouse fixture)


def test_lookup_order_user_then_shipped_then_heuristic(tmp_path):
    a, b, c = cpu_key(H=32), cpu_key(H=48), cpu_key(H=64)
    user_cfg, shipped_a, shipped_b = KernelConfig(1, 8, 8, 1, 1), KernelConfig(2, 8, 8, 1, 1), KernelConfig(4, 16, 8, 1, 1)
    write_doc(tmp_path / "cache" / cache.FILE_NAME, {str(a): entry(user_cfg)})
    write_doc(tmp_path / "tables" / "gpu.json", {str(a): entry(shipped_a), str(b): entry(shipped_b)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runtime.lookup("step_fwd", "lstm", torch.float32, CPU, 32, 32, 4) == (user_cfg, "user")
        assert runtime.lookup("step_fwd", "lstm", torch.float32, CPU, 48, 32, 4) == (shipped_b, "shipped")
        cfg, source = runtime.lookup("step_fwd", "lstm", torch.float32, CPU, 64, 32, 4)
    assert source == "heuristic" and cfg == spaces.default_kernel_config("cpu", 64, 32, 4, 4)
    assert str(c) not in runtime.store().user_entries()
    # what the launcher asks for (the one place that decides) is the same lookup
    assert dispatch.config("step_fwd", "lstm", 32, 32, 4, torch.float32, CPU) == user_cfg


def test_files_are_read_once_and_lazily(tmp_path, monkeypatch):
    write_doc(tmp_path / "cache" / cache.FILE_NAME, {str(cpu_key()): entry(KernelConfig(1, 8, 8, 1, 1))})
    reads = []
    real = cache.read_entries
    monkeypatch.setattr(cache, "read_entries", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    runtime.reset(tables_dir=tmp_path / "tables")
    assert reads == []  # nothing read before the first lookup
    for H in (32, 32, 48, 64):
        runtime.kernel_config("step_fwd", "lstm", torch.float32, CPU, H, 32, 4)
    (tmp_path / "cache" / cache.FILE_NAME).write_text("changed")
    runtime.kernel_config("step_fwd", "lstm", torch.float32, CPU, 96, 32, 4)
    assert reads == [tmp_path / "cache" / cache.FILE_NAME]  # once, and no table file exists


CORRUPT = ["{not json", "[]", json.dumps({"format": "other", "version": 1, "entries": {}}),
           json.dumps({"format": cache.CACHE_FORMAT, "version": cache.CACHE_VERSION, "entries": []}),
           json.dumps({"format": cache.CACHE_FORMAT, "version": cache.CACHE_VERSION,
                       "entries": {"bad key": {"config": {}}}}),
           json.dumps({"format": cache.CACHE_FORMAT, "version": cache.CACHE_VERSION,
                       "entries": {"cpu-interpreter|triton-3.9|step_fwd|lstm|float32|H32|K32|I0|B16":
                                   {"config": {"BLOCK_B": "sixteen"}}}}),
           b"\xff\xfe\x00garbage"]


@pytest.mark.parametrize("content", CORRUPT, ids=range(len(CORRUPT)))
def test_corrupt_cache_warns_once_and_is_ignored(tmp_path, content):
    path = tmp_path / "cache" / cache.FILE_NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.warns(CacheWarning, match="corrupt|cannot read") as got:
        cfg, source = runtime.lookup("step_fwd", "lstm", torch.float32, CPU, 32, 32, 4)
    assert len(got) == 1 and str(path) in str(got[0].message)
    assert source == "heuristic"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        runtime.lookup("step_bwd", "lstm", torch.float32, CPU, 32, 128, 4)
        runtime.record({str(cpu_key()): entry(KernelConfig(2, 8, 8, 1, 1))})  # a write replaces the corrupt file
    assert json.loads(path.read_text())["entries"].keys() == {str(cpu_key())}


def test_other_version_warns_and_is_ignored(tmp_path):
    write_doc(tmp_path / "cache" / cache.FILE_NAME, {str(cpu_key()): entry(KernelConfig(1, 8, 8, 1, 1))}, version=999)
    write_doc(tmp_path / "tables" / "t.json", {str(cpu_key()): entry(KernelConfig(2, 8, 8, 1, 1))}, version=0)
    with pytest.warns(CacheWarning, match="another fusedrnn version") as got:
        assert runtime.lookup("step_fwd", "lstm", torch.float32, CPU, 32, 32, 4)[1] == "heuristic"
    assert len(got) == 2  # the user cache and the table, one warning each
    assert "autotune-v1.json" == cache.FILE_NAME  # the version is also in the file name


def test_unknown_variant_is_skipped_and_kept(tmp_path):
    path = tmp_path / "cache" / cache.FILE_NAME
    future = KernelConfig(16, 16, 32, 4, 1, variant="persistent-2030")
    write_doc(path, {str(cpu_key()): entry(future)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runtime.lookup("step_fwd", "lstm", torch.float32, CPU, 32, 32, 4)[1] == "heuristic"
    runtime.record({str(cpu_key(H=48)): entry(KernelConfig(1, 8, 8, 1, 1))})
    assert str(cpu_key()) in json.loads(path.read_text())["entries"]  # a newer fusedrnn's entry survives


def test_missing_files_and_directories_are_fine(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runtime.lookup("step_fwd", "gru", torch.float16, CPU, 32, 32, 4)[1] == "heuristic"
    assert not (tmp_path / "cache").exists()  # a lookup never writes
    assert cache.Store(tables_dir=cache.SHIPPED_TABLES_DIR).lookup("no such key") is None


_WRITER = textwrap.dedent("""
    import importlib.util, sys, time
    from pathlib import Path
    # the autotune package by path, as bench/resources.py --src loads it: no torch to import, a fast start
    spec = importlib.util.spec_from_file_location("fr_autotune", {folder!r} + "/__init__.py",
                                                  submodule_search_locations=[{folder!r}])
    sys.modules["fr_autotune"] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from fr_autotune import cache
    path, go = Path({path!r}), Path({go!r})
    while not go.exists():
        time.sleep(0.005)
    for i in range({n}):
        key = f"gpu-{worker}|triton-3.9|step_fwd|lstm|float16|H{{16 * (i + 1)}}|K16|I0|B16"
        cache.merge_write(path, {{key: {{"config": {{"BLOCK_B": 16, "BLOCK_H": 16, "BLOCK_K": 16, "num_warps": 4,
                                                  "num_stages": {worker} % 3 + 1, "variant": "step"}}}}}})
""")


def test_concurrent_writers_keep_every_entry(tmp_path):
    """Writer processes (spawned) add different keys to one cache file at the same time: the file stays valid
    JSON and holds every key (merge under the lock, write to a temporary file, os.replace)."""
    path, go, n, workers = tmp_path / "shared" / cache.FILE_NAME, tmp_path / "go", 25, 3
    ctx = multiprocessing.get_context("spawn")
    folder = os.path.dirname(cache.__file__)
    procs = [ctx.Process(target=exec, args=(_WRITER.format(folder=folder, path=str(path), go=str(go), n=n, worker=w),))
             for w in range(workers)]
    for p in procs:
        p.start()
    go.touch()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * workers
    doc = json.loads(path.read_text())
    assert doc["version"] == cache.CACHE_VERSION
    assert len(doc["entries"]) == workers * n
    assert {k.split("|")[0] for k in doc["entries"]} == {f"gpu-{w}" for w in range(workers)}
    assert not [f for f in path.parent.iterdir() if f.suffix == ".tmp"]  # no temporary file left behind
