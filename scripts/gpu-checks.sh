#!/usr/bin/env bash
# Every check that needs a CUDA GPU (issues 4, 6 and 23), in one command; logs and JSON to $OUT.
#
# Steps (pick some with --only a,b,c; default: all), each logged whatever the others do:
#   tests     pytest tests/kernels and the gpu-marked training tests (every strategy trains on
#             CUDA as on the CPU; GPU z == CPU z bit for bit; quantize on CUDA == CPU bits)
#             -> tests.log
#   simulate  `fedft simulate --device cuda` on a random SmolLM2-135M-shaped model, nf4 and not;
#             fails unless report.json names a CUDA device and a peak GPU memory -> simulate.log
#   grpc      a loopback coordinator and two `fedft client --device cuda` (the grpc engine)
#             -> grpc.log (needs the carried wheels: cryptography, SQLAlchemy, alembic, ...)
#   lora      benchmarks/lora_step.py: fedft's LoRA step vs plain PEFT, batch 8 and 64
#             -> lora.log, lora.json
#   kernels   benchmarks/kernels.py (Triton vs torch, copy and GEMM ceilings) -> kernels.log/json
#   zo        benchmarks/zo_step.py, tiny and SmolLM2-shaped (all weights, attention) -> zo_step.log
#   batched   `fedft simulate --device cuda --batch-clients 4`, and benchmarks/batched_clients.py
#             (client-rounds/s, N = 1, 8, 32, 128, tiny and SmolLM2-shaped) -> batched.log/json
#
# It needs only a CUDA image with torch, triton, transformers, peft, pytest, pyyaml, grpcio and
# setuptools: fedft is installed from this checkout, without dependencies, into a temporary
# folder, together with any wheels under .whl/. To fetch those (cp312) where pip reaches PyPI:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 --platform any -d .whl cryptography==50.0.2 cffi==2.1.1 \
#       pycparser==3.12 SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3 greenlet==3.5.6
# Usage:
#   scripts/gpu-checks.sh [--only STEPS]   # on the GPU machine; results in $OUT or ./gpu-results
#   scripts/gpu-checks.sh --cpu            # the same plumbing without a GPU, small sizes
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-$root/gpu-results}
mkdir -p "$out"
rm -f "$out"/*.log "$out"/*.json "$out"/device.txt
cpu=0
only=tests,simulate,grpc,lora,kernels,zo,batched
while [[ $# -gt 0 ]]; do
    case $1 in
        --cpu) cpu=1 ;;
        --only) only=$2; shift ;;
        *) echo "gpu-checks.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
wants() { [[ ",$only," == *",$1,"* ]]; }
py=${PYTHON:-python3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# fedft itself (no dependencies, no index: the image has them) and any carried wheels.
"$py" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
    --target "$work/site" . || exit 1
if [[ $cpu == 0 ]] && compgen -G ".whl/*.whl" >/dev/null; then  # cp312 wheels: the GPU image
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

# A small dialog file with two categories, so no dataset package is needed on the device.
data="$work/dialogs.jsonl"
"$py" - "$data" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(64):
        topic = ("weather", "sports")[i % 2]
        f.write(json.dumps({"prompt": f"tell me about {topic} {i}", "response":
                            f"{topic} is a fine subject, number {i}, " * 3,
                            "category": topic}) + "\n")
PY
check_report() {  # check_report OUT_DIR: fail unless a CUDA device trained (device, peak memory)
    "$py" - "$1/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"device": r["device"], "final": r["final"], "memory": r.get("memory"),
                  "rounds": [{k: x[k] for k in ("round", "eval_loss", "seconds")} for x in r["rounds"]]}))
assert r["device"].startswith("cuda"), r["device"]
assert r["final"].get("peak_gpu_mb", 0) > 0, r["final"]
PY
}
simulate() {  # simulate OUT_DIR ARGS...: one `fedft simulate` run, then check its report
    local dir=$1
    shift
    "$py" -m fedft.cli simulate --quiet --clients 2 --rounds 1 --seed 0 --rouge-examples 0 \
        --eval-examples 16 --out "$dir" "$@" && check_report "$dir"
}

if [[ $cpu == 1 ]]; then
    wants tests && step "kernel tests (gpu-marked only)" tests.log \
        "$py" -m pytest -q -p no:cacheprovider -m gpu tests/kernels
    wants simulate && step "simulate, tiny, cpu" simulate.log \
        "$py" -m fedft.cli simulate --quiet --clients 2 --rounds 1 --rouge-examples 0 \
        --eval-examples 8 --model tiny --device cpu --dataset "$data" --out "$work/s-cpu"
    wants lora && step "LoRA step, tiny" lora.log "$py" benchmarks/lora_step.py --model tiny \
        --device cpu --steps 2 --json "$out/lora.json"
    wants kernels && step "kernel benchmark" kernels.log \
        "$py" benchmarks/kernels.py --rounds 1 --reps 1 --elements 65536 --gemm 64 64 64 \
        --gemm-ceiling 128 --copy-mib 4 --json "$out/kernels.json"
    wants zo && step "ZO step, tiny" zo_step.log "$py" benchmarks/zo_step.py --model tiny --repeats 1
    wants batched && step "simulate --batch-clients 2, tiny, cpu" batched.log \
        "$py" -m fedft.cli simulate --quiet --clients 2 --rounds 1 --rouge-examples 0 \
        --eval-examples 8 --model tiny --device cpu --dataset "$data" --batch-clients 2 \
        --out "$work/b-cpu"
    wants batched && step "batched clients, tiny" batched.log "$py" benchmarks/batched_clients.py \
        --models tiny --device cpu --clients 1,4 --steps 1 --json "$out/batched.json"
    exit $status
fi

shape="$work/smollm2-shape"
if wants simulate || wants lora || wants zo || wants batched; then
    "$py" benchmarks/random_checkpoint.py "$shape" >/dev/null || { echo "no checkpoint"; status=1; }
fi
wants tests && step "kernel and training tests" tests.log \
    "$py" -m pytest -q -p no:cacheprovider tests/kernels tests/runtime/test_placement.py
if wants simulate; then
    step "simulate --device cuda, SmolLM2 shape" simulate.log simulate "$work/s-full" \
        --model "$shape" --dataset "$data" --device cuda --opt local_steps=4 --opt batch_size=4
    step "simulate --device cuda --quant nf4, SmolLM2 shape" simulate.log simulate "$work/s-nf4" \
        --model "$shape" --dataset "$data" --device cuda --quant nf4 --opt local_steps=4 \
        --opt batch_size=4
    step "simulate --device cuda, fedkseed, tiny" simulate.log simulate "$work/s-zo" \
        --model tiny --dataset "$data" --device cuda --strategy fedkseed --opt local_steps=20
fi
wants grpc && step "grpc engine: coordinator + 2 clients --device cuda, tiny" grpc.log \
    simulate "$work/g" --engine grpc --model tiny --dataset "$data" --device cuda
if wants lora; then
    for batch in 8 64; do
        step "LoRA step, SmolLM2 shape, batch $batch" lora.log "$py" benchmarks/lora_step.py \
            --model "$shape" --device cuda --batch-size $batch --json "$out/lora-b$batch.json"
    done
fi
wants kernels && step "kernel benchmark" kernels.log \
    "$py" benchmarks/kernels.py --json "$out/kernels.json"
if wants zo; then
    step "ZO step, tiny" zo_step.log "$py" benchmarks/zo_step.py --model tiny
    for trainable in all self_attn; do
        step "ZO step, SmolLM2-135M shape, $trainable" zo_step.log \
            "$py" benchmarks/zo_step.py --model "$shape" --trainable $trainable
    done
fi
if wants batched; then
    step "simulate --device cuda --batch-clients 4, tiny" batched.log simulate "$work/b" \
        --model tiny --dataset "$data" --device cuda --clients 4 --batch-clients 4
    step "batched clients, tiny and SmolLM2 shape" batched.log "$py" \
        benchmarks/batched_clients.py --models "tiny,$shape" --device cuda --clients 1,8,32,128 \
        --json "$out/batched.json"
fi
exit $status
