"""Model folders on disk: what a folder of ours holds, reading its model.json, the atomic swap that
replaces one, recovery after a kill, and the card.

A model folder holds ``model.json`` (kind, config, the data it was fitted on), ``weights.safetensors``
and a ``README.md`` model card; no pickle is ever written or read.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from laborllm.errors import UserError
from laborllm.files import OutputLock

FORMAT_VERSION = 1


def read_model_json(folder: Path) -> dict | None:
    """A folder's model.json as a dict, or None when it is missing or not a JSON object."""
    try:
        meta = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


# what a model folder of ours holds (anything else in it is the user's and is kept)
OURS = ("model.json", "weights.safetensors", "README.md", "hf", "adapter", "lm", "logprobs-*.parquet", "metrics-*.json")


def is_model_folder(folder: Path) -> bool:
    """A folder counts as ours only when its model.json is one of ours: a JSON object with our
    format, a known kind, and the weights beside it."""
    meta = read_model_json(folder)
    return (meta is not None and meta.get("format") == FORMAT_VERSION and isinstance(meta.get("kind"), str)
            and (folder / "weights.safetensors").is_file())


def check_output_folder(out: Path) -> None:
    """Refuse, before any work, an output path that is a file or a non-empty folder not ours."""
    if Path(out).name in ("", ".", ".."):  # the model is written beside its folder and swapped in: it needs a name
        raise UserError(f"--out {str(out)!r}: name the model folder to create (e.g. models/markov), not the current "
                        "or parent folder")
    recover(out)
    if out.is_file():
        raise UserError(f"{out}: is a file; give a folder for the model")
    if out.is_dir() and any(out.iterdir()) and not is_model_folder(out):
        raise UserError(f"{out}: exists and is not a laborllm model folder; refusing to overwrite it")


def _aside(out: Path) -> Path:
    return out.with_name(f".{out.name}.old")


def recover(out: Path) -> None:
    """Put back a model folder left aside by a replacement that was killed between its two renames;
    never while a live process holds the folder's lock (its replacement is under way, not killed)."""
    old = _aside(out)
    if old.is_dir() and not out.exists() and not OutputLock(out).held():
        os.replace(old, out)


def replace_dir(tmp: Path, out: Path) -> None:
    """Swap `tmp` into `out`. The user's files in an old `out` are hard-linked (copied where links
    are impossible) into `tmp` first; the old folder waits aside until the swap is done, and
    `recover` puts it back if the process dies in between."""
    if not out.exists():
        os.replace(tmp, out)
        return
    for entry in out.iterdir():
        if not any(entry.match(p) for p in OURS) and not (tmp / entry.name).exists():
            if entry.is_dir():
                shutil.copytree(entry, tmp / entry.name, copy_function=_link_or_copy)
            else:
                _link_or_copy(entry, tmp / entry.name)
    old = _aside(out)
    if old.exists():
        shutil.rmtree(old)
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def model_card(meta: dict, settings: list[str] = ()) -> str:
    """The README.md of a model folder; `settings`: one line per setting (value and what it does)."""
    d = meta.get("data", {})
    lines = [
        "---", "library_name: laborllm", f"model_type: {meta['kind']}", "metrics: [perplexity]", "---", "",
        f"# {meta['name']} ({meta['kind']})", "",
        "Next-state model for career panels, fitted by laborllm.", "",
        f"- data: `{d.get('data', '?')}` (scheme {d.get('scheme') or 'default'}, split seed {d.get('seed', 0)})",
        f"- states: {len(meta['states'])}; probabilities are {meta['normalization']}",
    ]
    lines += ["- settings:", *(f"  - {line}" for line in settings)] if settings else [
        f"- config: `{json.dumps(meta['config'], default=str)}`"]
    for k in ("fit_seconds", "fit_machine", "valid_perplexity", "train_events", "train_persons", "pool_persons", "train_tokens",
              "train_busy_seconds", "tokens_per_second", "train_steps", "epochs_done"):
        if k in meta:
            lines.append(f"- {k.replace('_', ' ')}: {meta[k]}")
    if meta.get("valid_curve"):
        lines.append("- validation loss by epoch: " + ", ".join(f"{c['epoch']:g}: {c['eval_loss']}" for c in meta["valid_curve"]))
    for purpose, why in (meta.get("precision_choice") or {}).items():
        lines.append(f"- precision ({purpose}): {why}")
    pool = meta["config"].get("pool")
    if pool:
        who = (f"a seeded sample of {meta['config']['pool_persons']} people from each of"
               if meta["config"].get("pool_persons") else "every person of")
        lines.append(f"- pooled into training: {who} {', '.join(map(str, pool))} "
                     f"({meta['config'].get('pool_mode')}); only the target's training people joined them. "
                     "The surveys' person ids are not linked, so a person appearing in two panels cannot be "
                     "detected; the embedded panels are distinct samples.")
    lines += ["", "Data terms: NLSY microdata are public-use (BLS); check your own panel's licence before sharing."]
    return "\n".join(lines) + "\n"
