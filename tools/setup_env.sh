#!/usr/bin/env bash
# Builds the project's virtualenv (.venv) on a fresh machine: torch, mmengine, mmcv with its
# compiled ops (built once per machine, then cached), mmdet, and lip_mmdet in editable mode.
# Safe to run again: when nothing changed it returns in a second.
#
# Environment knobs:
#   PYTHON=python3.11        interpreter that creates the venv
#   LIP_MMDET_CUDA=1         set up for a machine with an NVIDIA GPU: a CUDA build of torch and
#                            mmcv compiled with its CUDA ops (no GPU is needed to build it)
#   TORCH_CUDA_ARCH_LIST     with LIP_MMDET_CUDA=1, the GPU architectures mmcv is compiled for
#                            (default below: Turing to Hopper, PTX for newer GPUs)
#   CUDA_HOME                with LIP_MMDET_CUDA=1, the CUDA toolkit whose nvcc compiles mmcv;
#                            default: the nvcc on PATH or in /usr/local/cuda, else the
#                            registry's CUDA packages of torch's CUDA version, into the venv
#   LIP_MMDET_TORCH_VERSION  the torch release to install (default 2.13.0; setup.cfg says
#                            which releases lip_mmdet supports)
#   LIP_MMDET_SYSTEM_TORCH=1 keep the torch (e.g. a CUDA build) that PYTHON already has:
#                            the venv sees system site-packages and torch is not installed
#   LIP_MMDET_CACHE=DIR      where built mmcv wheels are kept (default ~/.cache/lip_mmdet)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.lip_mmdet_setup"
# The knobs a venv was last set up with: a later `make test` or `make demo` without them keeps
# that venv as it is (a knob given again wins; LIP_MMDET_CUDA=0 goes back to the CPU stack).
KNOBS="$VENV/.lip_mmdet_knobs"
remembered() { [ -f "$KNOBS" ] && sed -n "s/^$1=//p" "$KNOBS" || true; }
PYTHON="${PYTHON:-$(remembered PYTHON)}"
PYTHON="${PYTHON:-python3}"
SYSTEM_TORCH="${LIP_MMDET_SYSTEM_TORCH:-$(remembered LIP_MMDET_SYSTEM_TORCH)}"
SYSTEM_TORCH="${SYSTEM_TORCH:-0}"
TORCH_VERSION="${LIP_MMDET_TORCH_VERSION:-$(remembered LIP_MMDET_TORCH_VERSION)}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
CUDA="${LIP_MMDET_CUDA:-$(remembered LIP_MMDET_CUDA)}"
CUDA="${CUDA:-0}"
# Compute capabilities 7.5 (T4, RTX 20xx), 8.0 (A100, A30), 8.6 (A10, A40, RTX 30xx), 8.9 (L4,
# L40, RTX 40xx), 9.0 (H100, H200), and PTX of 9.0 that the driver compiles for newer GPUs.
# CUDA 13 compiles nothing older than 7.5.
CUDA_ARCHS="${TORCH_CUDA_ARCH_LIST:-$(remembered TORCH_CUDA_ARCH_LIST)}"
CUDA_ARCHS="${CUDA_ARCHS:-7.5;8.0;8.6;8.9;9.0+PTX}"
CACHE="${LIP_MMDET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lip_mmdet}"
MMCV_VERSION=2.1.0

step=""
say() { printf '[setup] %s\n' "$*"; }
begin() { step="$1"; say "$1"; }
trap 'rc=$?; [ $rc -ne 0 ] && printf "[setup] FAILED at step: %s (exit %d). Fix the cause above and run make setup again.\n" "$step" "$rc" >&2' EXIT

