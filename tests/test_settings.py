"""Settings are checked before any work: each bad value is refused, naming the setting and why."""
import pytest

from laborllm import api
from laborllm.errors import UserError


@pytest.mark.parametrize("kind,settings,match", [
    ("markov", {"alpha": -5}, "alpha=-5 is out of range"),
    ("llm", {"variant": "nope"}, "unknown variant 'nope'"),
    ("llm", {"epochs": 1e9}, "epochs=1000000000 is out of range"),
    ("llm", {"batch_size": 0}, "batch_size=0 is out of range"),
    ("career", {"epochs": "abc"}, "epochs='abc' must be a whole number"),
    ("llm", {"lr": -1}, "lr=-1 is out of range"),
    ("logit", {"l2": "abc"}, "l2='abc' must be a number"),
    ("logit", {"seed": "abc"}, "seed='abc' must be a whole number"),
    ("logit", {"seed": 1.5}, "seed=1.5 must be a whole number"),
    ("llm", {"base": "/nonexistent"}, "/nonexistent: not a model folder"),
])
def test_every_setting_is_checked_before_any_work(kind, settings, match):
    with pytest.raises(UserError, match=match):
        api.make_model(kind, **settings)


def test_an_unknown_key_in_a_config_file_is_refused(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"sead": 3}')
    with pytest.raises(UserError, match="unknown key"):
        api.read_config(cfg)
