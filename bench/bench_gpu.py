"""GPU benchmark (CUDA only; NOT run in the CPU-only development environment): tokens/s, peak GPU memory and
model FLOPs utilisation (MFU) of LoRA and QLoRA training of a LLaVA-1.5-7B-shaped model with random weights
(no download) at batch 16 × 2048 tokens (576 image tokens per sample), gradient checkpointing, bf16; `lora_packed`
(and `qlora_packed`): the same rows each holding two 1,024-token records (`--packing True`'s layout: position_ids
restarting, no attention mask; flash-attention varlen when `flash_attn` is installed, else sdpa's block-diagonal mask).

    python bench/bench_gpu.py                      # LoRA and QLoRA, 10 steps each (3 warm-up)
    python bench/bench_gpu.py --batch 8 --quick    # smaller batch / seq, 3 steps (smoke test on a GPU)

MFU = 6 · N_trainable-path FLOPs... we use the standard estimate FLOPs/token = 6·N (forward+backward) + the
attention term 12·L·H·S, with N the language-model parameters (the frozen vision tower adds 2·N_vis per image
token-equivalent forward only; it is included as 2·N_vis·576/seq per token). LoRA does not skip the backward
through frozen weights (activations' gradients are still needed), so 6·N is the right order; gradient
checkpointing's re-forward (+2·N) is *not* counted (MFU, not HFU).
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, write_result

PEAK_TFLOPS = {'H100': 989e12, 'H200': 989e12, 'A100': 312e12, 'L40S': 362e12, 'A10G': 125e12, 'RTX 4090': 165e12}

def peak_flops(name):
    for k, v in PEAK_TFLOPS.items():
        if k in name: return v
    return None

def build(method, r=128, alpha=256):
    "LLaVA-1.5-7B-shaped model (random init, bf16) on the GPU, LoRA on the LM linears (4-bit NF4 base for QLoRA)."
    import torch
    from transformers import LlavaForConditionalGeneration, BitsAndBytesConfig
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from llava_lora_nb.memory import llava15_config
    from llava_lora_nb.targets import lora_target_modules
    cfg = llava15_config('7b')
    with torch.device('cuda'):
        torch.set_default_dtype(torch.bfloat16)
        model = LlavaForConditionalGeneration(cfg)
        torch.set_default_dtype(torch.float32)
    if method == 'qlora':   # quantize the random bf16 weights in place: what load_in_4bit would do to a checkpoint
        import bitsandbytes as bnb
        from transformers.integrations import replace_with_bnb_linear
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
        lm = model.model.language_model
        for name, mod in list(lm.named_modules()):
            for cn, child in list(mod.named_children()):
                if isinstance(child, torch.nn.Linear):
                    new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None, compute_dtype=torch.bfloat16,
                                            compress_statistics=True, quant_type='nf4')
                    new.weight = bnb.nn.Params4bit(child.weight.data.cpu(), requires_grad=False, quant_type='nf4', compress_statistics=True).cuda()
                    setattr(mod, cn, new)
        torch.cuda.empty_cache()
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={'use_reentrant': False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False}); model.enable_input_require_grads()
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.05, target_modules=lora_target_modules(model), task_type='CAUSAL_LM'))
    for n, p in model.named_parameters():
        if 'multi_modal_projector' in n: p.requires_grad_(True)
    return model, cfg

def plain_inputs(cfg, batch, seq):
    "One record per row: BOS, the image's tokens, text; an all-ones attention mask."
    import torch
    n_img = cfg.image_seq_length
    ids = torch.randint(3, 32000, (batch, seq), device='cuda'); ids[:, 1:1 + n_img] = cfg.image_token_id
    labels = ids.clone(); labels[:, :1 + n_img] = -100
    px = torch.randn(batch, 3, 336, 336, device='cuda', dtype=torch.bfloat16)
    return ids, labels, px, {'attention_mask': torch.ones_like(ids)}

def packed_inputs(cfg, batch, seq, k):
    "`k` records per row (each BOS + image tokens + text, `seq // k` tokens), as `DataCollatorForPackedRows` lays them out."
    import torch
    n_img, per = cfg.image_seq_length, seq // max(1, k)
    assert per > n_img + 1, f"records of {per} tokens cannot hold {n_img} image tokens: use a longer --seq"
    ids = torch.randint(3, 32000, (batch, seq), device='cuda'); labels = ids.clone()
    pos = torch.arange(seq, device='cuda').repeat(batch, 1)
    for j in range(max(1, k)):
        s = j * per
        ids[:, s] = 1; ids[:, s + 1:s + 1 + n_img] = cfg.image_token_id; labels[:, s:s + 1 + n_img] = -100
        pos[:, s:s + per if j < k - 1 else seq] = torch.arange((per if j < k - 1 else seq - s), device='cuda')
    px = torch.randn(batch * max(1, k), 3, 336, 336, device='cuda', dtype=torch.bfloat16)
    return ids, labels, px, {'position_ids': pos, 'use_cache': False}

def run(method, batch, seq, steps, warmup):
    import torch
    torch.cuda.reset_peak_memory_stats(); torch.manual_seed(0)
    packed = method.endswith('_packed')   # rows of `seq // 1024` records, position_ids restarting per record, no attention mask
    model, cfg = build(method.removesuffix('_packed'))
    n_img = cfg.image_seq_length
    ids, labels, px, extra = packed_inputs(cfg, batch, seq, seq // 1024) if packed else plain_inputs(cfg, batch, seq)
    if packed:
        import importlib.util   # flash-attention's varlen kernels read the segments from position_ids; sdpa gets a block-diagonal mask
        if importlib.util.find_spec('flash_attn'): model.set_attn_implementation('flash_attention_2')
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    times = []
    for s in range(warmup + steps):
        torch.cuda.synchronize(); t0 = time.perf_counter()
        with torch.autocast('cuda', dtype=torch.bfloat16):
            loss = model(input_ids=ids, pixel_values=px, labels=labels, **extra).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(); times.append(time.perf_counter() - t0)
    dt = sorted(times[warmup:])[len(times[warmup:]) // 2]
    tc = cfg.text_config
    n_lm = sum(p.numel() for n, p in model.named_parameters() if 'language_model' in n or 'lm_head' in n)  # 4-bit params count packed: use config
    n_lm = tc.num_hidden_layers * (4 * tc.hidden_size ** 2 + 3 * tc.hidden_size * tc.intermediate_size) + 2 * tc.vocab_size * tc.hidden_size
    n_vis = sum(p.numel() for n, p in model.named_parameters() if 'vision_tower' in n)
    att = seq // max(1, seq // 1024) if packed else seq   # packed: each token attends within its own record only
    flops_tok = 6 * n_lm + 12 * tc.num_hidden_layers * tc.hidden_size * att + 2 * n_vis * n_img * (seq // att) / seq
    tps = batch * seq / dt
    name = torch.cuda.get_device_name(); peak = peak_flops(name)
    return {'method': method, 'batch': batch, 'seq': seq, 'sec_per_step': dt, 'tokens_per_s': tps, 'peak_mem_gib': torch.cuda.max_memory_allocated() / 2**30,
            'flops_per_token': flops_tok, 'achieved_tflops': tps * flops_tok / 1e12, 'gpu': name, 'mfu': (tps * flops_tok / peak) if peak else None,
            'loss': loss.item()}

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--batch', type=int, default=16); p.add_argument('--seq', type=int, default=2048)
    p.add_argument('--steps', type=int, default=10); p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--methods', default='lora,qlora,lora_packed'); p.add_argument('--quick', action='store_true'); p.add_argument('--json', default=None)
    a = p.parse_args(argv)
    import torch
    if not torch.cuda.is_available(): print('bench_gpu: no CUDA GPU here; nothing run.'); return 0
    if a.quick: a.batch, a.seq, a.steps, a.warmup = min(a.batch, 2), min(a.seq, 1024), 3, 1
    res = {}
    for m in a.methods.split(','):
        try: res[m] = run(m, a.batch, a.seq, a.steps, a.warmup)
        except torch.cuda.OutOfMemoryError as e: res[m] = {'error': f'OOM: {e}'[:500]}
        print(m, res[m], flush=True); import gc; gc.collect(); torch.cuda.empty_cache()
    write_result('gpu', {'results': res}, a.json)

if __name__ == '__main__': sys.exit(main())
