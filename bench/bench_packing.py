"""Packing benchmark (issue 17): supervised tokens per second, padding fraction and peak RSS of LoRA training on
long-tail LLaVA data — mostly one-round answers (60–120 text tokens), a tail of multi-turn conversations up to
~1,500 tokens, ~10% text-only — with four ways of batching the same records, at two model sizes on CPU:

    (a) padded   plain `transformers.Trainer` + PEFT, our dataset and collator, random batches (padded to the longest)
    (b) grouped  our `LLaVATrainer`, modality- and length-grouped batches (`--group_by_modality_length True`)
    (c) packed   our `LLaVATrainer` on a `PackedDataset` (`--packing True`): rows of up to `model_max_length` tokens
    (d) trl      TRL's `SFTTrainer` (assistant-only loss; TRL refuses packing and padding-free for vision data), with its
                 bf16 and gradient-checkpointing defaults turned off, so that it does the same float32 work

Every method trains on the same records (one epoch), the same PEFT model (`load_for_training`, LoRA r=16 + projector),
the same optimizer (fused AdamW), learning rate, schedule and per-device batch size (records for a, b, d; packed rows
hold about as many records per step, see `records_per_step`). Each run is a fresh subprocess; the methods run
interleaved run by run, so load changes hit all alike. TRL is installed only for this benchmark (`pip install
llava_lora_nb[bench]`). Also: whether TRL's labels mask exactly our tokens on this data (both decoded, record by record).

    python bench/bench_packing.py            # tiny + mid, 2 runs per method
    python bench/bench_packing.py --quick    # tiny only, 24 records, 1 run (smoke test)
"""
from __future__ import annotations
import argparse, json, random, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, RESULTS, vm, median, run_worker, write_result, mib

SIZES = {'tiny': {}, 'mid': dict(hidden_size=384, num_layers=4, vision_hidden_size=64)}
METHODS = ('padded', 'grouped', 'packed', 'trl')
MAX_LEN = 2048
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
          "and polite answers to the user's questions.")
