#!/usr/bin/env bash
# Builds the project's virtualenv (.venv) on a fresh machine: torch, mmengine, mmcv with its
# compiled ops (built once per machine, then cached), mmdet, and lip_mmdet in editable mode.
# Safe to run again: when nothing changed it returns in a second.
#
# Environment knobs:
#   PYTHON=python3.11        interpreter that creates the venv
#   LIP_MMDET_SYSTEM_TORCH=1 keep the torch (e.g. a CUDA build) that PYTHON already has:
#                            the venv sees system site-packages and torch is not installed
#   LIP_MMDET_CACHE=DIR      where built mmcv wheels are kept (default ~/.cache/lip_mmdet)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
SYSTEM_TORCH="${LIP_MMDET_SYSTEM_TORCH:-0}"
CACHE="${LIP_MMDET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lip_mmdet}"
TORCH_VERSION=2.13.0
MMCV_VERSION=2.1.0
STAMP="$VENV/.lip_mmdet_setup"

step=""
say() { printf '[setup] %s\n' "$*"; }
begin() { step="$1"; say "$1"; }
trap 'rc=$?; [ $rc -ne 0 ] && printf "[setup] FAILED at step: %s (exit %d). Fix the cause above and run make setup again.\n" "$step" "$rc" >&2' EXIT

# Everything that decides what gets installed: when it is unchanged, nothing needs doing.
fingerprint() {
    cat "$ROOT/setup.cfg" "$ROOT/tools/setup_env.sh" "$ROOT/tools/constraints.txt"
    echo "$SYSTEM_TORCH $PYTHON"
}
wanted="$(fingerprint | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ] && [ -x "$VENV/bin/python" ]; then
    say "environment up to date ($VENV)"
    exit 0
fi

begin "creating virtualenv $VENV"
venv_args=()
[ "$SYSTEM_TORCH" = 1 ] && venv_args+=(--system-site-packages)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "${venv_args[@]}" "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check --progress-bar off -c "$ROOT/tools/constraints.txt")

begin "installing build tools"
"${PIP[@]}" -q setuptools wheel ninja

# numpy before torch: importing a torch that finds no numpy prints "Failed to initialize
# NumPy" (the torch version check below imports it)
begin "installing numpy<2"
"${PIP[@]}" -q "numpy<2"

if [ "$SYSTEM_TORCH" = 1 ]; then
    begin "using the torch that $PYTHON already has"
    "$PY" -c 'import torch' 2>/dev/null || { echo "LIP_MMDET_SYSTEM_TORCH=1 but $PYTHON has no torch" >&2; exit 1; }
else
    begin "installing torch $TORCH_VERSION"
    "${PIP[@]}" -q "torch==$TORCH_VERSION"
fi
torch_tag="$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
py_tag="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"

begin "installing mmengine, pycocotools, pytest, pytest-xdist, ruff"
"${PIP[@]}" -q "mmengine==0.10.7" "pycocotools>=2.0.8" pytest "pytest-xdist>=3.5" "ruff==0.17.6" \
    addict packaging Pillow pyyaml yapf matplotlib tqdm

wheel_dir="$CACHE/wheels/mmcv-$MMCV_VERSION-$py_tag-torch$torch_tag"
if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    begin "building mmcv $MMCV_VERSION with compiled ops from source: this takes about 8 minutes on 2 cores (once per machine; cached in $wheel_dir)"
    tmp="$(mktemp -d)"
    # mmcv 2.1.0's setup.py only builds with an older setuptools; restored right after.
    "$PY" -m pip install -q --disable-pip-version-check "setuptools<70"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" -m pip wheel --no-deps --no-build-isolation \
        --disable-pip-version-check --progress-bar off -w "$tmp" "mmcv==$MMCV_VERSION"
    mkdir -p "$wheel_dir"
    mv "$tmp"/mmcv-*.whl "$wheel_dir"/
    rm -rf "$tmp"
    "${PIP[@]}" -q setuptools
else
    say "using cached mmcv wheel from $wheel_dir"
fi
begin "installing mmcv $MMCV_VERSION"
"${PIP[@]}" -q --no-deps --force-reinstall "$wheel_dir"/mmcv-*.whl

begin "installing mmdet 3.3.0 and lip_mmdet (editable, with the test extras: onnx, onnxruntime, onnxscript, ...)"
"${PIP[@]}" -q "mmdet==3.3.0" -e "$ROOT[tests]"

# Triton kernels of the pooling ops (CUDA; the tests run them in Triton's CPU interpreter).
# Wheels exist for Linux x86-64 only, and nothing else needs triton. A CUDA torch usually
# brings its own matching triton, which is kept.
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] && ! "$PY" -c 'import triton' 2>/dev/null; then
    begin "installing triton 3.9.0"
    "${PIP[@]}" -q "triton==3.9.0"
fi

begin "checking the stack imports"
"$PY" - <<'EOF'
import torch, mmcv, mmengine, mmdet
from mmcv.ops import nms, RoIAlign  # noqa: F401  compiled ops present
import lip_mmdet
import numpy, onnx, onnxruntime, onnxscript
print(f'[setup] torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, '
      f'mmdet {mmdet.__version__}, lip_mmdet {lip_mmdet.__version__}')
print(f'[setup] numpy {numpy.__version__}, onnx {onnx.__version__}, onnxruntime '
      f'{onnxruntime.__version__}, onnxscript {onnxscript.__version__}')
EOF
echo "$wanted" > "$STAMP"
say "done"
