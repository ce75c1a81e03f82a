"""Careers simulated from each model beside the observed careers of the same test people (their
distance is laborllm.evaluation.representativeness.career_distances)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from laborllm.data.events import sample_ids
from laborllm.data.panel import PERSON
from laborllm.files import read_frame, write_frame

SIM_PERSONS, SIM_YEARS = 150, 10


def trajectories(events, models: dict, seed: int, cache: Path | None = None) -> pd.DataFrame:
    """Share of person-years in each broad occupation group by age: real test careers against
    careers simulated from each model, starting from each person's first observed year. `cache`: a
    folder where each model's careers are kept and reused while the model, people and seed are the same
    (an LLM's take minutes, and a rerun of a finished benchmark would draw the same ones again)."""
    from tqdm.auto import tqdm

    from laborllm.forecast import simulate

    f = events.panel.frame
    ids = sample_ids(events.frame.person_id, SIM_PERSONS, seed)
    scheme = events.panel.scheme
    people = f[f.person_id.isin(set(ids))]
    first = people.groupby("person_id").head(1)
    real = people[people.year <= people.groupby("person_id").year.transform("min") + SIM_YEARS]
    born = first.set_index("person_id").birth_year
    rows = [real.assign(source="observed", occupation=real.state)[["person_id", "year", "occupation", "source"]]]
    cols = ["person_id", "year", "state"] + [c for c in PERSON if c in f]
    hist = first[cols].rename(columns={"state": "occupation"})
    inputs = hashlib.sha256(pd.util.hash_pandas_object(hist.astype(str), index=False).values.tobytes()).hexdigest()[:16]
    # one progress line for every model's careers, not a bar per model
    with tqdm(total=len(models) * SIM_YEARS, desc="simulating careers for the report", unit="year",
              disable=not models, leave=False) as bar:
        for name, model in models.items():
            bar.set_postfix_str(name)
            key = {"model": model.score_key(), "histories": inputs, "seed": seed, "years": SIM_YEARS}
            sims = read_frame(cache / f"{name}.parquet", key) if cache else None
            if sims is None:
                sims = simulate(model, hist, years=SIM_YEARS, samples=1, seed=seed, on_year=bar.update)
                if cache:
                    write_frame(cache / f"{name}.parquet", sims, key)
            else:
                bar.update(SIM_YEARS)
            sims["person_id"] = sims.person_id.astype(first.person_id.dtype)
            start = hist[["person_id", "year", "occupation"]]
            rows.append(pd.concat([start, sims[["person_id", "year", "occupation"]]]).assign(source=name))
    t = pd.concat(rows, ignore_index=True)
    t["age"] = t.year - t.person_id.map(born)
    t["group"] = t.occupation.map(scheme.group_of)
    return t[t.occupation != "Missing"]
