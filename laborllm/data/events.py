"""Deterministic person-level splits and the prediction events every model and metric shares.

An event is a person-year after the person's first kept year whose state is not ``Missing``.
People (never person-years) are split 70/15/15 into train/valid/test from a seed.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from laborllm.data.panel import Panel

SPLITS = ("train", "valid", "test")


def assign_splits(person_ids, seed: int = 0, fractions=(0.70, 0.15, 0.15)) -> pd.Series:
    """person_id -> split name; the same ids and seed always give the same split."""
    ids = np.array(sorted(pd.unique(pd.Series(person_ids)), key=str), dtype=object)
    order = np.random.default_rng(seed).permutation(len(ids))
    cut = np.cumsum(np.round(np.array(fractions) / sum(fractions) * len(ids)).astype(int))[:2]
    names = np.empty(len(ids), dtype=object)
    names[order[: cut[0]]], names[order[cut[0]: cut[1]]], names[order[cut[1]:]] = SPLITS
    return pd.Series(names, index=pd.Index(ids, name="person_id"), name="split")


def sample_ids(person_ids, n: int | None, seed: int = 0) -> list | None:
    """n distinct person ids drawn without replacement, seeded and sorted (None or 0: no sampling)."""
    if not n:
        return None
    ids = sorted(pd.unique(pd.Series(person_ids)), key=str)  # text order: the same whatever the id dtype
    return sorted(np.random.default_rng(seed).choice(np.array(ids, dtype=object), size=min(n, len(ids)),
                                                     replace=False).tolist(), key=str)


@dataclass
class Events:
    """The common prediction events of a panel.

    ``frame`` has one row per event: ``person_id``, ``year``, ``row`` (index into ``panel.frame``),
    ``pos`` (position of the year in the person's history), ``target`` (state id), ``prev`` (state
    id of the previous year, -1 if Missing), ``last_state`` (last observed state id before the event),
    ``split``, ``age`` (when birth_year is known) and the panel's covariates for that year.
    """

    panel: Panel
    frame: pd.DataFrame
    seed: int = 0

    @classmethod
    def from_panel(cls, panel: Panel, seed: int = 0) -> "Events":
        f = panel.frame
        pos = f.groupby("person_id").cumcount()
        prev = f.state_id.groupby(f.person_id).shift(1).fillna(-1).astype("int64")
        obs = f.state_id.where(f.state_id >= 0)
        last = obs.groupby(f.person_id).shift(1)
        last = last.groupby(f.person_id).ffill().fillna(-1).astype("int64")
        split = f.person_id.map(assign_splits(f.person_id, seed))
        ev = pd.DataFrame({"person_id": f.person_id, "year": f.year, "row": np.arange(len(f)), "pos": pos,
                           "target": f.state_id, "prev": prev, "last_state": last, "split": split})
        if "birth_year" in f:
            ev["age"] = (f.year - f.birth_year).astype("Float64")
        for c in panel.covariates:
            ev[c] = f[c]
        ev = ev[(pos > 0) & (f.state_id >= 0)].reset_index(drop=True)
        return cls(panel, ev, seed)

    def subset(self, split: str) -> "Events":
        if split not in SPLITS:
            from laborllm.errors import UserError

            raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return Events(self.panel, self.frame[self.frame.split == split].reset_index(drop=True), self.seed)

    def where(self, mask) -> "Events":
        """The events where `mask` (a boolean array over the rows) holds."""
        return Events(self.panel, self.frame[np.asarray(mask, dtype=bool)].reset_index(drop=True), self.seed)

    def of_persons(self, ids) -> "Events":
        return self.where(self.frame.person_id.isin(set(ids)).to_numpy())

    def sample_persons(self, n: int | None, seed: int = 0) -> "Events":
        """The events of n people drawn without replacement (seeded); all of them when n is None."""
        ids = sample_ids(self.frame.person_id, n, seed)
        return self if ids is None else self.of_persons(ids)

    @property
    def train(self) -> "Events":
        return self.subset("train")

    @property
    def valid(self) -> "Events":
        return self.subset("valid")

    @property
    def test(self) -> "Events":
        return self.subset("test")

    @property
    def states(self) -> list[str]:
        return self.panel.states

    def __len__(self) -> int:
        return len(self.frame)

    def target_nll(self, lp: np.ndarray) -> np.ndarray:
        """Each event's negative log-probability of the state that happened, from an (events, states) matrix."""
        return -lp[np.arange(len(self.frame)), self.frame.target.to_numpy()]

    def fingerprint(self) -> str:
        """Identifies the exact event set and state set; models are only compared on equal ones."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.states).encode())
        # ids hashed as text: the same people whatever dtype a loader gave the column
        cols = self.frame[["person_id", "year", "target", "split"]].assign(person_id=self.frame.person_id.astype(str))
        h.update(pd.util.hash_pandas_object(cols, index=False).values.tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        counts = self.frame.split.value_counts().to_dict()
        return f"Events({len(self)} events, {len(self.states)} states, {counts})"


def make_events(panel: Panel, seed: int = 0) -> Events:
    return Events.from_panel(panel, seed)
