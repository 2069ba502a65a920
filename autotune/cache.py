"""Tuned configurations on disk: the user cache and the tables shipped in the package.

Format (JSON, one file per cache, every GPU and Triton version in it; the key says which is which)::

    {"format": "fusedrnn-autotune", "version": 1,
     "entries": {"<key>": {"config": {"BLOCK_B": 16, "BLOCK_H": 32, "BLOCK_K": 64, "num_warps": 4,
                                      "num_stages": 2, "variant": "step"},
                           "us": 5.1, "heuristic_us": 6.3, "gain": 1.24, ...}}}

``<key>`` is ``str(fusedrnn.autotune.keys.Key)``; besides "config", an entry holds what the tuner measured
(times per step in microseconds, the gain over the heuristic, candidate counts, versions, date).

- User cache: ``$FUSEDRNN_CACHE_DIR/autotune-v1.json`` if the variable is set, else the user cache directory
  (``$XDG_CACHE_HOME/fusedrnn`` or ``~/.cache/fusedrnn``; ``~/Library/Caches/fusedrnn`` on macOS;
  ``%LOCALAPPDATA%\\fusedrnn\\Cache`` on Windows). The version is in the file name, so two fusedrnn versions that
  share a directory each keep their own file.
- Shipped tables: every ``*.json`` in ``tables/`` next to this file (package data), measured by
  ``python -m fusedrnn.autotune --output`` on the GPU they name.

Files are read once per process, lazily, at the first lookup; never at import. A file that is corrupt or of
another format version gives one warning (``CacheWarning``) and is ignored; an entry whose variant this fusedrnn
does not know (written by a newer one) is skipped quietly. Writes merge under a file lock (``fcntl.flock`` on
POSIX, ``msvcrt.locking`` on Windows) into a temporary file in the same directory that then replaces the cache
with ``os.replace``: readers see the old or the new file, never half of one, and concurrent writers all keep
their entries.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from .keys import Key
from .spaces import VARIANTS, KernelConfig

CACHE_FORMAT = "fusedrnn-autotune"
#: Bump when the key or the meaning of a config changes: files of another version are ignored.
CACHE_VERSION = 1
FILE_NAME = f"autotune-v{CACHE_VERSION}.json"
ENV_CACHE_DIR = "FUSEDRNN_CACHE_DIR"
SHIPPED_TABLES_DIR = Path(__file__).resolve().parent / "tables"


class CacheWarning(UserWarning):
    """A cache file or shipped table could not be used; the heuristic (or another table) is used instead."""


_warned: set = set()


def _warn_once(path: Path, message: str) -> None:
    tag = str(path)
    if tag in _warned:
        return
    _warned.add(tag)
    warnings.warn(message, CacheWarning, stacklevel=3)


def user_cache_dir() -> Path:
    """Directory of the user cache: ``$FUSEDRNN_CACHE_DIR``, else the platform's user cache directory."""
    env = os.environ.get(ENV_CACHE_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "fusedrnn" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "fusedrnn"
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "fusedrnn"


def user_cache_file() -> Path:
    return user_cache_dir() / FILE_NAME


# ---- reading -----------------------------------------------------------------------------------------------


class CacheError(ValueError):
    """A cache file is not a valid fusedrnn autotune file."""


class CacheVersionError(CacheError):
    """A cache file of another format version."""

    def __init__(self, version):
        super().__init__(f"format version {version!r}, this fusedrnn reads version {CACHE_VERSION}")
        self.version = version


def _check_document(doc) -> dict:
    """The raw entries of a parsed cache document; CacheError (corrupt) or CacheVersionError otherwise."""
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT:
        raise CacheError(f"not a fusedrnn autotune file (no \"format\": \"{CACHE_FORMAT}\")")
    if doc.get("version") != CACHE_VERSION:
        raise CacheVersionError(doc.get("version"))
    entries = doc.get("entries")
    if not isinstance(entries, dict):
        raise CacheError("\"entries\" is not an object")
    for key, entry in entries.items():
        try:
            Key.parse(key)
            if not isinstance(entry, dict):
                raise ValueError("entry is not an object")
            KernelConfig.from_dict(entry.get("config"))
        except (TypeError, ValueError) as e:
            raise CacheError(f"entry {key!r}: {e}") from None
    return entries


def read_entries(path: Path, what: str = "autotune cache") -> dict:
    """Raw entries of the cache file at ``path``: {} if it does not exist; {} with one CacheWarning per process if
    it cannot be read, is corrupt, or is of another version. Never raises."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        _warn_once(path, f"fusedrnn: ignoring the {what} {path}: cannot read it ({e}). The default heuristic "
                         f"configurations are used instead.")
        return {}
    try:
        return _check_document(json.loads(text))
    except CacheVersionError as e:
        _warn_once(path, f"fusedrnn: ignoring the {what} {path}: it was written by another fusedrnn version ({e}). "
                         f"The default heuristic configurations are used instead; re-run `python -m "
                         f"fusedrnn.autotune` to tune for this version.")
    except (CacheError, ValueError, RecursionError) as e:  # json.JSONDecodeError is a ValueError
        _warn_once(path, f"fusedrnn: ignoring the {what} {path}: it is corrupt ({e}). The default heuristic "
                         f"configurations are used instead; delete the file or re-run `python -m "
                         f"fusedrnn.autotune` to replace it.")
    return {}


def configs_of(entries: dict) -> dict:
    """{key string: KernelConfig} of raw entries, without those whose variant this fusedrnn does not know."""
    out = {}
    for key, entry in entries.items():
        cfg = KernelConfig.from_dict(entry["config"])
        if cfg.variant in VARIANTS:
            out[key] = cfg
    return out


# ---- writing -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 120.0):
    """Exclusive lock on ``<path>.lock`` for the duration of the block (blocks other writers, not readers)."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl
        except ImportError:  # Windows
            fcntl = None
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        else:
            import msvcrt

            deadline = time.monotonic() + timeout
            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            try:
                yield
            finally:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    finally:
        os.close(fd)


def _atomic_write_json(path: Path, doc: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def merge_write(path: Path, new_entries: dict, what: str = "autotune cache") -> dict:
    """Add ``new_entries`` (key string -> raw entry) to the cache file at ``path`` and return all its entries.

    Under the file lock: read the current file (a corrupt one or one of another version is warned about and
    replaced), merge, write a temporary file in the same directory, ``os.replace`` it over the cache.
    """
    for key, entry in new_entries.items():  # refuse to write what could not be read back
        Key.parse(key)
        KernelConfig.from_dict(entry["config"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        entries = dict(read_entries(path, what))
        entries.update(new_entries)
        _atomic_write_json(path, {"format": CACHE_FORMAT, "version": CACHE_VERSION, "entries": entries})
    return entries


# ---- the store: user cache, then shipped tables ------------------------------------------------------------


class Store:
    """Tuned configurations of the user cache file and the shipped tables, each read at most once, lazily."""

    def __init__(self, user_file: Path | None = None, tables_dir: Path | None = None):
        self._user_file = Path(user_file) if user_file is not None else None
        self.tables_dir = Path(tables_dir) if tables_dir is not None else SHIPPED_TABLES_DIR
        self._user: dict | None = None  # key string -> KernelConfig
        self._user_raw: dict | None = None
        self._shipped: dict | None = None
        self._shipped_raw: dict | None = None

    @property
    def user_file(self) -> Path:
        if self._user_file is None:  # resolved (the environment read) at first use, not at construction
            self._user_file = user_cache_file()
        return self._user_file

    def _load_user(self) -> None:
        self._user_raw = read_entries(self.user_file)
        self._user = configs_of(self._user_raw)

    def _load_shipped(self) -> None:
        raw: dict = {}
        try:
            files = sorted(self.tables_dir.glob("*.json"))
        except OSError:
            files = []
        for f in files:
            for key, entry in read_entries(f, "shipped autotune table").items():
                raw.setdefault(key, entry)
        self._shipped_raw = raw
        self._shipped = configs_of(raw)

    def user_entries(self) -> dict:
        if self._user is None:
            self._load_user()
        return self._user_raw

    def shipped_entries(self) -> dict:
        if self._shipped is None:
            self._load_shipped()
        return self._shipped_raw

    def lookup(self, key: str):
        """(KernelConfig, "user" | "shipped") for a key string, or None: the user cache first, then the tables."""
        if self._user is None:
            self._load_user()
        cfg = self._user.get(key)
        if cfg is not None:
            return cfg, "user"
        if self._shipped is None:
            self._load_shipped()
        cfg = self._shipped.get(key)
        if cfg is not None:
            return cfg, "shipped"
        return None

    def record(self, new_entries: dict, path: Path | None = None) -> dict:
        """Merge entries into the user cache file (or ``path``) and into what this process looks up."""
        target = Path(path) if path is not None else self.user_file
        entries = merge_write(target, new_entries)
        if target == self.user_file:
            self._user_raw = entries
            self._user = configs_of(entries)
        return entries

    def remember(self, key: str, config) -> None:
        """Look ``key`` up as ``config`` (a KernelConfig) in this process only: for a tuned entry whose write to
        the user cache failed."""
        if self._user is None:
            self._load_user()
        self._user[key] = config
