#!/usr/bin/env bash
# One GPU call that measures dgm-run: install, CUDA tests, benchmarks, the several-processes probe and
# training runs side by side, all within a time budget; every log under $OUT in at most eight files:
# summary.txt (read it first), device.txt, install.log, pytest.log, bench.md, bench.json, curves.txt,
# runs.tar.gz (the run directories without checkpoints).
#
#   bash scripts/gpu/measure.sh scripts/gpu/plan_speed.sh        on the GPU machine, from the project's root
#   DRY=1 PY=.venv/bin/python bash scripts/gpu/measure.sh PLAN    the same steps on CPU, tiny: checks a plan
#
# A plan (see plan_speed.sh) is bash that sets TESTS, BENCHES, SCALING and RUNS. WHEELS: a folder of wheels
# the GPU machine lacks (hydra-core, omegaconf, antlr4, ...), installed without dependencies; DATA: a folder
# holding MNIST/raw/*.gz. Never run it without DRY=1 on a machine whose environment you want to keep: it
# installs the wheels and the project (without dependencies) into PY's environment.
set -u
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
BUDGET=${BUDGET:-540}            # seconds for the whole call; keep it under the call's own limit
RUNS_DIR=${RUNS_DIR:-$(mktemp -d)}; mkdir -p "$RUNS_DIR"
PY=${PY:-python3}
WHEELS=${WHEELS:-.gpu/wheels}
DATA=${DATA:-.gpu/data}
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
say() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/summary.txt"; }

