"""Memory benchmark (issue 29): peak memory and step time of LoRA training with the standard loss (logits at every
position, `--supervised_logits False`) and with logits at the supervised positions only (`--supervised_logits True`,
the default), at the mid size (a 384×4 Llama) with a realistic 32,000-token vocabulary and LLaVA-1.5's 576 image tokens
per image (a small CLIP at 336 px, 14 px patches), on long-tail LLaVA records (mostly one round, a tail of multi-turn
conversations up to ~1,500 text tokens, ~10% text-only) packed into rows of 2,048 tokens, and the same records padded
in modality/length-grouped batches of 4; each without and with gradient checkpointing (LLaVA's scripts train with it).

Each run is a fresh process (peak RSS is per process, `VmHWM`); the two settings run interleaved, run by run. The
training working set is the peak RSS minus the RSS once the model is loaded (the weights are the same for both).

    python bench/bench_memory.py            # mid size, packed and padded, 2 runs each
    python bench/bench_memory.py --quick    # tiny vocabulary, 6 steps, 1 run (smoke test)
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, RESULTS, vm, median, run_worker, write_result, mib

MAX_LEN = 2048

def checkpoint(workdir, vocab:int, hidden:int=384, layers:int=4, image_size:int=336, patch_size:int=14):
    "A saved LLaVA checkpoint: a `hidden`×`layers` Llama whose vocabulary has `vocab` rows, a small CLIP at LLaVA-1.5's 336 px / 14 px patches (576 image tokens)."
    import torch
    from transformers import LlavaForConditionalGeneration
    from llava_lora_nb.testing import tiny_llava_config, tiny_processor
    d = Path(workdir)/f'ckpt-{hidden}x{layers}-v{vocab}-i{image_size}p{patch_size}'
    if (d/'config.json').exists(): return d
    proc = tiny_processor(image_size=image_size, patch_size=patch_size)
    cfg = tiny_llava_config(tokenizer=proc.tokenizer, hidden_size=hidden, num_layers=layers, image_size=image_size, patch_size=patch_size)
    cfg.text_config.vocab_size = max(vocab, len(proc.tokenizer))   # the tokenizer's ids are the first rows
    torch.manual_seed(0)
    LlavaForConditionalGeneration(cfg).save_pretrained(d, safe_serialization=True)
    proc.save_pretrained(d)
    return d

def worker(flag, layout, ckpt, data, folder, steps, out):
    "`steps` LoRA training steps with `--supervised_logits flag` on `layout` rows ('packed' or 'padded', '+checkpointing' for gradient checkpointing as in LLaVA's scripts); prints JSON."
    import torch, transformers
    from llava_lora_nb.loading import LoraSettings, load_for_training
    from llava_lora_nb.dataset import LazySupervisedDataset, data_collator
    from llava_lora_nb.packing import PackedDataset
    from llava_lora_nb.arguments import TrainingArguments
    from llava_lora_nb.trainer import LLaVATrainer
    torch.set_num_threads(1)
    settings = LoraSettings(lora_r=16, lora_alpha=32, lora_dropout=0.05)
    transformers.set_seed(0)
    ckpting = layout.endswith('+checkpointing'); layout = layout.removesuffix('+checkpointing')
    model, processor = load_for_training(str(ckpt), settings, torch_dtype=torch.float32, gradient_checkpointing=ckpting)
    model.config.use_cache = False
    ds = LazySupervisedDataset(str(data), folder, processor, template='vicuna_v1', model_max_length=MAX_LEN, progress=False)
    if layout == 'packed': ds = PackedDataset(ds, max_length=MAX_LEN, seed=0, progress=False)
    rss_loaded = vm('VmRSS')
    ends = []
    class Clock(transformers.TrainerCallback):
        def on_train_begin(self, *a, **k): ends.append(time.perf_counter())
        def on_step_end(self, *a, **k): ends.append(time.perf_counter())
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=1 if layout == 'packed' else 4, max_steps=int(steps),
                             learning_rate=2e-4, logging_steps=1, save_strategy='no', report_to=[], use_cpu=True, seed=0,
                             disable_tqdm=True, remove_unused_columns=False, group_by_modality_length=True, model_max_length=MAX_LEN,
                             supervised_logits=flag == 'True', dataloader_num_workers=0, gradient_checkpointing=ckpting,
                             gradient_checkpointing_kwargs={'use_reentrant': False})
    tr = LLaVATrainer(model=model, args=args, train_dataset=ds, data_collator=data_collator(ds), callbacks=[Clock()],
                      llava_settings={'lora': settings.to_dict()})
    tr.train()
    lab = [ds[i]['labels'] for i in range(len(ds))]
    share = sum(int((l[1:] != -100).sum()) for l in lab) / sum(len(l) for l in lab)   # positions whose next token is supervised
    print(json.dumps({'supervised_share': share, 'supervised_logits': flag == 'True', 'layout': layout, 'step_end': ends, 'rss_loaded': rss_loaded,
                      'peak_rss': vm('VmHWM'), 'vocab': model.config.text_config.vocab_size,
                      'loss': [r['loss'] for r in tr.state.log_history if 'loss' in r]}))

def summarize(r, skip=1):
    t = r['step_end']; n = len(t) - 1
    return {'steps': n, 'step_s': (t[n] - t[skip]) / (n - skip), 'peak_rss_mib': mib(r['peak_rss']),
            'working_set_mib': mib(r['peak_rss'] - r['rss_loaded']), 'losses': r['loss'], 'supervised_share': r['supervised_share']}

def plot(res, path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    layouts = list(res['layouts'])
    for k, (flag, colour) in enumerate(((False, '#e76f51'), (True, '#2a9d8f'))):
        lab = 'logits at every position' if not flag else 'logits at supervised positions'
        a1.bar([i + k * 0.38 for i in range(len(layouts))], [res['layouts'][l][str(flag)]['working_set_mib'] for l in layouts], 0.38, color=colour, label=lab)
        a2.bar([i + k * 0.38 for i in range(len(layouts))], [res['layouts'][l][str(flag)]['step_s'] for l in layouts], 0.38, color=colour, label=lab)
    for a, t in ((a1, 'training working set (MiB, peak RSS − loaded)'), (a2, 'seconds per step')):
        a.set_xticks([i + 0.19 for i in range(len(layouts))], [l.replace('+checkpointing', '\n+ checkpointing') for l in layouts], fontsize=8)
        a.set_title(t, fontsize=9)
    a1.legend(fontsize=7)
    fig.suptitle(f"mid size (384×4 Llama), {res['vocab']:,}-token vocabulary, rows up to {MAX_LEN} tokens", fontsize=9)
    fig.tight_layout(); fig.savefig(path, dpi=90)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true'); p.add_argument('--runs', type=int, default=None)
    p.add_argument('--steps', type=int, default=None); p.add_argument('--vocab', type=int, default=None)
    p.add_argument('--workdir', default='/tmp/bench-memory'); p.add_argument('--json', default=None)
    p.add_argument('--layouts', default=None,
                   help="comma-separated: 'packed', 'padded', each with or without '+checkpointing' (gradient checkpointing, as LLaVA's scripts "
                        "train); default all four ('packed,padded+checkpointing' with --quick)")
    p.add_argument('--worker', nargs=7, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker: return worker(*a.worker)
    from bench_packing import make_long_tail
    runs, steps = a.runs or (1 if a.quick else 2), a.steps or (4 if a.quick else 8)
    vocab = a.vocab or (400 if a.quick else 32000)
    work = Path(a.workdir); work.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint(work, vocab, hidden=128 if a.quick else 384, layers=2 if a.quick else 4,
                      image_size=32 if a.quick else 336, patch_size=8 if a.quick else 14)
    data = make_long_tail(work/'data', 48 if a.quick else 160, seed=0)
    layouts = a.layouts or ('packed,padded+checkpointing' if a.quick else 'packed,padded,packed+checkpointing,padded+checkpointing')
    raw = {l: {f: [] for f in ('False', 'True')} for l in layouts.split(',')}
    for i in range(runs):
        for layout in raw:
            for flag in ('False', 'True'):   # interleaved: load changes hit both settings alike
                r = run_worker(Path(__file__), '--worker', flag, layout, ckpt, data, work/'data', steps, work/f'out-{layout}-{flag}-{i}')
                raw[layout][flag].append(summarize(r)); print(layout, flag, raw[layout][flag][-1], flush=True)
    res = {'vocab': vocab, 'max_len': MAX_LEN, 'steps': steps, 'runs': runs, 'layouts': {}}
    for layout, d in raw.items():
        m = {f: {k: median([x[k] for x in xs]) for k in ('step_s', 'peak_rss_mib', 'working_set_mib')} | {'losses': xs[0]['losses'], 'supervised_share': xs[0]['supervised_share']} for f, xs in d.items()}
        m['ratio_working_set'] = m['True']['working_set_mib'] / m['False']['working_set_mib']
        m['ratio_peak_rss'] = m['True']['peak_rss_mib'] / m['False']['peak_rss_mib']
        m['ratio_step_s'] = m['True']['step_s'] / m['False']['step_s']
        m['same_losses'] = max(abs(x - y) for x, y in zip(m['True']['losses'], m['False']['losses']))
        res['layouts'][layout] = m
        print(f"{layout}: working set x{m['ratio_working_set']:.2f}, peak RSS x{m['ratio_peak_rss']:.2f}, step time x{m['ratio_step_s']:.2f}, "
              f"max loss difference {m['same_losses']:.2g}")
    if not a.quick: plot(res, BENCH/'memory.png')
    write_result('memory', res, a.json)

if __name__ == '__main__': main()
