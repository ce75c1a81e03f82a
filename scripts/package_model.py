"""Ship a fitted LoRA LLM, an occupation head on one, or a mixture of them inside the package as a
named model (`laborllm predict NAME` on a fresh clone).

python scripts/package_model.py MODEL_FOLDER NAME [--run RUN_DIR] [--dest laborllm/models/assets] [--replace]

MODEL_FOLDER is a fitted `llm` folder with a LoRA adapter (e.g. runs/nlsy97-cpu/nlsy97/models/llm-titles)
a fitted `llm-head` folder (its LLM inside it, in `lm/`) or a fitted `mixture` of LLMs (its members
inside it, in `members/`). Writes DEST/NAME/: model.json (machine
paths dropped), weights.safetensors, each adapter with its weights in bf16 (half the bytes) and the
model card, to which the run's test results for the model (perplexity and paired ratios from
RUN_DIR's metrics.json) and its CPU hours are added; at most 32 MiB. NAME is one plain folder name;
the folder is written aside and moved into place whole, and an existing one (only DEST/NAME, never
anything else) is replaced only with --replace.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from laborllm.files import folder_mode
from laborllm.lm.loading import DEFAULT_BASE

MAX_BYTES = 32 << 20
DROPPED = ("base_dir", "member_folders")  # paths of the machine it was fitted on


def fail(message: str):
    """A misuse is one message and exit status 2, as in the CLI; never a traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def results_lines(run: Path, meta: dict) -> list[str]:
    """The model's test rows in the run's metrics.json, as card lines."""
    panel = meta["data"]["data"]  # a run's rows name their panel; `laborllm evaluate`'s rows need not
    rows = [r for r in json.loads((run / "metrics.json").read_text())
            if r.get("model") == meta["name"] and r.get("split") == "test" and r.get("data", panel) == panel]
    if not rows:
        fail(f"{run}/metrics.json: no test row of {meta['name']} on {meta['data']['data']}")
    r = rows[0]
    lo, hi = r["perplexity_ci95"]
    lines = [f"- test perplexity {r['perplexity']:.3f} [{lo:.3f}, {hi:.3f}] on {r['n_events']:,} events "
             f"({r['n_persons']:,} people), top-1 {r['top1']:.3f}, {r['normalization']}"]
    for other, p in sorted((r.get("paired") or {}).items()):
        lines.append(f"- perplexity ratio to {other}: {p['ratio']:.3f} [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}] "
                     "(paired person bootstrap)")
    return lines


def check_name(name: str) -> str:
    """One plain folder name: an empty name or `..` would make DEST itself, or its parent, the
    folder that --replace removes."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or ".." in name:
        fail(f"{name!r}: a packaged model's name is one plain folder name (letters, digits, '-', '_', '.')")
    return name


def read_meta(src: Path) -> dict:
    try:
        meta = json.loads((src / "model.json").read_text())
    except (OSError, ValueError) as e:
        fail(f"{src}: not a laborllm model folder ({getattr(e, 'strerror', None) or e})")
    if not isinstance(meta, dict) or meta.get("kind") not in ("llm", "llm-head", "mixture"):
        fail(f"{src}: not a fitted LLM, occupation head or mixture (kind {meta.get('kind') if isinstance(meta, dict) else '?'})")
    return meta


def members(src: Path) -> list[Path]:
    """A mixture's member folders (LLMs: the kind a packaged mixture may hold)."""
    return sorted((src / "members").iterdir())


def copy_llm(src: Path, dest: Path) -> dict:
    """A fitted LoRA LLM's folder with its adapter in bf16; its model.json without machine paths."""
    meta = read_meta(src)
    if meta["kind"] != "llm" or not (src / "adapter" / "adapter_model.safetensors").is_file():
        fail(f"{src}: not a fitted LLM with a LoRA adapter (adapter/adapter_model.safetensors)")
    for key in DROPPED:
        meta.pop(key, None)
    base = meta["config"].get("base")
    if base != DEFAULT_BASE:  # loaded on the base its settings name: only SmolLM2's pip package travels
        print(f"{src}: its base {base!r} is not {DEFAULT_BASE!r}; the packaged model loads only where that exists",
              file=sys.stderr)
    (dest / "adapter").mkdir(parents=True)
    shutil.copy2(src / "adapter" / "adapter_config.json", dest / "adapter")
    weights = load_file(src / "adapter" / "adapter_model.safetensors")
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()},
              dest / "adapter" / "adapter_model.safetensors", metadata={"format": "pt"})
    shutil.copy2(src / "weights.safetensors", dest)
    (dest / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    if (src / "README.md").exists():
        shutil.copy2(src / "README.md", dest)
    return meta


def package(src: Path, name: str, dest: Path, run: Path | None = None, replace: bool = False) -> Path:
    out = dest / check_name(name)
    meta = read_meta(src)
    if out.exists() and not replace:
        fail(f"{out}: exists; pass --replace to replace it")
    card = (src / "README.md").read_text() if (src / "README.md").exists() else f"# {name}\n"
    llms = ([meta] if meta["kind"] == "llm" else [read_meta(src / "lm")] if meta["kind"] == "llm-head"
            else [read_meta(m) for m in members(src)])
    card += f"\n## Packaged as `{name}`\n\n- adapters' weights stored in bf16 (trained in {llms[0].get('precision', '?')})\n"
    for llm in llms:
        busy, wall = llm.get("train_busy_seconds"), llm.get("fit_seconds")
        if busy and wall:  # the machine's cores are the run's (config.json), not known here
            card += (f"- {llm['name']}'s training: {busy / 3600:.1f} hours of optimiser work, {wall / 3600:.1f} hours "
                     f"of wall time (all pieces of a resumed fit), {llm.get('tokens_per_second', '?')} tokens/s\n")
    if run is not None:
        card += "\n".join(results_lines(run, meta)) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest))
    try:
        if meta["kind"] == "llm":
            copy_llm(src, tmp)
        else:  # the head's or the mixture's own weights, and the LLMs it reads beside them
            for m in [src / "lm"] if meta["kind"] == "llm-head" else members(src):
                copy_llm(m, tmp / m.relative_to(src))
            shutil.copy2(src / "weights.safetensors", tmp)
            for key in DROPPED:
                meta.pop(key, None)
            (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "README.md").write_text(card)
        size = folder_bytes(tmp)
        if size > MAX_BYTES:
            fail(f"{src}: {size / 2**20:.1f} MiB packaged, over the {MAX_BYTES >> 20} MiB a packaged model may take")
        if out.exists():
            shutil.rmtree(out)
        os.replace(folder_mode(tmp), out)  # mkdtemp made it 0700: as the umask asks, like every folder of ours
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("name")
    ap.add_argument("--run", type=Path, default=None, help="the run folder whose metrics.json holds the model's test rows")
    ap.add_argument("--dest", type=Path, default=Path(__file__).resolve().parents[1] / "laborllm" / "models" / "assets")
    ap.add_argument("--replace", action="store_true")
    a = ap.parse_args()
    out = package(a.model, a.name, a.dest, a.run, a.replace)
    print(f"{out}: {folder_bytes(out) / 2**20:.1f} MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
