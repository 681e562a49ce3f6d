#!/usr/bin/env bash
# GPU checks on a lent, offline GPU machine (see BENCHMARKS.md).
#
#   here:  python benchmarks/gpu_bundle.py pack .gpu                  # model (fp16) + data, 51 MiB
#   there: bash benchmarks/gpu_checks.sh OUT_DIR [SECONDS [PART...]]  # with .gpu carried
#
# PARTs, run in this order (default: l2l grid mux10):
#   l2l      L2L vs standard device memory and step time at BERT-base width (~1 min)
#   l2ltp    L2L vs standard examples/s on a 24-layer BERT-base under an 8 GiB cap: each
#            trainer's largest batch, both at equal batch, a profile of one L2L step (~4 min)
#   students Academus students' latency and throughput: K=4 depth 2 of the default recipe, then
#            K=2 depth 2 of the corpus recipe (32,000 corpus sentences, 3x steps), the
#            students within a point of the baseline on the CPU (~4 min)
#   grid     PruMUX sparsity x N grid, throughput on CUDA (~3 min)
#   frontier sparsity (0, 0.5, 0.9) x precision (fp32 tf32 bf16 fp16), N=1, at 128 sequences x
#            128 tokens: the fastest point within 0.5-5 points and the references; then the
#            same points timed again as replayed CUDA graphs, from the cached models (~7 min)
#   late     late multiplexing timed on CUDA: N=2 and N=4, k=2 and k=3, concat and concat_skip,
#            beside the baseline at 128 sequences x 128 tokens, default recipe (~6 min)
#   mux      10x warm-up at N=2 and N=4, two recipes side by side (~5.5 min)
#   path     the pruning path on SST-2 (converged baseline, all data, 2,900 steps to s=0.9) and
#            separate recoveries of as many steps at s=0.5 0.7 0.9, trained on CUDA in fp32;
#            then every point scored on the host CPU in int8 and fp32 from the same cache, with
#            each N=1 point's shape recorded, to be timed on the 2-core CPU by retime.py
#            (~10 min: give it 580 s; the last scoring resumes from its JSON if cut short)
#   mux10    N=2 with a long task fine-tune, $MUX10_STEPS steps (default 10000) on
#            $MUX10_EXAMPLES training examples (default 32000; `none` = all 67,349) (~6 min)
# PARTs joined by '+' run side by side on the GPU (e.g. `grid l2l+mux10`): use it only where the
# seconds of the joined parts are not reported (l2l's memory figures are per process).
# The baseline (N=1) is fine-tuned for as many steps as N > 1 in every mux run, so gaps compare
# like with like (BENCHMARKS.md, multiplexing: why the baseline is trained as long as the candidates).
# Uses the machine's own python3 (torch, transformers); our other dependencies are not imported
# by these benchmarks. Each part has its own time limit, so one that fails or runs long does not
# take the rest with it; the mux runs write their JSON after every row. Timings come from parts
# that run alone; the two `mux` runs share the GPU (accuracies only).
set -u
out=${1:?OUT_DIR}
budget=${2:-500}
shift $(($# < 2 ? $# : 2))
parts=${*:-l2l grid mux10}
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
cap() { local l; l=$(left); echo $((l < $1 ? l : $1)); }  # a part's limit, within the budget
mkdir -p "$out"
python3 benchmarks/gpu_bundle.py unpack .gpu /tmp/site || exit 1
export PYTHONPATH=/tmp/site:$PWD AUTOPRUMUX_DATA=$PWD/.gpu/glue AUTOPRUMUX_PROGRESS=0
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
nvidia-smi -L
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
mw=benchmarks/mux_warmup.py
m10s=${MUX10_STEPS:-10000} m10x=${MUX10_EXAMPLES:-32000}

run_part() {  # one PART, within what is left of the budget
  local part=$1 t
  case $part in
  l2l)
    timeout "$(cap 120)" python3 benchmarks/l2l_memory.py --device cuda --width 768 --heads 12 \
      --ffn 3072 --steps 5 --out "$out/l2l_memory_cuda.json" >"$out/l2l.log" 2>&1 ;;
  l2ltp)
    timeout "$(cap 300)" python3 benchmarks/l2l_throughput.py --device cuda --cap-gb 8 \
      --max-batch 512 --steps 3 --out "$out/l2l_throughput_cuda.json" >"$out/l2ltp.log" 2>&1 ;;
  students)
    timeout "$(cap 150)" python3 benchmarks/students_latency.py --device cuda \
      --cache-dir /tmp/cache-students --out "$out/students_latency_cuda.json" \
      >"$out/students.log" 2>&1
    timeout "$(cap 240)" python3 benchmarks/students_latency.py --device cuda --students 2 \
      --recipe student_unlabeled=32000 student_steps=1200 student_stacking_steps=600 \
      --cache-dir /tmp/cache-students --out "$out/students_latency_k2d2_corpus_cuda.json" \
      >>"$out/students.log" 2>&1 ;;
  grid)
    timeout "$(cap 240)" python3 benchmarks/prumux_grid.py --device cuda --sparsities 0 0.7 0.9 \
      --mux 1 2 4 --cache-dir /tmp/cache-grid --out "$out/prumux_grid_cuda.json" \
      >"$out/grid.log" 2>&1 ;;
  frontier)
    for graphs in "" --cuda-graphs; do
      timeout "$(cap 420)" python3 benchmarks/frontier.py --task sst2 --device cuda \
        --sparsities 0 0.5 0.9 --mux 1 --precision fp32 tf32 bf16 fp16 --tp-batch 128 $graphs \
        --cache-dir /tmp/cache-frontier --out "$out/frontier_sst2_cuda${graphs:+_graphs}.json" \
        >>"$out/frontier.log" 2>&1
    done ;;
  late)
    timeout "$(cap 420)" python3 benchmarks/reference_grid.py --task sst2 --device cuda \
      --sparsities 0 --precision fp32 --mux 2 4 --mux-layers 3 2 --combiners concat concat_skip \
      --tp-batch 128 --cache-dir /tmp/cache-late --out "$out/late_mux_sst2_cuda.json" \
      >"$out/late.log" 2>&1 ;;
  mux)
    t=$(cap 400)
    timeout "$t" python3 $mw --device cuda --task sst2 --mux 2 4 --steps 4000 \
      --recipe finetune_steps=2500 mux_finetune_steps=2500 max_train_examples=32000 --cache-dir /tmp/cache-a \
      --out "$out/mux_warmup_sst2_gpu_w4000_ft2500.json" >"$out/mux_a.log" 2>&1 &
    timeout "$t" python3 $mw --device cuda --task sst2 --mux 2 4 --steps 4000 \
      --recipe mux_finetune_steps=10000 finetune_steps=10000 max_train_examples=none \
      --cache-dir /tmp/cache-b --out "$out/mux_warmup_sst2_gpu_w4000_ft10000_full.json" \
      >"$out/mux_b.log" 2>&1 &
    wait ;;
  path)  # trainings on CUDA first, then the scoring on the host CPU, so both frontiers get both
    local c=/tmp/cache-path fx=benchmarks/frontier.py
    local r=(--mux 1 --recipe train_autocast=fp32) sep=(--mux 1 --sparsities 0 0.5 0.7 0.9)
    timeout "$(cap 200)" python3 $fx --task sst2 --device cuda --path --sparsities 0 \
      "${r[@]}" --cache-dir $c --tp-repeats 2 --out "$out/path_sst2_cuda.json" >"$out/path.log" 2>&1
    timeout "$(cap 150)" python3 $fx --task sst2 --device cuda "${sep[@]}" --recipe \
      train_autocast=fp32 recovery_steps=2900 --cache-dir $c --tp-repeats 2 \
      --out "$out/separate_sst2_cuda.json" >>"$out/path.log" 2>&1
    OMP_NUM_THREADS=16 timeout "$(cap 60)" python3 $fx --task sst2 --device cpu "${sep[@]}" \
      --precision int8 fp32 --recipe train_autocast=fp32 recovery_steps=2900 --cache-dir $c \
      --tp-repeats 2 --out "$out/separate_sst2_hostcpu.json" >>"$out/path.log" 2>&1
    OMP_NUM_THREADS=16 timeout "$(cap 180)" python3 $fx --task sst2 --device cpu --path \
      --precision int8 fp32 "${r[@]}" --cache-dir $c --tp-repeats 2 \
      --out "$out/path_sst2_hostcpu.json" >>"$out/path.log" 2>&1 ;;
  mux10)
    timeout "$(cap 420)" python3 $mw --device cuda --task sst2 --mux 2 --steps 2000 \
      --recipe finetune_steps=$m10s mux_finetune_steps=$m10s max_train_examples=$m10x \
      --cache-dir /tmp/cache-c --out "$out/mux_warmup_sst2_gpu_w2000_ft${m10s}_$m10x.json" >"$out/mux10.log" 2>&1 ;;
  *)
    echo "unknown part $part (l2l l2ltp students grid frontier late mux path mux10)"; return 2 ;;
  esac
}

for group in $parts; do
  if [ "$(left)" -lt 30 ]; then echo "$group: skipped, $(left) s left"; continue; fi
  for part in ${group//+/ }; do
    ( run_part "$part"; echo "$part rc=$? ($(left) s left)"; tail -n 14 "$out/$part"*.log 2>/dev/null ) &
  done
  wait
done
