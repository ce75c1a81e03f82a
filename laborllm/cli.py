"""Command-line interface: a thin layer over the Python API. User mistakes exit with status 2."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand
from rich.console import Console
from rich.table import Table

from laborllm.errors import UserError
from laborllm.models.packaged import PACKAGED
from laborllm.profiles import NAMES, REFERENCE

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Inspect panels.")
app.add_typer(data_app, name="data")
console = Console(stderr=True, soft_wrap=True)  # one unbroken error line


class _Out(Console):
    def on_broken_pipe(self) -> None:
        """`laborllm text | head`: the reader took what it wanted; nothing went wrong (rich exits 1)."""
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0)


out = _Out(width=None if sys.stdout.isatty() else 160)

DataOpt = typer.Option("nlsy97", "--data", help="embedded data set name (nlsy97, nlswork, nlsy79-males) or a CSV/Parquet/Stata file")
ColumnsOpt = typer.Option(None, "--columns", help="map your column names: old=new,... (new in person_id, year, occupation, gender, race, birth_year, education, region, enrolled, weight)")
SchemeOpt = typer.Option(None, "--scheme", help="occupation codes: occ1990dd, census (2002/2010 codes) or titles")
UnknownOpt = typer.Option("error", "--unknown", help="unknown occupation codes: error, or missing (counted in a warning)")
CodebookOpt = typer.Option(None, "--codebook", help="CSV of code,title for a panel in its own occupation coding (its titles become the states)")
CenturyOpt = typer.Option(None, "--century", min=0, help="read two-digit years (0-99) in this century: 1900 reads 70 as 1970")
SeedOpt = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="seed of the 70/15/15 person split")
SHIPPED = ", ".join(PACKAGED)  # packaged model names, for the help of predict, simulate and serve


@data_app.command("describe")
def data_describe(data: str = DataOpt, columns: Optional[str] = ColumnsOpt, scheme: Optional[str] = SchemeOpt,
                  unknown: str = UnknownOpt, seed: int = SeedOpt, codebook: Optional[str] = CodebookOpt,
                  century: Optional[int] = CenturyOpt, as_json: bool = typer.Option(False, "--json", help="print a JSON object")):
    """Persons, person-years, states, events per split, move rate and top occupations."""
    from laborllm import api
    from laborllm.data.summary import describe

    d = describe(api.events_for(api.data_spec(data, columns, scheme, unknown, seed, codebook, century)))
    if as_json:
        out.print_json(json.dumps(d))
        return
    t = Table(title=f"{d['source']} ({d['scheme']})", show_header=False)
    for k in ("persons", "person_years", "missing_person_years", "states"):
        t.add_row(k.replace("_", " "), f"{d[k]:,}")
    t.add_row("years", f"{d['years'][0]}-{d['years'][1]}")
    t.add_row("move rate", f"{d['move_rate']:.1%}")
    for s, n in d["events"].items():
        t.add_row(f"events {s}", f"{n:,} ({d['persons_by_split'][s]:,} persons)")
    t.add_row("covariates", ", ".join(d["covariates"]) or "-")
    out.print(t)
    top = Table(title="Top states")
    top.add_column("state"), top.add_column("person-years", justify="right"), top.add_column("share", justify="right")
    for r in d["top_states"]:
        top.add_row(r["state"], f"{r['person_years']:,}", f"{r['share']:.1%}")
    out.print(top)


class _FitCommand(TyperCommand):
    """`fit --help` ends with every model's settings, read from the models' Settings dataclasses
    when the help is shown (importing the models costs seconds; other commands need not pay it)."""

    @property
    def epilog(self) -> str:
        from laborllm.models.registry import KINDS
        from laborllm.settings import settings_help

        blocks = ["Model settings (--set key=value, or the config file's \\[model] table; a preset, "
                  "--preset quick or full, goes under them):"]
        for kind, cls in KINDS.items():
            presets = "; ".join(f"{p}: {', '.join(f'{k}={v}' for k, v in s.items())}" for p, s in cls.presets.items())
            blocks.append(f"{kind}" + (f" (presets {presets})" if presets else "") + ":\n"
                          + "\n".join(f"  {line}" for line in settings_help(cls.Settings)))
        return "\n\n".join(blocks)

    @epilog.setter
    def epilog(self, value) -> None:  # click sets it in __init__; ours is computed
        pass


@app.command(cls=_FitCommand)
def fit(model: str = typer.Argument(..., help="uniform, markov, bag, logit, career, llm, icl, llm-head or mixture"),
        data: Optional[str] = typer.Option(None, "--data", help="embedded data set name or a panel file (default nlsy97)"),
        out_dir: Path = typer.Option(..., "--out", help="model folder to write"),
        preset: Optional[str] = typer.Option(None, "--preset", help="the settings preset: quick (CPU-sized, default) "
                                                                    "or full (GPU-sized)"),
        profile: Optional[str] = typer.Option(None, "--profile", hidden=True),
        config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON: data keys and a \\[model] table"),
        columns: Optional[str] = ColumnsOpt, scheme: Optional[str] = SchemeOpt, codebook: Optional[str] = CodebookOpt,
        century: Optional[int] = CenturyOpt,
        unknown: Optional[str] = typer.Option(None, "--unknown", help="unknown codes: error (default) or missing"),
        seed: Optional[int] = typer.Option(None, "--seed", min=0, max=2**32 - 1, help="split seed (default 0)"),
        pool: Optional[str] = typer.Option(None, "--pool", help="llm: also train on every person of these panels, comma-separated "
                                           "(embedded names or files), each in its own words; --set pool_mode=sequential trains on them first"),
        set_: list[str] = typer.Option([], "--set", help="model setting key=value (repeatable)")):
    """Fit a model on the train split (valid for tuning) and save it as a model folder."""
    from laborllm import api
    from laborllm.settings import layered, parse_sets

    if profile is not None or "profile" in api.read_config(config):
        raise UserError("fit takes --preset quick|full (a model's settings preset; a config file's `preset` key); "
                        "a profile is what `laborllm run --profile` compares")
    cfg = api.read_config(config)
    # over the preset: the config file's [model] table, then --set, then --pool
    model_cfg = layered(cfg.get("model"), parse_sets(set_), {"pool": pool} if pool else None)
    # command-line values win over the config file, which wins over the defaults
    pick = lambda name, value, default: value if value is not None else cfg.get(name, default)  # noqa: E731
    m = api.fit(model, pick("data", data, "nlsy97"), out_dir, pick("preset", preset, "quick"),
                columns=pick("columns", columns, None), scheme=pick("scheme", scheme, None),
                unknown=pick("unknown", unknown, "error"), seed=pick("seed", seed, 0),
                codebook=pick("codebook", codebook, None), century=pick("century", century, None), settings=model_cfg)
    valid = m.meta.get("valid_perplexity")
    out.print(f"fitted {m.name} in {m.meta.get('fit_seconds', 0):.1f}s"
              + (f", valid perplexity {valid:.3f}" if valid else "") + f" -> {out_dir}")


@app.command()
def evaluate(folders: list[Path] = typer.Argument(..., help="model folders"),
             split: str = typer.Option("test", "--split"), as_json: bool = typer.Option(False, "--json"),
             table_dir: Optional[Path] = typer.Option(None, "--tables", help="also write CSV/Markdown/LaTeX tables here"),
             reference: Optional[str] = typer.Option(None, "--reference", help="a model the others are set against: "
                                                     "paired ratio columns, overall and by subgroup"),
             unnormalised: bool = typer.Option(False, "--unnormalised", help="LLMs only: cheap perplexity of the observed state text, one pass per person, not renormalised"),
             persons: Optional[int] = typer.Option(None, "--persons", min=1, help="only this many of the split's people, "
                                                   "a seeded sample (a model too slow for the whole split, set against "
                                                   "the others on the same people)"),
             sample_seed: int = typer.Option(0, "--sample-seed", min=0, max=2**32 - 1, help="seed of the --persons sample")):
    """Evaluate model folders on the same events and print a comparison table."""
    from laborllm import api
    from laborllm.evaluation.compare import TABLE_STEMS, comparison_table, rich_table, write_panel_tables

    if table_dir is not None and table_dir.exists() and not table_dir.is_dir():
        raise UserError(f"{table_dir}: is a file; --tables takes a folder")
    if table_dir is not None and not (table_dir / TABLES_MARKER).exists() and any(
            (table_dir / f"{stem}{x}").exists() for stem in TABLE_STEMS for x in (".csv", ".md", ".tex")):
        raise UserError(f"{table_dir}: holds tables laborllm did not write; refusing to overwrite "
                        "them (choose another --tables folder)")
    results = api.evaluate(folders, split, unnormalised=unnormalised, persons=persons, seed=sample_seed)
    from laborllm.distributed import is_main_process

    if not is_main_process():  # under torchrun: every process scored its share; the first one reports
        return
    if unnormalised:
        if as_json:
            out.print_json(json.dumps(results, default=str))
        else:
            for r in results:
                lo, hi = r["perplexity_ci95"]
                out.print(f"{r['model']}: perplexity {r['perplexity']:.3f} [{lo}, {hi}] over {r['n_events']:,} events ({r['normalization']})")
        return
    if reference and reference not in {r["model"] for r in results}:
        raise UserError(f"--reference {reference}: not among the models evaluated "
                        f"({', '.join(r['model'] for r in results)})")
    table = comparison_table(results, reference)
    if table_dir:
        write_panel_tables(results, table_dir, reference)
        (table_dir / TABLES_MARKER).touch()  # ours from now on: a later evaluate may replace them
    if as_json:
        slim = [{k: v for k, v in r.items() if k not in ("reliability",)} for r in results]
        out.print_json(json.dumps(slim, default=str))
    else:
        sample = results[0].get("sample")
        of = f" of {sample['persons']:,} people drawn with seed {sample['seed']}" if sample else ""
        out.print(rich_table(table, f"{split} split, {results[0]['n_events']:,} events{of}, {results[0]['n_states']} states"))


@app.command()
def run(profile: str = typer.Option("quick", "--profile", help="quick (2-core CPU, ~15 min), full (GPU), pooling "
                                     "(2-core CPU, ~1 h: the men panel alone and pooled with nlswork), or nlsy97-cpu "
                                     "(NLSY97 with the fine-tuned LLMs on a 2-core CPU: hours, in resumable pieces)"),
        out_dir: Optional[Path] = typer.Option(None, "--out", help="run folder (default runs/PROFILE)"),
        data: Optional[str] = typer.Option(None, "--data", help="one panel (embedded name or file) with every model of "
                                           "the profile, instead of the profile's panels (quick: nlsy79-males with "
                                           "every model, nlsy97 with the baselines; full: nlsy97 with every model)"),
        seed: int = SeedOpt,
        models: Optional[str] = typer.Option(None, "--models", help="comma-separated subset of: " + ", ".join(NAMES)),
        base: Optional[str] = typer.Option(None, "--base", help="pretrained LM for the LLM models: a folder or GGUF file (default SmolLM2-135M-Instruct)"),
        scheme: Optional[str] = SchemeOpt, codebook: Optional[str] = CodebookOpt, century: Optional[int] = CenturyOpt,
        set_: list[str] = typer.Option([], "--set", help="MODEL.key=value: a setting of one model of the run, e.g. career.epochs=1 (repeatable)")):
    """The whole benchmark: fit every model, evaluate on the same test events, write metrics, tables, plots and report.html."""
    from laborllm.evaluation.compare import comparison_table, rich_table
    from laborllm.pipeline import run as run_benchmark
    from laborllm.settings import parse_sets

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every process would fit every model and write one run folder
        raise UserError("laborllm run does not run under torchrun or accelerate launch: run it as one process, "
                        "or run `fit llm` and `evaluate` under torchrun (docs/scaling.md)")
    names = [m.strip() for m in models.split(",")] if models else None
    unknown_models = set(names or []) - set(NAMES)
    if unknown_models:
        raise UserError(f"unknown model(s) {', '.join(sorted(unknown_models))}; choose from {', '.join(NAMES)}")
    overrides: dict = {}
    for key, value in parse_sets(set_).items():
        name, _, setting = key.partition(".")
        if not setting or name not in NAMES:
            raise UserError(f"--set {key}: expected MODEL.key=value with MODEL one of {', '.join(NAMES)}")
        overrides.setdefault(name, {})[setting] = value
    out_dir = out_dir or Path("runs") / profile
    extra = {k: v for k, v in (("scheme", scheme), ("codebook", codebook), ("century", century)) if v is not None}
    results = run_benchmark(profile, out_dir, seed, data, names, base=base, overrides=overrides, **extra)
    for tag in dict.fromkeys(r["data"] for r in results):
        rows = [r for r in results if r["data"] == tag]
        out.print(rich_table(comparison_table(rows, REFERENCE), f"{tag}: {rows[0]['n_events']:,} test events, {rows[0]['n_states']} states"))
        for r in rows:
            out.print(f"  {r['label']}")
    out.print(f"report: {out_dir / 'report.html'}")


TABLES_MARKER = ".laborllm-tables"


def _source(history: str) -> str:
    return "<stdin>" if history == "-" else history


@app.command()
def predict(folder: Path = typer.Argument(..., help=f"model folder, or a packaged model: {SHIPPED}"),
            history: str = typer.Option(..., "--history", help="JSON or CSV/Parquet/Stata file of person-years, or - for JSON on stdin"),
            top: int = typer.Option(10, "--top"), as_json: bool = typer.Option(False, "--json")):
    """Top-k next states with probabilities for each person in a history."""
    from laborllm.forecast import for_forecast, predict as predict_next, read_history
    from laborllm.models.registry import load_model

    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    model = for_forecast(load_model(folder))
    mode = model.normalization
    table = predict_next(model, read_history(history), top, source=_source(history))
    if as_json:
        out.print_json(table.to_json(orient="records"))
        return
    t = Table(title="Next-year prediction", caption=f"probabilities: {mode}")
    for c in ("person_id", "year", "rank", "state", "probability"):
        t.add_column(c, justify="left" if c == "state" else "right")
    for r in table.itertuples(index=False):
        t.add_row(str(r.person_id), str(r.year), str(r.rank), r.state, f"{r.probability:.3f}")
    out.print(t)


PATHS_HEADER = "person_id,sample,year,occupation"  # the first line of a file of sampled paths


def _our_paths(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip() == PATHS_HEADER
    except (OSError, UnicodeDecodeError):
        return False


@app.command()
def simulate(folder: Path = typer.Argument(..., help=f"model folder, or a packaged model: {SHIPPED}"),
             history: str = typer.Option(..., "--history", help="JSON or table file of person-years, or - for JSON on stdin"),
             years: int = typer.Option(5, "--years", min=1, max=100, help="years ahead (1-100)"),
             samples: int = typer.Option(10, "--samples", min=1, help="sampled futures per person"), seed: int = SeedOpt,
             out_file: Optional[Path] = typer.Option(None, "--out", help="write the sampled paths as CSV"),
             force: bool = typer.Option(False, "--force", help="replace an existing --out file that is not "
                                                               "a simulation of ours")):
    """Sampled futures: each sample extends each history year by year."""
    from laborllm.forecast import for_forecast, read_history, simulate as simulate_paths
    from laborllm.files import write_text_atomic
    from laborllm.models.registry import load_model

    if out_file is not None and out_file.is_dir():
        raise UserError(f"{out_file}: is a folder; --out takes a CSV file name")
    if out_file is not None and out_file.exists() and not force and not _our_paths(out_file):
        raise UserError(f"{out_file}: exists and is not a file of sampled paths written by laborllm; choose another "
                        "--out, or pass --force to replace it")
    model = for_forecast(load_model(folder))
    mode = model.normalization
    sims = simulate_paths(model, read_history(history), years, samples, seed, source=_source(history))
    if out_file:
        write_text_atomic(out_file, sims.to_csv(index=False))
    share = sims.groupby(["year", "occupation"]).size().rename("n").reset_index()
    share["share"] = share.n / share.groupby("year").n.transform("sum")
    t = Table(title=f"{samples} sampled futures: most common state each year", caption=f"probabilities: {mode}")
    for c in ("year", "state", "share"):
        t.add_column(c)
    for year, g in share.sort_values("share", ascending=False).groupby("year"):
        for r in g.head(3).itertuples(index=False):
            t.add_row(str(year), r.occupation, f"{r.share:.0%}")
    out.print(t)


@app.command()
def serve(sources: list[str] = typer.Argument(..., help=f"run folders, model folders or packaged model names ({SHIPPED})"),
          host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (default: this machine only)"),
          port: int = typer.Option(8000, "--port", min=1, max=65535)):
    """A local web app: ask the models about a career, sample its futures, browse a run's comparison."""
    import uvicorn

    from laborllm.serve.app import LOOPBACK, create_app
    from laborllm.serve.catalog import Catalog

    catalog = Catalog.from_sources(sources)
    sock = _listen(host, port)  # a busy port is a message now, not a uvicorn error after "serving at"
    if host not in LOOPBACK:
        logging.getLogger(__name__).warning("bound to %s: anyone who can reach this machine on port %d can read the "
                                            "served panels", host, port)
    out.print(f"serving {len(catalog.models)} model(s) and {len(catalog.runs)} run(s) at http://{host}:{port}/")
    uvicorn.Server(uvicorn.Config(create_app(catalog, (*LOOPBACK, host)), log_level="warning")).run(sockets=[sock])


