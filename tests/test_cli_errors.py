"""Bad inputs and faults through the real entry point (`laborllm.cli.main`): each exits with the
status it promises (2 bad input, 130 interrupted, 1 internal error with a log) and one clear line,
never a traceback; nothing a user wrote is lost."""
import json
import os
import sys

import pandas as pd
import pytest

from laborllm import api, cli
from laborllm.errors import UserError
from tests.conftest import men_csv, nlsy97_csv


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    """60 real NLSY97 people as a user CSV (titles)."""
    return nlsy97_csv(tmp_path_factory.mktemp("data") / "panel.csv", 60,
                      ("gender", "race", "birth_year", "education", "region"))


@pytest.fixture(scope="module")
def markov(panel, tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "markov"
    assert call(["fit", "markov", "--data", str(panel), "--scheme", "titles", "--out", str(out)])[0] == 0
    return out


def call(args, monkeypatch=None):
    """Run the CLI's main() in-process; (exit status, stderr + stdout)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    err, out = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["laborllm", *map(str, args)]
    try:
        with redirect_stderr(err), redirect_stdout(out):
            try:
                cli.main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old
    return code, err.getvalue() + out.getvalue()


def variant(panel, tmp_path, name, **edit):
    f = pd.read_csv(panel)
    for col, (row, value) in edit.items():
        f[col] = f[col].astype(object)
        f.loc[row, col] = value
    path = tmp_path / f"{name}.csv"
    f.to_csv(path, index=False)
    return path


def assert_bad(code, text, *words):
    assert code == 2, text
    assert "Traceback" not in text
    for w in words:
        assert w in text, text


@pytest.mark.parametrize("args, words", [
    ([], ["Usage"]),
    (["bogus"], ["No such command"]),
    (["fit"], ["Missing argument"]),
    (["fit", "markov", "--bogus"], ["No such option"]),
    (["data", "describe", "--seed", "-1"], ["--seed"]),
    (["data", "describe", "--seed", "x"], ["--seed"]),
    (["run", "--models", "nope"], ["unknown model"]),
    (["run", "--set", "career.epochs"], ["key=value"]),
    (["run", "--profile", "pooled"], ["unknown profile", "pooling"]),
    (["fit", "markov", "--out", "m", "--preset", "pooling"], ["unknown preset", "quick or full"]),
    (["fit", "markov", "--out", "m", "--profile", "full"], ["--preset quick|full", "laborllm run --profile"]),
])
def test_usage_errors_exit_2_in_one_line(args, words):
    assert_bad(*call(args), *words)


def test_cli_bad_panels_exit_2_naming_file_and_rows(panel, tmp_path):
    for name, edit, words in [
        ("huge-year", {"year": (3, "1e23")}, ["year", "row"]),
        ("minus-year", {"year": (4, -5)}, ["calendar year", "row"]),
        ("future-year", {"year": (5, 3000)}, ["calendar year"]),
        ("two-digit", {"year": (6, 70)}, ["two-digit"]),
    ]:
        path = variant(panel, tmp_path, name, **edit)
        assert_bad(*call(["data", "describe", "--data", path, "--scheme", "titles"]), path.name, *words)
    assert_bad(*call(["data", "describe", "--data", panel, "--scheme", "titles", "--columns", "race=gender"]),
               "already has")
    # a 20-digit person id is an id, not an overflow
    f = pd.read_csv(panel)
    f["person_id"] = f.person_id.map(lambda i: f"{i:020d}")
    long_ids = tmp_path / "long-ids.csv"
    f.to_csv(long_ids, index=False)
    code, text = call(["data", "describe", "--data", long_ids, "--scheme", "titles", "--json"])
    assert code == 0, text


def test_model_settings_and_configs(panel, tmp_path):
    d = ["--data", panel, "--scheme", "titles"]
    assert_bad(*call(["fit", "markov", *d, "--out", tmp_path / "m3", "--set", "order=3"]), "order=3 is out of range")
    assert not (tmp_path / "m3").exists()
    for name, text in [("list.json", "[1, 2]"), ("model-list.json", '{"model": [1]}')]:
        (tmp_path / name).write_text(text)
        assert_bad(*call(["fit", "markov", *d, "--out", tmp_path / "x", "--config", tmp_path / name]), name)
    assert_bad(*call(["fit", "markov", *d, "--out", tmp_path / "x", "--set", "=1"]), "a setting's name before '='")
    (tmp_path / "run.yaml").write_text("model:\n  order: 2\n")
    assert_bad(*call(["fit", "markov", *d, "--out", tmp_path / "x", "--config", tmp_path / "run.yaml"]),
               "run.yaml", "YAML is not read")
    # a model's own seed is a setting like any other (the split's is --seed)
    code, text = call(["fit", "logit", *d, "--out", tmp_path / "lg", "--set", "seed=1", "--set", "max_iter=3"])
    assert code == 0, text
    assert json.loads((tmp_path / "lg" / "model.json").read_text())["config"]["seed"] == 1
    # a panel with no events (one year per person) is refused before fitting
    f = pd.read_csv(panel).groupby("person_id").head(1)
    one = tmp_path / "one-year.csv"
    f.to_csv(one, index=False)
    assert_bad(*call(["fit", "markov", "--data", one, "--scheme", "titles", "--out", tmp_path / "none"]), "no train events")


def test_user_folders_are_never_lost(panel, tmp_path, markov):
    d = ["--data", panel, "--scheme", "titles"]
    user = tmp_path / "mine"
    user.mkdir()
    (user / "model.json").write_text('{"my": "notes"}')
    (user / "data.csv").write_text("precious")
    assert_bad(*call(["fit", "markov", *d, "--out", user]), "not a laborllm model folder")
    assert (user / "data.csv").read_text() == "precious" and (user / "model.json").read_text() == '{"my": "notes"}'
    for here in (".", "", ".."):  # the current or parent folder is never the model folder
        assert_bad(*call(["fit", "markov", *d, "--out", here]), "name the model folder")
    # refitting over our own model folder keeps the user's files in it
    import shutil

    mine = tmp_path / "refit"
    shutil.copytree(markov, mine)
    (mine / "notes.txt").write_text("keep me")
    code, text = call(["fit", "markov", *d, "--out", mine, "--set", "order=2"])
    assert code == 0, text
    assert (mine / "notes.txt").read_text() == "keep me"
    assert json.loads((mine / "model.json").read_text())["config"]["order"] == 2
    # a replacement killed between its two renames is recovered on the next use
    os.replace(mine, mine.with_name(".refit.old"))
    code, text = call(["predict", mine, "--history", history(tmp_path)])
    assert code == 0, text
    assert (mine / "notes.txt").exists()
    # a second writer is refused while the first holds the lock, and says who holds it
    lock = tmp_path / ".busy.lock"
    lock.write_text(str(os.getppid()))  # a live process
    assert_bad(*call(["fit", "markov", *d, "--out", tmp_path / "busy"]), "being written by process")
    lock.write_text("999999999")  # a dead one: taken over
    assert call(["fit", "markov", *d, "--out", tmp_path / "busy"])[0] == 0
    assert not lock.exists()


def history(tmp_path, **person):
    h = tmp_path / "h.json"
    h.write_text(json.dumps({"person": person or {"gender": "woman", "birth_year": 1982},
                             "history": [{"year": 2001, "occupation": "Cashiers"}, {"year": 2002, "occupation": "Cashiers"}]}))
    return h


def test_simulate_never_overwrites_a_users_file(tmp_path, markov):
    h = history(tmp_path)
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own\n1,2\n")
    assert_bad(*call(["simulate", markov, "--history", h, "--out", notes]), "notes.csv", "--force")
    assert notes.read_text() == "my,own\n1,2\n"
    paths = tmp_path / "paths.csv"
    assert call(["simulate", markov, "--history", h, "--out", paths])[0] == 0
    assert call(["simulate", markov, "--history", h, "--out", paths, "--seed", "1"])[0] == 0  # ours: replaced
    assert paths.read_text().startswith(cli.PATHS_HEADER + "\n")
    assert call(["simulate", markov, "--history", h, "--out", notes, "--force"])[0] == 0  # asked for
    assert notes.read_text().startswith(cli.PATHS_HEADER)


def test_messages_show_values_as_written_not_numpy_reprs(tmp_path, markov):
    for row, shown in (({"year": 3000}, "(e.g. 3000)"), ({"year": 1990, "birth_year": 1e300}, "(e.g. 1e+300)")):
        h = tmp_path / "h.json"
        h.write_text(json.dumps([{"occupation": "Cashiers", **row}]))
        code, text = call(["predict", markov, "--history", h])
        assert code == 2 and shown in text and "np." not in text, text


def test_predict_gives_person_ids_back_as_given(tmp_path, markov):
    for given in ("7", 7, "007"):
        h = tmp_path / "h.json"
        h.write_text(json.dumps({"person_id": given, "history": [{"year": 2001, "occupation": "Cashiers"}]}))
        code, text = call(["predict", markov, "--history", h, "--json"])
        assert code == 0 and json.loads(text)[0]["person_id"] == given


def test_forecast_inputs(tmp_path, markov):
    h = history(tmp_path)
    for args, words in [
        (["--years", "0"], ["--years"]), (["--years", "-3"], ["--years"]), (["--samples", "0"], ["--samples"]),
        (["--samples", "-2"], ["--samples"]), (["--years", "1000000"], ["--years"]), (["--out", tmp_path], ["is a folder"]),
    ]:
        assert_bad(*call(["simulate", markov, "--history", h, *args]), *words)
    for person, row, says in ((dict(gender="womn"), {}, ["gender 'womn'", "known: man, woman"]),
                              (dict(race="Hispanc"), {}, ["race 'Hispanc'", "Hispanic"]),
                              ({}, {"education": "Bachelors"}, ["education 'Bachelors'", "known:"]),
                              ({}, {"educaton": "High school"}, ['"educaton"', "history row 1", "education"]),
                              (dict(birth_yeer=1980), {}, ['"birth_yeer"', '"person"'])):
        odd = tmp_path / "odd.json"
        odd.write_text(json.dumps({"person": person, "history": [{"year": 2001, "occupation": "Cashiers", **row}]}))
        assert_bad(*call(["predict", markov, "--history", odd]), "odd.json", *says)
    bad_person = tmp_path / "p.json"
    bad_person.write_text('{"person": "x", "history": [{"year": 2001, "occupation": "Cashiers"}]}')
    assert_bad(*call(["predict", markov, "--history", bad_person]), "p.json", "person")
    stray = tmp_path / "s.json"  # covariates beside the history instead of in "person"
    stray.write_text('{"birth_year": 1981, "history": [{"year": 2001, "occupation": "Cashiers"}]}')
    assert_bad(*call(["predict", markov, "--history", stray]), "s.json", '"birth_year"', "person")
    numbers = tmp_path / "n.json"
    numbers.write_text("[1, 2, 3]")
    assert_bad(*call(["predict", markov, "--history", numbers]), "n.json", "row 1")
    unknown = tmp_path / "u.json"
    unknown.write_text('[{"year": 2001, "occupation": "Astronaut of the moon"}]')
    code, text = call(["predict", markov, "--history", unknown])
    assert_bad(code, text, "u.json", "unknown to the model")
    assert "--unknown missing" not in text
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + history(tmp_path).read_bytes())
    assert call(["predict", markov, "--history", bom])[0] == 0


def test_damaged_model_folders(tmp_path, markov, panel):
    import shutil

    lst = tmp_path / "list"
    shutil.copytree(markov, lst)
    (lst / "model.json").write_text("[]")
    assert_bad(*call(["evaluate", lst]), "model.json")
    # the right keys with the wrong shapes
    import torch
    from safetensors.torch import load_file, save_file

    shapes = tmp_path / "shapes"
    shutil.copytree(markov, shapes)
    w = load_file(str(shapes / "weights.safetensors"))
    w["c1"] = torch.zeros(3, 3, dtype=w["c1"].dtype)
    save_file(w, str(shapes / "weights.safetensors"))
    assert_bad(*call(["evaluate", shapes]), "do not fit")
    # NaN weights: refused with a message, not NaN metrics (and no NaN cache is written)
    nan = tmp_path / "nan"
    shutil.copytree(markov, nan)
    w = load_file(str(nan / "weights.safetensors"))
    w["c1"] = torch.full_like(w["c1"], float("nan"))
    save_file(w, str(nan / "weights.safetensors"))
    assert_bad(*call(["evaluate", nan]), "non-finite")
    assert not (nan / "logprobs-test.parquet").exists()
    # a corrupt log-probability cache is recomputed, not fatal
    cached = tmp_path / "cached"
    shutil.copytree(markov, cached)
    assert call(["evaluate", cached])[0] == 0
    (cached / "logprobs-test.parquet").write_bytes(b"not parquet")
    code, text = call(["evaluate", cached, "--json"])
    assert code == 0, text
    # --tables naming a file
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert_bad(*call(["evaluate", markov, "--tables", f]), "file.txt")
    # an LLM adapter saved as a pickle is refused, never unpickled
    from laborllm.models.llm import LLM

    ad = tmp_path / "pickled"
    (ad / "adapter").mkdir(parents=True)
    (ad / "adapter" / "adapter_config.json").write_text("{}")
    (ad / "adapter" / "adapter_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(Exception, match="safetensors"):
        LLM._check_adapter(ad / "adapter")


def test_interrupt_and_internal_error(monkeypatch, panel, tmp_path):
    from laborllm import api

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "fit", interrupted)
    code, text = call(["fit", "markov", "--data", panel, "--scheme", "titles", "--out", tmp_path / "i"])
    assert code == 130 and "interrupted: nothing was written" in text  # fit markov keeps nothing: no promise

    def broken(*a, **k):
        raise RuntimeError("something we did not foresee")

    monkeypatch.setattr(api, "fit", broken)
    monkeypatch.setenv("LABORLLM_CACHE", str(tmp_path / "cache"))
    code, text = call(["fit", "markov", "--data", panel, "--scheme", "titles", "--out", tmp_path / "j"])
    assert code == 1 and "internal error" in text and "Traceback" not in text
    logs = list((tmp_path / "cache" / "logs").glob("laborllm-error-*.log"))
    assert len(logs) == 1 and "something we did not foresee" in logs[0].read_text()


def test_fit_help_lists_every_models_settings_with_presets(monkeypatch):
    """`fit --help` names each setting with its type, default and what it does, from the models'
    Settings dataclasses (a setting added to a model shows up with no second list to update)."""
    monkeypatch.setenv("COLUMNS", "400")  # one line per setting
    code, text = call(["fit", "--help"])
    assert code == 0
    assert "lora_layers (int or none, default None): LoRA on the top N layers only" in text
    assert "scoring (renormalised | constrained, default 'renormalised')" in text
    assert "career (presets quick: layers=4" in text and "order (int, default 1)" in text
    # each setting's role: the ones that can change after fitting say so, the ones that define the fit do not
    assert "(read: can change after fitting)" in text.split("scoring (renormalised", 1)[1].split("\n")[0]
    assert "(how the work goes: can change after fitting)" in text.split("checkpoint_minutes (", 1)[1].split("\n")[0]
    assert "can change after fitting" not in text.split("lora_layers (", 1)[1].split("\n")[0]


def test_run_under_torchrun_is_refused_before_any_fit(monkeypatch, tmp_path):
    """Every torchrun process would fit every model into one run folder: refused, nothing written."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "run"
    assert_bad(*call(["run", "--models", "markov1", "--out", out]), "torchrun", "evaluate")
    assert not out.exists()


def test_a_reader_that_stops_early_is_not_an_error():
    """`laborllm data describe | head -1`: the reader closes the pipe; exit 0, nothing on stderr."""
    import subprocess

    p = subprocess.Popen([sys.executable, "-m", "laborllm.cli", "data", "describe", "--data", "nlsy79-males"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before the command writes a line
    err = p.stderr.read().decode()
    assert p.wait() == 0 and err == "", err


def test_an_ordinary_run_prints_progress_as_plain_lines_not_warnings(panel, tmp_path):
    """`make run`'s console: what is fitted and how it scored, as plain lines; WARNING only for what
    deserves one (here nothing does)."""
    import subprocess

    r = subprocess.run([sys.executable, "-m", "laborllm.cli", "run", "--data", str(panel), "--scheme", "titles",
                        "--models", "markov1,logit", "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fitting panel/markov1" in r.stderr and "panel/logit: test perplexity" in r.stderr
    assert "WARNING" not in r.stderr, r.stderr


@pytest.mark.parametrize("top", ["0", "-3"])
def test_predict_top_must_be_at_least_one(tmp_path, markov, top):
    """`predict --top 0` would print an empty table: refused with exit status 2, naming the option;
    --top 1 answers."""
    h = history(tmp_path)
    code, text = call(["predict", str(markov), "--history", h, "--top", top])
    assert code == 2 and "--top must be at least 1" in text, text
    code, text = call(["predict", str(markov), "--history", h, "--top", "1", "--json"])
    assert code == 0, text


def test_two_errors_in_one_second_keep_both_tracebacks(tmp_path, monkeypatch):
    from laborllm.exits import write_traceback as _internal_error

    monkeypatch.setenv("LABORLLM_CACHE", str(tmp_path))
    a, b = _internal_error(ValueError("first")), _internal_error(ValueError("second"))
    assert a != b and "first" in a.read_text() and "second" in b.read_text()


def test_bracketed_paths_are_printed_whole(tmp_path):
    import subprocess
    import sys

    weird = tmp_path / "we[ird]"
    weird.mkdir()
    r = subprocess.run([sys.executable, "-m", "laborllm.cli", "data", "describe", "--data", str(weird / "data.csv")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "we[ird]/data.csv" in r.stderr, r.stderr


def test_the_interrupt_message_promises_only_what_is_kept():
    from laborllm.exits import interrupted_message

    assert "nothing was written" in interrupted_message(["simulate", "m"])
    assert "checkpoint of its last finished epoch" in interrupted_message(["fit", "career"])
    assert "features computed so far" in interrupted_message(["fit", "llm-head"])
    assert "checkpoints" in interrupted_message(["fit", "llm"]) and "continue" in interrupted_message(["run"])


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


def test_evaluate_refuses_a_model_whose_data_changed_since_fitting(tmp_path):
    csv = men_csv(tmp_path / "men.csv", n=300)
    api.fit("markov", str(csv), tmp_path / "m", scheme="titles")
    men_csv(csv)  # people appended to the file: the split moves people between train and test
    with pytest.raises(UserError, match="not what the model was fitted on"):
        api.evaluate([tmp_path / "m"])
