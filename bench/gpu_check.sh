#!/usr/bin/env bash
# The CUDA code paths, checked on a GPU machine with the tests' tiny random Llama (no model files travel).
#
# The tests that pin a device take COWEST_TEST_DEVICE (tests/support/tiny.py); the rest use weak.device=auto, and
# sft/align.bf16=auto, so on a GPU they train and draft on CUDA. The machine has torch but not this project's
# other dependencies and no network, so they travel as wheels of the versions this checkout's .venv has:
#
#   bench/gpu_check.sh --wheels      # here: fill ./.whl (git-ignored via .git/info/exclude) for Python 3.12
#   bench/gpu_check.sh [TEST ...]    # there: install ./.whl into /tmp/site, run the tests (default: all below), logs
#                                    # into $OUT
#
# pyarrow stays out (55 MB, over the device tool's 64 MiB): datasets runs on the machine's own.
set -uo pipefail
cd "$(dirname "$0")/.."

TESTS=(tests/models/test_weak.py tests/models/test_hub_kernels.py tests/models/test_continuous.py tests/test_training.py
       tests/sft tests/align
       tests/feedback tests/eval tests/inference tests/test_pipeline.py tests/cli/test_sft_feedback_align.py
       tests/cli/test_calibrate.py)

if [ "${1:-}" = "--wheels" ]; then
  exclude=$(git rev-parse --git-path info/exclude)  # a fresh checkout may have no .git/info yet
  mkdir -p "$(dirname "$exclude")"
  grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
  rm -rf .whl && mkdir -p .whl
  pins=()
  for p in transformers trl peft accelerate datasets tokenizers huggingface_hub kernels openai httpx2 httpcore2 truststore tomlkit click anyio hf_xet \
           httpx httpcore typer rich gguf dill \
           multiprocess jiter pydantic pydantic_core typing_inspection annotated_types fsspec regex; do
    v=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$p'))") || exit 1
    pins+=("$p==$v")
  done
  plats=()
  for n in 17 24 27 28 31 34 35; do plats+=(--platform "manylinux_2_${n}_x86_64"); done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 "${plats[@]}" -d .whl "${pins[@]}" || exit 1
  .venv/bin/pip wheel -q --no-deps -w .whl . || exit 1
  rm -rf build  # setuptools' leftovers of the wheel above
  du -sh .whl
  exit 0
fi

[ $# -gt 0 ] && TESTS=("$@")
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH COWEST_TEST_DEVICE=cuda PYTHONUNBUFFERED=1
nvidia-smi -L
python3 - <<'EOF'
import importlib.metadata as m, torch
print({p: m.version(p) for p in ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "pyarrow", "cowest"]})
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
from cowest.models.weak import resolve_device, resolve_dtype
from cowest.training import precision_kwargs
print("weak.device=auto ->", resolve_device("auto"), "dtype", resolve_dtype("auto", resolve_device("auto")))
print("sft/align.bf16=auto ->", precision_kwargs(bf16="auto", fp16=False))
EOF
python3 -m pytest -q -p no:cacheprovider --timeout 300 -rfEs --durations 15 \
  --junitxml "$OUT/junit.xml" "${TESTS[@]}" 2>&1 | tee "$OUT/pytest.log"
