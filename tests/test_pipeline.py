"""`laborllm run` end to end on 150 real NLSY97 people with a tiny LLM, then predict and simulate."""
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from laborllm.cli import app
from laborllm.errors import UserError
from laborllm.pipeline import run

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


def test_readme_tables_are_generated_from_the_run(run_dir, tmp_path):
    """scripts/results_tables.py fills the README's and benchmarks' marked blocks from the run files."""
    import subprocess
    import sys
    from pathlib import Path

    out, _ = run_dir
    results = json.loads((out / "metrics.json").read_text())  # what the run folder holds now
    readme, bench = tmp_path / "README.md", tmp_path / "benchmarks.md"
    readme.write_text("intro\n<!-- results:quick begin -->\nold\n<!-- results:quick end -->\nrest\n")
    bench.write_text("<!-- timings:quick begin -->\n<!-- timings:quick end -->\n")
    script = Path(__file__).parents[1] / "scripts" / "results_tables.py"
    r = subprocess.run([sys.executable, str(script), str(out), "--name", "quick", "--readme", str(readme),
                        "--benchmarks", str(bench), "--copy-to", str(tmp_path / "kept")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
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
    r = subprocess.run([sys.executable, str(script), str(out), "--name", "quick", "--readme", str(readme),
                        "--benchmarks", str(bench)], capture_output=True, text=True)
    assert r.returncode == 2 and "no <!-- timings:quick begin -->" in r.stderr and readme.read_text() == before
    for not_a_run in (out / "panel" / "models" / "logit", tmp_path / "nothing"):  # one message, no traceback
        r = subprocess.run([sys.executable, str(script), str(not_a_run), "--name", "quick"], capture_output=True, text=True)
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