TESTS=(); DRY_TESTS=(); BENCHES=(); SCALING=(); SCALING_BENCH=(); RUNS=()
# shellcheck source=plan_speed.sh
. "${1:?usage: measure.sh PLAN}"
if [ "${DRY:-0}" = 1 ]; then      # tiny settings, CPU, seconds
  TESTS=("${DRY_TESTS[@]}")
  [ ${#BENCHES[@]} -gt 0 ] && BENCHES=("--device cpu --tiny --models vae adgm")
  SCALING_BENCH=(--device cpu --tiny --models adgm)
  TINY="device=cpu model.hidden=[32,32] model.z_dim=4 trainer.eval_iw_samples=1 trainer.max_steps=30"
fi

say "start: budget ${BUDGET}s, plan $1, dry=${DRY:-0}"
{ nvidia-smi; command -v nvidia-cuda-mps-control && echo "MPS control present" || echo "no MPS control"; } \
  >"$OUT/device.txt" 2>&1
say "MPS: $(tail -n 1 "$OUT/device.txt")"

# 1. Install what the machine lacks, and the project without resolving dependencies (the machine's
#    torch may be older than the project's floor).
if [ "${DRY:-0}" != 1 ]; then
  if ! { $PY -m pip install -q --no-index --no-deps --no-compile "$WHEELS"/*.whl &&
         $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . ; } >"$OUT/install.log" 2>&1; then
    say "install failed:"; tail -n 5 "$OUT/install.log" | tee -a "$OUT/summary.txt"; exit 1
  fi
fi
$PY -c "import torch, hydra, dgm_run; print('torch', torch.__version__, 'hydra', hydra.__version__,
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" \
  2>&1 | tee -a "$OUT/summary.txt"

# 2. Tests (pytest -m cuda: the ones that need a GPU).
if [ ${#TESTS[@]} -gt 0 ]; then
  say "tests: ${TESTS[*]}"
  timeout "${TEST_S:-150}" $PY -m pytest -q -p no:cacheprovider -rs "${TESTS[@]}" >"$OUT/pytest.log" 2>&1
  say "tests exit $?: $(tail -n 1 "$OUT/pytest.log")"
fi

# 3. Benchmarks: each BENCHES entry is one scripts/benchmark.py command line; their tables go into
#    bench.md, their reports into bench.json as a list.
for i in "${!BENCHES[@]}"; do
  say "benchmark: ${BENCHES[$i]}"
  # shellcheck disable=SC2086
  timeout "${BENCH_S:-150}" $PY scripts/benchmark.py ${BENCHES[$i]} --json "$RUNS_DIR/bench_$i.json" \
    >>"$OUT/bench.md" 2>&1
  say "benchmark exit $?"; tail -n 12 "$OUT/bench.md" >>"$OUT/summary.txt"
done
$PY - "$RUNS_DIR" "$OUT/bench.json" <<'PY'
import json, sys
from pathlib import Path
reports = [json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("bench_*.json"))]
Path(sys.argv[2]).write_text(json.dumps(reports, indent=1))
PY

# 3b. Several processes on one GPU: for each K in SCALING, K benchmark processes of one model at once;
#     their summed samples/s against one process says whether a sweep's runs can share the GPU.
for k in "${SCALING[@]}"; do
  for i in $(seq "$k"); do
    timeout "${SCALING_S:-60}" $PY scripts/benchmark.py "${SCALING_BENCH[@]}" --json "$RUNS_DIR/scale_${k}_$i.json" \
      >"$RUNS_DIR/scale_${k}_$i.log" 2>&1 &
  done
  wait
  say "K=$k processes: $($PY - "$RUNS_DIR" "$k" <<'PY'
import json, sys
from pathlib import Path
runs = [json.loads(p.read_text()) for p in Path(sys.argv[1]).glob(f"scale_{sys.argv[2]}_*.json")]
rates = [m["samples_per_s"] for r in runs for m in r["models"].values()]
print(f"{len(rates)} finished, samples/s each {[round(x) for x in rates]}, together {round(sum(rates))}")
PY
)"
done

# 4. Training runs side by side, each stopped by trainer.max_minutes before the budget ends. Each RUNS
#    entry is "NAME|OVERRIDES"; data.root, trainer.max_minutes and hydra.run.dir are added.
if [ ${#RUNS[@]} -gt 0 ]; then
  reserve=${RESERVE_S:-75}        # the final evaluation, checkpoint and packing
  minutes=$($PY -c "print(round(max(0.2, ($(left) - $reserve) / 60), 2))")
  [ "${DRY:-0}" = 1 ] && minutes=0.3
  say "runs: ${#RUNS[@]}, trainer.max_minutes=$minutes each"
  # One run; one that fails within its first 90 s (a broken graph path, say) runs again eagerly
  # (trainer.cuda_graph=false, into NAME_eager) for the time left, so that the call still measures.
  run_one() {
    local name=$1 overrides=$2 start code
    start=$(date +%s)
    # shellcheck disable=SC2086
    timeout -s INT "$(( $(left) - 20 ))" $PY -m dgm_run.cli $overrides data.root="$DATA" \
      trainer.max_minutes="$minutes" trainer.progress_bar=false ${TINY:-} hydra.run.dir="$RUNS_DIR/$name" \
      >"$RUNS_DIR/$name.log" 2>&1; code=$?
    if [ $code -ne 0 ] && [ $(( $(date +%s) - start )) -lt 90 ] && [ "${DRY:-0}" != 1 ]; then
      local again
      again=$($PY -c "print(round(max(0.2, ($(left) - $reserve) / 60), 2))")
      # shellcheck disable=SC2086
      timeout -s INT "$(( $(left) - 20 ))" $PY -m dgm_run.cli $overrides data.root="$DATA" trainer.cuda_graph=false \
        trainer.max_minutes="$again" trainer.progress_bar=false hydra.run.dir="$RUNS_DIR/${name}_eager" \
        >"$RUNS_DIR/${name}_eager.log" 2>&1
    fi
    return $code
  }
  pids=()
  for entry in "${RUNS[@]}"; do
    run_one "${entry%%|*}" "${entry#*|}" & pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}"; code=$?
    name=${RUNS[$i]%%|*}
    say "run $name exit $code: $(grep -h "final:" "$RUNS_DIR/$name.log" | tail -n 1 | cut -c1-400)"
    grep -h "wall time\|rror" "$RUNS_DIR/$name.log" | tail -n 3 >>"$OUT/summary.txt"
    [ -f "$RUNS_DIR/${name}_eager.log" ] && say "  again eagerly: $(grep -h "final:" "$RUNS_DIR/${name}_eager.log" | tail -n 1 | cut -c1-300)"
  done
  # Every run's evaluations per epoch, read back from its own event file.
  $PY - "$RUNS_DIR" >"$OUT/curves.txt" 2>&1 <<'PY'
import json, sys
from pathlib import Path
from dgm_run.commands.curves import read_scalars
for run in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    metrics = run / "metrics.json"
    per_epoch = json.loads(metrics.read_text()).get("steps_per_epoch") if metrics.exists() else None
    scalars = read_scalars(run)
    print(f"{run.name} (steps per epoch {per_epoch})")
    for tag in ("eval/accuracy", "eval/error", "eval/unlabelled_error", "eval/log_likelihood"):
        if tag in scalars:
            points = " ".join(f"{s / per_epoch if per_epoch else s:g}:{v:.4g}" for s, v in scalars[tag].items())
            print(f"  {tag}: {points}")
PY
  cat "$OUT/curves.txt" >>"$OUT/summary.txt"
  tar czf "$OUT/runs.tar.gz" --exclude='*.pt' -C "$(dirname "$RUNS_DIR")" "$(basename "$RUNS_DIR")"
fi
say "end: $(left)s of the budget left"
