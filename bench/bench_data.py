"""Data pipeline benchmark: records/s of `LazySupervisedDataset` + collator (ours: the plain path, and the
`cache_dir=` fast path once its `PreprocessedCache` is built) vs the original LLaVA pipeline (`baseline_llava.py`)
with 0 and 2 DataLoader workers, on generated mixed image/text-only, multi-turn records with 336-px-class images
and a CLIP-336 image processor (576 image tokens). Also: the cache's build time, a bitwise comparison of the
fast path with the plain path, a token-by-token comparison with the baseline, a per-stage time split, and cProfile.

    python bench/bench_data.py            # 2,000 records, 3 runs per setting
    python bench/bench_data.py --quick    # 40 records, 1 run (smoke test)
"""
from __future__ import annotations
import argparse, cProfile, io, json, pstats, random, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, median, write_result
import torch

WORDS = ("the a red green blue circle square triangle shape colour picture image is on of in and with small large left right "
         "top bottom near far bright dark shows there one two three what which where how many describe answer").split()
SIZES = [(336, 336), (448, 336), (336, 448), (504, 336), (336, 252), (640, 480)]

def sentence(rng, lo, hi): return ' '.join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + rng.choice('.?!')

def make_dataset(folder, n, seed=0, p_image=0.7, sizes=SIZES, name='data'):  # sizes: (width, height) of the images
    "`n` records (≈70% with an image, 1–4 rounds) and their JPEG images (shorter side ≥252, most 336) under `folder`."
    from llava_lora_nb.testing import draw_shape, COLOURS, SHAPES
    folder = Path(folder); f = folder/f'{name}_{n}_{seed}.json'
    if f.exists(): return f
    (folder/'images').mkdir(parents=True, exist_ok=True)
    rng, recs = random.Random(seed), []
    for i in range(n):
        convs = []
        for k in range(rng.randint(1, 4)):
            convs += [{'from': 'human', 'value': sentence(rng, 4, 16)}, {'from': 'gpt', 'value': sentence(rng, 2, 40)}]
        r = {'id': f'r{i}', 'conversations': convs}
        if rng.random() < p_image:
            im = draw_shape(rng.choice(list(COLOURS)), rng.choice(SHAPES), 64, rng).resize(rng.choice(sizes))
            im.save(folder/'images'/f'{i}.jpg', quality=90)
            r['image'] = f'images/{i}.jpg'
            q = convs[0]['value']; convs[0]['value'] = f'<image>\n{q}' if rng.random() < 0.5 else f'{q}\n<image>'
        recs.append(r)
    f.write_text(json.dumps(recs))
    return f

def make_processor():
    "A LlavaProcessor at LLaVA-1.5 geometry (CLIP 336, patch 14 → 576 image tokens) with the tiny Llama tokenizer."
    from transformers import LlavaProcessor
    try: from transformers import CLIPImageProcessorPil as CLIPImageProcessor   # what CLIPImageProcessor resolves to without torchvision
    except ImportError: from transformers import CLIPImageProcessor
    from llava_lora_nb.testing import tiny_tokenizer
    from llava_lora_nb.prompts import LLAVA_CHAT_TEMPLATE
    ip = CLIPImageProcessor(size={'shortest_edge': 336}, crop_size=336)
    return LlavaProcessor(image_processor=ip, tokenizer=tiny_tokenizer(model_max_length=2048), patch_size=14,
                          vision_feature_select_strategy='default', num_additional_image_tokens=1,
                          chat_template=LLAVA_CHAT_TEMPLATE, image_token='<image>')

def pipelines(data, folder, proc, cached=None):
    "(dataset, collator) for the baseline, ours (plain path) and, if given, ours with the preprocessing cache."
    from llava_lora_nb.dataset import LazySupervisedDataset, data_collator
    from baseline_llava import BaselineLazySupervisedDataset, BaselineCollator
    ours = LazySupervisedDataset(str(data), folder, proc, template='vicuna_v1', model_max_length=2048)
    base = BaselineLazySupervisedDataset(str(data), folder, proc.tokenizer, proc.image_processor)
    out = {'baseline': (base, BaselineCollator(proc.tokenizer)), 'ours': (ours, data_collator(ours))}
    if cached is not None: out['ours_cached'] = (cached, data_collator(cached))
    return out

