"""Scores written as they are computed, so a long scoring job (hours for an LLM on NLSY97 on a CPU)
resumes where it stopped instead of starting over.

A folder holds `stamp.json` (what is being scored: the model's fingerprint, the events', the
scoring mode and precision) and numbered `part-NNNNN.npz` files, each the event rows and
log-probabilities of the people finished since the previous part and the seconds they took (plain
arrays, never pickles). Parts of another stamp are removed: they belong to another model or event set.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from laborllm.files import atomic_write, write_json_atomic

log = logging.getLogger(__name__)
FLUSH_SECONDS = 300.0  # a killed scoring job loses at most this much work


class PartialScores:
    def __init__(self, folder: Path | None, stamp: dict, shape: tuple[int, int], every: float | None = None,
                 label: str = "scoring", dtype=np.float64):
        self.folder, self.label = (Path(folder) if folder else None), label
        self.every = FLUSH_SECONDS if every is None else every
        self.out = np.zeros(shape, dtype=dtype)
        self.done = np.zeros(shape[0], dtype=bool)
        self._idx: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._last = self._t0 = time.time()
        self._start = 0
        # scoring seconds of the parts already on disk (None when a part does not say)
        self.earlier_seconds: float | None = 0.0
        if self.folder is None:
            return
        self._parts = 0
        stamp = _plain(stamp)
        f = self.folder / "stamp.json"
        if f.is_file() and _read_json(f) == stamp:
            for p in sorted(self.folder.glob("part-*.npz")):
                try:
                    with np.load(p, allow_pickle=False) as z:
                        idx, rows = z["idx"], z["lp"]
                        seconds = float(z["seconds"]) if "seconds" in z.files else None
                except (OSError, ValueError, KeyError):  # a damaged part: its people are scored again
                    continue
                if rows.shape != (len(idx), shape[1]) or (len(idx) and idx.max() >= shape[0]):
                    continue
                self.out[idx], self.done[idx] = rows, True
                self._parts = max(self._parts, int(p.stem.split("-")[1]))
                self.earlier_seconds = None if seconds is None or self.earlier_seconds is None else (
                    self.earlier_seconds + seconds)
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(f, stamp)
        self._start = self.n_done

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    def add(self, idx: np.ndarray, rows: np.ndarray) -> None:
        self.out[idx], self.done[idx] = rows, True
        if self.folder is None:
            return
        self._idx.append(np.asarray(idx))
        self._rows.append(np.asarray(rows))
        if time.time() - self._last >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.folder is None or not self._idx:
            return
        self._parts += 1
        idx, rows = np.concatenate(self._idx), np.concatenate(self._rows).astype(self.out.dtype)
        seconds = time.time() - self._last
        atomic_write(self.folder / f"part-{self._parts:05d}.npz", lambda t: _savez(t, idx, rows, seconds))
        self._idx, self._rows, self._last = [], [], time.time()
        n, total = self.n_done, len(self.done)
        rate = (n - self._start) / max(time.time() - self._t0, 1e-9)
        left = f"about {(total - n) / rate / 60:.0f} min left" if rate > 0 else "time left unknown"
        log.info("%s: %d of %d events scored, kept in %s; %s", self.label, n, total, self.folder, left)

    def clear(self) -> None:
        """Once the whole matrix is in the final cache, the parts are no longer needed."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def started_value(folder: Path | None, stamp: dict, key: str):
    """The value of `key` that the parts already in `folder` were scored with, where the rest of their
    stamp is `stamp`'s; None where there are none. A setting chosen per machine (the precision under
    "auto") can thus stay what the scoring began with when another machine continues it, instead of
    throwing its parts away."""
    old = _read_json(folder / "stamp.json") if folder else None
    if isinstance(old, dict) and key in old and {k: v for k, v in old.items() if k != key} == _plain(stamp):
        return old[key]
    return None


def _plain(stamp: dict) -> dict:
    return json.loads(json.dumps(stamp, default=str))  # as it reads back from stamp.json


def _savez(path: str, idx: np.ndarray, rows: np.ndarray, seconds: float) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would otherwise append ".npz" to the temp name
        np.savez(f, idx=idx.astype(np.int64), lp=rows, seconds=np.float64(seconds))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
