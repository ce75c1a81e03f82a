"""File helpers: atomic writes (temp file + rename) so an interrupted run never leaves a half-written
output, the lock that keeps two processes out of one output, and laborllm's cache folder."""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from laborllm.errors import UserError


def cache_dir() -> Path:
    """Where laborllm keeps what it can rebuild (converted GGUF weights, error tracebacks)."""
    return Path(os.environ.get("LABORLLM_CACHE", Path.home() / ".cache" / "laborllm"))


def atomic_write(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: give the file the mode the user's umask asks for
        os.replace(tmp, path)
    except OSError as e:  # a full disk or a size limit: name the file the user asked for, not our temp file
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def folder_mode(folder: Path) -> Path:
    """mkdtemp makes folders 0700 and some writers (safetensors) files 0600: give a folder we publish,
    and everything in it, the modes the user's umask asks for."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(root, f), 0o666 & ~mask)
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> Path:
    return atomic_write(path, lambda t: Path(t).write_text(text))


def write_json_atomic(path: Path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_log_probs(path: Path, events, lp: np.ndarray, model: str, normalization: str, extra: dict | None = None,
                    model_fingerprint: str = "") -> Path:
    """Per-event log-probabilities over all states (float32 list column) with the event keys, and
    the fingerprints of the events and of the model that scored them (a cache is reused for both only)."""
    ev = events.frame
    y = ev.target.to_numpy()
    table = pa.table({
        "person_id": ev.person_id.astype(str).to_numpy(), "year": ev.year.to_numpy(), "split": ev.split.to_numpy(),
        "target": np.array(events.states, dtype=object)[y], "target_id": y,
        "log_prob_target": lp[np.arange(len(y)), y],
        "log_probs": pa.FixedSizeListArray.from_arrays(pa.array(lp.astype(np.float32).ravel()), lp.shape[1]),
    })
    meta = {"model": model, "normalization": normalization, "states": json.dumps(events.states),
            "events_fingerprint": events.fingerprint(), "model_fingerprint": model_fingerprint,
            "extra": json.dumps(extra or {})}
    table = table.replace_schema_metadata({k: str(v) for k, v in meta.items()})
    return atomic_write(path, lambda t: pq.write_table(table, t, compression="zstd"))


def log_probs_meta(path: Path) -> dict:
    """What `write_log_probs` stored beside the matrix, read without the matrix."""
    return {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}


def read_log_probs(path: Path) -> tuple[np.ndarray, dict]:
    t = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in (t.schema.metadata or {}).items()}
    col = t.column("log_probs").combine_chunks()
    lp = col.values.to_numpy().reshape(len(t), -1).astype(np.float64)
    return lp, meta


def write_frame(path: Path, frame, key: dict) -> Path:
    """A table with the key of what produced it in the file's metadata (a cache is reused for that key only)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"laborllm_key": json.dumps(key, sort_keys=True)})
    return atomic_write(path, lambda t: pq.write_table(table, t, compression="zstd"))


def read_frame(path: Path, key: dict):
    """The table written at `path` for exactly `key`; None when absent, unreadable or made for another key."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return None
    made_for = (table.schema.metadata or {}).get(b"laborllm_key")
    return table.to_pandas() if made_for == json.dumps(key, sort_keys=True).encode() else None


class OutputLock:
    """An exclusive lock on an output path (a `.NAME.lock` file beside it holding the owner's pid),
    so two processes never write one folder; a lock whose process is gone is taken over."""

    def __init__(self, out: Path):
        self.path = Path(out).with_name(f".{Path(out).name}.lock")

    def __enter__(self) -> "OutputLock":
        target = self.path.with_name(self.path.name[1:-5])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # the lock appears with its pid already in it (a hard link of a written temp file), so no
            # other process ever sees an empty lock and takes it for a dead one
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
        except PermissionError as e:  # named by the folder the user asked for, not by our lock file
            raise UserError(f"{target}: cannot write in {e.filename or self.path.parent} ({e.strerror}); "
                            "choose a folder you can write") from None
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        try:
            for _ in range(2):
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    if self.held():
                        raise UserError(f"{target}: being written by process "
                                        f"{self._owner()} (lock {self.path}); wait for it or stop it") from None
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                return self
        finally:
            os.unlink(tmp)
        raise UserError(f"{self.path}: cannot take the output lock")

    def held(self) -> bool:
        """Whether a live process holds the lock (an unreadable or empty lock younger than a minute,
        written by an older laborllm, counts as held)."""
        if not self.path.exists():
            return False
        pid = self._owner()
        if pid is None:
            try:
                return time.time() - self.path.stat().st_mtime < 60
            except OSError:
                return False
        return pid != os.getpid() and _alive(pid)

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip()) or None
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc) -> None:
        if self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
