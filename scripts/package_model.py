"""Ship a fitted LoRA LLM inside the package as a named model (`laborllm predict NAME` on a fresh clone).

python scripts/package_model.py MODEL_FOLDER NAME [--run RUN_DIR] [--dest laborllm/models/assets] [--replace]

MODEL_FOLDER is a fitted `llm` folder with a LoRA adapter (e.g. runs/nlsy97-cpu/nlsy97/models/llm-titles).
Writes DEST/NAME/: model.json (machine paths dropped), weights.safetensors, the adapter with its
weights in bf16 (half the bytes; at most 16 MiB) and the model card, to which the run's test results
for the model (perplexity and paired ratios from RUN_DIR's metrics.json) and its CPU hours are added.
The folder is written aside and moved into place whole; an existing one is replaced only with --replace.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from laborllm.models.lm_loading import DEFAULT_BASE

MAX_BYTES = 16 << 20
DROPPED = ("base_dir",)  # a path of the machine it was trained on


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def results_lines(run: Path, meta: dict) -> list[str]:
    """The model's test rows in the run's metrics.json, as card lines."""
    panel = meta["data"]["data"]  # a run's rows name their panel; `laborllm evaluate`'s rows need not
    rows = [r for r in json.loads((run / "metrics.json").read_text())
            if r.get("model") == meta["name"] and r.get("split") == "test" and r.get("data", panel) == panel]
    if not rows:
        raise SystemExit(f"{run}/metrics.json: no test row of {meta['name']} on {meta['data']['data']}")
    r = rows[0]
    lo, hi = r["perplexity_ci95"]
    lines = [f"- test perplexity {r['perplexity']:.3f} [{lo:.3f}, {hi:.3f}] on {r['n_events']:,} events "
             f"({r['n_persons']:,} people), top-1 {r['top1']:.3f}, {r['normalization']}"]
    for other, p in sorted((r.get("paired") or {}).items()):
        lines.append(f"- perplexity ratio to {other}: {p['ratio']:.3f} [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}] "
                     "(paired person bootstrap)")
    return lines


def package(src: Path, name: str, dest: Path, run: Path | None = None, replace: bool = False) -> Path:
    meta = json.loads((src / "model.json").read_text())
    if meta.get("kind") != "llm" or not (src / "adapter" / "adapter_model.safetensors").is_file():
        raise SystemExit(f"{src}: not a fitted LLM with a LoRA adapter (adapter/adapter_model.safetensors)")
    out = dest / name
    if out.exists() and not replace:
        raise SystemExit(f"{out}: exists; pass --replace to replace it")
    for key in DROPPED:
        meta.pop(key, None)
    base = meta["config"].get("base")
    if base != DEFAULT_BASE:  # loaded on the base its settings name: only SmolLM2's pip package travels
        print(f"{src}: its base {base!r} is not {DEFAULT_BASE!r}; the packaged model loads only where that exists",
              file=sys.stderr)
    card = (src / "README.md").read_text() if (src / "README.md").exists() else f"# {name}\n"
    busy, wall = meta.get("train_busy_seconds"), meta.get("fit_seconds")
    card += f"\n## Packaged as `{name}`\n\n- the adapter's weights stored in bf16 (trained in {meta.get('precision', '?')})\n"
    if busy and wall:  # the machine's cores are the run's (config.json), not known here
        card += (f"- training: {busy / 3600:.1f} hours of optimiser work, {wall / 3600:.1f} hours of wall time "
                 f"(all pieces of a resumed fit), {meta.get('tokens_per_second', '?')} tokens/s\n")
    if run is not None:
        card += "\n".join(results_lines(run, meta)) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest))
    try:
        (tmp / "adapter").mkdir()
        shutil.copy2(src / "adapter" / "adapter_config.json", tmp / "adapter")
        weights = load_file(src / "adapter" / "adapter_model.safetensors")
        save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()},
                  tmp / "adapter" / "adapter_model.safetensors", metadata={"format": "pt"})
        shutil.copy2(src / "weights.safetensors", tmp)
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "README.md").write_text(card)
        size = folder_bytes(tmp)
        if size > MAX_BYTES:
            raise SystemExit(f"{src}: {size / 2**20:.1f} MiB packaged, over the {MAX_BYTES >> 20} MiB a packaged model may take")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
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
