#!/usr/bin/env bash
# Device check: everything worth knowing about a GPU in one prepared run, under 8 minutes on one
# H200, every result under one folder. Steps (each timed, logged to $OUT/logs/<step>.log, and
# reported; a failing step does not stop the others):
#
#   environment   the GPU, driver, Python and torch
#   install       the package's dependencies (from $WHEELS when given; skipped when importable)
#   bench         scripts/bench.py on the device, with the paper-sweep projection (bench.json)
#   train-lfw     stage 1 at paper size (batch 16, 64 px, full widths) trained on LFW for a
#                 fixed number of steps, then LFW verification with it (results/)
#   fer2013       FER-2013 expression recognition with the same stage-1 model
#   gpu-tests     tests/test_accel.py, which has a CUDA-only test of data placement
#   bench-plain   the paper preset's training steps with every device switch off (ratios)
#   bench-compile the same with torch.compile on (stage 1 and SimCLR: compiling takes a while)
#
# Usage:
#   bash scripts/device_check.sh                        # on a GPU machine
#   DEVICE=cpu STEPS=2 bash scripts/device_check.sh     # dry form on the CPU: tiny settings
#
# Environment (defaults in brackets):
#   DEVICE     cuda or cpu [cuda]
#   STEPS      stage-1 training steps [auto: what the bench's measured rate fits in TRAIN_SECONDS,
#              between 200 and 5000; the dry form's default is 2]
#   TRAIN_SECONDS  time the auto step count aims at [90]
#   PRESET     preset of the LFW / FER-2013 runs [paper; the dry form: smoke]
#   OUT        folder for everything [device_check/<UTC time>]
#   CACHE_DIR  decoded data and checkpoints [$OUT/cache; removed at the end unless KEEP_CACHE=1]
#   DATA_ROOT  folder with lfw/ and fer2013/ [$BENCH_DATA_ROOT, else shared/data or ../shared/data]
#   WHEELS     folder of wheels for an offline install [none: pip's configured index]
#   BUDGET     seconds for the whole check; a step that cannot start in time is skipped, the
#              summary always runs [450; the dry form: 540]
#   PYTHON     interpreter [python]
set -u
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cpu ]; then DRY=1; else DRY=0; fi
# one thread per process on the CPU: a shared CPU oversubscribed by torch's threads runs several-fold slower
[ "$DRY" = 1 ] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
STEPS=${STEPS:-$([ "$DRY" = 1 ] && echo 2 || echo auto)}
TRAIN_SECONDS=${TRAIN_SECONDS:-90}
PRESET=${PRESET:-$([ "$DRY" = 1 ] && echo smoke || echo paper)}
OUT=${OUT:-device_check/$(date -u +%Y%m%dT%H%M%SZ)}
CACHE_DIR=${CACHE_DIR:-$OUT/cache}
BUDGET=${BUDGET:-$([ "$DRY" = 1 ] && echo 540 || echo 450)}
PYTHON=${PYTHON:-python}
if [ -z "${DATA_ROOT:-}" ]; then
    DATA_ROOT=${BENCH_DATA_ROOT:-}
    for candidate in shared/data ../shared/data; do
        if [ -z "$DATA_ROOT" ] && [ -d "$candidate" ]; then DATA_ROOT=$candidate; fi
    done
fi
mkdir -p "$OUT/logs" "$CACHE_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 BENCH_CACHE_DIR="$CACHE_DIR"
# the steps run in child shells (under timeout): they see these and the functions below
export DEVICE DRY STEPS TRAIN_SECONDS PRESET OUT CACHE_DIR PYTHON DATA_ROOT WHEELS="${WHEELS:-}"
LFW_IMAGES=13233
# methods of the switch comparisons (the dry form keeps to stage 1: compiling takes minutes on a CPU)
PLAIN=$([ "$DRY" = 1 ] && echo unsup3d || echo unsup3d,simclr,mae,latentface,latentface-encoder)
COMPILED=$([ "$DRY" = 1 ] && echo unsup3d || echo unsup3d,simclr)
START=$(date +%s)
DEADLINE=$((START + BUDGET - 30))  # the last 30 s are the summary's
STATUS="$OUT/steps.tsv"
printf 'step\tstatus\tseconds\n' > "$STATUS"

