"""Tokenised resumes kept on disk, memory-mapped.

One Arrow IPC file per (people, panel, template, tokenizer): a panel of millions then trains without
its token lists living in Python (4 bytes a token, paged in by the OS as batches are read), and
another fit of the same panel and template -- a second LLM of the run, a resumed job -- reads the
file instead of tokenising again. A big panel is tokenised by several processes at once.
"""
from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from laborllm.text.templates import SegmentEncoder

FORMAT = 1  # bump when the file layout or the encoding of a resume changes
PARALLEL_FROM = 20_000  # people; fewer are tokenised faster in this process than by starting workers
CHUNK = 5_000  # people per record batch (and per worker task)


class ResumeTokens:
    """A read-only sequence of resumes' token ids (lists of ints), backed by memory-mapped files."""

    def __init__(self, parts: list[pa.Table]):
        self._parts = parts
        self._offsets, self._values = [], []
        for t in parts:
            for chunk in t.column("ids").chunks:  # zero-copy views into the mapped file
                self._offsets.append(chunk.offsets.to_numpy())
                self._values.append(chunk.values.to_numpy())
        sizes = [len(o) - 1 for o in self._offsets]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    @classmethod
    def open(cls, path: Path) -> "ResumeTokens":
        return cls([pa.ipc.open_file(pa.memory_map(str(path))).read_all()])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> list[int]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        c = int(np.searchsorted(self._starts, i, side="right")) - 1
        o, j = self._offsets[c], i - self._starts[c]
        return self._values[c][o[j]:o[j + 1]].tolist()

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __add__(self, other):
        """Concatenation with another store or a list of resumes (as `train + pooled` reads)."""
        if isinstance(other, ResumeTokens):
            return ResumeTokens(self._parts + other._parts)
        if len(other) == 0:
            return self
        return list(self) + list(other)

    def __radd__(self, other):
        return self if len(other) == 0 else list(other) + list(self)

    @property
    def lengths(self) -> np.ndarray:
        return np.concatenate([np.diff(o) for o in self._offsets]) if self._offsets else np.zeros(0, int)

    @property
    def person_ids(self) -> list[str]:
        return [p for t in self._parts for p in t.column("person_id").to_pylist()]


def lengths(resumes) -> list[int]:
    """Token count of each resume, without reading a store's tokens."""
    return resumes.lengths.tolist() if isinstance(resumes, ResumeTokens) else [len(r) for r in resumes]


def store_key(panel, people: list, enc: SegmentEncoder) -> str:
    """What the token ids depend on: the panel's content, which people in which order, the
    template, the states and the tokenizer's vocabulary and rules."""
    tok = enc.tok
    backend = getattr(tok, "backend_tokenizer", None)
    h = hashlib.sha256(f"{FORMAT}\x1f{panel.fingerprint()}\x1f{enc.template}\x1f{type(tok).__name__}".encode())
    h.update(backend.to_str().encode() if backend is not None else repr(sorted(tok.get_vocab().items())).encode())
    h.update(f"{enc.bos}\x1f{getattr(tok, 'eos_token_id', None)}".encode())
    h.update("\x1f".join(enc.states).encode())
    h.update("\x1f".join(map(str, people)).encode())
    return h.hexdigest()[:20]


def resume_tokens(panel, people: list, enc: SegmentEncoder, folder: Path, workers: int | None = None) -> ResumeTokens:
    """The token ids of `people`'s resumes (in that order), from `folder`'s store when it holds
    them for this panel, template and tokenizer, else tokenised now and stored (atomically)."""
    folder = Path(folder)
    path = folder / f"{store_key(panel, people, enc)}.arrow"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            _write(tmp, panel.frame, people, enc, workers)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)  # two processes building the same store write the same bytes
    return ResumeTokens.open(path)


def _write(path: Path, frame: pd.DataFrame, people: list, enc: SegmentEncoder, workers: int | None) -> None:
    workers = min(workers or os.cpu_count() or 1, -(-len(people) // CHUNK))
    jobs = ((enc, rows) for rows in _chunks(frame, people))
    schema = pa.schema([("person_id", pa.string()), ("ids", pa.list_(pa.int32()))])
    # spawned workers: a forked child of a process running torch's thread pools can hang
    parallel = len(people) >= PARALLEL_FROM and workers > 1
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if parallel else None
    try:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as out:
            for pid, offsets, values in (_in_order(pool, jobs, ahead=2 * workers) if pool else map(_encode_chunk, jobs)):
                out.write_batch(pa.record_batch([pa.array(pid, pa.string()),
                                                  pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))],
                                                 schema=schema))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)


def _in_order(pool: ProcessPoolExecutor, jobs, ahead: int):
    """The workers' results in job order, with at most `ahead` chunks in flight (a panel of millions
    is never copied into the queue at once)."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.submit(_encode_chunk, job))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _chunks(frame: pd.DataFrame, people: list):
    """The rows of `people`, CHUNK people at a time, in `people`'s order (years in panel order); only
    one chunk's rows are copied at a time."""
    order = pd.Series(np.arange(len(people)), index=pd.Index(people, dtype=object))
    key = frame.person_id.map(order).to_numpy(dtype=float)  # NaN: a person not asked for
    rows = np.flatnonzero(~np.isnan(key))
    rows = rows[np.argsort(key[rows], kind="stable")]
    k = key[rows].astype(np.int64)
    if len(np.unique(k)) != len(people):
        raise ValueError("some of the people asked for have no rows in the panel")
    cuts = np.searchsorted(k, np.arange(0, len(people) + CHUNK, CHUNK))
    for a, b in zip(cuts[:-1], cuts[1:]):
        if b > a:
            yield frame.iloc[rows[a:b]], k[a:b]


def _encode_chunk(job) -> tuple[list[str], np.ndarray, np.ndarray]:
    enc, (rows, order) = job
    ids = [enc.person(g)[0] for _, g in rows.groupby(order, sort=True)]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(np.int32)
    values = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1]))
    firsts = np.flatnonzero(np.r_[True, order[1:] != order[:-1]])
    return [str(p) for p in rows.person_id.to_numpy()[firsts]], offsets, values
