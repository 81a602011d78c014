"Regenerate bench/README.md from bench/results/*.json (run after the benchmarks)."
import json, sys
from pathlib import Path
B = Path(__file__).resolve().parent; R = B/'results'
def load(n):
    f = R/f'{n}.json'
    return json.loads(f.read_text()) if f.exists() else None
def f1(x, n=1): return '—' if x is None else f'{x:.{n}f}'
out = ["# Benchmarks", "",
       "Run by hand (`make bench` = `bash bench/run_all.sh`), never as timed tests in CI. Each script writes",
       "`bench/results/<name>.json` (every raw run, the machine, the load average before/after, the command) and a PNG here.",
       "Regenerate this page with `python bench/make_readme.py`.", ""]
m = next((load(n)['machine'] for n in ('merge', 'data', 'train') if load(n)), None)
if m:
    out += ["## Machine", "", f"- CPU: {m['cpu']}, `nproc` = {m['nproc']}, memory {m['mem_gib']} GiB (`free -h`), no GPU",
            f"- Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}",
            "- **Shared machine:** these figures were taken while other developers ran their test suites on the same 2 cores",
            "  (load average 7–10, see `loadavg_start`/`loadavg_end` in each JSON). Absolute times are therefore 3–5× slower",
            "  than on a quiet machine and noisy; ratios are measured with the two sides interleaved run by run so that load",
            "  changes hit both alike. Rerun on a quiet machine (`uptime` load < 2) before quoting absolute numbers.", ""]
d = load('merge')
if d:
    s, t = d['summary'], d['summary']['targets']
    out += ["## 1. Merge: in-memory vs streaming", "", f"Command: `python bench/bench_merge.py` ({d['runs']} run(s) per mode, each in a fresh subprocess, median).",
            f"Generated LLaVA checkpoint: Llama text model hidden {d['size']['hidden']} × {d['size']['layers']} layers (intermediate {d['size']['inter']}),",
            f"bf16, **{d['checkpoint_mib']/1024:.2f} GiB in {d['n_shards']} shards** (largest {d['largest_shard_mib']:.0f} MiB); LoRA r=16 adapter + projector: {d['adapter_mib']:.1f} MiB.", "",
            "| mode | merge time (s) | process wall (s) | peak RSS (MiB) | RSS after imports | merge working set (peak − imports) |",
            "|---|---|---|---|---|---|"]
    for k in ('in_memory', 'streaming'):
        out.append(f"| {k} | {f1(s[k]['merge_s'])} | {f1(s[k]['process_s'])} | {s[k]['peak_rss_mib']:.0f} | {s[k]['rss_after_imports_mib']:.0f} | {s[k]['merge_working_set_mib']:.0f} |")
    out += ["", f"- Time: streaming / in-memory = **{t['time_ratio_streaming_over_in_memory']:.2f}×** (target ≤ 1.5×: {'met' if t['time_within_1.5x'] else 'MISSED'}).",
            f"- Memory: streaming working set {s['streaming']['merge_working_set_mib']:.0f} MiB vs target 2 shards + adapter = "
            f"{t['streaming_peak_budget_mib (2 largest shards + adapter)']:.0f} MiB: **{'met' if t['streaming_working_set_within_budget'] else 'MISSED'}**.",
            f"- Outputs bitwise identical (all tensors, `same_tensors`): **{t['outputs_identical']}**.", "", "![merge](merge.png)", ""]