# vicuna_v1 as a chat template, with TRL's {% generation %} markers around what our labels supervise (" answer</s>")
VICUNA_CHAT_TEMPLATE = (
    "{{ bos_token }} " + SYSTEM + " {% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% endif %}{% endfor %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    " ASSISTANT:{% else %}{% generation %} {% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{{ eos_token }}"
    "{% endgeneration %}{% endif %}{% endfor %}")

def checkpoint(workdir, size):
    "A saved tiny-processor LLaVA checkpoint of `size` (mid: a 384×4 Llama)."
    from llava_lora_nb.testing import save_tiny_checkpoint
    d = Path(workdir)/f'ckpt-{size}'
    if not (d/'config.json').exists(): save_tiny_checkpoint(d, **SIZES[size])
    return d

def make_long_tail(folder, n, seed=0):
    "`n` records: 75% one round of 60–120 text tokens, 15% multi-turn (2–12 rounds, 250–1,500 tokens), ~10% text-only; 64-px shape images."
    from llava_lora_nb.testing import draw_shape, COLOURS, SHAPES, tiny_processor, _corpus
    folder = Path(folder); f = folder/f'longtail_{n}_{seed}.json'
    if f.exists(): return f
    (folder/'images').mkdir(parents=True, exist_ok=True)
    tok = tiny_processor().tokenizer
    words = sorted({w for line in _corpus() for w in line.split() if w.isalpha()})
    ntok = lambda s: len(tok(s, add_special_tokens=False).input_ids)
    sys_tokens = ntok(SYSTEM) + 1
    rng, recs = random.Random(seed), []
    def text(target):   # about `target` tokens of words from the tokenizer's corpus
        s = ''
        while ntok(s) < target: s += (' ' if s else '') + ' '.join(rng.choice(words) for _ in range(max(1, (target - ntok(s)) // 2)))
        return s.capitalize()
    for i in range(n):
        image = rng.random() >= 0.10
        if rng.random() < 0.85:   # one round: 60-120 text tokens in all (system prompt and roles included)
            total = rng.randint(60, 120) - sys_tokens - 8
            q = rng.randint(5, max(6, total // 3)); convs = [(q, max(2, total - q))]
        else:                     # multi-turn: 250-1,500 tokens (log-uniform), 2-12 rounds
            total = int(250 * (6 ** rng.random())) - sys_tokens
            k = rng.randint(2, 12); per = total // k - 8
            convs = [(max(4, per // 4), max(4, per - per // 4))] * k
        turns = []
        for j, (qn, an) in enumerate(convs):
            turns += [{'from': 'human', 'value': text(qn)}, {'from': 'gpt', 'value': text(an)}]
        r = {'id': f'lt{i}', 'conversations': turns}
        if image:
            draw_shape(rng.choice(list(COLOURS)), rng.choice(SHAPES), 64, rng).save(folder/'images'/f'{i}.png')
            r['image'] = f'images/{i}.png'; turns[0]['value'] = '<image>\n' + turns[0]['value']
        recs.append(r)
    f.write_text(json.dumps(recs))
    return f

def trl_dataset(records, folder):
    "The records as TRL's conversational vision format: `messages` (user/assistant) and `images` (a list: empty for text-only)."
    import datasets
    from PIL import Image
    rows = []
    for r in records:
        msgs = [{'role': 'user' if t['from'] == 'human' else 'assistant', 'content': t['value'].replace('<image>\n', '')}
                for t in r['conversations']]
        rows.append({'messages': msgs, 'images': [Image.open(Path(folder)/r['image']).convert('RGB')] if 'image' in r else []})
    return datasets.Dataset.from_list(rows)

def trl_processor(proc):
    "Our processor with the vicuna_v1 chat template (TRL renders conversations with the processor's chat template)."
    proc.chat_template = VICUNA_CHAT_TEMPLATE
    return proc

def compare_labels(data, folder, ckpt, n=None):
    "Record by record: do TRL's collator and ours give the same input_ids, and supervise exactly the same tokens? (decoded)"
    import transformers
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling
    from llava_lora_nb.dataset import LazySupervisedDataset
    proc = transformers.AutoProcessor.from_pretrained(ckpt)
    ds = LazySupervisedDataset(str(data), folder, proc, template='vicuna_v1', model_max_length=MAX_LEN, progress=False)
    tproc = trl_processor(transformers.AutoProcessor.from_pretrained(ckpt))
    coll = DataCollatorForVisionLanguageModeling(tproc, max_length=MAX_LEN, assistant_only_loss=True)
    tds = trl_dataset(ds.records, folder)
    tok = proc.tokenizer
    out = {'records': 0, 'ids_equal': 0, 'labels_equal': 0, 'supervised_tokens_ours': 0, 'supervised_tokens_trl': 0, 'examples': []}
    for i in range(len(ds) if n is None else min(n, len(ds))):
        o, t = ds[i], coll([dict(tds[i])])
        ti, tl = t['input_ids'][0], t['labels'][0]
        out['records'] += 1
        ids_eq = ti.tolist() == o['input_ids'].tolist(); lab_eq = tl.tolist() == o['labels'].tolist()
        out['ids_equal'] += ids_eq; out['labels_equal'] += lab_eq
        out['supervised_tokens_ours'] += int((o['labels'] != -100).sum()); out['supervised_tokens_trl'] += int((tl != -100).sum())
        if not (ids_eq and lab_eq) and len(out['examples']) < 3:
            dec = lambda ids, lab: tok.decode([x for x, l in zip(ids.tolist(), lab.tolist()) if l != -100])
            out['examples'].append({'record': i, 'ours_text': tok.decode(o['input_ids'])[-200:], 'trl_text': tok.decode(ti)[-200:],
                                    'ours_supervised': dec(o['input_ids'], o['labels'])[:200], 'trl_supervised': dec(ti, tl)[:200]})
    first = ds[0]
    out['decoded_example'] = {'ours': tok.decode([x for x, l in zip(first['input_ids'].tolist(), first['labels'].tolist()) if l != -100]),
                              'trl': tok.decode([x for x, l in zip(*(coll([dict(tds[0])])[k][0].tolist() for k in ('input_ids', 'labels'))) if l != -100])}
    return out

class Meter:
    "Wraps a collator: per batch, supervised tokens (as the Trainer counts them: shifted labels), real and padded tokens, records."
    def __init__(self, coll): self.coll, self.batches = coll, []
    def __call__(self, xs):
        b = self.coll(xs)
        real = int(b['attention_mask'].sum()) if 'attention_mask' in b else sum(len(x['input_ids']) for x in xs)
        recs = sum(int((x['position_ids'] == 0).sum()) for x in xs) if 'position_ids' in xs[0] else len(xs)
        self.batches.append({'supervised': int((b['labels'][:, 1:] != -100).sum()), 'real': real, 'total': b['input_ids'].numel(), 'records': recs})
        return b

def worker(method, ckpt, data, folder, bs, out):
    "One epoch of LoRA training with `method` in this process; prints JSON: per-step times and token counts, peak RSS, losses."
    import torch, transformers
    from llava_lora_nb.loading import LoraSettings, load_for_training
    from llava_lora_nb.dataset import LazySupervisedDataset, data_collator
    from llava_lora_nb.packing import PackedDataset
    from llava_lora_nb.arguments import TrainingArguments
    from llava_lora_nb.trainer import LLaVATrainer
    torch.set_num_threads(1)
    rss_imports = vm('VmRSS')
    settings = LoraSettings(lora_r=16, lora_alpha=32, lora_dropout=0.05, mm_projector_lr=2e-5)
    transformers.set_seed(0)
    model, processor = load_for_training(str(ckpt), settings, torch_dtype=torch.float32)
    model.config.use_cache = False
    ds = LazySupervisedDataset(str(data), folder, processor, template='vicuna_v1', model_max_length=MAX_LEN, progress=False)
    common = dict(output_dir=str(out), per_device_train_batch_size=bs, num_train_epochs=1, learning_rate=2e-4, logging_steps=1,
                  save_strategy='no', report_to=[], use_cpu=True, dataloader_num_workers=0, seed=0, disable_tqdm=True,
                  remove_unused_columns=False, lr_scheduler_type='cosine', warmup_steps=0, optim='adamw_torch_fused')
    ends = []
    class Clock(transformers.TrainerCallback):
        def on_train_begin(self, *a, **k): ends.append(time.perf_counter())
        def on_step_end(self, *a, **k): ends.append(time.perf_counter())
    t_pack = 0.0
    if method == 'padded':
        meter = Meter(data_collator(ds))
        tr = transformers.Trainer(model=model, args=transformers.TrainingArguments(**common), train_dataset=ds, data_collator=meter, callbacks=[Clock()])
    elif method in ('grouped', 'packed'):
        if method == 'packed':
            t0 = time.perf_counter(); ds = PackedDataset(ds, max_length=MAX_LEN, seed=0); t_pack = time.perf_counter() - t0
            common['per_device_train_batch_size'] = 1   # one row of up to 2,048 tokens: about as many records as `bs` padded ones
        meter = Meter(data_collator(ds))
        args = TrainingArguments(**common, group_by_modality_length=True, mm_projector_lr=2e-5, model_max_length=MAX_LEN)
        tr = LLaVATrainer(model=model, args=args, train_dataset=ds, data_collator=meter, callbacks=[Clock()], llava_settings={'lora': settings.to_dict()})
    else:
        from trl import SFTConfig, SFTTrainer
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling
        proc = trl_processor(processor)
        meter = Meter(DataCollatorForVisionLanguageModeling(proc, max_length=MAX_LEN, assistant_only_loss=True))
        cfg = SFTConfig(**common, max_length=MAX_LEN, assistant_only_loss=True,
                        bf16=False, gradient_checkpointing=False)   # SFTConfig's defaults are True: not the same work as (a)-(c)
        tr = SFTTrainer(model=model, args=cfg, train_dataset=trl_dataset(ds.records, folder), processing_class=proc, data_collator=meter,
                        callbacks=[Clock()])
    t0 = time.perf_counter(); tr.train(); total = time.perf_counter() - t0
    print(json.dumps({'method': method, 'step_end': ends, 'batches': meter.batches, 'train_s': total, 'pack_s': t_pack,
                      'rss_imports': rss_imports, 'peak_rss': vm('VmHWM'), 'params': sum(p.numel() for p in model.parameters()),
                      'loss': [r['loss'] for r in tr.state.log_history if 'loss' in r]}))

def summarize(r, skip=1):
    "Supervised tokens/s over the steps after the first `skip` (data loading between steps included), padding fraction, records/step."
    b, t = r['batches'], r['step_end']   # t[0]: train begin, t[k]: end of step k
    n = len(t) - 1
    sup = sum(x['supervised'] for x in b[skip:n])
    return {'steps': n, 'sup_tokens_per_s': sup / (t[n] - t[skip]), 'padding_fraction': 1 - sum(x['real'] for x in b) / sum(x['total'] for x in b),
            'records_per_step': sum(x['records'] for x in b) / len(b), 'tokens_per_step': sum(x['total'] for x in b) / len(b),
            'supervised_tokens': sum(x['supervised'] for x in b), 'peak_rss_mib': mib(r['peak_rss']),
            'training_ws_mib': mib(r['peak_rss'] - r['rss_imports']), 'train_s': r['train_s'], 'final_loss': r['loss'][-1] if r['loss'] else None}

def length_plot(data, folder, ckpt, bs, path):
    "Token lengths of the records, and the tokens each method computes per record (real + padding) — padding from one epoch of batches."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt, numpy as np, torch, transformers
    from llava_lora_nb.dataset import LazySupervisedDataset, token_lengths
    from llava_lora_nb.packing import PackedDataset
    from llava_lora_nb.trainer import LengthGroupedSampler
    proc = transformers.AutoProcessor.from_pretrained(ckpt)
    ds = LazySupervisedDataset(str(data), folder, proc, template='vicuna_v1', model_max_length=MAX_LEN, progress=False)
    ls = token_lengths(ds, progress=False)
    def waste(order, size):   # padding tokens / all tokens when `order` is cut into batches of `size`, each padded to its longest
        bt = [order[i:i + size] for i in range(0, len(order), size)]
        return 1 - sum(ls[i] for i in order) / sum(len(b) * max(ls[i] for i in b) for b in bt)
    g = torch.Generator().manual_seed(0)
    rnd = torch.randperm(len(ls), generator=g).tolist()
    grp = list(LengthGroupedSampler(bs, 1, ds.modality_lengths, True, 0))
    pk = PackedDataset(ds, max_length=MAX_LEN, lengths=ls)
    w = {'padded (random batches)': waste(rnd, bs), 'grouped (modality + length)': waste(grp, bs),
         'packed rows': 1 - sum(ls) / sum(pk.lengths) if True else 0}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={'width_ratios': [1.6, 1]})
    a1.hist(ls, bins=np.geomspace(max(1, min(ls)), max(ls), 40), color='tab:blue'); a1.set_xscale('log')
    a1.set_xlabel('tokens per record (image tokens included)'); a1.set_ylabel('records'); a1.set_title(f'{len(ls)} long-tail records')
    a2.bar(range(3), [100 * v for v in w.values()], color=['tab:red', 'tab:orange', 'tab:green'])
    a2.set_xticks(range(3), [k.split(' (')[0] for k in w], fontsize=8); a2.set_ylabel('% of computed tokens that are padding')
    a2.set_ylim(0, 115 * max(w.values()))
    a2.set_title(f'padding wasted (batch {bs} records; packed: rows of {MAX_LEN})', fontsize=9)
    for i, v in enumerate(w.values()): a2.text(i, 100 * v + 1, f'{100 * v:.0f}%', ha='center', fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)
    return {'lengths': {'min': min(ls), 'median': float(np.median(ls)), 'p90': float(np.percentile(ls, 90)), 'max': max(ls), 'mean': float(np.mean(ls))},
            'padding_fraction_by_construction': w}

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true'); p.add_argument('--runs', type=int, default=None)
    p.add_argument('--records', type=int, default=None); p.add_argument('--bs', type=int, default=8)
    p.add_argument('--sizes', default=None, help='comma-separated: tiny,mid'); p.add_argument('--methods', default=','.join(METHODS))
    p.add_argument('--workdir', default='/tmp/bench-packing'); p.add_argument('--json', default=None)
    p.add_argument('--worker', nargs=6, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        m, c, d, f, b, o = a.worker; return worker(m, c, d, f, int(b), o)
    wd = Path(a.workdir); wd.mkdir(parents=True, exist_ok=True)
    n = a.records or (24 if a.quick else 96)
    data = make_long_tail(wd/'data', n, seed=0)
    sizes = (a.sizes or ('tiny' if a.quick else 'tiny,mid')).split(',')
    runs, methods = a.runs or (1 if a.quick else 2), a.methods.split(',')
    res = {'labels_vs_trl': None, 'sizes': {}}
    if 'trl' in methods:
        res['labels_vs_trl'] = compare_labels(data, wd/'data', checkpoint(wd, sizes[0]))
        print('labels vs TRL:', {k: v for k, v in res['labels_vs_trl'].items() if k != 'examples'}, flush=True)
    res['lengths'] = length_plot(data, wd/'data', checkpoint(wd, sizes[0]), a.bs, BENCH/'packing.png' if not a.quick else wd/'packing.png')
    for size in sizes:
        ck = checkpoint(wd, size)
        raw = {m: [] for m in methods}
        for r in range(runs):   # interleaved: run r of every method before run r+1 of any
            for m in methods:
                x = run_worker(__file__, '--worker', m, ck, data, wd/'data', a.bs, wd/f'out-{size}-{m}')
                x['loadavg'] = list(__import__('os').getloadavg())
                raw[m].append(x); s = summarize(x)
                print(size, m, r, f"{s['sup_tokens_per_s']:.1f} sup tok/s, padding {s['padding_fraction']:.2f}, {s['steps']} steps, "
                      f"peak {s['peak_rss_mib']} MiB, load {x['loadavg'][0]:.1f}", flush=True)
        summ = {m: [summarize(x) for x in v] for m, v in raw.items()}
        med = {m: {k: median([s[k] for s in v]) for k in ('sup_tokens_per_s', 'padding_fraction', 'records_per_step', 'tokens_per_step',
                                                            'peak_rss_mib', 'training_ws_mib', 'train_s')} | {'steps': v[0]['steps'],
                                                            'supervised_tokens': v[0]['supervised_tokens'], 'final_loss': v[0]['final_loss']}
               for m, v in summ.items()}
        base = med.get('padded', {}).get('sup_tokens_per_s')
        for m in med: med[m]['vs_padded'] = med[m]['sup_tokens_per_s'] / base if base else None
        per_run = {m: [s['sup_tokens_per_s'] for s in v] for m, v in summ.items()}
        res['sizes'][size] = {'params': raw[methods[0]][0]['params'], 'median': med, 'sup_tokens_per_s_per_run': per_run,
                              'loadavg_per_run': {m: [x['loadavg'] for x in v] for m, v in raw.items()},
                              'raw': {m: [{k: x[k] for k in ('step_end', 'batches', 'loss', 'train_s', 'pack_s', 'peak_rss', 'rss_imports')} for x in v]
                                      for m, v in raw.items()}}
    last = sizes[-1]
    med = res['sizes'][last]['median']
    res['goals'] = {'size': last,
                    'packed_over_padded': med['packed']['vs_padded'] if 'packed' in med and 'padded' in med else None,
                    'packed_at_least_1.4x_padded': ('packed' in med and 'padded' in med and med['packed']['vs_padded'] >= 1.4),
                    'packed_over_trl': med['packed']['sup_tokens_per_s'] / med['trl']['sup_tokens_per_s'] if 'packed' in med and 'trl' in med else None}
    write_result('packing', {'runs': runs, 'records': n, 'batch_size': a.bs, 'model_max_length': MAX_LEN, 'sizes_config': {s: SIZES[s] for s in sizes},
                             **res}, a.json or (wd/'packing_quick.json' if a.quick else None))
    print(json.dumps({s: v['median'] for s, v in res['sizes'].items()}, indent=1)); print(json.dumps(res['goals']))

if __name__ == '__main__': main()
