"""`laborllm run`: the whole benchmark, resumable, written to one run folder.

A profile (laborllm.profiles) is a list of benchmarks, each a panel and the models compared on its
full test set: quick runs every model where the whole method fits on a 2-core CPU (the NLSY79 men
panel) and the baselines on NLSY97; full runs every model on NLSY97 (GPU); pooling sets the men panel
alone against the men panel pooled with the NLS Young Women; nlsy97-cpu fits the LLMs on NLSY97 on a
CPU over several sittings.

run/
  config.json              profile, seed, benchmarks, package versions, timings
  metrics.json             the `evaluate --json` list, one row per (panel, model), with paired ratios;
                           rewritten after each model, so a run cut short keeps what it finished
  report.html
  run.log                  library warnings and the trainer's per-step figures
  .laborllm-run            says the folder is a run folder of ours (any other non-empty folder is refused)
  PANEL/models/NAME/       one model folder per model (reused on rerun only when it is the very fit asked for)
  PANEL/logprobs/          per-event log-probabilities (Parquet), the cache a rerun reuses
  PANEL/logprobs/NAME-test.partial/   an LLM's scores so far (finished people), while it is scoring
  PANEL/comparison.*, PANEL/paired.*, PANEL/calibration.json, PANEL/plots/
  PANEL/subgroups.*, PANEL/subgroups-paired.*   results by subgroup: perplexities, ratios to the logit
  PANEL/contrasts.*        the profile's question (pooling: each pooled model against it alone)
  PANEL/representativeness*.*, PANEL/careers*.*   whose predictions represent each subgroup: distances to
                           the observed next states and careers, noise-corrected, with intervals (report only)
  PANEL/simulated/         each model's simulated careers, reused while the model and seed are the same
  PANEL/sample/            a profile's `sampled` models (too slow for every test event) beside every other
                           model on a seeded sample of test people: metrics.json, tables, representativeness
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path


from laborllm import api
from laborllm.evaluation.compare import population_tables, write_panel_tables, write_tables
from laborllm.evaluation.metrics import attach_paired, evaluate as evaluate_log_probs
from laborllm.errors import UserError
from laborllm.files import OutputLock, write_json_atomic, write_text_atomic
from laborllm.logs import run_log
from laborllm.machine import versions
from laborllm.models.folder import is_model_folder, read_model_json
from laborllm.models.registry import KINDS, load_model
from laborllm.profiles import ENTRIES, REFERENCE, profile as get_profile

log = logging.getLogger(__name__)



def panel_tag(data: str) -> str:
    """The run subfolder of a panel: its embedded name, or a user file's stem, made a plain folder
    name (never a path, never hidden, never empty), so outputs stay inside the run folder."""
    name = Path(str(data)).name
    stem = Path(name).stem if Path(name).suffix else name
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).lstrip(".")
    return tag or "panel"


MARKER = ".laborllm-run"  # a run folder of ours says so; any other non-empty folder is the user's


def claim_run_folder(out: Path) -> None:
    """Refuse to write config.json, report.html, run.log into a folder that is not a run folder of
    ours (it says so with its marker)."""
    if out.is_file():
        raise UserError(f"{out}: is a file; --out takes a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"{out}: exists and is not a laborllm run folder; refusing to write config.json, "
                        "metrics.json, report.html and run.log into it (choose another --out)")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()


def run(profile: str = "quick", out: str | Path | None = None, seed: int = 0, data: str | None = None,
        models: list[str] | None = None, report: bool = True, base: str | None = None,
        overrides: dict[str, dict] | None = None, **data_kw) -> list[dict]:
    """Fit (or reuse) every model of each benchmark, evaluate all on the same test events, write the
    run folder. `data` replaces the profile's panels by one panel with every model; `base` replaces
    the pretrained LM of the LLM models (a folder or GGUF file; default SmolLM2); `overrides` maps a
    model name to settings that replace the profile's (e.g. {"career": {"epochs": 1}})."""
    prof = get_profile(profile)
    out = Path(out or f"runs/{profile}")
    claim_run_folder(out)
    overrides = overrides or {}
    plan = _plan(prof, data, models, overrides)
    config = {"profile": profile, "seed": seed, "versions": versions(), "timings_seconds": {}, "overrides": overrides,
              "benchmarks": [{"data": api.data_spec(panel, seed=seed, **data_kw), "folder": panel_tag(panel),
                              "models": [m[0] for m in chosen]} for panel, chosen in plan]}
    results, sections = [], []
    with OutputLock(out), run_log(out / "run.log"):  # two runs into one folder would overwrite each other
        write_json_atomic(out / "config.json", config)
        for panel, chosen in plan:
            rows, fitted, lps, events, timings, sampled = _benchmark(out, panel, chosen, prof, seed, base, data_kw,
                                                                     results)
            results += rows
            config["timings_seconds"].update(timings)
            write_json_atomic(out / "config.json", config)
            if report:
                from laborllm.report import panel_section

                population = populations(out / panel_tag(panel), events.test, fitted, lps, seed)
                sections.append(panel_section(out / panel_tag(panel), rows, events, fitted, prof, seed, population,
                                              sampled))
        if report and sections:
            from laborllm.report import write_report

            write_report(out, sections, prof)
    return results


