#!/usr/bin/env bash
# The CUHK03 ablation at the budget chosen on the validation split (issue 37; budget: benchmarks/convergence_budget.py,
# its JSON in RESULTS/budget.json): every (row, seed) is trained with `lfem-reid compare`, then its last checkpoint's
# occlusion-robustness curves (`lfem-reid robustness`, the folder's test split, its own cameras: the same cameras as
# training) and, for the rows with an LFEM gate, `lfem-reid analyze-gates` on the occluded queries are written. The
# small outputs of each finished (row, seed) are copied into RESULTS at once, so a session that ends mid-queue keeps
# every finished row; a (row, seed) whose outputs are in RESULTS is skipped; one stopped mid-row resumes from its
# newest checkpoint (every 5 epochs) while OUT survives.
#
# Seed by seed (every row's seed 0 first), so a partial queue still compares all rows on the same seeds.
#
# Usage: bash benchmarks/cuhk03_converged.sh EPOCHS [ROW ...]     ROW = profile:key (default: the five rows below)
#   env: OPTS (more KEY VALUE overrides for every row, e.g. "train.lr 0.002"; give such a schedule its own RESULTS),
#        SEEDS (default "0 1 2"), DATA (default ../shared/data), OUT (default /work/runs/converged_e$EPOCHS),
#        RESULTS (default benchmarks/results/cuhk03_pair1_converged/e$EPOCHS)
# A row whose training fails (compare's JSON status is not ok), whose curves or gates fail, is reported and left
# undone (run the script again); the script exits 1 when any row is undone.
set -uo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:?usage: cuhk03_converged.sh EPOCHS [profile:key ...]}
shift
ROWS=("$@")
[ ${#ROWS[@]} -eq 0 ] && ROWS=(pedestrians:baseline_vit pedestrians:lfem_only pedestrians:rerc_only pedestrians:full
                             visibility_pedestrians:plus_stripes)
DATA=${DATA:-../shared/data}
OUT=${OUT:-/work/runs/converged_e$EPOCHS}
RESULTS=${RESULTS:-benchmarks/results/cuhk03_pair1_converged/e$EPOCHS}
FOLDER="$DATA/cuhk03_pair1_128x64"
mkdir -p "$RESULTS/rows" "$RESULTS/robustness" "$RESULTS/gates"
undone=0
fail() { echo "!! $1"; undone=1; }

for seed in ${SEEDS:-0 1 2}; do
  for row in "${ROWS[@]}"; do
    IFS=: read -r profile key <<< "$row"
    name="${key}_seed${seed}"
    gated=1; { [ "$key" = baseline_vit ] || [ "$key" = rerc_only ]; } && gated=0  # the rows with an LFEM gate
    if [ -f "$RESULTS/rows/$name.json" ] && [ -f "$RESULTS/robustness/$name/robustness.json" ] &&
       { [ $gated = 0 ] || [ -f "$RESULTS/gates/$name/gates.json" ]; }; then
      echo "== $name: done (in $RESULTS)"; continue
    fi
    echo "== $name: training ($EPOCHS epochs) $(date -u +%H:%M)"
    lfem-reid compare --profile "$profile" --models "$key" --seeds "$seed" --root "$DATA" --out "$OUT/$profile" \
      train.max_epoch "$EPOCHS" ${OPTS:-} || { fail "$name: compare exited $?"; continue; }
    python -c "import json, sys; r = json.load(open(sys.argv[1])); sys.exit(r['status'] != 'ok' or
               r['epochs'] != int(sys.argv[2]))" "$OUT/$profile/$name.json" "$EPOCHS" ||
      { fail "$name: not trained to $EPOCHS epochs (status / epochs in $OUT/$profile/$name.json)"; continue; }
    ckpt=$(ls "$OUT/$profile/runs/$name/model/"model.pth.tar-* 2>/dev/null | sort -V | tail -1)
    [ -n "$ckpt" ] || { fail "$name: no checkpoint in $OUT/$profile/runs/$name/model"; continue; }
    echo "== $name: robustness curves of $ckpt $(date -u +%H:%M)"
    lfem-reid robustness --weights "$ckpt" --folder "$FOLDER" --sie cameras --seed 0 \
      --out "$OUT/robustness/$name" || { fail "$name: robustness exited $?"; continue; }
    if [ $gated = 1 ]; then
      lfem-reid analyze-gates --weights "$ckpt" --root "$DATA" --dataset market_layout_occluded \
        --out "$OUT/gates/$name" || { fail "$name: analyze-gates exited $?"; continue; }
      mkdir -p "$RESULTS/gates/$name" && cp "$OUT/gates/$name/gates.json" "$RESULTS/gates/$name/"
    fi
    mkdir -p "$RESULTS/robustness/$name"
    cp "$OUT/robustness/$name/"robustness.{json,md,png} "$RESULTS/robustness/$name/"
    cp "$OUT/$profile/$name.json" "$RESULTS/rows/$name.json"
    echo "== $name: done $(date -u +%H:%M)"
  done
done
exit $undone
