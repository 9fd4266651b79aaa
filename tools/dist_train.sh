#!/usr/bin/env bash
# Multi-process (multi-GPU) training with torchrun.
#   tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# PYTHON picks the interpreter (default: the checkout's .venv, else python).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NUM_PROCS [tools/train.py arguments...]" >&2
    exit 2
fi
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG=$1
NPROCS=$2
shift 2
DEFAULT_PYTHON=python
[ -x "$TOOLS/../.venv/bin/python" ] && DEFAULT_PYTHON="$TOOLS/../.venv/bin/python"

exec "${PYTHON:-$DEFAULT_PYTHON}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROCS" \
    "$TOOLS/train.py" "$CONFIG" --launcher pytorch "$@"