def build_cache(data, folder, proc, cache_dir, workers, model_max_length=2048):
    "Build the `PreprocessedCache` from scratch with `workers` processes; (seconds, dataset using it)."
    import shutil
    from llava_lora_nb.dataset import LazySupervisedDataset
    shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.perf_counter()
    ds = LazySupervisedDataset(str(data), folder, proc, template='vicuna_v1', model_max_length=model_max_length, cache_dir=cache_dir,
                               cache_workers=workers, progress=False)
    return time.perf_counter() - t0, ds

def fast_equals_plain(cached, n):
    "Records whose cached item is bitwise the plain path's (input_ids, labels, pixel_values incl. dtype)."
    same = {'input_ids': 0, 'labels': 0, 'pixel_values': 0}
    for i in range(n):
        a, b = cached[i], cached.plain_item(i)
        for k in same:
            same[k] += (a[k] is None and b[k] is None) or (a[k] is not None and b[k] is not None and a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]))
    return {'records': n, **same}

def throughput(ds, coll, workers, bs=16):
    "Records/s of one full pass through a DataLoader (worker start-up included)."
    dl = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=False, num_workers=workers, collate_fn=coll,
                                     persistent_workers=False, multiprocessing_context='fork' if workers else None)
    t0 = time.perf_counter(); n = 0
    for b in dl: n += b['input_ids'].shape[0]
    return n / (time.perf_counter() - t0)

def interleaved_runs(pipes, runs, baseline,
                     settings=(0, 2),                      # DataLoader workers; None: one setting, results keyed by name alone
                     measure=None,                         # measure(pipe, setting) -> a rate; default `throughput(ds, coll, workers)`
                     compared=('ours', 'ours_cached')):    # the pipelines whose ratio to `baseline` is returned
    "Rate (records/s) of every pipeline at each setting, `runs` times interleaved; (all runs, medians, `compared` / `baseline` ratios)."
    measure = measure or (lambda pipe, w: throughput(*pipe, w))
    key = lambda name, w: name if w is None else f'{name}_w{w}'
    res = {key(name, w): [] for w in settings for name in pipes}
    for r in range(runs):
        for w in settings:
            for name, pipe in pipes.items():
                res[key(name, w)].append(measure(pipe, w)); print(r, name, w, round(res[key(name, w)][-1], 1), flush=True)
    med = {k: median(v) for k, v in res.items()}
    ratio = {key(name, w): med[key(name, w)] / med[key(baseline, w)] for w in settings for name in compared}
    return res, med, ratio

def collapse(ids, labels, img_id):
    "Our llava-hf layout (N `<image>` tokens) → the original's (one -200), so the two can be compared token by token."
    ids, labels = ids.tolist(), labels.tolist()
    if img_id not in ids: return ids, labels
    a = ids.index(img_id); b = a + ids[a:].count(img_id)
    return ids[:a] + [-200] + ids[b:], labels[:a] + [-100] + labels[b:]

def compare(pipes, proc, n):
    "Per record: same input_ids? same labels? same pixel_values? — and what the differences are."
    (ours, _), (base, _) = pipes['ours'], pipes['baseline']
    tok = proc.tokenizer; img_id = tok.convert_tokens_to_ids('<image>')
    out = {'records': n, 'ids_equal': 0, 'ids_equal_but_space_after_image': 0, 'labels_equal_where_baseline_not_all_masked': 0, 'labels_equal': 0, 'labels_equal_once_aligned': 0, 'pixels_equal': 0, 'image_records': 0,
           'baseline_all_masked': 0, 'examples': []}
    for i in range(n):
        o, b = ours[i], base[i]
        oi, ol = collapse(o['input_ids'], o['labels'], img_id)
        bi, bl = b['input_ids'].tolist(), b['labels'].tolist()
        out['ids_equal'] += oi == bi; out['labels_equal'] += ol == bl
        if all(x == -100 for x in bl): out['baseline_all_masked'] += 1
        elif ol == bl: out['labels_equal_where_baseline_not_all_masked'] += 1
        if -200 in bi:   # the original tokenizes the text after <image> as a fresh string: an extra '▁' follows -200
            k = bi.index(-200)
            if bi[:k+1] + bi[k+2:] == oi and tok.convert_ids_to_tokens(bi[k+1]) == '▁':
                out['ids_equal_but_space_after_image'] += 1
                if bl[:k+1] + bl[k+2:] == ol: out['labels_equal_once_aligned'] += 1
        elif ol == bl: out['labels_equal_once_aligned'] += 1
        if o['pixel_values'] is not None:
            out['image_records'] += 1; out['pixels_equal'] += torch.equal(o['pixel_values'], b['image'])
        if (oi != bi or ol != bl) and len(out['examples']) < 4:
            k = next((j for j, (x, y) in enumerate(zip(oi, bi)) if x != y), None) if oi != bi else \
                next(j for j, (x, y) in enumerate(zip(ol, bl)) if x != y)
            show = lambda xs: [tok.convert_ids_to_tokens(x) if x >= 0 else x for x in xs[max(0, k-3):k+4]]
            out['examples'].append({'record': i, 'has_image': 'image' in ours.records[i], 'first_diff_at': k,
                                    'ours_ids': show(oi), 'base_ids': show(bi), 'ours_labels': ol[max(0, k-3):k+4], 'base_labels': bl[max(0, k-3):k+4]})
    return out

