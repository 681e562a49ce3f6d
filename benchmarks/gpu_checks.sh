#!/usr/bin/env bash
# The GPU checks of issues 4, 5 and 6 in one run on a lent, offline GPU machine (see BENCHMARKS.md).
#
#   here:  python benchmarks/gpu_bundle.py pack .gpu          # model (fp16) + data, 51 MiB
#   there: bash benchmarks/gpu_checks.sh OUT_DIR [SECONDS]    # with .gpu carried beside the code
#
# Uses the machine's own python3 (torch, transformers); our other dependencies are not imported
# by these benchmarks. Each part has its own time limit, so one that fails or runs long does not
# take the rest with it; the issue 6 runs write their JSON after every row.
set -u
out=${1:?OUT_DIR}
budget=${2:-500}
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
mkdir -p "$out"
python3 benchmarks/gpu_bundle.py unpack .gpu /tmp/site || exit 1
export PYTHONPATH=/tmp/site:$PWD AUTOPRUMUX_DATA=$PWD/.gpu/glue AUTOPRUMUX_PROGRESS=0
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
nvidia-smi -L
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'

# issue 5: L2L device memory at BERT-base width (timings alone on the GPU)
timeout 90 python3 benchmarks/l2l_memory.py --device cuda --width 768 --heads 12 --ffn 3072 \
  --steps 5 --out "$out/l2l_memory_cuda.json" >"$out/l2l.log" 2>&1
echo "l2l rc=$? ($(left) s left)"; tail -n 12 "$out/l2l.log"

# issue 4: students latency on CUDA (alone on the GPU, it is a timing)
timeout 150 python3 benchmarks/students_latency.py --device cuda --cache-dir /tmp/cache-students \
  --out "$out/students_latency_cuda.json" >"$out/students.log" 2>&1
echo "students rc=$? ($(left) s left)"; tail -n 12 "$out/students.log"

# issue 6: 10x the CPU warm-up, two fine-tune lengths, side by side (accuracies, not timings)
t=$(( $(left) - 15 ))
timeout "$t" python3 benchmarks/mux_warmup.py --device cuda --task sst2 --mux 2 4 --steps 4000 \
  --recipe mux_finetune_steps=2500 max_train_examples=32000 --cache-dir /tmp/cache-a \
  --out "$out/mux_warmup_sst2_gpu_w4000_ft2500.json" >"$out/mux_a.log" 2>&1 &
timeout "$t" python3 benchmarks/mux_warmup.py --device cuda --task sst2 --mux 2 4 --steps 4000 \
  --recipe mux_finetune_steps=10000 finetune_steps=2000 max_train_examples=none \
  --cache-dir /tmp/cache-b --out "$out/mux_warmup_sst2_gpu_w4000_ft10000_full.json" \
  >"$out/mux_b.log" 2>&1 &
wait
echo "mux runs done ($(left) s left)"
tail -n 8 "$out/mux_a.log" "$out/mux_b.log"
