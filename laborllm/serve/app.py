"""The explorer's web app (FastAPI): a page served from the package and the JSON API behind it.

    POST /api/predict   {"model": KEY, "history": HISTORY, "top": 10}
    POST /api/simulate  {"model": KEY, "history": HISTORY, "years": 5, "samples": 100, "seed": 0, "chart": false}
    GET  /api/models    the served models (key, kind, states) and runs
    GET  /api/people?model=KEY, /api/person?model=KEY&id=ID   real test people of a model's panel
    GET  /api/compare?run=KEY, /api/subgroups?run=KEY&panel=P&group=G   a run's comparison

HISTORY is what `laborllm predict --history` reads as JSON: {"person": {covariates}, "history":
[{"year": 2001, "occupation": "..."}, ...]} or the list alone. Bad input answers 4xx with
{"error": message}; models and runs are named by their keys only (laborllm.serve.catalog).
"""
from __future__ import annotations

from importlib import resources
from typing import Any

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from laborllm.errors import UserError
from laborllm.forecast import MAX_YEARS
from laborllm.profiles import REFERENCE
from laborllm.serve import answers, charts
from laborllm.serve.catalog import Catalog

STATIC = resources.files("laborllm.serve") / "static"


class Request_(BaseModel):
    # a misspelt key ("sample") or a wrong type ("top": true) is a 400 naming it, never the default
    model_config = ConfigDict(extra="forbid", strict=True)


class Ask(Request_):
    model: str
    history: Any
    top: int = Field(10, ge=1, le=1000)


class Simulate(Request_):
    model: str
    history: Any
    years: int = Field(5, ge=1, le=MAX_YEARS)
    samples: int = Field(100, ge=1, le=10_000)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    chart: bool = False


LOOPBACK = ("localhost", "127.0.0.1", "::1")


def create_app(catalog: Catalog, hosts: tuple = LOOPBACK) -> FastAPI:
    """`hosts`: the names the server answers to (the Host header): a page of another site whose name
    resolves to this machine (DNS rebinding) must not read the user's panel."""
    app = FastAPI(title="laborllm explorer", docs_url="/api/docs", redoc_url=None)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    allowed = {h.strip("[]").lower() for h in hosts}

    @app.middleware("http")
    async def _only_our_host(request: Request, call_next):
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
        if name.strip("[]").lower() not in allowed:
            return JSONResponse({"error": f"host {host!r} is not served here (served as: {', '.join(sorted(allowed))})"},
                                status_code=400)
        return await call_next(request)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException):  # unknown routes too: {"error": ...} as promised
        return JSONResponse({"error": f"{request.url.path}: {str(e.detail).lower()}"}, status_code=e.status_code)

    @app.exception_handler(UserError)
    async def _bad_input(request: Request, e: UserError):
        return JSONResponse({"error": str(e)}, status_code=400)

    @app.exception_handler(KeyError)
    async def _unknown(request: Request, e: KeyError):
        return JSONResponse({"error": str(e.args[0]) if e.args else "not found"}, status_code=404)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "json_invalid":
            return JSONResponse({"error": f"the request body is not valid JSON ({first.get('ctx', {}).get('error', '')}"
                                          f" at character {first.get('loc', ('', '?'))[-1]})"}, status_code=400)
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/api/models")
    def models() -> dict:
        return {"models": [e.summary() for e in catalog.models.values()], "runs": list(catalog.runs)}

    @app.post("/api/predict")
    def predict(ask: Ask) -> dict:
        return answers.next_states(catalog.entry(ask.model), ask.history, ask.top)

    @app.post("/api/simulate")
    def simulate(ask: Simulate) -> dict:
        out = answers.futures(catalog.entry(ask.model), ask.history, ask.years, ask.samples, ask.seed)
        if ask.chart:
            out["chart"] = charts.futures_chart(out["shares"], f"{ask.model}: {ask.samples} sampled futures, "
                                                "share in each broad occupation group")
        return out

    @app.get("/api/people")
    def people(model: str) -> dict:
        return {"model": model, "people": answers.test_people(catalog.entry(model))}

    @app.get("/api/person")
    def person(model: str, id: str) -> dict:
        return answers.test_person(catalog.entry(model), id)

    @app.get("/api/compare")
    def compare(run: str) -> dict:
        rows = answers.comparison(catalog.metrics(run))
        panels = {}
        for r in rows:
            panels.setdefault(r["data"], []).append(r)
        return {"run": run, "panels": {p: {"rows": rs, "chart": charts.forest_chart(rs, p),
                                           "groups": sorted({g for r in rs for g in (r.get("subgroups") or {})})}
                                       for p, rs in panels.items()}}

    @app.get("/api/subgroups")
    def subgroups(run: str, panel: str, group: str) -> dict:
        rows = [r for r in catalog.metrics(run) if r.get("data") == panel]
        if not rows:
            raise KeyError(f"no panel {panel!r} in run {run!r}")
        # each model against the reference within the level, paired by person there (runs since 2026-12-03)
        ref = REFERENCE if any(r["model"] == REFERENCE for r in rows) else rows[0]["model"]
        table = pd.DataFrame([{"model": r["model"], "level": level, **{k: v.get(k) for k in
                                                                       ("n_events", "perplexity", "top1", "ece")},
                               "paired": (v.get("paired") or {}).get(ref)}
                              for r in rows for level, v in (r.get("subgroups") or {}).get(group, {}).items()])
        if table.empty:
            raise KeyError(f"no subgroup {group!r} in panel {panel!r}")
        records = table.astype(object).where(table.notna(), None).to_dict(orient="records")  # JSON has no NaN
        return {"run": run, "panel": panel, "group": group, "reference": ref, "table": records,
                "chart": charts.subgroup_chart(table, group)}

    return app
