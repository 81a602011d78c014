"""Packing (issue 17): the same records packed into rows and padded one per row give equal per-record losses and equal
gradients for LoRA and QLoRA (images and text-only records mixed), the Trainer's loss normalisation over accumulated
micro-batches is the padded one, and `llava_lora_train --packing True` trains, resumes and runs under DeepSpeed."""
import json, subprocess, sys
from pathlib import Path
import pytest, torch, transformers
from conftest import run_cli

pytestmark = pytest.mark.e2e   # trains, merges or runs console scripts: not in `make test-fast`

def _datasets(ckpt, data, folder, max_length=256):
    from llava_lora_nb.dataset import LazySupervisedDataset
    from llava_lora_nb.packing import PackedDataset
    proc = transformers.AutoProcessor.from_pretrained(ckpt)
    ds = LazySupervisedDataset(data, folder, proc, template='v1', model_max_length=max_length, progress=False)
    ds.records = ds.records[:20]   # 20 records: a few rows, both modalities
    return ds, PackedDataset(ds, seed=3)

def _model(ckpt, bits):
    from llava_lora_nb.loading import LoraSettings, load_for_training
    model, _ = load_for_training(str(ckpt), LoraSettings(lora_r=8, lora_alpha=16, lora_dropout=0.0, bits=bits), torch_dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():   # LoRA B starts at zero (A would get no gradient): give it values, so both are compared
        for n, p in model.named_parameters():
            if 'lora_B' in n: p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    model.config.use_cache = False
    return model.train()

def _forward(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out, {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}

@pytest.mark.parametrize('bits', [16, 4], ids=['lora', 'qlora'])
def test_packed_equals_padded(tiny_ckpt, shapes, bits):
    from llava_lora_nb.dataset import data_collator
    from llava_lora_nb.packing import per_record_losses
    data, _, folder = shapes
    ds, pds = _datasets(tiny_ckpt, data, folder)
    assert len(pds) < len(ds) and any(pds.has_image) and not all(pds.has_image)   # several records a row; both kinds of row
    order = [i for r in pds.rows for i in r]
    packed = data_collator(pds)([pds[j] for j in range(len(pds))])
    padded = data_collator(ds)([ds[i] for i in order])
    model = _model(tiny_ckpt, bits)
    if bits == 4: assert any(type(m).__name__ == 'Linear4bit' for m in model.modules())
    op, gp = _forward(model, packed)
    ou, gu = _forward(model, padded)
    lp, lu = per_record_losses(op.logits, packed['labels'], packed['position_ids']), per_record_losses(ou.logits, padded['labels'])
    assert len(lp) == len(ds)
    torch.testing.assert_close(lp, lu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(op.loss, ou.loss, rtol=1e-5, atol=1e-6)
    assert gp.keys() == gu.keys() and any('lora_A' in n for n in gp) and any('multi_modal_projector' in n for n in gp)
    for n in gp: torch.testing.assert_close(gp[n], gu[n], rtol=1e-4, atol=1e-6, msg=n)

def test_trainer_loss_normalisation_with_accumulation(tiny_ckpt, shapes, tmp_path):
    "Two accumulated micro-batches: the Trainer's `num_items_in_batch` and summed loss are the padded run's (same records, other split)."
    from llava_lora_nb.dataset import data_collator
    from llava_lora_nb.trainer import LLaVATrainer
    data, _, folder = shapes
    ds, pds = _datasets(tiny_ckpt, data, folder)
    model = _model(tiny_ckpt, 16)
    args = transformers.TrainingArguments(str(tmp_path), report_to='none', use_cpu=True, remove_unused_columns=False)
    tr = LLaVATrainer(model=model, args=args, train_dataset=pds, data_collator=data_collator(pds))
    assert tr.model_accepts_loss_kwargs
    h = len(pds) // 2
    pb = [data_collator(pds)([pds[j] for j in js]) for js in (range(h), range(h, len(pds)))]
    order = [i for r in pds.rows for i in r]
    ub = [data_collator(ds)([ds[i] for i in order[:7]]), data_collator(ds)([ds[i] for i in order[7:]])]
    n_p, n_u = tr._get_num_items_in_batch(pb, 'cpu'), tr._get_num_items_in_batch(ub, 'cpu')
    assert n_p == n_u > 0
    def total(batches, n):
        model.zero_grad()
        loss = sum(tr.compute_loss(model, dict(b), num_items_in_batch=n) for b in batches)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]
    (lp, gp), (lu, gu) = total(pb, n_p), total(ub, n_u)
    torch.testing.assert_close(lp, lu, rtol=1e-5, atol=1e-6)
    for a, b in zip(gp, gu): torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)

@pytest.mark.parametrize('bits', [16, 4], ids=['lora', 'qlora'])
def test_trainer_supervised_logits_same_loss_and_grads(tiny_ckpt, shapes, tmp_path, bits, monkeypatch):
    """`--supervised_logits` (the default): LLaVATrainer's training loss over two accumulated micro-batches, packed and
    padded, and every trainable gradient equal those of the standard loss (`--supervised_logits False`), with the
    Trainer's `num_items_in_batch`; evaluation keeps the standard loss."""
    from llava_lora_nb.dataset import data_collator
    from llava_lora_nb.trainer import LLaVATrainer
    from llava_lora_nb.arguments import TrainingArguments
    import llava_lora_nb.trainer as T
    calls, real = [], T.supervised_logits_loss
    monkeypatch.setattr(T, 'supervised_logits_loss', lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    data, _, folder = shapes
    ds, pds = _datasets(tiny_ckpt, data, folder)
    model = _model(tiny_ckpt, bits)
    h = len(pds) // 2
    batches = {'packed': [data_collator(pds)([pds[j] for j in js]) for js in (range(h), range(h, len(pds)))],
               'padded': [data_collator(ds)([ds[i] for i in range(k, k + 7)]) for k in (0, 7)]}
    def run(flag, bs):
        args = TrainingArguments(str(tmp_path/str(flag)), report_to='none', use_cpu=True, remove_unused_columns=False, supervised_logits=flag)
        tr = LLaVATrainer(model=model, args=args, train_dataset=pds, data_collator=data_collator(pds))
        n = tr._get_num_items_in_batch(bs, 'cpu')
        model.zero_grad()
        loss = sum(tr.compute_loss(model, dict(b), num_items_in_batch=n) for b in bs)
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    for name, bs in batches.items():
        calls.clear(); l1, g1 = run(True, bs); assert len(calls) == 2   # the new path, once per micro-batch
        calls.clear(); l0, g0 = run(False, bs); assert not calls        # the standard one
        torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
        assert sorted(g1) == sorted(g0) and any(g.abs().sum() > 0 for g in g0.values())
        for k in g0: torch.testing.assert_close(g1[k], g0[k], rtol=1e-4, atol=1e-6, msg=lambda m: f'{name} {k}: {m}')

FLAGS = ['--version', 'v1', '--lora_enable', 'True', '--lora_r', '8', '--lora_alpha', '16', '--learning_rate', '3e-3',
         '--mm_projector_lr', '1e-3', '--group_by_modality_length', 'True', '--per_device_train_batch_size', '2',
         '--model_max_length', '256', '--logging_steps', '1', '--report_to', 'none', '--disable_tqdm', 'True', '--seed', '7',
         '--packing', 'True']

def test_train_cli_packing(tmp_path, tiny_ckpt, shapes):
    "The console script with --packing True, modality-grouped rows and gradient accumulation: it trains on rows and learns."
    data, _, folder = shapes
    out = tmp_path/'out'
    r = run_cli('llava_lora_train', '--model_name_or_path', tiny_ckpt, '--data_path', data, '--image_folder', folder, '--output_dir', out,
                '--max_steps', '12', '--save_steps', '12', '--gradient_accumulation_steps', '2', *FLAGS)
    assert r.returncode == 0, r.stderr[-4000:]
    assert 'llava_lora_train: packing: PackedDataset(96 records in ' in r.stdout, r.stdout[-3000:]
    log = json.loads((out/'trainer_state.json').read_text())['log_history']
    losses = [x['loss'] for x in log if 'loss' in x]
    assert len(losses) == 12 and losses[-1] < 0.8 * losses[0], losses
    assert (out/'adapter_model.safetensors').exists()

class _Interrupt(Exception): pass

class _Stop(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 3: raise _Interrupt()

def test_packing_resume_matches(tmp_path, tiny_ckpt, shapes, capsys):
    "Interrupted after the checkpoint at step 2 and resumed: the packed run ends with the uninterrupted run's weights (same rows, same order)."
    from safetensors.torch import load_file
    from llava_lora_nb.arguments import parse_args
    from llava_lora_nb.train import train
    data, _, folder = shapes
    argv = lambda out: ['--model_name_or_path', str(tiny_ckpt), '--data_path', str(data), '--image_folder', str(folder),
                        '--output_dir', str(out), '--max_steps', '4', '--save_steps', '2', *FLAGS]
    train(*parse_args(argv(tmp_path/'full')), verbose=False)
    with pytest.raises(_Interrupt): train(*parse_args(argv(tmp_path/'cut')), callbacks=[_Stop()], verbose=False)
    assert (tmp_path/'cut'/'checkpoint-2').exists() and not (tmp_path/'cut'/'checkpoint-4').exists()
    capsys.readouterr()
    train(*parse_args(argv(tmp_path/'cut')), verbose=True)
    said = capsys.readouterr().out
    assert f"resuming from {tmp_path/'cut'/'checkpoint-2'}" in said and 'packing: PackedDataset(96 records in ' in said, said[-2000:]
    a, b = (load_file(str(tmp_path/d/'adapter_model.safetensors')) for d in ('full', 'cut'))
    assert a.keys() == b.keys()
    for k in a: torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)

@pytest.mark.parametrize('stage', ['zero2', 'zero3'])
def test_packing_deepspeed(tmp_path, tiny_ckpt, shapes, stage):
    "DeepSpeed ZeRO-2/3 (one CPU process) trains on packed rows (the worker of test_train_deepspeed.py)."
    sys.path.insert(0, str(Path(__file__).parent))
    from test_train_deepspeed import HERE, _env, _flags, _run
    data, _, folder = shapes
    out = tmp_path/stage
    r = _run([sys.executable, str(HERE), *_flags(tiny_ckpt, data, folder, out, '--deepspeed', stage, '--packing', 'True',
                                                 '--max_steps', '2', '--save_steps', '100')], _env())
    assert 'packing: PackedDataset(96 records in ' in r.stdout, r.stdout[-3000:]
    d = json.loads((out/'rank0.json').read_text())
    assert d['deepspeed_stage'] == int(stage[-1]) and d['digest_sum'] != 0, d
    assert (out/'adapter_model.safetensors').exists()
