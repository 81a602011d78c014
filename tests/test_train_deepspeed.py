"""Real DeepSpeed runs on CPU (ZeRO-2, ZeRO-3, two processes, QLoRA + ZeRO-3), each in a subprocess.

DeepSpeed compiles its shared-memory op on first use (~45 s, cached afterwards), so these runs are few and short.
This file is also the worker: `python tests/test_train_deepspeed.py <llava_lora_train flags>` trains with a callback
that writes, on every rank, a digest of the trainable weights (`rank<r>.json`), so the ranks can be compared, the
gradient clipping the DeepSpeed optimizer applies, and the projector as it was when training began
(`rank<r>_projector_begin.safetensors`). With `LLAVA_TEST_VIA_CLI=1` it goes through `train_cli` (the console script's
function) instead of `parse_args` + `train`."""
import json, os, socket, subprocess, sys
from pathlib import Path
import pytest, torch

pytestmark = pytest.mark.e2e   # trains, merges or runs console scripts: not in `make test-fast`

HERE = Path(__file__).resolve()

def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _env(single=True):
    e = {**os.environ, 'TOKENIZERS_PARALLELISM': 'false', 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1',
         'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(_free_port())}
    if single: e.update(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1')
    return e

def _flags(ckpt, data, folder, out, *extra):
    return ['--model_name_or_path', str(ckpt), '--data_path', str(data), '--image_folder', str(folder), '--version', 'v1',
            '--lora_enable', 'True', '--lora_r', '8', '--lora_alpha', '16', '--learning_rate', '3e-3', '--mm_projector_lr', '1e-3',
            '--group_by_modality_length', 'True', '--per_device_train_batch_size', '4', '--max_steps', '6', '--save_steps', '3',
            '--logging_steps', '1', '--model_max_length', '256', '--output_dir', str(out), '--report_to', 'none',
            '--disable_tqdm', 'True', '--seed', '0', *extra]

def _run(cmd, env, timeout=400):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-5000:])
    return r

def _write_mm_projector(path, ckpt):
    "An original-layout `mm_projector.bin` (`model.mm_projector.0/2.weight/bias`) of known values, shaped for `ckpt`'s projector."
    from transformers import LlavaForConditionalGeneration
    proj = LlavaForConditionalGeneration.from_pretrained(ckpt).model.multi_modal_projector
    sd = {}
    for n, p in proj.named_parameters():
        layer, kind = n.split('.')
        sd[f"model.mm_projector.{0 if layer == 'linear_1' else 2}.{kind}"] = torch.linspace(-0.5, 0.5, p.numel()).reshape(p.shape)
        assert not torch.equal(sd[f"model.mm_projector.{0 if layer == 'linear_1' else 2}.{kind}"], p.detach())
    torch.save(sd, path)
    return {k.replace('mm_projector.0', 'multi_modal_projector.linear_1').replace('mm_projector.2', 'multi_modal_projector.linear_2'): v
            for k, v in sd.items()}   # keyed like the llava-hf names (`model.multi_modal_projector.linear_1.weight`)

def _check_folder(d, ckpt):
    "A saved folder (final or checkpoint) is complete, its projector is real (not ZeRO-3's empty placeholders) and it loads."
    from safetensors.torch import load_file
    from llava_lora_nb.output import load_adapter_model
    d = Path(d)
    nl = load_file(str(d/'non_lora_trainables.safetensors'))
    assert nl and all(v.numel() > 0 for v in nl.values()), {k: v.shape for k, v in nl.items()}
    ad = load_file(str(d/'adapter_model.safetensors'))
    assert ad and all(v.numel() > 0 for v in ad.values())
    assert any(v.abs().sum() > 0 for k, v in ad.items() if 'lora_B' in k)   # LoRA B starts at 0: it trained
    model, proc, _ = load_adapter_model(d, model_base=ckpt)
    ids = proc.tokenizer('USER: What colour? ASSISTANT:', return_tensors='pt').input_ids
    with torch.no_grad(): assert torch.isfinite(model(input_ids=ids).logits).all()

