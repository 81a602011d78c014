#!/usr/bin/env bash
# `make bench`: every benchmark at full size; results in bench/results/*.json, plots bench/*.png.
# Run on a quiet machine (check `uptime`): the figures are wall-clock.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load: $(cut -d' ' -f1-3 /proc/loadavg)"
python bench/bench_merge.py
python bench/bench_data.py
python bench/bench_data_next.py
python bench/bench_train.py
python bench/bench_eval.py
if python -c 'import trl' 2>/dev/null; then python bench/bench_packing.py
else echo "bench_packing.py: TRL not installed (pip install -e '.[bench]'): without TRL's SFTTrainer"; python bench/bench_packing.py --methods padded,grouped,packed; fi
python bench/bench_memory.py
python bench/bench_roofline.py
if python -c 'import llama_cpp' 2>/dev/null; then python bench/bench_export.py
else echo "bench_export.py skipped: llama-cpp-python not installed (pip install -e '.[gguf]')"; fi
if python -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then python bench/bench_gpu.py
else echo "bench_gpu.py skipped: no CUDA GPU"; fi
