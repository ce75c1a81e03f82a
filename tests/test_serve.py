"""`laborllm serve`: the JSON API answers as `laborllm predict` / `simulate` do, refuses bad input with
a 4xx and a message, and the page works in a real headless browser (Debian's chromium)."""
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from laborllm import api

RUN = Path(__file__).parents[1] / "docs" / "results" / "quick"  # a real run's files
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Markov, logit and a tiny LLM fitted on the men panel, and the quick run's comparison."""
    from laborllm.lm.tiny import tiny_model_folder
    from laborllm.text.templates import ResumeTemplate, state_codes

    root = tmp_path_factory.mktemp("serve")
    api.fit("markov", "nlsy79-males", root / "markov1", "quick")
    api.fit("logit", "nlsy79-males", root / "logit", "quick")
    ev = api.events_for(api.data_spec("nlsy79-males"))
    codes = state_codes(ev.states, ev.panel.scheme)
    texts = [ResumeTemplate("titles").text(g, codes) for _, g in ev.panel.frame.groupby("person_id")]
    base = tiny_model_folder(root / "lm", texts, vocab_size=500, hidden=48)
    api.fit("llm", "nlsy79-males", root / "llm", "quick", base=str(base), epochs=0, precision="fp32")
    # the README's screenshots show a real fine-tuned LLM instead of the tiny one (scripts/explorer-screenshots.sh)
    llm = os.environ.get("LABORLLM_EXPLORER_LLM") or str(root / "llm")
    return root, [str(root / "markov1"), str(root / "logit"), llm, str(RUN)]


@pytest.fixture(scope="module")
def client(served):
    from fastapi.testclient import TestClient

    from laborllm.serve.app import create_app
    from laborllm.serve.catalog import Catalog

    return TestClient(create_app(Catalog.from_sources(served[1])), base_url="http://127.0.0.1:8000")


HISTORY = {"person": {"gender": "man", "race": "Black", "birth_year": 1959, "education": "High school",
                      "region": "South"},
           "history": [{"year": 1986, "occupation": "Craftsmen and Foremen"},
                       {"year": 1987, "occupation": "Craftsmen and Foremen"},
                       {"year": 1988, "occupation": "Operatives"}]}


def cli_json(args):
    """What the command prints on standard output (progress bars go to standard error)."""
    import io
    import sys
    from contextlib import redirect_stdout

    from laborllm import cli

    buf, old = io.StringIO(), sys.argv
    sys.argv = ["laborllm", *map(str, args)]
    try:
        with redirect_stdout(buf):
            try:
                cli.main()
            except SystemExit as e:
                assert not e.code, buf.getvalue()
    finally:
        sys.argv = old
    return buf.getvalue()


@pytest.mark.parametrize("model", ["logit", "llm"])
def test_predict_answers_as_the_predict_command(client, served, tmp_path, model):
    h = tmp_path / "h.json"
    h.write_text(json.dumps(HISTORY))
    want = json.loads(cli_json(["predict", served[0] / model, "--history", h, "--top", "5", "--json"]))
    got = client.post("/api/predict", json={"model": model, "history": HISTORY, "top": 5}).json()
    assert [t["state"] for t in got["top"]] == [w["state"] for w in want]
    assert [round(t["probability"], 9) for t in got["top"]] == [round(w["probability"], 9) for w in want]
    assert got["year"] == 1989 and got["last_state"] == "Operatives" and 0 < got["stay_probability"] < 1
    if model == "llm":
        assert got["normalization"].startswith("exact, constrained")  # as `predict` reads an LLM


def test_simulate_answers_as_the_simulate_command(client, served, tmp_path):
    h = tmp_path / "h.json"
    h.write_text(json.dumps(HISTORY))
    cli_json(["simulate", served[0] / "logit", "--history", h, "--years", "4", "--samples", "20", "--seed", "7",
              "--out", tmp_path / "sims.csv"])
    want = pd.read_csv(tmp_path / "sims.csv")
    got = client.post("/api/simulate", json={"model": "logit", "history": HISTORY, "years": 4, "samples": 20,
                                             "seed": 7, "chart": True}).json()
    paths = pd.DataFrame(got["occupations"])
    assert paths[["sample", "year", "occupation"]].values.tolist() == want[["sample", "year", "occupation"]].values.tolist()
    by_year = pd.DataFrame(got["shares"]).groupby("year").share.sum()
    assert list(by_year.index) == [1989, 1990, 1991, 1992] and (by_year.round(9) == 1).all()
    assert got["chart"].startswith("<svg") and len(got["paths"]) == 5


