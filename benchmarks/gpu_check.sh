#!/usr/bin/env bash
# The CUDA path on one GPU, in one go (557 s on one H200, 2026-11-30; 106 s of it the tests):
#   1. the CUDA tests (augmentation on the GPU, AMP bf16/fp16 training, GPU eval);
#   2. the demo's SKD-SRL run on the GPU in bf16, then resumed for one more epoch;
#   3. the same run under torchrun (DDP over NCCL): 1 process, then one per GPU when there
#      are several;
#   4. `vidkd bench` of the paper's SKD-SRL config on the GPU (clips/s, fraction of the
#      measured dense fp32/bf16 matmul peak, ratios; JSON in OUT_DIR/bench.json), then the
#      baseline's bf16 step eager and under train.compile, then the training-step
#      throughput of every method at the paper's input size, fp32 and bf16.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (PYTHONPATH=src, or vidkd installed;
#        BENCH=0 runs steps 1-3 alone, BENCH=only step 4 alone: two calls where one
#        command may run 10 minutes at most, as on the lent machines)
# Steps 2 and 3 use a third of the demo's training videos: they prove the path (bf16,
# --resume, NCCL), not the accuracy, and each run decodes its videos into memory first.
set -uo pipefail
out=${1:-/tmp/vidkd-gpu}
mkdir -p "$out"
runs=/tmp/vidkd-gpu-runs
export VIDKD_CACHE=${VIDKD_CACHE:-/tmp/vidkd-gpu-cache} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
workers=$(( $(nproc) > 9 ? 8 : $(nproc) - 1 ))
step() { echo; echo "=== $* ($(date +%T))"; }
# Each step has its own time limit, so that one hang (an NCCL rendezvous, say) cannot use up
# a short GPU lease: `cap SECONDS command...` says so when the limit stops it.
cap() { local s=$1; shift; timeout -k 10 "$s" "$@"; local rc=$?
        [ $rc -eq 124 ] && echo "!!! stopped after ${s} s: $*"; return $rc; }

step versions
nvidia-smi -L
$py -c "import torch, av, kornia, torchmetrics; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| av', av.__version__, '| kornia', kornia.__version__, '| nccl', torch.cuda.nccl.version())"

if [ "${BENCH:-1}" != only ]; then
step "CUDA tests (the augmentation's compiled pass compiles on first use)"
cap 300 $py -m pytest -q -p no:cacheprovider tests/engine/test_cuda.py tests/data/test_augment.py

step "demo skd_srl on the GPU, bf16, 3 epochs, then --resume to 4"
demo=(-c configs/demo/skd_srl.yaml --set train.device=cuda train.precision=bf16
      data.num_workers=$workers train.out_dir=$runs data.synthetic.train_per_class=8
      data.synthetic.test_per_class=14)
time cap 150 $py -m vidkd.cli train "${demo[@]}" train.epochs=3 --overwrite -q
time cap 90 $py -m vidkd.cli train "${demo[@]}" train.epochs=4 --resume -q
grep '"kind": "epoch"' $runs/demo-skd_srl/metrics.jsonl | cut -c1-400
cp $runs/demo-skd_srl/results.json "$out/gpu_results.json"

step "DDP over NCCL through torchrun (1 process)"
time cap 150 $py -m torch.distributed.run --standalone --nproc_per_node 1 -m vidkd.cli train "${demo[@]}" \
    train.epochs=2 name=demo-skd_srl-ddp --overwrite -q
grep -c '"kind": "epoch"' $runs/demo-skd_srl-ddp/metrics.jsonl
gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -gt 1 ]; then
  step "DDP over NCCL through torchrun ($gpus processes, one per GPU)"
  time cap 180 $py -m torch.distributed.run --standalone --nproc_per_node "$gpus" -m vidkd.cli train \
      "${demo[@]}" train.epochs=2 name=demo-skd_srl-ddp$gpus --overwrite -q
  grep -c '"kind": "epoch"' $runs/demo-skd_srl-ddp$gpus/metrics.jsonl
fi

fi
[ "${BENCH:-1}" = 0 ] && exit 0
step "vidkd bench, 3D ResNet-18, 16x112x112, batch 32 videos, fp32 and bf16"
cap 180 $py -m vidkd.cli bench configs/ucf101/r18_skd_srl.yaml --steps 5 --set train.device=cuda \
    --json "$out/bench.json"
step "train.compile on the GPU: baseline bf16 step, eager then compiled (the default's evidence)"
for compiled in false true; do
  cap 150 $py -m vidkd.cli bench configs/ucf101/r18_skd_srl.yaml --steps 5 --methods baseline \
      --precisions bf16 --loader-batches 0 --set train.device=cuda train.compile=$compiled
done
step "step throughput, 3D ResNet-18, 16x112x112, batch 32 videos"
for precision in fp32 bf16; do
  cap 120 $py benchmarks/methods.py --device cuda --precision $precision --depth 18 --teacher-depth 50 \
      --width 1 --frames 16 --size 112 --batch 32 --steps 10 --classes 101
done
