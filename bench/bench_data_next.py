"""Any-resolution (LLaVA-NeXT / 1.6) data pipeline benchmark: records/s of our `LazySupervisedDataset` + collator with a
`LlavaNextProcessor` (the plain path, and the `cache_dir=` fast path once its `PreprocessedCache` is built) next to the
processor's own path (render the prompt, `processor(text=..., images=...)` per record, pad), with 0 and 2 DataLoader
workers, on generated mixed image/text-only, multi-turn records whose images have many sizes and aspect ratios, at
llava-v1.6's geometry (336 px tiles, patch 14, its five grids: 1–5 tiles + the base image, up to 2928 image tokens).
Also: the cache's build time and size, a bitwise comparison of the fast path with the plain path, and a token-for-token,
pixel-for-pixel comparison of our items with the processor's.

    python bench/bench_data_next.py            # 300 records, 3 runs per setting
    python bench/bench_data_next.py --quick    # 20 records, 1 run (smoke test)
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, median, write_result
import torch
from bench_data import make_dataset, build_cache, interleaved_runs

# (width, height): square, 4:3 both ways, 1:3 both ways, 16:9, small; the grid picked runs from 1x1 to 2x2 and 1x3 / 3x1
NEXT_SIZES = [(336, 336), (672, 672), (640, 480), (480, 640), (1008, 336), (336, 1008), (1280, 720), (336, 252)]
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]

def make_processor():
    "A LlavaNextProcessor at llava-v1.6 geometry (CLIP 336, patch 14, its five grids) with the tiny Llama tokenizer."
    import transformers
    from llava_lora_nb.testing import tiny_tokenizer
    from llava_lora_nb.prompts import LLAVA_CHAT_TEMPLATE
    ImageProcessor = getattr(transformers, 'LlavaNextImageProcessorPil', None) or transformers.LlavaNextImageProcessor  # no torchvision
    ip = ImageProcessor(size={'shortest_edge': 336}, crop_size={'height': 336, 'width': 336}, image_grid_pinpoints=PINPOINTS)
    return transformers.LlavaNextProcessor(image_processor=ip, tokenizer=tiny_tokenizer(model_max_length=4096), patch_size=14,
                                           vision_feature_select_strategy='default', num_additional_image_tokens=1,
                                           chat_template=LLAVA_CHAT_TEMPLATE, image_token='<image>')

class ProcessorPath(torch.utils.data.Dataset):
    "The processor's own path per record: render the prompt (vicuna_v1), `processor(text=..., images=...)`. Labels are the ids (no masking)."
    def __init__(self, ours): self.ours = ours
    def __len__(self): return len(self.ours)
    def __getitem__(self, i):
        from llava_lora_nb.prompts import render_prompt
        from llava_lora_nb.images import open_image
        from llava_lora_nb.records import resolve_image_path
        ds, r = self.ours, self.ours.records[i]
        text = render_prompt(r['conversations'], 'vicuna_v1', ds.tokenizer.eos_token, has_image='image' in r)[0]
        if 'image' in r:
            out = ds.processor(text=text, images=open_image(resolve_image_path(ds.image_folder, r['image'])), return_tensors='pt')
            x = {'input_ids': out['input_ids'][0], 'pixel_values': out['pixel_values'][0], 'image_sizes': out['image_sizes'][0]}
        else: x = {'input_ids': ds.tokenizer(text, return_tensors='pt')['input_ids'][0], 'pixel_values': None}
        x['labels'] = x['input_ids'].clone()
        return x

def fast_equals_plain(cached, n):
    "Records whose cached item is bitwise the plain path's (every key, dtype included)."
    same = {'input_ids': 0, 'labels': 0, 'pixel_values': 0, 'image_sizes': 0}
    for i in range(n):
        a, b = cached[i], cached.plain_item(i)
        for k in same:
            same[k] += (a[k] is None and b[k] is None) or (a[k] is not None and b[k] is not None and a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]))
    return {'records': n, **same}

def compare(ours, hf, n):
    "Per record: our input_ids, pixel_values and image_sizes equal to the processor's?"
    out = {'records': n, 'image_records': 0, 'ids_equal': 0, 'pixels_equal': 0, 'image_sizes_equal': 0, 'tiles': [], 'image_tokens': []}
    img_id = ours.processor.image_token_id
    for i in range(n):
        o, h = ours.plain_item(i), hf[i]
        out['ids_equal'] += torch.equal(o['input_ids'], h['input_ids'])
        if o['pixel_values'] is not None:
            out['image_records'] += 1
            out['pixels_equal'] += torch.equal(o['pixel_values'], h['pixel_values'])
            out['image_sizes_equal'] += torch.equal(o['image_sizes'], h['image_sizes'])
            out['tiles'].append(len(o['pixel_values'])); out['image_tokens'].append(int((o['input_ids'] == img_id).sum()))
    return out

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true'); p.add_argument('--n', type=int, default=None); p.add_argument('--runs', type=int, default=None)
    p.add_argument('--workdir', default='/tmp/bench-data-next'); p.add_argument('--json', default=None)
    a = p.parse_args(argv)
    n, runs = a.n or (20 if a.quick else 300), a.runs or (1 if a.quick else 3)
    folder = Path(a.workdir); data = make_dataset(folder, n, sizes=NEXT_SIZES, name='data_next')
    proc = make_processor()
    torch.set_num_threads(1)
    from llava_lora_nb.dataset import LazySupervisedDataset, data_collator
    build = {f'w{w}': [] for w in (0, 2)}
    for r in range(runs):
        for w in (0, 2):
            dt, cached = build_cache(data, folder, proc, folder/'cache', w, model_max_length=4096); build[f'w{w}'].append(dt); print(r, 'cache build', w, round(dt, 1), 's', flush=True)
    ours = LazySupervisedDataset(str(data), folder, proc, template='vicuna_v1', model_max_length=4096)
    hf = ProcessorPath(ours)
    pipes = {'processor': (hf, data_collator(ours)), 'ours': (ours, data_collator(ours)), 'ours_cached': (cached, data_collator(cached))}
    same = fast_equals_plain(cached, n); print('fast path == plain path', same, flush=True)
    cmp = compare(ours, hf, n); print('ours vs processor', {k: v for k, v in cmp.items() if k not in ('tiles', 'image_tokens')}, flush=True)
    res, med, ratio = interleaved_runs(pipes, runs, 'processor')
    t, it = cmp.pop('tiles'), cmp.pop('image_tokens')
    result = {'n_records': n, 'runs': runs, 'batch_size': 16, 'geometry': {'tile': 336, 'patch': 14, 'pinpoints': PINPOINTS},
              'image_sizes_wh': NEXT_SIZES, 'records_per_s_median': med, 'records_per_s_raw': res,
              'speedup_over_processor': ratio, 'cache_build_s_median': {k: median(v) for k, v in build.items()}, 'cache_build_s_raw': build,
              'cache_bytes': cached.cache.manifest['bytes'], 'fast_path_equals_plain': same, 'comparison': cmp,
              'tiles_per_image': {'mean': sum(t) / max(1, len(t)), 'min': min(t, default=0), 'max': max(t, default=0)},
              'image_tokens_per_image': {'mean': sum(it) / max(1, len(it)), 'min': min(it, default=0), 'max': max(it, default=0)}}
    write_result('data_next', result, a.json or (folder/'data_next_quick.json' if a.quick else None))
    print(json.dumps({k: result[k] for k in ('records_per_s_median', 'speedup_over_processor', 'cache_build_s_median', 'fast_path_equals_plain',
                                             'comparison', 'tiles_per_image', 'image_tokens_per_image')}, indent=2))

if __name__ == '__main__': main()
