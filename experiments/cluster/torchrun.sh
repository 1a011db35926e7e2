#!/bin/bash
# The torchrun equivalent of train.sbatch / bench.sbatch, without SLURM: run this on every node with its NODE_RANK;
# torchrun starts one process per GPU and Lightning reads the ranks from torchrun's variables (TorchElasticEnvironment).
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 ./experiments/cluster/torchrun.sh train stage2 paper [key=value ...]   # on node0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 ./experiments/cluster/torchrun.sh train stage2 paper [key=value ...]   # on node1
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 ./experiments/cluster/torchrun.sh bench bench/paper.yaml [key=value ...]
#
# tests/test_scaleout.py runs exactly this shape on one machine (2 nodes x 1 CPU process, gloo).
set -euo pipefail

WHAT=${1:?usage: torchrun.sh train MODEL SIZE [key=value ...] | torchrun.sh bench CONFIG [key=value ...]}
shift
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}   # processes on this node (one per GPU)
GPUS=$(( GPUS > 0 ? GPUS : 1 ))
LAUNCH=(torchrun --nnodes "$NNODES" --nproc-per-node "$GPUS" --node-rank "$NODE_RANK"
        --master-addr "${MASTER_ADDR:-127.0.0.1}" --master-port "${MASTER_PORT:-29500}")

case "$WHAT" in
    train)
        MODEL=${1:?model}; SIZE=${2:-paper}; shift 2 || shift $#
        # the same keys as train.sbatch: num_nodes x devices = the world size torchrun sets up
        exec "${LAUNCH[@]}" -m dreamhead_lit.train "$MODEL" --size "$SIZE" \
            trainer=ddp trainer.num_nodes="$NNODES" trainer.devices="$GPUS" \
            trainer.precision="${PRECISION:-bf16-mixed}" trainer.enable_progress_bar=false \
            data.pin_memory=true name="${RUN_NAME:-$SIZE}" "$@" ;;
    bench)
        CONFIG=${1:-bench/paper.yaml}; shift || true
        exec "${LAUNCH[@]}" -m dreamhead_lit.bench --config "$CONFIG" "$@" ;;
    *)
        echo "torchrun.sh: first argument is train or bench, got '$WHAT'" >&2; exit 2 ;;
esac
