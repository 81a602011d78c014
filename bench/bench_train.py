"""Training-step benchmark: seconds/step and peak RSS of our `LLaVATrainer` vs a plain `transformers.Trainer`
on the same PEFT model, data, batch and settings (the overhead of our features), at a tiny and a "small"
(~100M-parameter) LLaVA; and LoRA vs QLoRA (bitsandbytes 4-bit on CPU) vs full finetuning memory next to
`estimate_memory`. Every configuration runs in a fresh subprocess (so peak RSS is its own).

    python bench/bench_train.py            # tiny + small, 5 runs of the trainer comparison
    python bench/bench_train.py --quick    # tiny only, few steps, 1 run (smoke test)
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, RESULTS, vm, median, run_worker, write_result, mib

SIZES = {'tiny': {}, 'small': dict(hidden_size=896, num_layers=12, vision_hidden_size=256)}

def checkpoint(workdir, size):
    "A saved LLaVA checkpoint of `size` (tiny processor; the small one has an 896×12 Llama and a 256-wide CLIP)."
    from llava_lora_nb.testing import save_tiny_checkpoint
    d = Path(workdir)/f'ckpt-{size}'
    if not (d/'config.json').exists(): save_tiny_checkpoint(d, **SIZES[size])
    return d

def worker(trainer_kind, method, ckpt, data, folder, steps, bs, out):
    "One training run in this process; prints JSON with step times, RSS after imports/load and peak RSS."
    import torch, transformers, peft
    from llava_lora_nb.loading import LoraSettings, load_for_training
    from llava_lora_nb.memory import estimate_memory
    from llava_lora_nb.dataset import LazySupervisedDataset, data_collator
    from llava_lora_nb.arguments import TrainingArguments
    from llava_lora_nb.trainer import LLaVATrainer
    rss_imports = vm('VmRSS')
    settings = LoraSettings(lora_r=16, lora_alpha=32, lora_dropout=0.05, bits=4 if method == 'qlora' else 16,
                            lora_enable=method != 'full', mm_projector_lr=2e-5)
    transformers.set_seed(0)
    model, processor = load_for_training(ckpt, settings, torch_dtype=torch.float32)
    rss_model = vm('VmRSS')
    ds = LazySupervisedDataset(data, folder, processor, template='vicuna_v1', model_max_length=512)
    common = dict(output_dir=out, per_device_train_batch_size=bs, max_steps=steps, learning_rate=2e-4, logging_steps=1,
                  save_strategy='no', report_to=[], use_cpu=True, dataloader_num_workers=0, seed=0, disable_tqdm=True,
                  remove_unused_columns=False, lr_scheduler_type='cosine', warmup_steps=0,
                  optim='adamw_torch_fused')   # the same optimizer for every trainer, whatever the defaults
    times = []
    class Clock(transformers.TrainerCallback):
        def on_step_begin(self, *a, **k): self.t = time.perf_counter()
        def on_step_end(self, *a, **k): times.append(time.perf_counter() - self.t)
    if trainer_kind in ('ours', 'ours_same_batches'):   # same_batches: the plain Trainer's sampler, so both see identical batches
        args = TrainingArguments(**common, group_by_modality_length=trainer_kind == 'ours', mm_projector_lr=2e-5)
        tr = LLaVATrainer(model=model, args=args, train_dataset=ds, data_collator=data_collator(ds), callbacks=[Clock()],
                          llava_settings={'lora': settings.to_dict()})
    else:
        args = transformers.TrainingArguments(**common)
        tr = transformers.Trainer(model=model, args=args, train_dataset=ds, data_collator=data_collator(ds), callbacks=[Clock()])
    t0 = time.perf_counter(); tr.train(); total = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    est = estimate_memory(model.get_base_model().config if hasattr(model, 'get_base_model') else model.config, settings,
                          method=settings.method, dtype=torch.float32)
    print(json.dumps({'trainer': trainer_kind, 'method': method, 'step_s': times, 'train_s': total, 'rss_imports': rss_imports,
                      'rss_model': rss_model, 'peak_rss': vm('VmHWM'), 'params': n_params,
                      'rss_anon_end': vm('RssAnon'), 'rss_file_end': vm('RssFile'),   # heap vs mapped files (safetensors) at the end
                      'loss': [r['loss'] for r in tr.state.log_history if 'loss' in r], 'estimate': est}))

def opt_worker(ckpt):
    "The one per-step difference of LLaVATrainer: 4 optimizer parameter groups (LLaVA's) instead of the Trainer's 2; time `step()` of each."
    import torch
    from llava_lora_nb.loading import LoraSettings, load_for_training
    from llava_lora_nb.trainer import llava_param_groups, decay_parameter_names
    model, _ = load_for_training(ckpt, LoraSettings(lora_r=16, lora_alpha=32, mm_projector_lr=2e-5), torch_dtype=torch.float32)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for _, p in named: p.grad = torch.randn_like(p) * 1e-3
    dec = set(decay_parameter_names(model))
    plain = [g for g in ({'params': [p for n, p in named if n in dec]}, {'params': [p for n, p in named if n not in dec]}) if g['params']]
    ours = llava_param_groups(model, 0.0, 2e-5)
    opts = {'plain': torch.optim.AdamW(plain, lr=2e-4, fused=True), 'ours': torch.optim.AdamW(ours, lr=2e-4, fused=True)}
    ms = {k: [] for k in opts}
    for o in opts.values(): o.step()
    for _ in range(7):   # interleaved
        for k, o in opts.items():
            t0 = time.perf_counter()
            for _ in range(10): o.step()
            ms[k].append((time.perf_counter() - t0) / 10 * 1e3)
    print(json.dumps({'groups': {'plain': len(plain), 'ours': len(ours)}, 'step_ms': {k: median(v) for k, v in ms.items()},
                      'trainable_tensors': len(named), 'trainable_params': sum(p.numel() for _, p in named)}))

def step_s(r, skip=3):
    "Mean step time after `skip` warm-up steps (every trainer sees the same batches at the same steps, so totals compare)."
    xs = r['step_s'][skip:] or r['step_s']
    return sum(xs) / len(xs)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true'); p.add_argument('--runs', type=int, default=None)
    p.add_argument('--workdir', default='/tmp/bench-train'); p.add_argument('--json', default=None)
    p.add_argument('--worker', nargs=8, help=argparse.SUPPRESS); p.add_argument('--opt_worker', help=argparse.SUPPRESS)
    p.add_argument('--optim_only', action='store_true', help='only (re)measure the optimizer-step cost into the existing results')
    a = p.parse_args(argv)
    if a.opt_worker: return opt_worker(a.opt_worker)
    if a.worker:
        k, m, c, d, f, s, b, o = a.worker; return worker(k, m, c, d, f, int(s), int(b), o)
    from llava_lora_nb.testing import make_shapes_dataset
    wd = Path(a.workdir); wd.mkdir(parents=True, exist_ok=True)
    if a.optim_only:
        path = Path(a.json) if a.json else RESULTS/'train.json'
        d = json.loads(path.read_text())
        for size, r in d['results'].items(): r['optimizer_step'] = run_worker(__file__, '--opt_worker', checkpoint(wd, size))
        path.write_text(json.dumps(d, indent=2, default=str)); print('updated', path, {s: r['optimizer_step'] for s, r in d['results'].items()})
        return
    data = make_shapes_dataset(wd/'shapes', n=128, seed=0)
    runs = a.runs or (1 if a.quick else 5)
    plan = {'tiny': dict(steps=6, bs=8)} if a.quick else {'tiny': dict(steps=40, bs=8), 'small': dict(steps=16, bs=4)}
    res = {}
    for size, cfg in plan.items():
        ck = checkpoint(wd, size)
        go = lambda kind, method: run_worker(__file__, '--worker', kind, method, ck, data, wd/'shapes', cfg['steps'], cfg['bs'], wd/f'out-{kind}-{method}')
        rows = {'ours': [], 'ours_same_batches': [], 'plain': []}
        for r in range(runs):   # interleaved so load changes hit both alike
            for kind in rows:
                rows[kind].append(go(kind, 'lora')); print(size, kind, r, round(step_s(rows[kind][-1]), 3), 's/step', mib(rows[kind][-1]['peak_rss']), 'MiB', flush=True)
        meth = {'lora': rows['ours'][0]}
        for m in ('qlora', 'full'):
            try: meth[m] = go('ours', m); print(size, m, round(step_s(meth[m]), 3), mib(meth[m]['peak_rss']), flush=True)
            except RuntimeError as e: meth[m] = {'error': str(e)[-1500:]}; print(size, m, 'FAILED', str(e)[-400:], flush=True)
        sps = {k: median([step_s(r) for r in v]) for k, v in rows.items()}
        tot = {k: median([r['train_s'] for r in v]) for k, v in rows.items()}
        pairs = [100 * (step_s(x) / step_s(y) - 1) for x, y in zip(rows['ours_same_batches'], rows['plain'])]   # run r of each, interleaved
        noise = [100 * (max(v) / min(v) - 1) for v in ([step_s(r) for r in rows[k]] for k in rows)]          # spread of one setting's runs
        res[size] = {'steps': cfg['steps'], 'batch_size': cfg['bs'], 'params': rows['ours'][0]['params'],
                     'sec_per_step': sps, 'train_s': tot, 'overhead_pct': median(pairs), 'overhead_within_5pct': median(pairs) <= 5,
                     'overhead_pct_per_run': pairs, 'run_to_run_spread_pct': max(noise),
                     'grouped_vs_plain_pct': 100 * (sps['ours'] / sps['plain'] - 1),
                     'peak_rss_mib': {k: mib(median([r['peak_rss'] for r in v])) for k, v in rows.items()},
                     'final_loss': {k: v[0]['loss'][-1] for k, v in rows.items()},
                     'methods': {m: ({'error': r['error']} if 'error' in r else
                                     {'sec_per_step': step_s(r), 'peak_rss_mib': mib(r['peak_rss']), 'rss_after_imports_mib': mib(r['rss_imports']),
                                      'training_ws_mib': mib(r['peak_rss'] - r['rss_imports']), 'model_loaded_ws_mib': mib(r['rss_model'] - r['rss_imports']),
                                      'rss_anon_end_mib': mib(r.get('rss_anon_end')), 'rss_file_end_mib': mib(r.get('rss_file_end')),
                                      'estimate_mib (no activations)': {k: mib(v) for k, v in r['estimate'].items()}})
                                 for m, r in meth.items()},
                     'optimizer_step': run_worker(__file__, '--opt_worker', ck),
                     'raw': rows}
    write_result('train', {'runs': runs, 'lora_r': 16, 'results': res}, a.json or (wd/'train_quick.json' if a.quick else None))
    if not a.quick: plot(res, BENCH/'train.png')
    print(json.dumps({s: {k: v for k, v in r.items() if k != 'raw'} for s, r in res.items()}, indent=1))

def plot(res, path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sizes = list(res)
    fig, axes = plt.subplots(1, 1 + len(sizes), figsize=(4.2 * (1 + len(sizes)), 3.6))
    ax = axes[0]; w = 0.27
    names = {'plain': 'transformers.Trainer + PEFT', 'ours_same_batches': 'LLaVATrainer, same batches', 'ours': 'LLaVATrainer, modality-grouped'}
    for j, (k, label) in enumerate(names.items()):
        ax.bar([i + (j - 1) * w for i in range(len(sizes))], [res[s]['sec_per_step'][k] / res[s]['sec_per_step']['plain'] for s in sizes], w, label=label)
    ax.axhline(1.05, color='grey', ls='--', lw=0.8); ax.text(len(sizes) - 0.5, 1.06, '+5%', fontsize=7, ha='right')
    ax.set_xticks(range(len(sizes)), [f"{s} ({res[s]['params']/1e6:.1f}M)" for s in sizes]); ax.set_ylabel('s/step ÷ plain Trainer (median)'); ax.legend(fontsize=7, loc='lower left')
    ax.set_title('LoRA step time, relative')
    w = 0.38
    for ax, s in zip(axes[1:], sizes):
        ms = [m for m, r in res[s]['methods'].items() if 'error' not in r]
        ax.bar([i - w/2 for i in range(len(ms))], [res[s]['methods'][m]['training_ws_mib'] for m in ms], w, label='measured (peak RSS − imports)')
        ax.bar([i + w/2 for i in range(len(ms))], [res[s]['methods'][m]['estimate_mib (no activations)']['total'] for m in ms], w, label='estimate_memory (no activations)')
        ax.set_xticks(range(len(ms)), ms); ax.set_ylabel('MiB'); ax.set_title(f'{s}: training memory'); ax.legend(fontsize=7)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)

if __name__ == '__main__': main()
