"""predict and simulate from a history: the year answered, the people kept, the years refused."""
import numpy as np
import pandas as pd
import pytest

from laborllm import api
from laborllm.errors import UserError


def test_history_ending_in_missing_years_predicts_the_year_after(tmp_path):
    from laborllm.forecast import history_events, predict, simulate

    m = api.fit("markov", "nlsy79-males")
    h = pd.DataFrame({"year": [1980, 1981, 1982, 1983], "occupation": ["Clerical", "Clerical", "", ""]})
    assert set(predict(m, h).year) == {1984}
    sims = simulate(m, h, years=2, samples=3)
    assert sorted(sims.year.unique()) == [1984, 1985] and len(sims) == 6
    # the Missing years are in the history the model reads: same answer as writing them out
    h2 = pd.DataFrame({"year": [1980, 1981, 1982, 1983, 1984],
                       "occupation": ["Clerical", "Clerical", "Missing", "Missing", "Clerical"]})
    np.testing.assert_allclose(m.log_probs(history_events(m, h)), m.log_probs(history_events(m, h2.iloc[:4])))


def test_simulated_ids_keep_every_character():
    from laborllm.forecast import simulate

    m = api.fit("markov", "nlsy79-males")
    h = pd.DataFrame({"person_id": ["a#b", "a#b", "team#1", "team#2"], "year": [1980, 1981, 1980, 1980],
                      "occupation": "Clerical"})
    assert set(simulate(m, h, years=1, samples=2).person_id) == {"a#b", "team#1", "team#2"}


def test_simulate_refuses_years_past_2100_up_front():
    from laborllm.forecast import simulate

    m = api.fit("markov", "nlsy79-males")
    h = pd.DataFrame({"year": [2095, 2096], "occupation": "Clerical"})
    with pytest.raises(UserError, match="would pass 2100; use --years 4 or fewer"):
        simulate(m, h, years=10)
