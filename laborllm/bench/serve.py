"""Benchmark: how fast the explorer answers, per served model, through its HTTP API (in process).

python -m laborllm.bench.serve SOURCE... [--people N] [--repeat R]
SOURCE: run folders, model folders or packaged model names, as for `laborllm serve`. Asks each
model about N real test people of its panel (their whole observed history), R times each after one
warm-up request, and prints per model: model=KEY kind=K requests=N median_ms=X p95_ms=Y
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from fastapi.testclient import TestClient

    from laborllm.serve import answers
    from laborllm.serve.app import create_app
    from laborllm.serve.catalog import Catalog

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--people", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    catalog = Catalog.from_sources(a.sources)
    client = TestClient(create_app(catalog))
    for key, entry in catalog.models.items():
        people = [answers.test_person(entry, p) for p in answers.test_people(entry, a.people)]
        client.post("/api/predict", json={"model": key, "history": people[0]})  # loads the model
        times = []
        for h in people * a.repeat:
            t = time.perf_counter()
            r = client.post("/api/predict", json={"model": key, "history": h})
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
        ms = np.array(times) * 1000
        print(f"model={key} kind={entry.meta.get('kind')} requests={len(ms)} median_ms={np.median(ms):.1f} "
              f"p95_ms={np.percentile(ms, 95):.1f}", flush=True)


if __name__ == "__main__":
    main()
