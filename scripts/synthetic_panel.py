"""A synthetic panel of N people drawn from NLSY97's own structure, for scaling measurements (no real
person is in it): each person copies the covariates and the first year of a random NLSY97 person,
a career length drawn from NLSY97's, and then states from NLSY97's first-order transition matrix
(with a Missing year where NLSY97 has them). Written as Parquet in the canonical columns.

python scripts/synthetic_panel.py N OUT.parquet [--seed 0]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from laborllm.data.loaders import load_panel


def synthetic(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = load_panel("nlsy97")
    f = p.frame.sort_values(["person_id", "year"])
    k = len(p.states) + 1  # the last index: Missing (its own state here, so gaps keep their rate)
    sid = np.where(f.state_id.to_numpy() >= 0, f.state_id.to_numpy(), k - 1)
    same = f.person_id.to_numpy()[1:] == f.person_id.to_numpy()[:-1]
    counts = np.ones((k, k)) * 1e-3
    np.add.at(counts, (sid[:-1][same], sid[1:][same]), 1)
    cum = np.cumsum(counts / counts.sum(1, keepdims=True), axis=1)
    first = f.groupby("person_id").head(1).reset_index(drop=True)
    lengths = f.groupby("person_id").size().to_numpy()
    donors = rng.integers(0, len(first), n)
    length = rng.choice(lengths, n)
    rows = int(length.sum())
    person = np.repeat(np.arange(1, n + 1), length)
    step = np.arange(rows) - np.repeat(np.cumsum(length) - length, length)
    states = np.empty(rows, dtype=np.int64)
    start = np.cumsum(length) - length
    first_sid = np.where(first.state_id.to_numpy() >= 0, first.state_id.to_numpy(), k - 1)
    states[start] = first_sid[donors]
    for t in range(1, int(length.max())):  # one year at a time for everyone still observed
        at = start[length > t] + t
        u = rng.random(len(at))
        states[at] = (cum[states[at - 1]] < u[:, None]).sum(1).clip(max=k - 1)
    titles = np.array(list(p.states) + ["Missing"], dtype=object)
    d = first.iloc[np.repeat(donors, length)].reset_index(drop=True)
    return pd.DataFrame({"person_id": person, "year": d.year.to_numpy() + step, "occupation": titles[states],
                         **{c: d[c].to_numpy() for c in ("gender", "race", "birth_year", "education", "region")}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t = time.time()
    df = synthetic(a.n, a.seed)
    df.to_parquet(a.out, index=False)
    print(f"synthetic: people={a.n} rows={len(df)} seconds={time.time() - t:.1f} -> {a.out}")


if __name__ == "__main__":
    main()
