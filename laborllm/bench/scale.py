"""Benchmark: the data path and the count baselines on a large panel (scripts/synthetic_panel.py).

python -m laborllm.bench.scale PANEL.parquet [--stages load,events,markov,logit,tokens] [--token-people N]
Prints one line per stage: stage=S people=P rows=R events=E seconds=X peak_rss_gib=Y, where the peak
is the process's so far (run one panel size per process). `tokens` turns the resumes of the first
N people (default all) into SmolLM2 token ids, as LLM training does, and reports tokens per second.
"""
from __future__ import annotations

import argparse
import resource
import time


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


def main() -> None:
    import laborllm as ll

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("panel")
    ap.add_argument("--stages", default="load,events,markov,logit,tokens")
    ap.add_argument("--token-people", type=int, default=None)
    a = ap.parse_args()
    stages = a.stages.split(",")
    shown = {}

    def report(stage: str, t0: float, **extra) -> None:
        figures = " ".join(f"{k}={v}" for k, v in {**shown, **extra}.items())
        print(f"stage={stage} {figures} seconds={time.time() - t0:.1f} peak_rss_gib={_peak_gib():.2f}", flush=True)

    t = time.time()
    panel = ll.load_panel(a.panel, scheme="titles")
    shown.update(people=panel.n_persons, rows=len(panel.frame))
    report("load", t)
    t = time.time()
    events = ll.make_events(panel, seed=0)
    shown["events"] = len(events)
    report("events", t)
    if "markov" in stages:
        from laborllm.models.markov import Markov

        t = time.time()
        Markov().fit(events)
        report("markov", t)
    if "logit" in stages:
        from laborllm.api import make_model

        t = time.time()
        make_model("logit", "quick").fit(events)
        report("logit", t)
    if "tokens" in stages:
        from laborllm.models.lm_loading import load_lm, resolve_base
        from laborllm.text import ResumeTemplate, SegmentEncoder

        _, tok = load_lm(resolve_base("smollm2"))
        enc = SegmentEncoder(tok, ResumeTemplate("titles"), panel.states, panel.scheme)
        f = panel.frame
        if a.token_people:
            f = f[f.person_id.isin(sorted(f.person_id.unique())[:a.token_people])]
        t = time.time()
        n = sum(len(enc.person(g)[0]) for _, g in f.groupby("person_id", sort=False))
        report("tokens", t, token_people=f.person_id.nunique(), tokens=n,
               tokens_per_second=round(n / max(time.time() - t, 1e-9)))


if __name__ == "__main__":
    main()