def stage_times(pipes, n):
    "Seconds per record spent tokenizing+masking and on the image, for each pipeline (workers=0)."
    import copy
    from llava_lora_nb.images import process_image
    from llava_lora_nb.records import resolve_image_path
    from baseline_llava import preprocess_v1, preprocess_multimodal, expand2square
    from PIL import Image
    (ours, _), (base, _) = pipes['ours'], pipes['baseline']
    ip = base.processor
    img = [i for i in range(n) if 'image' in ours.records[i]]
    t = {}
    t0 = time.perf_counter(); [ours.tokenize(i) for i in range(n)]; t['ours_tokenize_ms'] = (time.perf_counter() - t0) / n * 1e3
    t0 = time.perf_counter()
    for i in range(n):
        r = base.list_data_dict[i]; s = copy.deepcopy([r['conversations']])
        if 'image' in r: s = preprocess_multimodal(s)
        preprocess_v1(s, base.tokenizer, has_image='image' in r)
    t['baseline_tokenize_ms'] = (time.perf_counter() - t0) / n * 1e3
    t0 = time.perf_counter(); [process_image(resolve_image_path(ours.image_folder, ours.records[i]['image']), ours.processor) for i in img]
    t['ours_image_ms_per_image'] = (time.perf_counter() - t0) / len(img) * 1e3
    t0 = time.perf_counter()
    for i in img:
        im = expand2square(Image.open(str(Path(base.image_folder)/base.list_data_dict[i]['image'])).convert('RGB'), tuple(int(x*255) for x in ip.image_mean))
        ip.preprocess(im, return_tensors='pt')['pixel_values'][0]
    t['baseline_image_ms_per_image'] = (time.perf_counter() - t0) / len(img) * 1e3
    t0 = time.perf_counter()
    for i in img:
        with Image.open(str(Path(base.image_folder)/base.list_data_dict[i]['image'])) as im: im.convert('RGB').load()
    t['jpeg_decode_ms_per_image'] = (time.perf_counter() - t0) / len(img) * 1e3
    if 'ours_cached' in pipes:
        c = pipes['ours_cached'][0]
        t0 = time.perf_counter(); [c[i] for i in range(n)]; t['cached_item_ms'] = (time.perf_counter() - t0) / n * 1e3
        t0 = time.perf_counter(); [c[i] for i in range(n) if 'image' not in c.records[i]]
        t['cached_text_item_ms'] = (time.perf_counter() - t0) / max(1, n - len(img)) * 1e3
        t['cached_image_item_ms'] = (t['cached_item_ms'] * n - t['cached_text_item_ms'] * (n - len(img))) / max(1, len(img))
    t['image_fraction'] = len(img) / n
    return t

