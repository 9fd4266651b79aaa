#!/usr/bin/env bash
# Multi-process (multi-GPU) testing with torchrun.
#   tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# PYTHON picks the interpreter (default: the checkout's .venv, else python).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launcher.sh"
require_args 3 "CONFIG CHECKPOINT NUM_PROCS [tools/test.py arguments...]" "$@"
CONFIG=$1 CHECKPOINT=$2 NPROCS=$3
shift 3
run_torchrun "$NPROCS" test.py "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
