"""Scoring split across processes (torchrun / accelerate launch): each process scores a share of
the people, balanced by their cost, and every process gets the whole matrix back. One process:
nothing to split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch.distributed as dist

from laborllm.distributed import world


def shard_people(person_ids: np.ndarray, cost: np.ndarray, n: int) -> np.ndarray:
    """The rank scoring each event: whole people, the costliest first to the least loaded rank (the
    same answer on every rank: it depends on the events only)."""
    people, inverse = np.unique(np.asarray(person_ids).astype(str), return_inverse=True)
    per_person = np.bincount(inverse, weights=cost, minlength=len(people))
    load, rank_of = np.zeros(n), np.empty(len(people), dtype=int)
    for p in sorted(range(len(people)), key=lambda i: (-per_person[i], people[i])):
        rank_of[p] = int(np.argmin(load))
        load[rank_of[p]] += per_person[p]
    return rank_of[inverse]


def score_in_shares(events, score_people, partial: Path | None = None) -> tuple[np.ndarray, dict]:
    """`score_people(events, partial)` -> (rows, figures) over all `events`: under torchrun each
    process scores a share of the people (its own `partial`) and every process gets the whole."""
    n, rank = world()
    if n == 1:
        return score_people(events, partial)
    years = events.panel.frame.groupby("person_id").size()
    # a person costs one pass over the resume (its years) plus the state texts after each event
    cost = events.frame.person_id.map(years).to_numpy() / events.frame.person_id.map(
        events.frame.person_id.value_counts()).to_numpy() + 1.0
    mine = shard_people(events.frame.person_id.to_numpy(), cost, n) == rank
    part = partial.with_name(f"{partial.name}-rank{rank}of{n}") if partial else None
    rows, figures = score_people(events.where(mine), part)
    return gather_rows(len(events), np.flatnonzero(mine), rows), figures


def gather_rows(n_rows: int, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Every rank's (rows, values) assembled into one (n_rows, ...) matrix, on every rank."""
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (rows, values))
    out = np.empty((n_rows, *values.shape[1:]), dtype=values.dtype)
    for r, v in parts:
        out[r] = v
    return out