def test_zero2_and_zero3_single_process(tmp_path, tiny_ckpt, shapes):
    """ZeRO-2 with the default clipping (auto -> max_grad_norm 1.0); ZeRO-3 as the v1.5 recipe: a pretrained
    `mm_projector.bin` (gathered from the ZeRO-3 partitions to load it) and `--max_grad_norm 0` (no clipping, as the original)."""
    from safetensors.torch import load_file
    data, _, folder = shapes
    want = _write_mm_projector(tmp_path/'mm_projector.bin', tiny_ckpt)
    for stage, extra in (('zero2', ()), ('zero3', ('--pretrain_mm_mlp_adapter', str(tmp_path/'mm_projector.bin'), '--max_grad_norm', '0'))):
        out = tmp_path/stage
        r = _run([sys.executable, str(HERE), *_flags(tiny_ckpt, data, folder, out, '--deepspeed', stage, *extra)], _env())
        d = json.loads((out/'rank0.json').read_text())
        assert d['deepspeed_stage'] == int(stage[-1]), d
        assert d['lrs'][0] == pytest.approx(d['lrs'][1] * 3)     # projector group at mm_projector_lr through DeepSpeed
        clip = 0.0 if stage == 'zero3' else 1.0                   # what the ZeRO optimizer clips at, and the config in force
        assert (d['clip_grad'], d['ds_gradient_clipping']) == (clip, clip), d
        line = ("no gradient clipping (--max_grad_norm 0, as the original LLaVA recipe under DeepSpeed 0.12)" if stage == 'zero3'
                else "gradient clipping: max_grad_norm 1.0 (DeepSpeed gradient_clipping auto -> 1.0)")
        assert f"llava_lora_train: {line}" in r.stdout, r.stdout[-3000:]
        if stage == 'zero3':   # the projector at train begin is the file's, not the checkpoint's
            got = {k.removeprefix('base_model.model.'): v for k, v in load_file(str(out/'rank0_projector_begin.safetensors')).items()}
            assert sorted(got) == sorted(want), (sorted(got), sorted(want))
            for k, v in want.items(): assert torch.equal(got[k], v), k
        for f in (out, out/'checkpoint-3'): _check_folder(f, tiny_ckpt)

