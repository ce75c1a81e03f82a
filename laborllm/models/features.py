"""Hand-made history features of each event (CAREER's regression baseline, plus Markov context)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from laborllm.data.events import Events


def history_features(events: Events) -> pd.DataFrame:
    """Per event: last and second-to-last observed state, the state before the current spell, years in the current state, number of
    distinct past states, total past years, the gap to the previous survey year, and whether the
    previous year was Missing. One pass over the panel, then a lookup by panel row."""
    f = events.panel.frame
    pid, sid, year = f.person_id.to_numpy(), f.state_id.to_numpy(), f.year.to_numpy()
    n = len(f)
    last2, prev_job, tenure, distinct, gap = (np.full(n, -1), np.full(n, -1), np.zeros(n), np.zeros(n), np.ones(n))
    cur_pid, seen, l1, l2, pj, ten = None, set(), -1, -1, -1, 0
    for i in range(n):
        if pid[i] != cur_pid:
            cur_pid, seen, l1, l2, pj, ten = pid[i], set(), -1, -1, -1, 0
        else:
            gap[i] = year[i] - year[i - 1]
        last2[i], prev_job[i], tenure[i], distinct[i] = l2, pj, ten, len(seen)
        s = sid[i]
        if s >= 0:
            if s == l1:
                ten += 1
            else:
                pj, ten = l1, 1
            l2, l1 = l1, s
            seen.add(s)
    rows = events.frame.row.to_numpy()
    return pd.DataFrame({
        "last_state": events.frame["last_state"].to_numpy(),
        "last2": last2[rows],
        "prev_distinct": prev_job[rows],
        "tenure": tenure[rows],
        "n_distinct": distinct[rows],
        "n_past": events.frame.pos.to_numpy().astype(float),
        "gap": gap[rows],
        "prev_missing": (events.frame.prev.to_numpy() < 0).astype(float),
    })
