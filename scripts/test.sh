#!/usr/bin/env bash
# Install mvc with its test extras into .venv, lint and type-check it, and run the whole
# test suite, including the S3 / GCS / Ray tests against local servers the suite starts itself.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh "test,integrations"  # integrations: keras, transformers, lightning (~30 s once)
export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false
"$PY" -m ruff check mvc tests scripts
"$PY" -m mypy
"$PY" -m pytest -q -p no:cacheprovider --timeout=600 --durations=25 "$@"