def _listen(host: str, port: int):
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); is another server there? "
                        "choose another --port") from None
    return sock


@app.command()
def text(person: str = typer.Option(..., "--person", help="person_id"), data: str = DataOpt,
         columns: Optional[str] = ColumnsOpt, scheme: Optional[str] = SchemeOpt, unknown: str = UnknownOpt,
         variant: str = typer.Option("titles", "--variant", help="titles or codes"),
         birth_year: bool = typer.Option(True, "--birth-year/--no-birth-year")):
    """Print one person's resume text, as the LLM sees it."""
    from laborllm.data import load_panel
    from laborllm.text.templates import VARIANTS, ResumeTemplate, state_codes

    if variant not in VARIANTS:
        raise UserError(f"--variant must be one of {', '.join(VARIANTS)}")
    panel = load_panel(data, columns=columns, scheme=scheme, unknown=unknown)
    rows = panel.person(person)
    tpl = ResumeTemplate(variant, birth_year)
    print(tpl.text(rows, state_codes(panel.states, panel.scheme)))


def main() -> None:
    """Exit status: 0 done, 1 internal error (traceback in a log file), 2 bad input, 130 interrupted."""
    from laborllm.exits import run_app
    from laborllm.logs import console_logging

    console_logging()
    run_app(app, console, out.on_broken_pipe)


if __name__ == "__main__":
    main()
