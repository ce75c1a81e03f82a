"""Never a silently wrong number: each test reproduces a way a figure could be wrong without a word
(issue 21) and checks it is now right, refitted, or refused with a message naming the cause."""
import json
import os
import time

import numpy as np
import pandas as pd
import pytest
from pathlib import Path

import laborllm as ll
from laborllm import api
from laborllm.errors import DataError, UserError
from laborllm.pipeline import run


def ppl(out, model, panel="nlsy79-males"):
    rows = json.loads((out / "metrics.json").read_text())
    return next(r["perplexity"] for r in rows if r["model"] == model and r["data"] == panel)


def men_csv(path, n=None):
    """The embedded NLSY79 men panel as a user's CSV (titles scheme)."""
    f = ll.load_panel("nlsy79-males").frame
    if n:
        f = f[f.person_id.isin(sorted(f.person_id.unique())[:n])]
    f.assign(occupation=f.state)[["person_id", "year", "occupation", "birth_year"]].to_csv(path, index=False)
    return path


# -- 1, 2, 16: a run folder reuses only the very fit asked for ---------------------------------------
def test_rerun_with_another_seed_or_setting_refits_and_unchanged_rerun_reuses(tmp_path):
    out = tmp_path / "run"
    kw = dict(data="nlsy79-males", models=["markov1", "logit"], report=False)
    run("quick", out, seed=0, **kw)
    first = json.loads((out / "nlsy79-males" / "models" / "markov1" / "model.json").read_text())["model_id"]
    run("quick", out, seed=0, **kw)  # unchanged: reused, not refitted
    assert json.loads((out / "nlsy79-males" / "models" / "markov1" / "model.json").read_text())["model_id"] == first
    # another split seed: the old model was fitted on most of the new test people -> refitted
    run("quick", out, seed=1, **kw)
    run("quick", tmp_path / "fresh", seed=1, **kw)
    assert ppl(out, "markov1") == pytest.approx(ppl(tmp_path / "fresh", "markov1"), abs=1e-9)
    assert ppl(out, "logit") == pytest.approx(ppl(tmp_path / "fresh", "logit"), abs=1e-9)
    # another setting of one model: that model alone is refitted, and its cached scores not reused
    run("quick", out, seed=1, overrides={"markov1": {"order": 2}}, **kw)
    run("quick", tmp_path / "order2", seed=1, overrides={"markov1": {"order": 2}}, **kw)
    assert ppl(out, "markov1") == pytest.approx(ppl(tmp_path / "order2", "markov1"), abs=1e-9)
    assert ppl(out, "markov1") != pytest.approx(ppl(tmp_path / "fresh", "markov1"), abs=1e-6)


def test_stale_scores_of_a_deleted_model_are_not_reused(tmp_path):
    import shutil

    out = tmp_path / "run"
    kw = dict(data="nlsy79-males", models=["markov1"], report=False)
    run("quick", out, **kw)
    shutil.rmtree(out / "nlsy79-males" / "models" / "markov1")  # the scores stay in logprobs/
    run("quick", out, overrides={"markov1": {"order": 2}}, **kw)
    run("quick", tmp_path / "fresh", overrides={"markov1": {"order": 2}}, **kw)
    assert ppl(out, "markov1") == pytest.approx(ppl(tmp_path / "fresh", "markov1"), abs=1e-9)


def test_a_folder_of_another_kind_is_not_reused_as_the_reference(tmp_path):
    out = tmp_path / "run"
    run("quick", out, data="nlsy79-males", models=["markov1"], report=False)
    api.fit("markov", "nlsy79-males", out / "nlsy79-males" / "models" / "logit", name="logit")  # a markov in logit's place
    run("quick", out, data="nlsy79-males", models=["logit"], report=False)
    meta = json.loads((out / "nlsy79-males" / "models" / "logit" / "model.json").read_text())
    assert meta["kind"] == "logit"


# -- 3, 4, 5: no test person enters training through pretraining or pooling ---------------------------
def test_career_refuses_to_pretrain_on_the_target_panel(tmp_path):
    from laborllm.models.career import Career

    csv = men_csv(tmp_path / "men.csv")
    events = api.events_for(api.data_spec(str(csv), scheme="titles"))
    for pre in (str(csv), "nlsy79-males"):  # the file itself, and the same people under their embedded name
        with pytest.raises(UserError, match="is the target panel itself"):
            Career(layers=1, d=16, heads=2, ff=32, epochs=1, pretrain_data=pre).fit(events)


def test_pool_equal_to_the_target_is_refused_however_the_path_is_written(tmp_path, monkeypatch):
    from laborllm.models.llm import LLM

    csv = men_csv(tmp_path / "panel.csv")
    monkeypatch.chdir(tmp_path)
    events = api.events_for(api.data_spec("panel.csv", scheme="titles"))
    for pool in ("panel.csv", "./panel.csv", str(csv), "nlsy79-males"):
        with pytest.raises(UserError, match="is the target panel itself"):
            LLM(pool=[pool])._pool_panels(events)


