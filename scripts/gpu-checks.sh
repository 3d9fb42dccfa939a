#!/usr/bin/env bash
# Every check that needs a CUDA GPU (issues 4 and 6), in one command; logs and JSON to $OUT.
#
# What it runs, each step logged to its own file whatever the others do:
#   1. tests/kernels on the GPU, `gpu`-marked tests included (GPU z == CPU-reference z bit for
#      bit, bf16 dequantization) -> kernel-tests.log
#   2. benchmarks/kernels.py (Triton vs torch baselines, copy and bf16 GEMM ceilings)
#      -> kernels.log, kernels.json
#   3. benchmarks/zo_step.py on the tiny preset and on a random SmolLM2-135M-shaped model
#      (all weights, then attention only) -> zo_step.log
#   4. benchmarks/rng_throughput.py (the CPU perturbation path on that machine) -> rng.log
#
# It needs only a CUDA image with torch, triton, transformers, peft, pytest, pyyaml and
# setuptools: fedft is installed from this checkout, without dependencies, into a temporary
# folder, together with any wheels under .whl/ (chatterbot-corpus for step 3). To get that wheel where pip can reach an index:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       chatterbot-corpus==1.3.3
# Usage:
#   scripts/gpu-checks.sh          # on the GPU machine; results in $OUT or ./gpu-results
#   scripts/gpu-checks.sh --cpu    # the same plumbing without a GPU, small sizes (smoke test)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-$root/gpu-results}
mkdir -p "$out"
rm -f "$out"/*.log "$out"/*.json "$out"/device.txt
cpu=0
[[ ${1:-} == --cpu ]] && cpu=1
py=${PYTHON:-python3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# fedft itself (no dependencies, no index: the image has them) and any carried wheels.
"$py" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
    --target "$work/site" . || exit 1
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$work/site" \
        .whl/*.whl || exit 1
fi
export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 FEDFT_CACHE=${FEDFT_CACHE:-$work/cache}

if [[ $cpu == 0 ]] && ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no CUDA device visible to $py; use --cpu for a smoke test" >&2
    exit 2
fi
"$py" - <<'PY' | tee "$out/device.txt"
import platform, torch, triton, transformers
name = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
print(f"device: {name}; torch {torch.__version__}; triton {triton.__version__}; "
      f"transformers {transformers.__version__}")
PY

status=0
step() {  # step NAME LOG COMMAND...: run, log, remember a failure, go on
    local name=$1 log=$2
    shift 2
    echo "== $name" | tee -a "$out/$log"
    "$@" 2>&1 | tee -a "$out/$log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc" | tee -a "$out/$log"
    [[ $rc == 0 ]] || status=1
}

if [[ $cpu == 1 ]]; then
    step "kernel tests (gpu-marked only)" kernel-tests.log \
        "$py" -m pytest -q -p no:cacheprovider -m gpu tests/kernels
    step "kernel benchmark" kernels.log \
        "$py" benchmarks/kernels.py --rounds 1 --reps 1 --elements 65536 --gemm 64 64 64 \
        --gemm-ceiling 128 --copy-mib 4 --json "$out/kernels.json"
    step "ZO step, tiny" zo_step.log "$py" benchmarks/zo_step.py --model tiny --repeats 1
    step "CPU perturbation rate" rng.log "$py" benchmarks/rng_throughput.py --numel 65536
    exit $status
fi

step "kernel tests" kernel-tests.log "$py" -m pytest -q -p no:cacheprovider tests/kernels
step "kernel benchmark" kernels.log "$py" benchmarks/kernels.py --json "$out/kernels.json"
shape="$work/smollm2-shape"
step "ZO step, tiny" zo_step.log "$py" benchmarks/zo_step.py --model tiny
if "$py" benchmarks/random_checkpoint.py "$shape" >/dev/null; then
    for trainable in all self_attn; do
        step "ZO step, SmolLM2-135M shape, $trainable" zo_step.log \
            "$py" benchmarks/zo_step.py --model "$shape" --trainable $trainable
    done
else
    echo "could not write the SmolLM2-shaped checkpoint" | tee -a "$out/zo_step.log"
    status=1
fi
step "CPU perturbation rate" rng.log "$py" benchmarks/rng_throughput.py
exit $status