# run_step NAME TIMEOUT_S FUNCTION [ARGS...]: run a function of this script in a child shell with
# a time limit (never past the deadline), log its output, record its status and duration; always
# returns 0 so that the next step runs.
run_step() {
    local name=$1 limit=$2 left status tic seconds
    shift 2
    left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt 10 ] && [ "$name" != summary ]; then
        printf '%s\tskipped (out of time)\t0\n' "$name" >> "$STATUS"
        echo "== $name: skipped, the ${BUDGET} s budget is spent"
        return 0
    fi
    [ "$limit" -gt "$left" ] && [ "$name" != summary ] && limit=$left
    echo "== $name (limit ${limit} s): $*"
    tic=$(date +%s)
    timeout --signal=TERM --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" > "$OUT/logs/$name.log" 2>&1
    status=$?
    seconds=$(($(date +%s) - tic))
    case $status in
        0) printf '%s\tok\t%s\n' "$name" "$seconds" >> "$STATUS"; echo "   ok in ${seconds} s" ;;
        124|137) printf '%s\ttimed out\t%s\n' "$name" "$seconds" >> "$STATUS"; echo "   TIMED OUT after ${seconds} s; tail of $OUT/logs/$name.log:"; tail -n 5 "$OUT/logs/$name.log" ;;
        *) printf '%s\tfailed (exit %s)\t%s\n' "$name" "$status" "$seconds" >> "$STATUS"; echo "   FAILED (exit $status) after ${seconds} s; tail of $OUT/logs/$name.log:"; tail -n 5 "$OUT/logs/$name.log" ;;
    esac
    return 0
}

environment() {
    date -u
    if command -v nvidia-smi > /dev/null; then nvidia-smi; else echo "no nvidia-smi"; fi
    "$PYTHON" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(0), "bf16:", torch.cuda.is_bf16_supported(),
          f"memory: {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF
}

install() {
    if "$PYTHON" -c "import torch, torchvision, timm, lightly, diffusers, submitit, sklearn, pandas, tabulate, tqdm, PIL; import harness.cli" 2> /dev/null; then
        echo "dependencies importable; nothing to install"
        return 0
    fi
    if [ -n "${WHEELS:-}" ]; then
        "$PYTHON" -m pip install --no-index --find-links "$WHEELS" -e ".[test]"
    else
        "$PYTHON" -m pip install -e ".[test]"
    fi
}

gpu_tests() {
    "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_accel.py
}

bench() {
    if [ "$DRY" = 1 ]; then
        "$PYTHON" scripts/bench.py --smoke --device "$DEVICE" --out "$OUT/bench.json"
    else
        "$PYTHON" scripts/bench.py --device "$DEVICE" --steps 10 --project --out "$OUT/bench.json"
    fi
}

# bench_switches NAME SETTINGS...: the paper preset's training steps (smoke in the dry form)
# with other device switches, for side-by-side ratios against bench.json.
bench_switches() {
    local name=$1
    shift
    local presets=paper
    [ "$DRY" = 1 ] && presets=smoke
    "$PYTHON" scripts/bench.py --device "$DEVICE" --steps 10 --parts train --presets "$presets" "$@" --out "$OUT/bench-$name.json"
}

# The stage-1 step count: STEPS, or what the bench's paper rate fits in TRAIN_SECONDS.
stage1_steps() {
    if [ "$STEPS" != auto ]; then echo "$STEPS"; return; fi
    "$PYTHON" - "$OUT/bench.json" "$TRAIN_SECONDS" <<'EOF' 2> /dev/null || echo 1000
import json, sys
rate = json.load(open(sys.argv[1]))["train_step"]["paper"]["unsup3d"]["images_per_s"]
print(max(200, min(5000, int(float(sys.argv[2]) * rate / 16))))
EOF
}