def test_pooling_numeric_codes_across_titles_panels_is_refused():
    from laborllm.models.llm import LLM

    events = api.events_for(api.data_spec("nlsy79-males"))
    with pytest.raises(UserError, match="codes mean different occupations"):
        LLM(variant="codes", pool=["nlswork"])._pool_panels(events)
    assert LLM(variant="titles", pool=["nlswork"])._pool_panels(events)  # titles: accepted


# -- 6-10: the data mean what the file says ---------------------------------------------------------
def test_a_code_with_two_titles_names_both_rows(tmp_path):
    from laborllm.data.schemes import read_codebook

    book = tmp_path / "book.csv"
    book.write_text("code,title\n1,Managers\n1,Clerks\n2,Managers\n3,Clerks\n")
    with pytest.raises(DataError, match=r"code '1' is given two different titles: row 2 \('Managers'\), row 3 \('Clerks'\)"):
        read_codebook(book)


@pytest.mark.parametrize("years,births,century,match", [
    ([97, 98, 99, 0, 1], [80] * 5, 1900, "years go backwards"),
    ([1997, 1998, 1999], [80] * 3, 2000, "birth_year is after the year"),
    ([1997, 1998, 1999], [1980] * 3, 1950, "whole century"),
])
def test_century_refuses_wrapped_years_late_births_and_odd_centuries(years, births, century, match):
    df = pd.DataFrame({"person_id": 1, "year": years, "occupation": "A", "birth_year": births})
    with pytest.raises(DataError, match=match):
        ll.load_panel(df, scheme="titles", century=century)


def test_crosswalk_rows_must_name_real_states_on_both_sides(tmp_path):
    from laborllm.models.career import Career

    x = tmp_path / "x.csv"
    x.write_text("state,target\nClerical workers,Clerical\ncraftsmen,Craftsmen and Foremen\n")  # wrong case
    men = ll.load_panel("nlsy79-males")
    with pytest.raises(UserError, match=r"state state\(s\) not in the pretraining panel: craftsmen \(line\(s\) 3\)"):
        Career(pretrain_data="nlswork", pretrain_states=str(x))._pretrain_panel(men)


def test_titles_that_look_like_missing_values_stay_titles(tmp_path):
    book = tmp_path / "book.csv"
    book.write_text("code,title\n1,None\n2,nan\n3,Clerks\n")
    df = pd.DataFrame({"person_id": [1, 1, 1], "year": [2000, 2001, 2002], "occupation": ["1", "2", "3"]})
    p = ll.load_panel(df, codebook=book)
    assert p.frame.state.tolist() == ["None", "nan", "Clerks"] and sorted(p.states) == ["Clerks", "None", "nan"]


def test_person_ids_are_text_not_numbers():
    df = pd.DataFrame({"person_id": ["01", "01", "1", "1", "007", "7"], "year": [2000, 2001, 2000, 2001, 2000, 2000],
                       "occupation": "A"})
    assert ll.load_panel(df, scheme="titles").n_persons == 4


# -- 11: a history ending in a Missing year is answered for the year after it ---------------------------
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


# -- 12: model-folder races ------------------------------------------------------------------------
def test_a_fresh_empty_lock_is_not_taken_for_a_dead_one_and_recover_waits_for_the_lock(tmp_path):
    from laborllm.models.folder import OutputLock, recover

    out = tmp_path / "model"
    lock = OutputLock(out)
    lock.path.write_text("")  # its owner created it an instant ago and has not written its pid yet
    with pytest.raises(UserError, match="being written"):
        OutputLock(out).__enter__()
    old = out.with_name(".model.old")
    old.mkdir()  # a replacement under way: the old folder aside, the new one not yet in place
    recover(out)
    assert old.exists() and not out.exists()  # a live lock: left alone
    os.utime(lock.path, (time.time() - 3600, time.time() - 3600))  # an hour old and empty: its writer died
    recover(out)
    assert out.exists() and not old.exists()
    with OutputLock(out):
        assert lock.path.read_text() == str(os.getpid())


# -- 13: smaller ------------------------------------------------------------------------------------
def test_a_digit_title_never_takes_another_states_code():
    from laborllm.data.schemes import Scheme
    from laborllm.text.templates import state_codes

    states = ["2001", "Apple", "Banana"]  # positional codes would give Banana 2002 and Apple 2001
    codes = state_codes(states, Scheme("titles"))
    assert len(set(codes.values())) == 3 and codes["2001"] == "2001"