@pytest.mark.parametrize("body, status, message", [
    ({"model": "logit", "history": {"history": [{"year": 1990, "occupation": "Astronaut"}]}}, 400,
     "state(s) unknown to the model: Astronaut"),
    ({"model": "logit", "history": {"history": [{"year": 1990, "occupation": "Operatives"},
                                                {"year": 1990, "occupation": "Operatives"}]}}, 400,
     "duplicate person-years"),
    ({"model": "logit", "history": []}, 400, "no history rows"),
    ({"model": "logit", "history": {"history": [{"year": "soon", "occupation": "Operatives"}]}}, 400, "year"),
    ({"model": "../../etc/passwd", "history": HISTORY}, 404, "unknown model"),
    ({"history": HISTORY}, 400, "model: Field required"),
    ({"model": "logit", "history": HISTORY, "top": 0}, 400, "top"),
])
def test_bad_input_gets_a_4xx_and_a_message(client, body, status, message):
    r = client.post("/api/predict", json=body)
    assert r.status_code == status and message in r.json()["error"], r.text


@pytest.mark.parametrize("route, body, message", [
    ("/api/simulate", {"model": "logit", "history": HISTORY, "year": 2, "sample": 3}, "year: Extra inputs"),
    ("/api/predict", {"model": "logit", "history": HISTORY, "top": True}, "top: Input should be a valid integer"),
    ("/api/simulate", {"model": "logit", "history": HISTORY, "samples": "3"}, "samples: Input should be a valid integer"),
    ("/api/simulate", {"model": "logit", "history": HISTORY, "samples": 10_000, "years": 100}, "at most 5,000 sampled"),
])
def test_a_request_is_read_strictly(client, route, body, message):
    """A misspelt key or a wrong type is named, never answered with the defaults."""
    r = client.post(route, json=body)
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_errors_are_json_and_only_our_host_is_served(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.json()["error"] == "/api/nothing: not found"
    r = client.post("/api/predict", content=b'{"model": "logit", "history": [}', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    # DNS rebinding: a page of evil.example whose name resolves to 127.0.0.1 reads nothing
    r = client.get("/api/people", params={"model": "logit"}, headers={"host": "evil.example:8000"})
    assert r.status_code == 400 and "evil.example" in r.json()["error"]
    assert client.get("/api/models", headers={"host": "localhost:8000"}).status_code == 200


def test_serve_on_a_busy_port_is_a_message(served):
    import socket

    from tests.test_cli_errors import call

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        code, text = call(["serve", served[1][0], "--port", s.getsockname()[1]])
    assert code == 2 and "cannot listen on 127.0.0.1" in text and "another --port" in text


def test_no_file_is_reachable_through_a_parameter(client):
    assert client.get("/api/person", params={"model": "/etc/passwd", "id": "1"}).status_code == 404
    assert client.get("/api/compare", params={"run": str(RUN)}).status_code == 404  # runs by key only
    assert client.get("/static/../catalog.py").status_code == 404


def test_compare_and_subgroups_read_the_runs_metrics(client):
    r = client.get("/api/compare", params={"run": "quick"}).json()
    metrics = json.loads((RUN / "metrics.json").read_text())
    men = r["panels"]["nlsy79-males"]
    assert [x["model"] for x in men["rows"]] == [m["model"] for m in metrics if m["data"] == "nlsy79-males"]
    assert men["chart"].startswith("<svg") and "race" in men["groups"]
    s = client.get("/api/subgroups", params={"run": "quick", "panel": "nlsy79-males", "group": "race"}).json()
    logit = next(m for m in metrics if m["data"] == "nlsy79-males" and m["model"] == "logit")
    black = next(t for t in s["table"] if t["model"] == "logit" and t["level"] == "Black")
    assert black["perplexity"] == pytest.approx(logit["subgroups"]["race"]["Black"]["perplexity"])
    # each model against the logit within the level, as the run paired it there
    titles = next(m for m in metrics if m["data"] == "nlsy79-males" and m["model"] == "llm-titles")
    got = next(t for t in s["table"] if t["model"] == "llm-titles" and t["level"] == "Black")
    assert s["reference"] == "logit" and got["paired"] == titles["subgroups"]["race"]["Black"]["paired"]["logit"]


# -- in a real browser -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(served):
    import uvicorn

    from laborllm.serve.app import create_app
    from laborllm.serve.catalog import Catalog

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(Catalog.from_sources(served[1])), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page(server):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        pg = browser.new_page(viewport={"width": 1200, "height": 1000})
        pg.goto(server)
        pg.wait_for_selector("body[data-ready=yes]")
        yield pg
        browser.close()


def screenshot(page, name):
    """Kept under docs/ when LABORLLM_SCREENSHOTS names a folder (scripts/explorer-screenshots.sh)."""
    folder = os.environ.get("LABORLLM_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"explorer-{name}.png"), full_page=True)


def type_history(page, history):
    page.click("#tab-ask")
    for c, v in history["person"].items():
        page.fill(f"#cov-{c}", str(v))
    rows = page.locator("#history tbody tr")
    while rows.count() < len(history["history"]):
        page.click("#add-year")
    while rows.count() > len(history["history"]):
        rows.last.locator(".remove").click()
    for i, r in enumerate(history["history"]):
        rows.nth(i).locator(".year").fill(str(r["year"]))
        rows.nth(i).locator(".occ").fill(r["occupation"])


def test_browser_ask_shows_what_predict_says(page, served, tmp_path):
    type_history(page, HISTORY)
    page.click("#ask")
    page.wait_for_selector("#answers .card[data-model=logit] .bar")
    first = page.locator("#answers .card[data-model=logit] .bar").first
    h = tmp_path / "h.json"
    h.write_text(json.dumps(HISTORY))
    want = json.loads(cli_json(["predict", served[0] / "logit", "--history", h, "--top", "1", "--json"]))[0]
    assert first.locator(".name").inner_text() == want["state"]
    assert first.locator(".p").inner_text() == f"{want['probability']:.3f}"
    assert page.locator("#answers .card").count() == 3  # every served model side by side
    assert "stays Operatives" in page.locator("#answers .card[data-model=logit] .stay").inner_text()
    screenshot(page, "ask")
    # what-if: another year of history changes the answer without pressing Ask again
    before = page.locator("#answers .card[data-model=logit]").inner_text()
    page.locator("#history tbody tr").last.locator(".occ").fill("Sales Workers")
    page.locator("#history tbody tr").last.locator(".occ").dispatch_event("change")
    page.wait_for_function("b => (document.querySelector('#answers .card[data-model=logit]') || {}).innerText !== b", arg=before)
    assert "stays Sales Workers" in page.locator("#answers .card[data-model=logit] .stay").inner_text()


def test_browser_simulate_draws_the_picture(page):
    type_history(page, HISTORY)
    page.click("#tab-simulate")
    page.select_option("#sim-model", "markov1")
    page.click("#simulate")
    page.wait_for_selector("#sim-chart svg")
    assert page.locator("#sim-paths li").count() == 5
    assert page.locator("#sim-paths li").first.inner_text().startswith("1989 ")
    screenshot(page, "simulate")


def test_browser_bad_occupation_shows_a_message(page):
    bad = {**HISTORY, "history": [*HISTORY["history"][:2], {"year": 1988, "occupation": "Astronaut"}]}
    type_history(page, bad)
    page.click("#ask")
    page.wait_for_selector("#error:not([hidden])")
    assert "unknown to the model: Astronaut" in page.locator("#error").inner_text()
    assert page.locator("#answers .card").count() == 0


def test_browser_compare_and_pick_a_subgroup_and_a_real_person(page):
    page.click("#tab-compare")
    page.wait_for_selector("#compare .forest svg")
    assert "paired ratio vs logit" in page.locator("#compare table").first.inner_text()
    page.locator("#compare select.group").first.select_option("race")
    page.wait_for_selector("#compare .subgroup table")
    sub = page.locator("#compare .subgroup table").first.inner_text()
    assert "Black" in sub and "paired ratio vs logit" in sub
    screenshot(page, "compare")
    # a real test person fills the career
    page.click("#tab-ask")
    page.select_option("#person-model", "logit")
    page.wait_for_function("document.querySelectorAll('#person option').length > 1")
    page.select_option("#person", index=1)
    page.wait_for_function("document.querySelector('#history tbody tr .occ').value !== ''")
    assert page.locator("#history tbody tr").count() > 1 and page.input_value("#cov-gender") == "man"


def test_serve_refuses_a_source_that_is_not_a_run_or_a_model(tmp_path):
    from tests.test_cli_errors import call

    (tmp_path / "notes.txt").write_text("mine")
    code, text = call(["serve", tmp_path])
    assert code == 2 and "not a run folder (no metrics.json), a model folder (no model.json)" in text


def test_two_models_asked_at_once_load_one_at_a_time(served, monkeypatch):
    """Two LLMs asked together on a fresh server: loading is serialised (transformers' lazy imports
    fail under concurrent first use), and each request gets its own model."""
    from laborllm.serve import catalog as cat

    busy, most = [0], [0]
    real = cat.load_model

    def slow_load(folder):
        busy[0] += 1
        most[0] = max(most[0], busy[0])
        time.sleep(0.3)
        busy[0] -= 1
        return real(folder)

    monkeypatch.setattr(cat, "load_model", slow_load)
    c = cat.Catalog.from_sources(served[1][:2])
    got = {}
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, c.entry(k).model())) for k in c.models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and {m.kind for m in got.values()} == {"markov", "logit"}
