"""Roofline benchmark (issue 29): how close a LoRA training step comes to what this machine's matrix multiply can do.

The achieved FLOP/s of a step — its FLOPs counted from the model's shapes and the batch (formula below), divided by its
wall time — is compared with the FLOP/s `torch.mm` reaches on this machine at the same GEMM shapes, timed bare. Sizes:
the tiny model (128×2 Llama) and the mid one (384×4 Llama, 32,000-token vocabulary, 576 image tokens per image, as
`bench_memory.py`), each on long-tail records padded in batches of 4 ("plain") and packed into 2,048-token rows.
A `torch.profiler` trace of one step names where the rest of the time goes (GEMMs, attention, optimizer, the rest).

FLOPs of one step (multiply-add = 2 FLOPs; T = tokens the language model computes, padding included; K = positions
whose logits are computed; s = row length; P = CLIP patches per image (+1 class token), I = image tokens):
  language model, frozen linear weights   2·T·N_lin forward + 2·T·N_lin backward (input gradients only)
  LoRA A and B                            6·T·Σ r·(in + out)   (forward, input and weight gradients)
  attention                               12·B·s²·h·L          (QKᵀ and AV forward, twice that backward)
  lm_head (frozen)                        4·K·h·V              (forward and input gradient)
  projector (trained)                     6·I·N_proj
  CLIP (frozen, no gradient needed)       2·P·N_clip_lin + 4·P²·h_v·L_v per image
Embeddings, norms, activations and the optimizer are left out (they are elementwise: little FLOP, memory-bound).

    python bench/bench_roofline.py            # tiny and mid, plain and packed
    python bench/bench_roofline.py --quick    # tiny only, 3 steps (smoke test)
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, median, write_result

MAX_LEN = 2048

def linear_shapes(model):
    "`(in, out, lora_r)` of every adapted linear layer of the language model, and the projector's / CLIP's linear sizes."
    import torch
    lm, proj, clip = [], 0, 0
    for n, m in model.named_modules():
        if hasattr(m, 'base_layer') and hasattr(m, 'lora_A') and 'language_model' in n:
            w = m.base_layer.weight; lm.append((w.shape[1], w.shape[0], m.lora_A['default'].weight.shape[0]))
        elif isinstance(m, torch.nn.Linear) and 'multi_modal_projector' in n and 'lora' not in n: proj += m.in_features * m.out_features
        elif isinstance(m, torch.nn.Linear) and 'vision_tower' in n: clip += m.in_features * m.out_features
    return lm, proj, clip

def step_flops(model, batch, kept:int, attention:bool=True) -> float:
    "FLOPs of one training step on `batch` (the formula of this module's docstring); `kept`: positions with logits; `attention=False`: without the attention term."
    cfg = model.config.text_config if hasattr(model.config, 'text_config') else model.get_base_model().config.text_config
    vcfg = model.get_base_model().config.vision_config
    lm, proj, clip = linear_shapes(model)
    B, s = batch['input_ids'].shape
    T, h, L, V = B * s, cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    n_lin = sum(i * o for i, o, _ in lm); n_lora = sum(r * (i + o) for i, o, r in lm)
    images = batch['pixel_values'].shape[0] if 'pixel_values' in batch else 0
    P = (vcfg.image_size // vcfg.patch_size) ** 2 + 1; I = images * (P - 1)
    return (4 * T * n_lin + 6 * T * n_lora + attention * 12 * B * s * s * h * L + 4 * kept * h * V + 6 * I * proj
            + images * (2 * P * clip + 4 * P * P * vcfg.hidden_size * vcfg.num_hidden_layers))

def bare_matmul_rate(shapes, reps:int=3) -> float:
    "FLOP/s of `torch.mm` over `shapes` ((m, k, n) each: an m×k by k×n product), timed bare, median of `reps`."
    import torch
    flops = sum(2 * m * k * n for m, k, n in shapes); times = []
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    for a, b in mats: torch.mm(a, b)   # warm-up
    for _ in range(reps):
        t0 = time.perf_counter()
        for a, b in mats: torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return flops / median(times)

def gemm_shapes(model, batch, kept:int) -> list:
    "The GEMMs of the language model's step at this batch: each frozen linear forward and its input gradient, lm_head's."
    lm, _, _ = linear_shapes(model)
    T = batch['input_ids'].numel()
    cfg = model.get_base_model().config.text_config
    out = [(T, i, o) for i, o, _ in lm] + [(T, o, i) for i, o, _ in lm]
    return out + [(kept, cfg.hidden_size, cfg.vocab_size), (kept, cfg.vocab_size, cfg.hidden_size)]

def run(ckpt, data, folder, layout, steps, out, profile:bool):
    "Train `steps` steps; per step: time and counted FLOPs; the bare-matmul rate at its GEMM shapes; a profile of one step."
    import torch, transformers
    from llava_lora_nb.loading import LoraSettings, load_for_training
    from llava_lora_nb.dataset import LazySupervisedDataset, data_collator
    from llava_lora_nb.packing import PackedDataset
    from llava_lora_nb.arguments import TrainingArguments
    from llava_lora_nb.trainer import LLaVATrainer
    from llava_lora_nb.loss import supervised_positions
    transformers.set_seed(0)
    model, processor = load_for_training(str(ckpt), LoraSettings(lora_r=16, lora_alpha=32, lora_dropout=0.0), torch_dtype=torch.float32)
    model.config.use_cache = False
    ds = LazySupervisedDataset(str(data), folder, processor, template='vicuna_v1', model_max_length=MAX_LEN, progress=False)
    if layout == 'packed': ds = PackedDataset(ds, max_length=MAX_LEN, seed=0, progress=False)
    coll = data_collator(ds); batches, ends = [], []
    def meter(xs):
        b = coll(xs); batches.append(b); return b
    class Clock(transformers.TrainerCallback):
        def on_step_begin(self, *a, **k): ends.append(('begin', time.perf_counter()))
        def on_step_end(self, *a, **k): ends.append(('end', time.perf_counter()))
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=1 if layout == 'packed' else 4, max_steps=steps,
                             learning_rate=2e-4, logging_steps=steps, save_strategy='no', report_to=[], use_cpu=True, seed=0,
                             disable_tqdm=True, remove_unused_columns=False, group_by_modality_length=True, model_max_length=MAX_LEN,
                             dataloader_num_workers=0)
    tr = LLaVATrainer(model=model, args=args, train_dataset=ds, data_collator=meter, callbacks=[Clock()], llava_settings={})
    t0 = time.perf_counter(); tr.train(); total = time.perf_counter() - t0
    begins = [t for k, t in ends if k == 'begin']; stops = [t for k, t in ends if k == 'end']
    per = []
    for b, t_b, t_e in list(zip(batches, begins, stops))[1:]:   # the first step warms up
        kept = len(supervised_positions(b['labels'])[0]) * b['input_ids'].shape[0]
        per.append({'s': t_e - t_b, 'flops': step_flops(model, b, kept), 'flops_no_attention': step_flops(model, b, kept, attention=False),
                    'tokens': b['input_ids'].numel(), 'kept': kept})
    b = batches[-1]; kept = len(supervised_positions(b['labels'])[0]) * b['input_ids'].shape[0]
    bare = bare_matmul_rate(gemm_shapes(model, b, kept))
    achieved = sum(x['flops'] for x in per) / sum(x['s'] for x in per)
    lower = sum(x['flops_no_attention'] for x in per) / sum(x['s'] for x in per)   # attention's FLOPs not counted at all
    res = {'layout': layout, 'steps': per, 'achieved_flops_per_s': achieved, 'bare_mm_flops_per_s': bare, 'fraction': achieved / bare,
           'fraction_without_attention': lower / bare,
           'step_s_median': median([x['s'] for x in per]), 'outside_steps_s': total - sum(t_e - t_b for t_b, t_e in zip(begins, stops))}
    if profile:   # one more step under the profiler: where the time goes
        from torch.profiler import profile as prof, ProfilerActivity
        model.train(); batch = {k: v for k, v in b.items()}
        with prof(activities=[ProfilerActivity.CPU]) as p:
            loss = tr.compute_loss(model, batch); loss.backward(); tr.optimizer.step(); tr.optimizer.zero_grad()
        cats = {'GEMMs (mm, addmm, bmm, matmul)': 0.0, 'attention (sdpa)': 0.0, 'optimizer (AdamW)': 0.0, 'everything else': 0.0}
        for e in p.key_averages():
            n, t = e.key, e.self_cpu_time_total / 1e6
            if any(k in n for k in ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::matmul')): cats['GEMMs (mm, addmm, bmm, matmul)'] += t
            elif 'scaled_dot_product' in n or 'attention' in n: cats['attention (sdpa)'] += t
            elif 'adam' in n.lower() or '_foreach' in n: cats['optimizer (AdamW)'] += t
            else: cats['everything else'] += t
        res['profile_s'] = cats
        res['profile_top'] = [(e.key, round(e.self_cpu_time_total / 1e6, 4)) for e in sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]]
    return res

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true'); p.add_argument('--steps', type=int, default=None)
    p.add_argument('--workdir', default='/tmp/bench-roofline'); p.add_argument('--json', default=None)
    a = p.parse_args(argv)
    import torch
    from bench_packing import make_long_tail
    from bench_memory import checkpoint
    work = Path(a.workdir); work.mkdir(parents=True, exist_ok=True)
    sizes = {'tiny': dict(vocab=400, hidden=128, layers=2, image_size=32, patch_size=8)}
    if not a.quick: sizes['mid'] = dict(vocab=32000, hidden=384, layers=4, image_size=336, patch_size=14)
    steps = a.steps or (3 if a.quick else 6)
    data = make_long_tail(work/'data', 48 if a.quick else 120, seed=0)
    res = {'threads': torch.get_num_threads(), 'sizes': {}}
    for size, kw in sizes.items():
        ckpt = checkpoint(work, **kw)
        res['sizes'][size] = {layout: run(ckpt, data, work/'data', layout, steps, work/f'out-{size}-{layout}', profile=size == list(sizes)[-1])
                              for layout in ('plain', 'packed')}
        for layout, r in res['sizes'][size].items():
            print(f"{size} {layout}: {r['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s achieved, {r['bare_mm_flops_per_s'] / 1e9:.1f} GFLOP/s bare mm "
                  f"-> {100 * r['fraction']:.0f}%; step {r['step_s_median']:.2f} s" + (f"; profile {r['profile_s']}" if 'profile_s' in r else ''), flush=True)
    write_result('roofline', res, a.json)

if __name__ == '__main__': main()