def test_a_blank_weight_is_said_not_silently_dropped(caplog):
    from laborllm.evaluation.metrics import evaluate

    p = ll.load_panel("nlsy97")
    keep = sorted(p.frame.person_id.unique())[:300]
    f = p.frame[p.frame.person_id.isin(keep)].assign(occupation=lambda d: d.state)
    f.loc[f.index[5], "weight"] = np.nan
    ev = ll.make_events(ll.load_panel(f, scheme="titles"))
    m = api.make_model("markov").fit(ev)
    r = evaluate(m.log_probs(ev), ev, model="markov1")
    assert "weighted" not in r and "1 events without a weight" in r["weighted_skipped"]
    assert "have no survey weight" in caplog.text


# -- 14-29: found when tried as a new user would ------------------------------------------------------
def test_run_refuses_a_folder_that_is_not_a_run_folder(tmp_path):
    mine = tmp_path / "myproj"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    with pytest.raises(UserError, match="not a laborllm run folder"):
        run("quick", mine, data="nlsy79-males", models=["markov1"], report=False)
    assert (mine / "config.json").read_text() == '{"my": "settings"}'


def test_evaluate_refuses_a_model_whose_data_changed_since_fitting(tmp_path):
    csv = men_csv(tmp_path / "men.csv", n=300)
    api.fit("markov", str(csv), tmp_path / "m", scheme="titles")
    men_csv(csv)  # people appended to the file: the split moves people between train and test
    with pytest.raises(UserError, match="not what the model was fitted on"):
        api.evaluate([tmp_path / "m"])


def test_a_panel_tag_is_a_plain_folder_name():
    from laborllm.pipeline import panel_tag

    assert panel_tag("../d/dot/.csv") == "csv" and panel_tag("nlsy97") == "nlsy97"
    assert panel_tag("/x/my data [v2].csv") == "my_data_v2_"


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


def test_run_checks_every_models_settings_before_the_first_fit(tmp_path):
    with pytest.raises(UserError, match="max_iter='x'"):  # logit's mistake, found before markov1 is fitted
        run("quick", tmp_path / "r", data="nlsy79-males", models=["markov1", "logit"], report=False,
            overrides={"logit": {"max_iter": "x"}})
    assert not (tmp_path / "r" / "nlsy79-males" / "models" / "markov1").exists()


def test_two_errors_in_one_second_keep_both_tracebacks(tmp_path, monkeypatch):
    from laborllm.cli import _internal_error

    monkeypatch.setenv("LABORLLM_CACHE", str(tmp_path))
    a, b = _internal_error(ValueError("first")), _internal_error(ValueError("second"))
    assert a != b and "first" in a.read_text() and "second" in b.read_text()


