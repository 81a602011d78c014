"""Merge benchmark: in-memory vs streaming `merge_lora` on a generated ≥1 GB sharded LLaVA checkpoint.

Each merge runs in a fresh subprocess; we record its wall time and peak RSS (VmHWM) and check that
both merges write bitwise-identical tensors.

    python bench/bench_merge.py                # full size (~1.2 GB bf16, ~250 MB shards), 3 runs each
    python bench/bench_merge.py --quick        # tiny sizes, 1 run each (smoke test)
"""
from __future__ import annotations
import argparse, json, os, shutil, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, vm, median, run_worker, write_result, mib

def build_checkpoint(folder, hidden, layers, inter, shard):
    "A LLaVA checkpoint with random bf16 weights, a `hidden`×`layers` Llama text model and the tiny CLIP tower, sharded."
    import torch
    from transformers import LlavaForConditionalGeneration
    from llava_lora_nb.testing import tiny_llava_config, tiny_processor
    folder = Path(folder)
    spec = dict(hidden=hidden, layers=layers, inter=inter, shard=shard, init=0.02)
    marker = folder/'bench_spec.json'
    if marker.exists() and json.loads(marker.read_text()) == spec: return folder
    if folder.exists(): shutil.rmtree(folder)
    proc = tiny_processor()
    cfg = tiny_llava_config(tokenizer=proc.tokenizer, hidden_size=hidden, num_layers=layers, initializer_range=0.02)  # Llama's usual init
    cfg.text_config.intermediate_size = inter
    cfg.text_config.num_attention_heads = cfg.text_config.num_key_value_heads = max(4, hidden // 128)
    cfg.text_config.head_dim = hidden // cfg.text_config.num_attention_heads
    old = torch.get_default_dtype(); torch.set_default_dtype(torch.bfloat16)
    try:
        torch.manual_seed(0)
        model = LlavaForConditionalGeneration(cfg).eval()   # ~1.2 GB bf16 at full size: built directly in bf16, no fp32 peak
    finally: torch.set_default_dtype(old)
    tmp = folder.with_name(folder.name + '.tmp')
    if tmp.exists(): shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size=shard)
    proc.save_pretrained(tmp)
    (tmp/'bench_spec.json').write_text(json.dumps(spec))
    tmp.rename(folder)
    return folder

def dir_bytes(folder, pattern='*.safetensors'): return sum(f.stat().st_size for f in Path(folder).glob(pattern))