# evaluate PROTOCOL DATASET: the stage-1 model (trained on first use) on one protocol.
evaluate() {
    local steps batch=16 epochs=1 per_epoch images extra=()
    steps=$(stage1_steps)
    [ "$PRESET" = smoke ] && batch=8
    per_epoch=$((LFW_IMAGES / batch))
    images=$((steps * batch))
    if [ "$steps" -gt "$per_epoch" ]; then  # more steps than one pass over LFW: whole epochs
        epochs=$(((steps + per_epoch - 1) / per_epoch))
        steps=$((epochs * per_epoch))
        images=0
    fi
    [ "$DRY" = 1 ] && extra=(--set lfw.pretrain_limit="$images" --set fer2013.train_limit=700 --set fer2013.test_limit=350)
    echo "stage 1: preset $PRESET, $steps steps of $batch images ($epochs epoch(s) of train_images=$images; 0 = all $LFW_IMAGES)"
    "$PYTHON" run_bench.py --preset "$PRESET" --device "$DEVICE" --methods unsup3d --protocol "$1" --datasets "$2" \
        --set pretrain.data=lfw --set unsup3d.epochs="$epochs" --set unsup3d.train_images="$images" ${extra[@]+"${extra[@]}"} \
        --data-root "${DATA_ROOT:-data}" --cache-dir "$CACHE_DIR" --results-dir "$OUT/results"
}

summary() {
    "$PYTHON" - "$OUT" "$CACHE_DIR" <<'EOF'
import json, shutil, sys
from pathlib import Path
out, cache = Path(sys.argv[1]), Path(sys.argv[2])
for name in ("bench", "bench-plain", "bench-compile"):
    path = out / f"{name}.json"
    if path.exists():
        bench = json.loads(path.read_text())
        for preset, rates in bench.get("train_step", {}).items():
            print(f"{name:13} {preset:6} " + "  ".join(f"{m} {r['images_per_s']:.0f} img/s" for m, r in rates.items()))
if (out / "bench.json").exists() and (out / "bench-plain.json").exists():
    fast, plain = (json.loads((out / f"{n}.json").read_text())["train_step"] for n in ("bench", "bench-plain"))
    for preset in plain:
        ratios = {m: fast[preset][m]["images_per_s"] / r["images_per_s"] for m, r in plain[preset].items() if m in fast.get(preset, {})}
        print(f"speed-up of the default switches over plain fp32 ({preset}): " + "  ".join(f"{m} {x:.2f}x" for m, x in ratios.items()))
for path in sorted(out.glob("results/*/*/*.json")):
    record = json.loads(path.read_text())
    cell, metrics = record["cell"], record["metrics"]
    print(f"{cell['protocol']}/{cell['dataset']} {cell['method']}: accuracy {metrics['accuracy']:.4f} "
          f"(train switches {record['train']['effective']}, {record['provenance']['device']})")
for done in sorted(cache.glob("artifacts/stage1/*/done.json")):
    info = json.loads(done.read_text())
    print(f"stage 1 {done.parent.name}: {info.get('images_per_second', float('nan')):.1f} img/s "
          f"(warm {info.get('warm_images_per_second', float('nan')):.1f}), {info['build_seconds']:.0f} s, final losses {info['history'][-1]}")
    keep = out / "stage1" / done.parent.name
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("done.json", "reconstructions.png", "losses.png", "losses_step.csv"):
        if (done.parent / name).exists():
            shutil.copy(done.parent / name, keep / name)
EOF
}

export LFW_IMAGES
export -f environment install gpu_tests bench bench_switches stage1_steps evaluate summary
echo "device check: DEVICE=$DEVICE STEPS=$STEPS PRESET=$PRESET OUT=$OUT DATA_ROOT=${DATA_ROOT:-none} budget ${BUDGET} s"
run_step environment 60 environment
run_step install 150 install
run_step bench 210 bench
run_step train-lfw 240 evaluate verification lfw
run_step fer2013 150 evaluate fer fer2013
run_step gpu-tests 60 gpu_tests
run_step bench-plain 100 bench_switches plain --methods "$PLAIN" \
    --set train.precision=fp32 --set train.channels_last=off --set train.tf32=false --set train.data=host
run_step bench-compile 150 bench_switches compile --set train.compile=true --methods "$COMPILED"
run_step summary 30 summary
cat "$OUT/logs/summary.log" 2> /dev/null
if [ "${KEEP_CACHE:-0}" != 1 ]; then rm -rf "$CACHE_DIR"; fi
echo
column -t -s $'\t' "$STATUS" 2> /dev/null || cat "$STATUS"
echo "total $(($(date +%s) - START)) s; everything is under $OUT"
! grep -qv -e $'\tok\t' -e '^step' "$STATUS"