def profile(ds, coll, n, path):
    "cProfile of `n` records through dataset + collator (workers=0); top functions by cumulative time → `path`."
    pr = cProfile.Profile(); pr.enable()
    for s in range(0, n, 16): coll([ds[i] for i in range(s, min(n, s + 16))])
    pr.disable()
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats('cumulative').print_stats(30)
    Path(path).write_text(s.getvalue())
    s2 = io.StringIO(); pstats.Stats(pr, stream=s2).sort_stats('tottime').print_stats(15)
    Path(path).with_suffix('.tottime.txt').write_text(s2.getvalue())

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true'); p.add_argument('--n', type=int, default=None); p.add_argument('--runs', type=int, default=None)
    p.add_argument('--workdir', default='/tmp/bench-data'); p.add_argument('--json', default=None)
    a = p.parse_args(argv)
    n, runs = a.n or (40 if a.quick else 2000), a.runs or (1 if a.quick else 3)
    folder = Path(a.workdir); data = make_dataset(folder, n)
    proc = make_processor()
    torch.set_num_threads(1)   # the data pipeline is per-record Python/PIL work; keep torch from fighting the workers
    build = {f'w{w}': [] for w in (0, 2)}
    for r in range(runs):      # the cache's one-off cost: built from scratch, with 0 and 2 worker processes
        for w in (0, 2):
            dt, cached = build_cache(data, folder, proc, folder/'cache', w); build[f'w{w}'].append(dt); print(r, 'cache build', w, round(dt, 1), 's', flush=True)
    pipes = pipelines(data, folder, proc, cached)
    same = fast_equals_plain(cached, n); print('fast path == plain path', same, flush=True)
    cmp = compare(pipes, proc, n)
    print('comparison', {k: v for k, v in cmp.items() if k != 'examples'}, flush=True)
    stages = stage_times(pipes, min(n, 400)); print('stages', stages, flush=True)
    res, med, ratio = interleaved_runs(pipes, runs, 'baseline')
    build_med = {k: median(v) for k, v in build.items()}
    # a training run of E epochs with the cache: build once (workers as in the loader), then E cached passes
    amortized = {f'w{w}_epochs{E}': E * n / (build_med[f'w{w}'] + E * n / med[f'ours_cached_w{w}']) / med[f'baseline_w{w}']
                 for w in (0, 2) for E in (1, 3)}
    pdir = Path(a.json).parent if a.json else (folder if a.quick else BENCH/'results')
    for name in pipes: profile(*pipes[name], min(n, 300), pdir/f'data_profile_{name}.txt')
    result = {'n_records': n, 'runs': runs, 'batch_size': 16, 'records_per_s_median': med, 'records_per_s_raw': res,
              'cache_build_s_median': build_med, 'cache_build_s_raw': build, 'cache_bytes': cached.cache.manifest['bytes'],
              'speedup_over_baseline': ratio, 'target_3x_met': {k: v >= 3 for k, v in ratio.items() if k.startswith('ours_cached')},
              'speedup_with_build_amortized': amortized, 'fast_path_equals_plain': same,
              'stage_ms': stages, 'comparison': cmp}
    write_result('data', result, a.json or (folder/'data_quick.json' if a.quick else None))
    if not a.quick: plot(result, BENCH/'data.png')
    print(json.dumps({k: result[k] for k in ('records_per_s_median', 'speedup_over_baseline', 'cache_build_s_median',
                                                 'speedup_with_build_amortized', 'fast_path_equals_plain', 'stage_ms')}, indent=2))

def plot(result, path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    m, s = result['records_per_s_median'], result['stage_ms']
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    names = {'baseline': 'original LLaVA algorithm', 'ours': 'ours, plain path', 'ours_cached': 'ours, cache_dir= (built)'}
    w = 0.27
    for j, (k, label) in enumerate(names.items()):
        ys = [m[f'{k}_w{x}'] for x in (0, 2)]
        bars = ax1.bar([i + (j - 1) * w for i in range(2)], ys, w, label=label)
        if k != 'baseline': ax1.bar_label(bars, [f"{y / m[f'baseline_w{x}']:.1f}×" for y, x in zip(ys, (0, 2))], fontsize=8)
    ax1.set_xticks([0, 1], ['0 workers', '2 workers']); ax1.set_ylabel('records/s (median)'); ax1.legend(fontsize=8, loc='upper right')
    ax1.set_ylim(0, 1.25 * max(m.values()))
    ax1.set_title(f"dataset + collator, {result['n_records']} records")
    f = s['image_fraction']
    parts = {'baseline': [s['baseline_tokenize_ms'], s['baseline_image_ms_per_image'] * f],
             'ours': [s['ours_tokenize_ms'], s['ours_image_ms_per_image'] * f],
             'ours, cached': [s['cached_text_item_ms'], (s['cached_image_item_ms'] - s['cached_text_item_ms']) * f]}
    for i, (k, (tk, im)) in enumerate(parts.items()):
        ax2.barh(i, tk, color='tab:green', label='tokenize + mask (cached: read)' if i == 0 else None)
        ax2.barh(i, im, left=tk, color='tab:purple', label='image (avg per record)' if i == 0 else None)
    ax2.set_yticks(range(len(parts)), list(parts)); ax2.invert_yaxis(); ax2.set_xlabel('ms per record (workers=0)'); ax2.legend(fontsize=8)
    ax2.set_title('where the time goes')
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)

if __name__ == '__main__': main()