d = load('data')
if d:
    r, sp, st, c = d['records_per_s_median'], d['speedup_ours_over_baseline'], d['stage_ms'], d['comparison']
    out += ["## 2. Data pipeline: ours vs the original LLaVA algorithm", "",
            f"Command: `python bench/bench_data.py --runs {d['runs']}`. {d['n_records']} generated records (≈70% with a JPEG image of 252–640 px,",
            "1–4 rounds), CLIP-336 image processor (576 image tokens), `tiny_tokenizer` (Llama BPE, fast backend), batch 16,",
            "`LazySupervisedDataset` + `data_collator` vs `bench/baseline_llava.py` (original `LazySupervisedDataset`, `preprocess_v1`,",
            "`tokenizer_image_token`, `expand2square` + processor, original collator, written from the reference §2–3).", "",
            "| DataLoader workers | baseline records/s | ours records/s | ours / baseline |", "|---|---|---|---|"]
    for w in (0, 2): out.append(f"| {w} | {f1(r[f'baseline_w{w}'])} | {f1(r[f'ours_w{w}'])} | **{sp[f'w{w}']:.2f}×** |")
    out += ["", "Where the time goes (workers=0, ms; image figures per image, ≈70% of records have one):", "",
            "| stage | baseline | ours | prototype (bench only) |", "|---|---|---|---|",
            f"| tokenize + mask, per record | {f1(st['baseline_tokenize_ms'],2)} | {f1(st['ours_tokenize_ms'],2)} | {f1(st['proto_tokenize_ms'],2)} (identical ids/labels: {st['proto_tokenize_identical']}) |",
            f"| image: open + expand2square + CLIP processor, per image | {f1(st['baseline_image_ms_per_image'],2)} | {f1(st['ours_image_ms_per_image'],2)} | {f1(st['proto_image_ms_per_image'],2)} (max abs diff {st['proto_image_max_abs_diff']:.1e}) |",
            f"| of which JPEG decode | {f1(st['jpeg_decode_ms_per_image'],2)} | same | same |", "",
            f"**Target ≥3× missed** ({d['runs']} run(s); 1-min load average {d['machine']['loadavg_start'][0]:.1f} → {d['loadavg_end'][0]:.1f} on 2 cores). Both pipelines spend ≈80% of their time in the image path",
            "(PIL bicubic resize, numpy normalize/rescale inside the CLIP processor), which is the same work in both, so even free tokenization would",
            f"give at most ≈{(st['baseline_tokenize_ms'] + st['image_fraction']*st['baseline_image_ms_per_image']) / (st['image_fraction']*st['ours_image_ms_per_image']):.1f}× over the baseline. What would make it faster:",
            "(1) done: `tokenize_conversation` now tokenizes the prompt with ONE `<image>`, repeats its id and finds answer spans by bisecting the offsets",
            "(identical ids/labels, checked in `nbs/00_data.ipynb` against the full-string path at 576 image tokens): about 2.1× faster tokenize+mask",
            f"(`proto_tokenize`, {st['ours_tokenize_ms']/st['proto_tokenize_ms']:.1f}× of ours here, is the same algorithm minus the decode check);",
            "(2) a direct PIL resize + one torch normalize instead of the processor's",
            f"to-numpy/rescale/normalize chain (prototype `proto_image`: {st['ours_image_ms_per_image']/st['proto_image_ms_per_image']:.2f}×, max abs diff 5e-7, not bitwise);",
            "(3) to reach 3× the image work itself must go: cache preprocessed 336×336 uint8 crops (decode+resize once per epoch-set) and normalize",
            "in the collator/on the GPU, or use more DataLoader workers than the 2 cores here allow. The 2-worker rows include worker start-up.", "",
            "cProfile (300 records, top by cumulative / self time): `results/data_profile_ours.txt`, `results/data_profile_baseline.txt` (+ `.tottime.txt`).", "",
            f"Output comparison over all {c['records']} records (ours collapsed from 576 `<image>` ids to the original's single −200):", "",
            f"- `input_ids` equal: {c['ids_equal']} (the text-only records); equal except for one extra `▁` right after −200 in the baseline: {c['ids_equal_but_space_after_image']} (every image record).",
            "  The original tokenizes the text after `<image>` as a fresh string (`tokenizer_image_token`), so SentencePiece/Metaspace adds a `▁`;",
            "  llava-hf (and we) tokenize the whole prompt in one string. This is the layout difference the reference §3.2 predicts, not a bug.",
            f"- `labels`: the baseline masks the **whole sample** (its \"tokenization mismatch\" path) in {c['baseline_all_masked']} of {c['records']} records —",
            "  the original's vicuna-specific `-2`/`-1` length hack does not fit this tokenizer (`▁ASSISTANT:` is one token; `</s>USER` vs `▁USER`), the bug of",
            f"  issues #661/#1166/#1706. In every other record the labels agree once the `▁` position is aligned ({c['labels_equal_once_aligned']} of {c['records'] - c['baseline_all_masked']}).",
            f"- `pixel_values`: bitwise equal in {c['pixels_equal']} of {c['image_records']} image records.", "", "![data](data.png)", ""]