def test_zero2_without_launcher(tmp_path, tiny_ckpt, shapes):
    """`llava_lora_train --deepspeed zero2` started without a launcher (no RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT)
    runs as one process instead of dying on `No module named 'mpi4py'`; `--max_grad_norm 0`: nothing clipped."""
    data, _, folder = shapes
    out = tmp_path/'nolauncher'
    env = {k: v for k, v in _env().items() if k not in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')}
    env['LLAVA_TEST_VIA_CLI'] = '1'
    r = _run([sys.executable, str(HERE), *_flags(tiny_ckpt, data, folder, out, '--deepspeed', 'zero2', '--max_grad_norm', '0',
                                                 '--max_steps', '2', '--save_steps', '100')], env)
    assert 'no launcher set RANK/WORLD_SIZE: DeepSpeed runs as one process (rank 0 of 1, 127.0.0.1:' in r.stdout, r.stdout[-3000:]
    d = json.loads((out/'rank0.json').read_text())
    assert (d['deepspeed_stage'], d['world_size'], d['clip_grad'], d['ds_gradient_clipping']) == (2, 1, 0.0, 0.0), d
    assert (out/'adapter_model.safetensors').exists() and 'saved to' in r.stdout

def test_two_processes_ranks_agree(tmp_path, tiny_ckpt, shapes):
    "torchrun with 2 CPU processes (DDP over gloo; multi-process DeepSpeed needs GPUs): both ranks end with the same weights."
    data, _, folder = shapes
    out = tmp_path/'ddp2'
    torchrun = Path(sys.executable).parent/'torchrun'
    _run([str(torchrun), '--nproc_per_node', '2', '--master_port', str(_free_port()), str(HERE),
          *_flags(tiny_ckpt, data, folder, out, '--max_steps', '4', '--save_steps', '2')], _env(single=False))
    r0, r1 = (json.loads((out/f'rank{r}.json').read_text()) for r in (0, 1))
    assert (r0['world_size'], r1['world_size']) == (2, 2)
    assert r0['digest'] == r1['digest'] and r0['digest_sum'] != 0
    st = json.loads((out/'trainer_state.json').read_text())
    assert st['global_step'] == 4 and st['train_batch_size'] == 4   # per device; 2 ranks × 4 records a step
    _check_folder(out, tiny_ckpt)

def test_qlora_zero3(tmp_path, tiny_ckpt, shapes):
    "QLoRA (4-bit, bitsandbytes on CPU) under ZeRO-3: the 4-bit weights are stored in the compute dtype so ZeRO-3 can partition them."
    data, _, folder = shapes
    out = tmp_path/'q3'
    _run([sys.executable, str(HERE), *_flags(tiny_ckpt, data, folder, out, '--deepspeed', 'zero3', '--bits', '4', '--max_steps', '4',
                                               '--save_steps', '2')], _env())
    d = json.loads((out/'rank0.json').read_text())
    assert d['deepspeed_stage'] == 3 and d['n_4bit'] > 0, d
    for f in (out, out/'checkpoint-2'): _check_folder(f, tiny_ckpt)

def _worker(argv):
    import transformers
    import llava_lora_nb.train as T
    class Digest(transformers.TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            import deepspeed
            self.projector_begin = {}
            for n, p in model.named_parameters():
                if 'multi_modal_projector' in n:
                    with deepspeed.zero.GatheredParameters([p], enabled=hasattr(p, 'ds_id')):
                        self.projector_begin[n] = p.detach().float().cpu().clone()
        def on_step_end(self, args, state, control, optimizer=None, **kw):
            if state.global_step == 1:
                self.lrs = [g['lr'] for g in optimizer.param_groups]
                self.clip_grad = getattr(getattr(optimizer, 'optimizer', optimizer), 'clip_grad', None)   # the ZeRO optimizer's
        def on_train_end(self, args, state, control, model=None, **kw):
            import deepspeed
            ps = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            vals = []
            for n, p in ps:
                with deepspeed.zero.GatheredParameters([p], enabled=hasattr(p, 'ds_id')):
                    vals.append((n, float(p.detach().double().sum()), float(p.detach().double().abs().sum())))
            ds = getattr(args, 'hf_deepspeed_config', None)
            rank = int(os.environ.get('RANK', 0))
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            from safetensors.torch import save_file
            save_file(self.projector_begin, str(Path(args.output_dir)/f'rank{rank}_projector_begin.safetensors'))
            (Path(args.output_dir)/f'rank{rank}.json').write_text(json.dumps({
                'world_size': args.world_size, 'digest': [f"{n}:{s:.6e}:{a:.6e}" for n, s, a in vals],
                'digest_sum': sum(a for _, _, a in vals), 'lrs': getattr(self, 'lrs', None),
                'n_4bit': sum(type(m).__name__ == 'Linear4bit' for m in model.modules()),
                'deepspeed_stage': ds.config['zero_optimization']['stage'] if ds else None,
                'ds_gradient_clipping': ds.config.get('gradient_clipping') if ds else None, 'clip_grad': getattr(self, 'clip_grad', None)}))
    if os.environ.get('LLAVA_TEST_VIA_CLI'):   # the console script's path, with the digest callback added to its train()
        train = T._train   # what train() and the console script both call
        T._train = lambda *a, **k: train(*a, callbacks=[Digest()], **k)
        T.train_cli(argv)
    else: T.train(*T.parse_args(argv), callbacks=[Digest()])

def test_zero3_validation_and_best_model(tmp_path, tiny_ckpt, shapes):
    """Issue 18 under ZeRO-3: a validation loss and batched exact-match answers every --eval_steps while the weights are
    partitioned, and --load_best_model_at_end restoring the best checkpoint through DeepSpeed (here 'best' is the highest
    loss, so that it is not the last step): the output folder holds that checkpoint's adapter and projector."""
    from safetensors.torch import load_file
    data, heldout, folder = shapes
    out = tmp_path/'z3eval'
    _run([sys.executable, str(HERE), *_flags(tiny_ckpt, data, folder, out, '--deepspeed', 'zero3', '--max_steps', '6', '--save_steps', '2',
                                             '--eval_data_path', str(heldout), '--eval_steps', '2', '--eval_generate', 'True',
                                             '--eval_max_records', '6', '--load_best_model_at_end', 'True',
                                             '--metric_for_best_model', 'loss', '--greater_is_better', 'True')], _env())
    st = json.loads((out/'trainer_state.json').read_text())
    evals = [x for x in st['log_history'] if 'eval_loss' in x]
    assert [x['step'] for x in evals][:3] == [2, 4, 6] and all('eval_accuracy' in x for x in evals), evals
    worst = max(evals[:3], key=lambda x: x['eval_loss'])['step']
    assert st['best_model_checkpoint'] == str(out/f'checkpoint-{worst}'), st['best_model_checkpoint']
    assert worst != 6, evals
    for f in ('adapter_model.safetensors', 'non_lora_trainables.safetensors'):
        saved, best, last = (load_file(str(d/f)) for d in (out, out/f'checkpoint-{worst}', out/'checkpoint-6'))
        assert all(torch.equal(saved[k], best[k]) for k in best), f
        assert any(not torch.equal(saved[k], last[k]) for k in last), f
    _check_folder(out, tiny_ckpt)

if __name__ == '__main__': _worker(sys.argv[1:])