def _plan(prof, data, models, overrides) -> list:
    """[(panel, [(name, kind, settings)])]: each model's settings are its entry's, then the profile's,
    then the caller's overrides."""
    benches = [(data, prof.models)] if data else [(p, (*names, *prof.sampled.get(p, (0, ()))[1]))
                                                  for p, names in prof.benchmarks]
    kinds = {n: (k, s) for n, k, s in ENTRIES}
    plan = [(panel, [(n, kinds[n][0], {**kinds[n][1], **prof.settings.get(n, {}), **overrides.get(n, {})})
                     for n in names if not models or n in models])
            for panel, names in benches]
    return [(panel, chosen) for panel, chosen in plan if chosen]


def _benchmark(out: Path, panel: str, chosen, prof, seed: int, base, data_kw: dict, earlier: list):
    """Fit or reuse each model of one panel and score it on the panel's test events; the run's files
    are rewritten after each model, so a run cut short keeps what it finished."""
    folder, tag = out / panel_tag(panel), panel_tag(panel)
    chosen = [(name, kind, _run_members(settings, folder, [n for n, _, _ in chosen])) for name, kind, settings in chosen]
    events = api.events_for(api.data_spec(panel, seed=seed, **data_kw))
    test = events.test
    rows, nll, fitted, lps, timings, slow = [], {}, {}, {}, {}, {}
    persons, sampled = prof.sampled.get(panel, (0, ()))
    # every model's settings (and pretrained LM) checked before the first fit, not after hours of others
    wanted = {name: api.make_model(kind, prof.preset, name=name, **settings, **_base(kind, base))
              for name, kind, settings in chosen}
    for name, kind, settings in chosen:
        mfolder = folder / "models" / name
        t0 = time.time()
        model = _reusable(mfolder, wanted[name], events, f"{tag}/{name}")
        if model is None:
            log.info("fitting %s/%s (%s, %s profile)", tag, name, kind, prof.name)
            # the very object built and checked above is fitted; the split's seed is the run's
            model = api.fit_model(wanted[name], api.data_spec(panel, seed=seed, **data_kw), mfolder, prof.preset)
        if name in sampled:  # scored on the sample of test people below, beside the others
            slow[name] = model
            continue
        lp, extra = api.model_log_probs(model, folder / "logprobs" / f"{name}-test.parquet", test)
        r = evaluate_log_probs(lp, test, model=name, split="test", normalization=model.normalization)
        r.update(extra, kind=kind, events="test", data=tag, profile=prof.name, label=model.describe(),
                 fit_seconds=model.meta.get("fit_seconds"))
        rows.append(r)
        nll[name] = test.target_nll(lp)
        fitted[name], lps[name] = model, lp
        timings[f"{tag}/{name}"] = round(time.time() - t0, 1)
        lo, hi = r["perplexity_ci95"]
        log.info("%s/%s: test perplexity %.3f [%.3f, %.3f] on %d events (%.0f s)", tag, name,
                    r["perplexity"], lo if lo is not None else float("nan"), hi if hi is not None else float("nan"),
                    r["n_events"], time.time() - t0)
        _write(out, folder, earlier + rows, rows, nll, test, prof.contrasts)
    sampled_rows = []
    if slow:
        t0 = time.time()
        sampled_rows = on_sample(folder, test, fitted, lps, slow, persons, seed)
        timings.update({f"{tag}/{name}": round((time.time() - t0) / len(slow), 1) for name in slow})
    # every model simulates careers; the sampled ones have no scores of every test event
    return rows, fitted | slow, lps, events, timings, sampled_rows


def on_sample(folder: Path, test, fitted: dict, lps: dict, slow: dict, persons: int, seed: int) -> list[dict]:
    """Models too slow for every test event (the in-context LLM on NLSY97) scored on a seeded sample
    of `persons` test people, and every other model of the panel on the same people (rows of its test
    scores): metrics, tables and representativeness in PANEL/sample/."""
    import pandas as pd

    from laborllm.evaluation.representativeness import representativeness

    mask, sample, about = api.sample_of(test, persons, seed)
    scores = {name: (lp[mask], {}) for name, lp in lps.items()}
    for name, model in slow.items():
        cache = folder / "logprobs" / f"{name}-test-{persons}people-seed{seed}.parquet"
        scores[name] = api.model_log_probs(model, cache, sample)
    models, rows = fitted | slow, []
    for name, (lp, extra) in scores.items():
        m = models[name]
        rows.append(evaluate_log_probs(lp, sample, model=name, split="test", normalization=m.normalization)
                    | extra | {"kind": m.kind, "data": folder.name, "label": m.describe(), "sample": about}
                    | ({"fit_seconds": m.meta.get("fit_seconds")} if name in slow else {}))
        log.info("%s/%s: perplexity %.3f [%.3f, %.3f] on the %d events of %d sampled test people", folder.name,
                 name, rows[-1]["perplexity"], *rows[-1]["perplexity_ci95"], len(sample), about["persons"])
    attach_paired(rows, {name: sample.target_nll(lp) for name, (lp, _) in scores.items()}, sample)
    out = folder / "sample"
    write_json_atomic(out / "metrics.json", [{k: v for k, v in r.items() if k != "reliability"} for r in rows])
    write_panel_tables(rows, out, REFERENCE)
    ref = next((x for x in ("career", REFERENCE) if x in scores), None)
    rep = representativeness(sample, {name: lp for name, (lp, _) in scores.items()}, reference=ref, seed=seed)
    _write_population_tables(out, rep, pd.DataFrame(), ref)
    return rows