def test_messages_keep_what_matters(tmp_path):
    from laborllm.data.panel import read_table

    semi = tmp_path / "semi.csv"
    semi.write_text("person_id;year;occupation\n1;2000;A\n")
    with pytest.raises(DataError, match="semicolon-separated"):
        ll.load_panel(str(semi))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("person_id,year,occupation\n1,2000,A\n1,2001,Caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="line 3 is not UTF-8"):
        read_table(latin)
    with pytest.raises(DataError, match="does not know"):
        ll.load_panel("nlsy79-males", columns="sex=gendr")


def test_bracketed_paths_are_printed_whole(tmp_path):
    import subprocess
    import sys

    weird = tmp_path / "we[ird]"
    weird.mkdir()
    r = subprocess.run([sys.executable, "-m", "laborllm.cli", "data", "describe", "--data", str(weird / "data.csv")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "we[ird]/data.csv" in r.stderr, r.stderr


def test_simulate_refuses_years_past_2100_up_front():
    from laborllm.forecast import simulate

    m = api.fit("markov", "nlsy79-males")
    h = pd.DataFrame({"year": [2095, 2096], "occupation": "Clerical"})
    with pytest.raises(UserError, match="would pass 2100; use --years 4 or fewer"):
        simulate(m, h, years=10)


def test_the_interrupt_message_promises_only_what_is_kept():
    from laborllm.cli import interrupted_message

    assert "nothing was written" in interrupted_message(["simulate", "m"])
    assert "checkpoint of its last finished epoch" in interrupted_message(["fit", "career"])
    assert "features computed so far" in interrupted_message(["fit", "llm-head"])
    assert "checkpoints" in interrupted_message(["fit", "llm"]) and "continue" in interrupted_message(["run"])


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_follow_the_users_umask(tmp_path, umask):
    """Every file and folder written, weights included, has the mode the umask asks for: two umasks,
    so a hard-coded mode cannot pass."""
    from laborllm.io import write_text_atomic

    old = os.umask(umask)
    try:
        f = write_text_atomic(tmp_path / "x.txt", "x")
        api.fit("markov", "nlsy79-males", tmp_path / "m")
    finally:
        os.umask(old)
    assert f.stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o777 & ~umask
    for p in (tmp_path / "m").iterdir():
        assert p.stat().st_mode & 0o777 == (0o777 if p.is_dir() else 0o666) & ~umask, p.name


def test_a_damaged_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    from laborllm.models.lm_checkpoints import set_aside, latest_checkpoint

    ckpts = tmp_path / ".m.checkpoints"
    for step in (4, 8):
        (ckpts / f"checkpoint-{step}").mkdir(parents=True)
        (ckpts / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(ckpts).name == "checkpoint-8"
    assert set_aside(latest_checkpoint(ckpts), EOFError("truncated optimizer.pt"), "m").name == "checkpoint-4"
    assert (ckpts / "damaged-checkpoint-8").is_dir() and "cannot be read" in caplog.text
    with pytest.raises(UserError, match="only checkpoint cannot be read"):
        set_aside(ckpts / "checkpoint-4", EOFError("x"), "m")


def test_a_failed_write_names_the_file_asked_for(tmp_path, monkeypatch):
    import errno

    from laborllm.io import write_text_atomic

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_text", full)
    with pytest.raises(OSError) as e:
        write_text_atomic(tmp_path / "report.html", "x")
    assert e.value.filename == str(tmp_path / "report.html") and not list(tmp_path.iterdir())


def test_a_models_own_seed_set_in_a_run_is_not_the_split_seed(tmp_path):
    """`run --set logit.seed=1` reached the model beside the split's seed (once a TypeError)."""
    run("quick", tmp_path / "r", seed=0, data="nlsy79-males", models=["logit"], report=False,
        overrides={"logit": {"seed": 1, "max_iter": 5}})
    meta = json.loads((tmp_path / "r" / "nlsy79-males" / "models" / "logit" / "model.json").read_text())
    assert meta["config"]["seed"] == 1 and meta["data"]["seed"] == 0


def test_the_nlsy97_events_keep_the_identity_the_long_run_is_stamped_with(nlsy97):
    """The NLSY97 CPU run's checkpoints are stamped with this fingerprint (hours of training): a change
    to loading, splitting or hashing must be deliberate, and carry the checkpoints over."""
    assert nlsy97.fingerprint() == "affa3ad44b9a766c"


def test_evaluate_never_overwrites_a_users_comparison_tables(tmp_path):
    from typer.testing import CliRunner

    from laborllm.cli import app

    api.fit("markov", "nlsy79-males", tmp_path / "m")
    mine = tmp_path / "mytables"
    mine.mkdir()
    (mine / "comparison.csv").write_text("my,own\n")
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "m"), "--tables", str(mine)])
    assert r.exit_code != 0 and (mine / "comparison.csv").read_text() == "my,own\n"
    (mine / "comparison.csv").rename(mine / "subgroups.tex")  # any table laborllm would write there
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "m"), "--tables", str(mine)])
    assert r.exit_code != 0 and (mine / "subgroups.tex").read_text() == "my,own\n"
    api.fit("markov", "nlsy79-males", tmp_path / "m2", settings={"order": 2})
    ours = tmp_path / "ours"
    for _ in range(2):  # a folder we wrote may be written again
        r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "m"), str(tmp_path / "m2"), "--tables", str(ours),
                                     "--reference", "markov1"])
        assert r.exit_code == 0, r.output
    assert {"comparison.md", "paired.tex", "subgroups.csv", "subgroups-paired.md"} <= {f.name for f in ours.iterdir()}
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "m"), "--reference", "logit"])
    assert r.exit_code != 0 and "--reference logit: not among the models" in str(r.exception)


def test_a_folder_that_cannot_be_written_is_named_as_the_user_named_it(tmp_path, monkeypatch):
    """A read-only place (root ignores permissions, so the refusal is simulated where the OS gives it):
    the message names the model folder asked for, not our temporary lock file."""
    from laborllm.errors import UserError
    from laborllm.models import folder

    def refuse(prefix, dir):
        raise PermissionError(13, "Permission denied", str(Path(dir) / (prefix + "x")))

    monkeypatch.setattr(folder.tempfile, "mkstemp", refuse)
    with pytest.raises(UserError) as e:
        api.fit("markov", "nlsy79-males", tmp_path / "models" / "m")
    assert str(e.value).startswith(f"{tmp_path / 'models' / 'm'}: cannot write in") and "Permission denied" in str(e.value)


def test_a_model_json_with_its_states_reordered_is_refused(tmp_path):
    """Weights index the states by position: a model.json whose states were reordered would give
    permuted labels with exit 0. The weights say which order they were saved with."""
    import json

    from laborllm.errors import UserError
    from laborllm.models.registry import load_model

    api.fit("logit", "nlsy79-males", tmp_path / "m", max_iter=3)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["states"] = meta["states"][1:] + meta["states"][:1]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="not those the weights were saved with"):
        load_model(tmp_path / "m")
