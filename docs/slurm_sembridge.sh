#!/bin/bash
# Run a sembridge command on a SLURM cluster with torchrun: one torchrun per node, which starts one
# process per GPU; the nodes meet through torchrun's c10d rendezvous on the first node of the job.
#
#   sbatch docs/slurm_sembridge.sh train --config my.toml --out /shared/runs/s2-r34
#   sbatch docs/slurm_sembridge.sh resume /shared/runs/s2-r34          # any number of nodes/GPUs
#   sbatch docs/slurm_sembridge.sh label --model model.sembridge --scenes /shared/s2/*.tif --out /shared/maps
#
# Submit from the repository root with its .venv built (`make test` or `make venv`); the run folder,
# the data and the map folder must be on a filesystem every node sees (rank 0 writes the run folder,
# every rank writes its own maps). Adapt the #SBATCH lines to your cluster (partition, account).
#SBATCH --job-name=sembridge
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=sembridge-%j.log
set -euo pipefail

GPUS_PER_NODE=${GPUS_PER_NODE:-4}   # keep equal to --gpus-per-node above
RDZV_PORT=${RDZV_PORT:-29500}
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# CPU threads per process: the node's CPUs shared among its GPU processes.
export OMP_NUM_THREADS=$(( SLURM_CPUS_PER_TASK / GPUS_PER_NODE ))

# A run stopped by scancel or the time limit continues from its last finished epoch with
# `sbatch docs/slurm_sembridge.sh resume RUN_DIR` (SIGTERM reaching the ranks cancels them at the same batch).
srun --kill-on-bad-exit=1 .venv/bin/python -m torch.distributed.run \
    --nnodes "$SLURM_NNODES" --nproc-per-node "$GPUS_PER_NODE" \
    --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$head_node:$RDZV_PORT" \
    -m sembridge_engine.cli "$@"
