#!/usr/bin/env bash
# The main job end to end, on an embedded default (a local-directory remote, no cloud):
# install mvc into .venv, make a temp repo, train two tiny numpy models, add both
# versions, push to the local remote, clone as a teammate, pull, show status and history.
# Usage: scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh ""
export MVC_NO_PROGRESS=1 DVC_NO_ANALYTICS=1
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mvc-demo.XXXXXX")"
export MVC_REMOTE_HOME="$WORK/remotes" DVC_SITE_CACHE_DIR="$WORK/dvc-site"
trap 'rm -rf "$WORK"' EXIT
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

REPO="$WORK/alice"
mkdir -p "$REPO" && cd "$REPO"
git init -q -b main
git config user.name "Alice" && git config user.email "alice@example.com"
run mvc init

train() {  # train a logistic regression with numpy and save it as safetensors
  "$PY" - "$1" "$2" <<'PY'
import json, sys
import numpy as np
from safetensors.numpy import save_file
lr, epochs = float(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
X = rng.standard_normal((512, 8)).astype(np.float32)
y = (X @ np.arange(1, 9, dtype=np.float32) > 0).astype(np.float32)
w, b = np.zeros(8, np.float32), np.float32(0)
for _ in range(epochs):
    p = 1 / (1 + np.exp(-(X @ w + b)))
    w -= lr * X.T @ (p - y) / len(y); b -= lr * np.mean(p - y)
acc = float(np.mean(((X @ w + b) > 0) == y))
save_file({"linear.weight": w[None, :], "linear.bias": np.array([b], np.float32)}, "model.safetensors")
json.dump({"accuracy": round(acc, 4)}, open("metrics.json", "w"))
PY
}

train 0.05 20
run mvc add model.safetensors --name classifier --param lr=0.05 --param epochs=20 --metrics-file metrics.json -m "baseline"
run mvc commit -m "classifier v1"
train 0.5 200
run mvc add model.safetensors --param lr=0.5 --param epochs=200 --metrics-file metrics.json -m "longer training"
run mvc commit -m "classifier v2"
run mvc push
run mvc status

BOB="$WORK/bob"
say "git clone alice bob"; git clone -q "$REPO" "$BOB"; cd "$BOB"
run mvc pull
run mvc status
if mvc log --help >/dev/null 2>&1; then run mvc log classifier; fi
if mvc diff --help >/dev/null 2>&1; then run mvc diff classifier@v1 classifier@v2; fi
cmp "$REPO/model.safetensors" "$BOB/model.safetensors" && echo "bob's weights are byte-identical to alice's"
echo "demo ok"