# Everything that decides what gets installed: when it is unchanged, nothing needs doing.
fingerprint() {
    cat "$ROOT/setup.cfg" "$ROOT/tools/setup_env.sh" "$ROOT/tools/constraints.txt"
    echo "$SYSTEM_TORCH $TORCH_VERSION $CUDA $CUDA_ARCHS $PYTHON"
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
    "$PY" -c 'import torch' 2>/dev/null || { echo "LIP_MMDET_SYSTEM_TORCH=1 but $PYTHON has no torch" >&2; exit 2; }
else
    if [ "$CUDA" = 1 ] && "$PY" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)' 2>/dev/null; then
        begin "removing the venv's CPU build of torch"
        "$PY" -m pip uninstall -q -y torch
    fi
    begin "installing torch $TORCH_VERSION"
    "${PIP[@]}" -q "torch==$TORCH_VERSION"
fi
# One interpreter start for what the rest needs of torch (importing it takes seconds).
{ read -r torch_tag; read -r py_tag; read -r torch_dir; read -r torch_cuda; } < <("$PY" -c '
import os, sys, torch
print(torch.__version__.replace("+", "_"), f"cp{sys.version_info[0]}{sys.version_info[1]}",
      os.path.dirname(torch.__file__), torch.version.cuda or "", sep="\n")')

mmcv_env=()
build_key="mmcv-$MMCV_VERSION-$py_tag-torch$torch_tag"
if [ "$CUDA" = 1 ]; then
    if [ -z "$torch_cuda" ]; then
        begin "checking that torch is a CUDA build"
        echo "LIP_MMDET_CUDA=1 needs a CUDA build of torch, and torch ${torch_tag/_/+} is a CPU build." >&2
        echo "pip took it from its configured find-links or index; point PIP_FIND_LINKS or" >&2
        echo "PIP_INDEX_URL at CUDA wheels, or install a CUDA torch and use LIP_MMDET_SYSTEM_TORCH=1." >&2
        exit 2
    fi
    begin "finding a CUDA $torch_cuda toolkit (nvcc and headers)"
    cuda_major="${torch_cuda%%.*}"
    # torch's CUDA libraries from PyPI, with their headers; the registry's toolkit goes there too
    torch_nvidia="$(dirname "$torch_dir")/nvidia/cu$cuda_major"
    nvcc_release() { "$1" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p'; }
    # A toolkit is a directory with bin/nvcc and include/cuda_runtime.h; the nvcc on PATH may be
    # a wrapper script outside its toolkit, hence the check. A CUDA_HOME of the user's is the
    # only candidate.
    nvcc_on_path="$(command -v nvcc || true)"
    if [ -n "${CUDA_HOME:-}" ]; then
        candidates=("$CUDA_HOME")
    else
        candidates=("${nvcc_on_path:+$(dirname "$(dirname "$(readlink -f "$nvcc_on_path")")")}" /usr/local/cuda)
    fi
    cuda_home=""
    for candidate in "${candidates[@]}"; do
        [ -n "$candidate" ] && [ -x "$candidate/bin/nvcc" ] && [ -f "$candidate/include/cuda_runtime.h" ] || continue
        # torch refuses an nvcc of another major CUDA version than its own
        if [ "$(nvcc_release "$candidate/bin/nvcc" | cut -d. -f1)" = "$cuda_major" ]; then
            cuda_home="$(readlink -f "$candidate")"
            break
        fi
        say "skipping $candidate: CUDA $(nvcc_release "$candidate/bin/nvcc"), torch was built with CUDA $torch_cuda"
    done
    if [ -z "$cuda_home" ]; then
        if [ -n "${CUDA_HOME:-}" ]; then
            echo "CUDA_HOME=$CUDA_HOME is not a CUDA $cuda_major toolkit (bin/nvcc of CUDA $cuda_major.x and include/cuda_runtime.h); unset it to let the set-up find or install one" >&2
            exit 2
        fi
        begin "installing nvcc and the CUDA $torch_cuda headers from the registry (cuda-toolkit $torch_cuda)"
        "${PIP[@]}" -q "cuda-toolkit[nvcc,cudart,cccl,cublas,cusparse,cusolver,curand]==$torch_cuda.*"
        cuda_home="$torch_nvidia"
        # torch links CUDA code with -L$CUDA_HOME/lib64 -lcudart; the registry's packages have
        # lib/ and only the versioned libcudart.so.N
        [ -e "$cuda_home/lib64" ] || ln -s lib "$cuda_home/lib64"
        [ -e "$cuda_home/lib/libcudart.so" ] || ln -s "libcudart.so.$cuda_major" "$cuda_home/lib/libcudart.so"
    fi
    say "CUDA toolkit: $cuda_home (nvcc $(nvcc_release "$cuda_home/bin/nvcc")), architectures $CUDA_ARCHS"
    build_key="$build_key-cuda$torch_cuda-sm${CUDA_ARCHS//[^0-9A-Za-z+]/_}"
    # The CUDA headers that came with torch's CUDA libraries (cuBLAS, cuSPARSE, cuSOLVER, which
    # torch's own headers include) complete a toolkit that has only the compiler and runtime.
    mmcv_env=(FORCE_CUDA=1 CUDA_HOME="$cuda_home" TORCH_CUDA_ARCH_LIST="$CUDA_ARCHS"
              PATH="$cuda_home/bin:$PATH" CPATH="${CPATH:+$CPATH:}$torch_nvidia/include")
fi

begin "installing mmengine, pycocotools, pytest, pytest-xdist, ruff"
"${PIP[@]}" -q "mmengine==0.10.7" "pycocotools>=2.0.8" pytest "pytest-xdist>=3.5" "ruff==0.17.6" \
    addict packaging Pillow pyyaml yapf matplotlib tqdm

wheel_dir="$CACHE/wheels/$build_key"
if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    if [ "$CUDA" = 1 ]; then
        begin "building mmcv $MMCV_VERSION with its CPU and CUDA ops from source for $CUDA_ARCHS: about 45 minutes on 2 cores for the default architectures, at least 10 on any machine (once per machine; cached in $wheel_dir; an interrupted build resumes)"
    else
        begin "building mmcv $MMCV_VERSION with compiled ops from source: this takes about 8 minutes on 2 cores (once per machine; cached in $wheel_dir)"
    fi
    # Built in a kept source tree, so a failed or interrupted build resumes where it stopped.
    src="$CACHE/build/$build_key"
    if [ ! -f "$src/setup.py" ]; then
        rm -rf "$src" && mkdir -p "$src"
        "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
            -d "$src.sdist" "mmcv==$MMCV_VERSION"
        tar -xzf "$src.sdist"/mmcv-*.tar.gz -C "$src" --strip-components 1
        rm -rf "$src.sdist"
    fi
    # mmcv 2.1.0's setup.py compiles with -std=c++17; the headers of newer torch releases
    # refuse anything older than C++20 (their ATen.h says so).
    if grep -q 'C++20 or later' "$torch_dir/include/ATen/ATen.h"; then
        sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    fi
    tmp="$(mktemp -d)"
    # mmcv 2.1.0's setup.py only builds with an older setuptools; restored right after.
    "$PY" -m pip install -q --disable-pip-version-check "setuptools<70"
    env "${mmcv_env[@]}" MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "$PY" -m pip wheel --no-deps --no-build-isolation --disable-pip-version-check \
        --progress-bar off -w "$tmp" "$src"
    mkdir -p "$wheel_dir"
    mv "$tmp"/mmcv-*.whl "$wheel_dir"/
    rm -rf "$tmp" "$src"
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
if [ "$CUDA" = 1 ]; then
    begin "checking mmcv's CUDA kernels"
    "$PY" "$ROOT/tools/check_mmcv_cuda.py" --archs "$CUDA_ARCHS"
fi
printf '%s\n' "PYTHON=$PYTHON" "LIP_MMDET_SYSTEM_TORCH=$SYSTEM_TORCH" \
    "LIP_MMDET_TORCH_VERSION=$TORCH_VERSION" "LIP_MMDET_CUDA=$CUDA" \
    "TORCH_CUDA_ARCH_LIST=$CUDA_ARCHS" > "$KNOBS"
echo "$wanted" > "$STAMP"
say "done"