def worker(mode, base, adapter, out):
    "Run one merge in this (fresh) process and print JSON: merge seconds, RSS after imports, peak RSS."
    import torch, transformers, peft, safetensors  # import cost counted in `rss_imports`, not in the merge's working set
    from llava_lora_nb.merge import merge_lora
    rss0 = vm('VmRSS')
    t0 = time.perf_counter()
    rep = merge_lora(adapter, base, out, streaming=(mode == 'streaming'), overwrite=True, progress=False)
    dt = time.perf_counter() - t0
    print(json.dumps({'mode': mode, 'merge_s': dt, 'rss_imports': rss0, 'peak_rss': vm('VmHWM'), 'error': rep.error}))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='tiny sizes, 1 run (smoke test)')
    p.add_argument('--runs', type=int, default=None, help='runs per mode (default 3, quick 1)')
    p.add_argument('--workdir', default='/tmp/bench-merge', help='where the generated checkpoint and merges go')
    p.add_argument('--json', default=None, help='result file (default bench/results/merge.json; quick: <workdir>/merge_quick.json)')
    p.add_argument('--worker', nargs=4, metavar=('MODE', 'BASE', 'ADAPTER', 'OUT'), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker: return worker(*a.worker)
    from llava_lora_nb.testing import make_tiny_adapter
    from llava_lora_nb.merge import checkpoint_tensors, same_tensors
    wd = Path(a.workdir)/('quick' if a.quick else 'full'); wd.mkdir(parents=True, exist_ok=True)
    size = dict(hidden=256, layers=2, inter=688, shard='2MB') if a.quick else dict(hidden=2048, layers=12, inter=5504, shard='250MB')
    runs = a.runs or (1 if a.quick else 3)
    t0 = time.perf_counter(); base = build_checkpoint(wd/'base', **size); t_build = time.perf_counter() - t0
    adapter = wd/'adapter'
    if not (adapter/'adapter_model.safetensors').exists() or (adapter/'base_mtime').read_text() != str((base/'bench_spec.json').stat().st_mtime):
        if adapter.exists(): shutil.rmtree(adapter)
        make_tiny_adapter(base, adapter, r=16, lora_alpha=32, b_std=0.01, proj_std=0.01)
        (adapter/'base_mtime').write_text(str((base/'bench_spec.json').stat().st_mtime))
    shards = sorted(base.glob('model-*.safetensors')) or [base/'model.safetensors']
    largest = max(f.stat().st_size for f in shards)
    adapter_b = (adapter/'adapter_model.safetensors').stat().st_size + (adapter/'non_lora_trainables.safetensors').stat().st_size
    res = {m: [] for m in ('in_memory', 'streaming')}
    for i in range(runs):          # interleaved, so a change in machine load hits both modes alike
        for m in res:
            r = run_worker(__file__, '--worker', m, base, adapter, wd/f'out_{m}')
            r['merge_ws'] = r['peak_rss'] - r['rss_imports']
            res[m].append(r); print(m, i, {k: (mib(v) if k in ('rss_imports', 'peak_rss', 'merge_ws') else v) for k, v in r.items()}, flush=True)
    A, B = checkpoint_tensors(wd/'out_in_memory'), checkpoint_tensors(wd/'out_streaming')
    identical = same_tensors(A, B)
    ndiff = None if identical else sum(1 for k in A if k not in B or not (A[k].dtype == B[k].dtype and A[k].shape == B[k].shape and A[k].equal(B[k])))
    summ = {m: {'merge_s': median([r['merge_s'] for r in rs]), 'process_s': median([r['process_s'] for r in rs]),
                'peak_rss_mib': mib(median([r['peak_rss'] for r in rs])), 'merge_working_set_mib': mib(median([r['merge_ws'] for r in rs])),
                'rss_after_imports_mib': mib(median([r['rss_imports'] for r in rs]))} for m, rs in res.items()}
    budget = 2 * largest + adapter_b
    summ['targets'] = {'streaming_peak_budget_mib (2 largest shards + adapter)': mib(budget),
                       'streaming_working_set_within_budget': summ['streaming']['merge_working_set_mib'] <= mib(budget),
                       'time_ratio_streaming_over_in_memory': summ['streaming']['merge_s'] / summ['in_memory']['merge_s'],
                       'time_within_1.5x': summ['streaming']['merge_s'] <= 1.5 * summ['in_memory']['merge_s'],
                       'outputs_identical': identical, 'tensors_differing': ndiff}
    result = {'size': size, 'runs': runs, 'checkpoint_mib': mib(dir_bytes(base)), 'n_shards': len(shards), 'largest_shard_mib': mib(largest),
              'adapter_mib': mib(adapter_b), 'build_s': t_build, 'summary': summ, 'raw': res}
    out = a.json or (wd/'merge_quick.json' if a.quick else None)
    write_result('merge', result, out)
    if not a.quick: plot(result, BENCH/'merge.png')
    print(json.dumps(summ, indent=2))
    return result

def plot(result, path):
    "Bar charts: merge time and peak RSS of both modes, with the streaming budget line."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    s = result['summary']; modes = ['in_memory', 'streaming']
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.bar(modes, [s[m]['merge_s'] for m in modes], color=['tab:blue', 'tab:orange']); ax1.set_ylabel('seconds (median)')
    ax1.set_title(f"merge time, {result['checkpoint_mib']/1024:.2f} GiB in {result['n_shards']} shards")
    ax2.bar(modes, [s[m]['peak_rss_mib'] for m in modes], color=['tab:blue', 'tab:orange'], label='peak RSS')
    ax2.bar(modes, [s[m]['rss_after_imports_mib'] for m in modes], color='lightgrey', label='RSS after imports')
    ax2.axhline(s['streaming']['rss_after_imports_mib'] + s['targets']['streaming_peak_budget_mib (2 largest shards + adapter)'],
                color='red', ls='--', label='imports + 2 shards + adapter')
    ax2.set_ylabel('MiB'); ax2.set_title('peak RSS (median)'); ax2.legend(fontsize=7)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)

if __name__ == '__main__': main()
