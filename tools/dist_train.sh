#!/usr/bin/env bash
# Multi-process (multi-GPU) training with torchrun.
#   tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# PYTHON picks the interpreter (default: the checkout's .venv, else python).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launcher.sh"
require_args 2 "CONFIG NUM_PROCS [tools/train.py arguments...]" "$@"
CONFIG=$1 NPROCS=$2
shift 2
run_torchrun "$NPROCS" train.py "$CONFIG" --launcher pytorch "$@"
