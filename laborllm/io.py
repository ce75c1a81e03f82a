"""Atomic writes (temp file + rename) so an interrupted run never leaves a half-written output."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


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
