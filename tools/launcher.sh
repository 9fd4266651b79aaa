# What dist_train.sh, dist_test.sh and slurm_train.sh share; they source this file.

TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The interpreter: $PYTHON, else the checkout's .venv, else python on the PATH.
PYTHON_BIN=python
[ -x "$TOOLS/../.venv/bin/python" ] && PYTHON_BIN="$TOOLS/../.venv/bin/python"
PYTHON_BIN="${PYTHON:-$PYTHON_BIN}"

# require_args COUNT USAGE ARG...: unless there are COUNT ARGs or more, print
# "usage: <script> USAGE" and exit with code 2.
require_args() {
    local count=$1 usage=$2
    shift 2
    if [ $# -lt "$count" ]; then
        echo "usage: $0 $usage" >&2
        exit 2
    fi
}

# run_torchrun NPROCS SCRIPT ARG...: run tools/SCRIPT ARG... in NPROCS processes on this node
# with torchrun (the script replaces the shell). NNODES, NODE_RANK, MASTER_ADDR and PORT
# describe a multi-node run.
run_torchrun() {
    local nprocs=$1 script=$2
    shift 2
    exec "$PYTHON_BIN" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
        --nproc_per_node="$nprocs" "$TOOLS/$script" "$@"
}