def populations(folder: Path, test, fitted: dict, lps: dict, seed: int) -> dict:
    """Each model's predictions as a population: representativeness by subgroup (the models scored on
    every test event, `lps`) and careers simulated from every model (`fitted`: the LLMs and the sampled
    ones included, minutes each on a CPU, kept in PANEL/simulated/), against CAREER where it is in the
    run; written as tables beside the others and returned for the report."""
    import pandas as pd

    from laborllm.evaluation.careers import trajectories
    from laborllm.evaluation.representativeness import career_distances, representativeness

    ref = next((x for x in ("career", REFERENCE) if x in lps), None)
    t0 = time.time()
    rep = representativeness(test, lps, reference=ref, seed=seed)
    # every figure with its interval, unformatted, for a user's own tables and plots
    write_text_atomic(folder / "representativeness-raw.csv", rep.to_csv(index=False))
    # written before the simulations (an LLM's take minutes a year on a CPU): a run cut short keeps them
    _write_population_tables(folder, rep, pd.DataFrame(), ref)
    traj = trajectories(test, fitted, seed, cache=folder / "simulated")
    careers = career_distances(traj, test, reference=ref, seed=seed)
    tables = _write_population_tables(folder, rep, careers, ref)
    log.info("%s: representativeness and simulated careers of %d models (%.0f s)", folder.name, len(lps),
             time.time() - t0)
    return {"representativeness": rep, "trajectories": traj, "tables": tables, "reference": ref}


def _write_population_tables(folder: Path, rep, careers, ref) -> dict:
    tables = population_tables(rep, careers, ref)
    for stem, table in tables.items():
        write_tables(table, folder, stem, CAPTIONS[stem].format(ref=ref))
    return tables


CAPTIONS = {
    "representativeness": "Distance between the mean predicted and the observed distribution of next broad "
                          "occupation groups, corrected for the observed side's noise (person bootstrap)",
    "representativeness-paired": "Difference in corrected distance to the observed next broad occupation groups, "
                                 "each model minus {ref} (paired person bootstrap; below 0: more representative)",
    "representativeness-summary": "Representativeness over all test events, and the levels where each model is "
                                  "closer or farther than {ref} (interval excluding 0)",
    "careers": "Distance between simulated and observed careers (broad groups by year), noise-corrected",
    "careers-paired": "Difference in simulated careers' distance, each model minus {ref} (paired person bootstrap)",
}


def _run_members(settings: dict, folder: Path, names: list[str]) -> dict:
    """A mixture's members named by the run's model names are those models' folders in this run."""
    if not settings.get("members"):
        return settings
    return {**settings, "members": [str(folder / "models" / m) if m in names else m for m in settings["members"]]}


def _base(kind: str, base) -> dict:
    return {"base": base} if base and KINDS[kind].language_model else {}


def _reusable(folder: Path, wanted, events, label: str):
    """The model in `folder` when it is the very fit asked for (same kind, settings, data, split and
    pretrained LM), read the way asked for; None when it must be fitted (again)."""
    if not is_model_folder(folder):
        return None  # nothing there, or not ours (api.fit then refuses it, with its message)
    meta = read_model_json(folder)
    if meta.get("kind") != wanted.kind:
        diff = [f"kind {meta.get('kind')!r}, not {wanted.kind!r}"]
    else:
        diff = api.identity_differences(meta.get("fit_identity"), api.fit_identity(wanted, events), wanted.Settings)
    if diff:
        log.info("%s: the model in %s was fitted otherwise (%s); fitting it again", label, folder,
                    ", ".join(diff[:6]))
        return None
    log.info("%s: already fitted in %s with these settings and data, reusing it", label, folder)
    return load_model(folder).read_as(**{k: getattr(wanted.settings, k) for k in wanted.read_keys()})  # read as asked now


def _write(out: Path, folder: Path, all_rows: list[dict], rows: list[dict], nll: dict, test, contrasts=()) -> None:
    """metrics.json of the whole run and this panel's tables, after each model."""
    attach_paired(rows, nll, test)
    write_json_atomic(out / "metrics.json", [{k: v for k, v in r.items() if k != "reliability"} for r in all_rows])
    write_json_atomic(folder / "calibration.json", {r["model"]: r["reliability"] for r in rows})
    write_panel_tables(rows, folder, REFERENCE, contrasts)