d = load('train')
if d:
    out += ["## 3. Training step: LLaVATrainer vs transformers.Trainer + PEFT", "",
            f"Command: `python bench/bench_train.py --runs {d['runs']}`. Same model (`load_for_training`, LoRA r=16 on the LM linears + projector, float32, CPU),",
            "same data (shapes task, `LazySupervisedDataset` + `data_collator`), batch, lr and schedule; ours adds `group_by_modality_length`",
            "and the projector learning-rate group. Median step time after 3 warm-up steps; each run in a fresh process.", "",
            "| size | params | batch | plain Trainer s/step | LLaVATrainer s/step | overhead | peak RSS plain / ours (MiB) |", "|---|---|---|---|---|---|---|"]
    for s, r in d['results'].items():
        out.append(f"| {s} | {r['params']/1e6:.1f}M | {r['batch_size']} | {r['sec_per_step']['plain']:.3f} | {r['sec_per_step']['ours']:.3f} | "
                   f"**{r['overhead_pct']:+.1f}%** ({'≤5%' if r['overhead_within_5pct'] else '>5%'}) | {r['peak_rss_mib']['plain']:.0f} / {r['peak_rss_mib']['ours']:.0f} |")
    out += ["", "**Not conclusive — rerun on a quiet machine with `--runs 3`.** These are single runs taken at load average 3.5–4 from other",
            "developers' tests: within one run the step time of the *same* configuration swings from 0.04 s to 4.2 s (tiny) and 5 s to 23 s (small)",
            "(raw step times in `results/train.json`), so neither the +46% (tiny) nor the −58% (small) is an overhead measurement. Also note",
            "`group_by_modality_length` changes which records share a batch, so per-step costs differ legitimately between the two trainers;",
            "compare over whole epochs. The \"small\" model built here has 76M parameters (hidden 768 × 12 layers, CLIP 256 wide).",
            "", "LoRA vs QLoRA (bitsandbytes NF4 on CPU) vs full finetuning, LLaVATrainer (MiB; measured = peak RSS − RSS after imports, which includes activations;",
            "estimate = `estimate_memory(..., dtype=float32)` without activations):", "",
            "| size | method | s/step | measured working set | estimate total | weights | grads | optimizer |", "|---|---|---|---|---|---|---|---|"]
    for s, r in d['results'].items():
        for m, x in r['methods'].items():
            if 'error' in x: out.append(f"| {s} | {m} | failed: `{x['error'][-150:]!r}` | | | | | |"); continue
            e = x['estimate_mib (no activations)']
            out.append(f"| {s} | {m} | {x['sec_per_step']:.3f} | {x['training_ws_mib']:.0f} | {e['total']:.0f} | {e['weights']:.0f} | {e['gradients']:.0f} | {e['optimizer']:.0f} |")
    out += ["", "![train](train.png)", ""]
out += ["## 4. GPU (LLaVA-1.5-7B-shaped, random weights, batch 16 × 2048)", "",
        "**Not run in this environment: no GPU was lent to this session.** `bench/bench_gpu.py` is written for a CUDA machine",
        "(`python bench/bench_gpu.py`; `--quick` for a small smoke run). It builds the 7B-shaped LLaVA (`llava15_config('7b')`) in bf16",
        "on the GPU, LoRA r=128 (QLoRA: NF4 + double quant base), gradient checkpointing, and reports seconds/step, tokens/s,",
        "peak `torch.cuda.max_memory_allocated`, FLOPs/token (6·N_LM + 12·L·H·S + vision forward) and MFU against the GPU's bf16 dense peak.", ""]
d = load('gpu')
if d: out += ["```", json.dumps(d['results'], indent=1), "```", ""]
(B/'README.md').write_text('\n'.join(out) + '\n'); print('wrote', B/'README.md')
