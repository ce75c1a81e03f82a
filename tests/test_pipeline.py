"""`laborllm run` end to end on 150 real NLSY97 people with a tiny LLM, then predict and simulate."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from laborllm import api
from laborllm.cli import app
from laborllm.errors import UserError
from laborllm.pipeline import run

from tests.conftest import ppl
from tests.test_llm_career import panel_csv, tiny_base  # noqa: F401  (module fixtures)


# the in-context model scored constrained here: renormalised over these 211 titles it is a pass of ~1,800
# positions per event, 45 s on 2 cores; both modes' exactness is tested in test_text_scoring.py
ICL = {"icl": {"scoring": "constrained"}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, panel_csv, tiny_base):  # noqa: F811
    out = tmp_path_factory.mktemp("run") / "quick"
    results = run("quick", out, seed=0, data=panel_csv, base=tiny_base, scheme="titles", overrides=ICL)
    return out, results


def test_run_writes_every_output(run_dir, panel_csv):  # noqa: F811
    out, results = run_dir
    metrics = json.loads((out / "metrics.json").read_text())
    names = [m["model"] for m in metrics]
    assert names == ["uniform", "markov1", "markov2", "logit", "career", "llm-titles", "llm-codes", "icl"]
    uniform = metrics[0]
    assert uniform["perplexity"] == pytest.approx(uniform["n_states"])  # the floor, exactly
    assert all(m["perplexity"] < uniform["perplexity"] for m in metrics[1:4])
    assert len({m["events_fingerprint"] for m in metrics}) == 1  # every model on the same test events
    for m in metrics:
        assert {"model", "split", "n_events", "perplexity", "perplexity_ci95", "top1", "top5", "label"} <= set(m)
        # paired ratios against every other model, consistent with the two perplexities
        assert set(m["paired"]) == set(names) - {m["model"]}
        for other, p in m["paired"].items():
            ppl_other = next(x["perplexity"] for x in metrics if x["model"] == other)
            assert p["ratio"] == pytest.approx(m["perplexity"] / ppl_other, rel=1e-6)
            assert p["ci95"][0] <= p["ratio"] <= p["ci95"][1]
    llm = next(m for m in metrics if m["model"] == "llm-titles")
    n_train = llm["label"].split("training people")[0].split(",")[-1].strip()
    from laborllm import api

    train = api.events_for(api.data_spec(panel_csv, scheme="titles")).train
    assert int(n_train) == train.frame.person_id.nunique()  # every training person, not a subset
    assert (out / "report.html").stat().st_size > 50_000  # plots are embedded
    html = (out / "report.html").read_text()
    for section in ("Paired perplexity ratios", "Titles vs numeric codes", "Results by subgroup", "Calibration",
                    "Representativeness", "Simulated careers"):
        assert section in html
    for f in ("comparison.csv", "comparison.tex", "comparison.md", "paired.md", "logprobs/llm-titles-test.parquet",
              "logprobs/logit-test.parquet", "plots/calibration.png", "plots/subgroups.png", "subgroups.tex",
              "subgroups-paired.md"):
        assert (out / "panel" / f).exists(), f
    # by subgroup, every model is set against the logit with an interval paired within the level
    women = next(m for m in metrics if m["model"] == "llm-titles")["subgroups"]["gender"]["woman"]
    assert women["paired"]["logit"]["ci95"][0] <= women["paired"]["logit"]["ratio"] <= women["paired"]["logit"]["ci95"][1]
    assert "| gender | woman |" in (out / "panel" / "subgroups-paired.md").read_text()
    assert "Ratio to ref." in (out / "panel" / "comparison.md").read_text()
    # representativeness for every model against CAREER, and every model's careers simulated, LLMs included
    import pandas as pd

    rep = pd.read_csv(out / "panel" / "representativeness-raw.csv")
    assert set(rep.model) == set(names) and (rep.distance_groups_lo <= rep.distance_groups_hi).all()
    assert rep[rep.model != "career"].distance_groups_vs_ref.notna().all()
    careers = pd.read_csv(out / "panel" / "careers.csv")
    assert set(careers.columns) >= set(names)
    assert {p.stem for p in (out / "panel" / "simulated").glob("*.parquet")} == set(names)
    for f in ("representativeness.md", "representativeness-paired.tex", "representativeness-summary.md", "careers-paired.md"):
        assert (out / "panel" / f).exists(), f
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 0 and "torch" in cfg["versions"] and set(cfg["timings_seconds"]) == {f"panel/{n}" for n in names}


def test_rerun_resumes_and_reproduces(run_dir, panel_csv, tiny_base, caplog):  # noqa: F811
    out, results = run_dir
    again = run("quick", out, seed=0, data=panel_csv, base=tiny_base, scheme="titles", report=False, overrides=ICL)
    assert "already fitted" in caplog.text
    key = lambda rs: {(r["data"], r["model"]): r["perplexity"] for r in rs}  # noqa: E731
    # cached log-probabilities are stored as float32, hence the relative tolerance
    assert key(again) == pytest.approx(key(results), rel=1e-5)


def test_predict_and_simulate_cli(run_dir, tmp_path):
    out, _ = run_dir
    hist = tmp_path / "h.json"
    hist.write_text(json.dumps({"person": {"gender": "woman", "race": "Black", "birth_year": 1982,
                                           "education": "High school", "region": "South"},
                                "history": [{"year": 2001, "occupation": "Cashiers"},
                                            {"year": 2002, "occupation": "Cashiers"}]}))
    r = CliRunner().invoke(app, ["predict", str(out / "panel" / "models" / "logit"), "--history", str(hist), "--json", "--top", "5"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert len(rows) == 5 and rows[0]["year"] == 2003 and rows[0]["probability"] >= rows[-1]["probability"]
    csv = tmp_path / "paths.csv"
    r = CliRunner().invoke(app, ["simulate", str(out / "panel" / "models" / "career"), "--history", str(hist), "--years", "3",
                                 "--samples", "4", "--out", str(csv)])
    assert r.exit_code == 0, r.output
    paths = pd.read_csv(csv)
    assert len(paths) == 12 and sorted(paths.year.unique()) == [2003, 2004, 2005]
    bad = tmp_path / "bad.json"
    bad.write_text('[{"year": 2001, "occupation": "Astronaut of the moon"}]')
    r = CliRunner().invoke(app, ["predict", str(out / "panel" / "models" / "logit"), "--history", str(bad)])
    assert isinstance(r.exception, UserError), r.exception  # the user's mistake, named (exit 2 in main())
    assert "Astronaut of the moon" in str(r.exception) and bad.name in str(r.exception)


def test_text_command_prints_a_resume():
    r = CliRunner().invoke(app, ["text", "--person", "1", "--data", "nlsy97"])
    assert r.exit_code == 0, r.output
    assert "Work history of a White woman" in r.output and "2002: Student" in r.output


SCRIPT = Path(__file__).parents[1] / "scripts" / "results_tables.py"


def results_tables(out: Path, name: str, tmp_path: Path, intro: str = "", rest: str = ""):
    """scripts/results_tables.py run on `out` into a README and benchmarks file of their own blocks."""
    readme, bench = tmp_path / "README.md", tmp_path / "benchmarks.md"
    readme.write_text(f"{intro}<!-- results:{name} begin -->\nold\n<!-- results:{name} end -->\n{rest}")
    bench.write_text(f"<!-- timings:{name} begin -->\n<!-- timings:{name} end -->\n")
    r = subprocess.run([sys.executable, str(SCRIPT), str(out), "--name", name, "--readme", str(readme),
                        "--benchmarks", str(bench), "--copy-to", str(tmp_path / "kept")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return readme, bench


def test_readme_tables_are_generated_from_the_run(run_dir, tmp_path):
    """scripts/results_tables.py fills the README's and benchmarks' marked blocks from the run files."""
    out, _ = run_dir
    results = json.loads((out / "metrics.json").read_text())  # what the run folder holds now
    readme, bench = results_tables(out, "quick", tmp_path, "intro\n", "rest\n")
    # the files the tables come from are kept beside them, as the run wrote them
    for f in ("metrics.json", "config.json", "panel/comparison.md", "panel/paired.tex", "panel/subgroups.tex"):
        assert (tmp_path / "kept" / f).read_bytes() == (out / f).read_bytes(), f
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    for m in results:
        assert f"| {m['model']} |" in text and f"{m['perplexity']:.2f}" in text
    assert "Ratio to ref." in text and "1 (reference)" in text
    assert all(f"panel/{m['model']}" in bench.read_text() for m in results)
    # a target without its block: every file is checked before any is written
    bench.write_text("no block here\n")
    readme.write_text(before := "intro\n<!-- results:quick begin -->\nold\n<!-- results:quick end -->\n")
    r = subprocess.run([sys.executable, str(SCRIPT), str(out), "--name", "quick", "--readme", str(readme),
                        "--benchmarks", str(bench)], capture_output=True, text=True)
    assert r.returncode == 2 and "no <!-- timings:quick begin -->" in r.stderr and readme.read_text() == before
    for not_a_run in (out / "panel" / "models" / "logit", tmp_path / "nothing"):  # one message, no traceback
        r = subprocess.run([sys.executable, str(SCRIPT), str(not_a_run), "--name", "quick"], capture_output=True, text=True)
        assert r.returncode == 2 and "not a run folder's file" in r.stderr and "Traceback" not in r.stderr


def test_tables_of_a_run_still_going_say_what_is_missing_and_time_what_is_done(run_dir, tmp_path):
    """A run in pieces (NLSY97 on a CPU) between invocations: its metrics hold the models finished so
    far and its config no timings yet. The README block names the models still to come, and the
    timings come from the finished models' own fit and scoring seconds."""
    import importlib.util
    import shutil
    from pathlib import Path

    out, _ = run_dir
    going = tmp_path / "going"
    shutil.copytree(out, going)
    rows = json.loads((going / "metrics.json").read_text())
    done, missing = rows[:-1], rows[-1]["model"]
    (going / "metrics.json").write_text(json.dumps(done))
    cfg = json.loads((going / "config.json").read_text())
    (going / "config.json").write_text(json.dumps({**cfg, "timings_seconds": {}}))
    spec = importlib.util.spec_from_file_location("results_tables", Path(__file__).parents[1] / "scripts" / "results_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    text = tables.results_markdown(going, "laborllm run --profile quick")
    assert f"Not yet scored on every test event: `{missing}`" in text
    timings = tables.timings_markdown(going, "laborllm run --profile quick")
    for r in done:
        assert f"| {r['data']}/{r['model']} | {r['fit_seconds']} | {r['score_seconds']} |" in timings
    assert f"/{missing} |" not in timings


def test_pooling_profile_sets_pooled_models_against_themselves_alone(tmp_path):
    """`run --profile pooling` on the men panel, CAREER alone and pretrained on nlswork through the
    crosswalk (tiny networks): both on the same events, the contrast table in the run folder, the
    report and the README block."""
    import importlib.util
    from pathlib import Path

    from laborllm.models.registry import load_model

    tiny = {"layers": 1, "d": 32, "heads": 2, "ff": 64, "epochs": 1, "min_steps": 0, "pretrain_epochs": 1}
    out = tmp_path / "pooling"
    results = run("pooling", out, models=["career", "career-pooled"], overrides={"career": tiny, "career-pooled": tiny})
    assert [r["model"] for r in results] == ["career", "career-pooled"] and results[0]["n_events"] == 567
    assert "| career-pooled | career |" in (out / "nlsy79-males" / "contrasts.md").read_text()
    pooled = load_model(out / "nlsy79-males" / "models" / "career-pooled")
    # nlswork's groups went onto the men's states; the one without a counterpart kept its own
    assert pooled.states_all[len(pooled.states):] == ["Other occupations"]
    assert "Does pooling another survey help?" in (out / "report.html").read_text()
    spec = importlib.util.spec_from_file_location("results_tables", Path(__file__).parents[1] / "scripts" / "results_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    assert "**Does pooling another survey help?**" in tables.results_markdown(out, "laborllm run --profile pooling")


def test_each_profile_validates_its_llms_where_an_epoch_is_chosen():
    """The quick preset's one-epoch LLMs skip the validation pass; a profile whose LLMs train several
    epochs (nlsy97-cpu, full) validates each epoch and keeps the best, whatever the preset says."""
    from laborllm import api
    from laborllm.pipeline import _plan
    from laborllm.profiles import PROFILES

    for name, prof in PROFILES.items():
        for _, chosen in _plan(prof, None, None, {}):
            for model, kind, settings in chosen:
                if kind == "llm":
                    cfg = api.make_model(kind, prof.preset, **settings).config
                    assert cfg["validate"] or cfg["epochs"] == 1, (name, model)  # several epochs: chosen by validation
                    assert name != "quick" or not cfg["validate"], (name, model)  # one epoch: nothing to choose


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


def test_run_refuses_a_folder_that_is_not_a_run_folder(tmp_path):
    mine = tmp_path / "myproj"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    with pytest.raises(UserError, match="not a laborllm run folder"):
        run("quick", mine, data="nlsy79-males", models=["markov1"], report=False)
    assert (mine / "config.json").read_text() == '{"my": "settings"}'


def test_a_panel_tag_is_a_plain_folder_name():
    from laborllm.pipeline import panel_tag

    assert panel_tag("../d/dot/.csv") == "csv" and panel_tag("nlsy97") == "nlsy97"
    assert panel_tag("/x/my data [v2].csv") == "my_data_v2_"


def test_run_checks_every_models_settings_before_the_first_fit(tmp_path):
    with pytest.raises(UserError, match="max_iter='x'"):  # logit's mistake, found before markov1 is fitted
        run("quick", tmp_path / "r", data="nlsy79-males", models=["markov1", "logit"], report=False,
            overrides={"logit": {"max_iter": "x"}})
    assert not (tmp_path / "r" / "nlsy79-males" / "models" / "markov1").exists()


def test_a_models_own_seed_set_in_a_run_is_not_the_split_seed(tmp_path):
    """`run --set logit.seed=1` reached the model beside the split's seed (once a TypeError)."""
    run("quick", tmp_path / "r", seed=0, data="nlsy79-males", models=["logit"], report=False,
        overrides={"logit": {"seed": 1, "max_iter": 5}})
    meta = json.loads((tmp_path / "r" / "nlsy79-males" / "models" / "logit" / "model.json").read_text())
    assert meta["config"]["seed"] == 1 and meta["data"]["seed"] == 0


def test_evaluate_on_a_seeded_sample_of_people_reads_the_runs_kept_scores(run_dir, panel_csv, tmp_path, monkeypatch):  # noqa: F811
    """`evaluate --persons`: a model too slow for the whole split is set against the others on a seeded
    sample of test people; a model whose whole-split scores the run kept reads its rows from them
    instead of scoring again, and one without is scored on the sample alone."""
    import shutil

    import numpy as np

    from laborllm.data.events import sample_ids
    from laborllm.files import read_log_probs
    from laborllm.models.llm import LLM

    models = shutil.copytree(run_dir[0], tmp_path / "run") / "panel" / "models"
    monkeypatch.setattr(LLM, "log_probs_and_figures", lambda *a, **k: (_ for _ in ()).throw(AssertionError("scored")))
    whole = api.evaluate([models / "logit", models / "llm-titles"])  # the run's kept scores, nothing scored
    sample = api.evaluate([models / "logit", models / "llm-titles"], persons=5, seed=3)
    assert [r["sample"]["persons"] for r in sample] == [5, 5] and sample[0]["n_events"] < whole[0]["n_events"]
    assert sample[0]["events_fingerprint"] == sample[1]["events_fingerprint"] and "llm-titles" in sample[0]["paired"]
    lp, _ = read_log_probs(models.parent / "logprobs" / "llm-titles-test.parquet")
    test = api.events_for(api.load_model(models / "logit").meta["data"]).test
    mask = test.frame.person_id.isin(sample_ids(test.frame.person_id, 5, 3)).to_numpy()
    nll = -lp[np.flatnonzero(mask), test.frame.target.to_numpy()[mask]]
    assert sample[1]["perplexity"] == pytest.approx(np.exp(nll.mean()), rel=1e-9)
    assert api.evaluate([models / "logit"], persons=5, seed=3)[0]["events_fingerprint"] == sample[0]["events_fingerprint"]
    assert api.evaluate([models / "logit"], persons=5, seed=4)[0]["events_fingerprint"] != sample[0]["events_fingerprint"]
    api.fit("markov", panel_csv, tmp_path / "m", scheme="titles")  # no kept scores: the sample is scored alone
    alone = api.evaluate([tmp_path / "m"], persons=5, seed=3)[0]
    assert alone["n_events"] == mask.sum() and (tmp_path / "m" / "logprobs-test-5people-seed3.parquet").exists()
    assert not (tmp_path / "m" / "logprobs-test.parquet").exists()


def test_a_model_too_slow_for_every_test_event_is_set_against_the_others_on_a_sample(tmp_path, monkeypatch):
    """A profile's sampled model is scored on a seeded sample of test people only, beside every other
    model read on the same people's events (rows of their whole-split scores), in PANEL/sample/; the
    main comparison stays on every test event; the README block shows both."""
    import numpy as np

    from laborllm import profiles
    from laborllm.data.events import sample_ids
    from laborllm.files import read_log_probs
    from laborllm.profiles import Profile

    monkeypatch.setitem(profiles.PROFILES, "slow", Profile("quick", (("nlsy79-males", ("markov1", "logit")),),
                                                           sampled={"nlsy79-males": (20, ("markov2",))}))
    out = tmp_path / "run"
    run("slow", out)
    assert [r["model"] for r in json.loads((out / "metrics.json").read_text())] == ["markov1", "logit"]
    assert "On a seeded sample of 20 test people" in (out / "report.html").read_text()
    assert "markov2" in (out / "nlsy79-males" / "careers.md").read_text().splitlines()[0]  # it simulates careers too
    sample = {r["model"]: r for r in json.loads((out / "nlsy79-males" / "sample" / "metrics.json").read_text())}
    assert set(sample) == {"markov1", "logit", "markov2"} and sample["markov2"]["sample"]["persons"] == 20
    test = api.events_for(api.data_spec("nlsy79-males")).test
    mask = test.frame.person_id.isin(sample_ids(test.frame.person_id, 20, 0)).to_numpy()
    assert {r["n_events"] for r in sample.values()} == {int(mask.sum())} and mask.sum() < len(test)
    lp, _ = read_log_probs(out / "nlsy79-males" / "logprobs" / "markov1-test.parquet")
    nll = -lp[np.flatnonzero(mask), test.frame.target.to_numpy()[mask]]
    assert sample["markov1"]["perplexity"] == pytest.approx(np.exp(nll.mean()), rel=1e-6)
    assert "markov1" in sample["markov2"]["paired"]
    assert (out / "nlsy79-males" / "logprobs" / "markov2-test-20people-seed0.parquet").exists()
    assert not (out / "nlsy79-males" / "logprobs" / "markov2-test.parquet").exists()
    for stem in ("comparison.md", "representativeness-summary.md"):
        assert (out / "nlsy79-males" / "sample" / stem).exists()
    readme, _ = results_tables(out, "slow", tmp_path)
    text = readme.read_text()
    assert "On a seeded sample of test people" in text and "20 of the" in text and "`markov2`" in text
    assert (tmp_path / "kept" / "nlsy79-males" / "sample" / "comparison.md").exists()
