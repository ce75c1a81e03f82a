import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def nlsy97():
    import laborllm as ll

    return ll.make_events(ll.load_panel("nlsy97"), seed=0)


@pytest.fixture(scope="session")
def small_events():
    """A few hundred real NLSY97 people: fast enough for every model on 2 cores."""
    import laborllm as ll

    p = ll.load_panel("nlsy97")
    keep = sorted(p.frame.person_id.unique())[:400]
    return ll.make_events(ll.load_panel(p.frame[p.frame.person_id.isin(keep)].assign(occupation=lambda d: d.state),
                                        scheme="titles"), seed=0)


def nlsy97_csv(path, n_persons: int, columns=("gender", "race", "birth_year", "education", "region", "weight")):
    """The first n real NLSY97 people written as a canonical user CSV (titles scheme)."""
    import laborllm as ll

    p = ll.load_panel("nlsy97")
    keep = sorted(p.frame.person_id.unique())[:n_persons]
    f = p.frame[p.frame.person_id.isin(keep)].assign(occupation=lambda d: d.state)
    f[["person_id", "year", "occupation", *columns]].to_csv(path, index=False)
    return path


def men_csv(path, n=None):
    """The embedded NLSY79 men panel as a user's CSV (titles scheme)."""
    import laborllm as ll

    f = ll.load_panel("nlsy79-males").frame
    if n:
        f = f[f.person_id.isin(sorted(f.person_id.unique())[:n])]
    f.assign(occupation=f.state)[["person_id", "year", "occupation", "birth_year"]].to_csv(path, index=False)
    return path


def ppl(out, model, panel="nlsy79-males"):
    rows = json.loads((out / "metrics.json").read_text())
    return next(r["perplexity"] for r in rows if r["model"] == model and r["data"] == panel)
