#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite. Extra arguments go to pytest.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -m "not slow"   # the fast unit tests only
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pytest "$@"
