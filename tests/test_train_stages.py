"What a run trains and writes (issue 13): full finetunes written once and loadable, projector-only runs chained into LoRA."
import json
from pathlib import Path
import pytest, torch, transformers
from conftest import run_cli
from llava_lora_nb.arguments import parse_args
from llava_lora_nb.train import train
from llava_lora_nb.output import MM_PROJECTOR_NAME, NON_LORA_NAME, SETTINGS_NAME, load_adapter_model

pytestmark = pytest.mark.e2e   # trains, merges or runs console scripts: not in `make test-fast`

SMALL = ['--version', 'v1', '--per_device_train_batch_size', '4', '--model_max_length', '256', '--report_to', 'none',
         '--dataloader_num_workers', '0', '--seed', '0', '--disable_tqdm', 'True']
PROJ_KEYS = ['model.mm_projector.0.bias', 'model.mm_projector.0.weight', 'model.mm_projector.2.bias', 'model.mm_projector.2.weight']

def test_full_finetune_says_so_writes_once_and_loads(tmp_path, tiny_ckpt, shapes):
    "No --lora_enable: the original's full finetune, announced in the first lines, the weights written once, loadable in predict/eval."
    data, heldout, folder = shapes
    out = tmp_path/'full'
    r = run_cli('llava_lora_train', '--model_name_or_path', tiny_ckpt, '--data_path', data, '--image_folder', folder,
                '--output_dir', out, '--max_steps', '2', '--save_steps', '2', '--learning_rate', '1e-3', *SMALL)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'llava_lora_train: trains: the FULL model' in r.stdout and 'no --lora_enable' in r.stdout, r.stdout
    base = transformers.LlavaForConditionalGeneration.from_pretrained(tiny_ckpt)
    n_train = sum(p.numel() for n, p in base.named_parameters() if 'vision_tower' not in n)
    n_all = sum(p.numel() for p in base.parameters())
    assert f'trainable parameters: {n_train:,} of {n_all:,}' in r.stdout, r.stdout
    assert 'memory estimate: ' in r.stdout and 'LoRA: none' in r.stdout and 'gradient clipping: max_grad_norm 1.0' in r.stdout
    for d in (out, out/'checkpoint-2'):
        files = {p.name for p in d.iterdir()}
        assert 'model.safetensors' in files, files
        assert not [f for f in files if f.startswith((NON_LORA_NAME, 'adapter_'))], files   # the weights once
        assert json.loads((d/SETTINGS_NAME).read_text())['trained'] == 'full'
    from safetensors.torch import load_file
    sd = load_file(str(out/'model.safetensors'))
    k = next(k for k in sd if 'layers.0.self_attn.q_proj.weight' in k)
    assert not torch.equal(sd[k], load_file(str(Path(tiny_ckpt)/'model.safetensors'))[k])   # it trained
    m, _, _ = load_adapter_model(out)
    assert torch.equal(m.model.language_model.layers[0].self_attn.q_proj.weight, sd[k])
    rec = json.loads(Path(heldout).read_text())[0]
    p = run_cli('llava_lora_predict', '--model-path', out, '--image', folder/rec['image'], '--prompt', 'Which shape is shown?',
                '--max_new_tokens', '3')
    assert p.returncode == 0 and 'Traceback' not in p.stderr, p.stderr[-3000:]
    e = run_cli('llava_lora_eval', '--model-path', out/'checkpoint-2', '--data', heldout, '--image_folder', folder,
                '--limit', '4', '--max_new_tokens', '3', '--output', tmp_path/'eval.jsonl')
    assert e.returncode == 0, e.stderr[-3000:]
    assert len((tmp_path/'eval.jsonl').read_text().splitlines()) == 4

class Interrupt(Exception): pass

class Stop(transformers.TrainerCallback):
    def __init__(self, k): self.k = k
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.k: raise Interrupt(f"stopped at step {self.k}")

class StartingProjector(transformers.TrainerCallback):
    "The projector's weights when training starts."
    def on_train_begin(self, args, state, control, model=None, **kw):
        self.w = {n.split('multi_modal_projector.')[-1].replace('modules_to_save.default.', ''): p.detach().clone()
                  for n, p in model.named_parameters() if 'multi_modal_projector.' in n and 'original_module' not in n}

def test_projector_only_stage_chains_into_lora(tmp_path, tiny_ckpt, shapes):
    "--tune_mm_mlp_adapter writes mm_projector.bin (original keys) in the output and each checkpoint; it resumes; --pretrain_mm_mlp_adapter loads it."
    data, _, folder = shapes
    def args(out, *x):
        return parse_args(['--model_name_or_path', str(tiny_ckpt), '--data_path', str(data), '--image_folder', str(folder),
                           '--output_dir', str(out), '--max_steps', '4', '--save_steps', '2', '--learning_rate', '1e-2', *SMALL, *x])
    pre = tmp_path/'pretrain'
    train(*args(pre, '--tune_mm_mlp_adapter', 'True'), verbose=False)
    for d in (pre, pre/'checkpoint-2', pre/'checkpoint-4'):
        files = {p.name for p in d.iterdir() if p.is_file()}
        assert {MM_PROJECTOR_NAME, 'config.json', SETTINGS_NAME} <= files, (d, files)
        assert not [f for f in files if f.endswith('.safetensors') or f.startswith(NON_LORA_NAME)], (d, files)  # not the whole model
        assert sorted(torch.load(d/MM_PROJECTOR_NAME, weights_only=True)) == PROJ_KEYS
    assert json.loads((pre/SETTINGS_NAME).read_text())['trained'] == 'projector'
    sd = torch.load(pre/MM_PROJECTOR_NAME, weights_only=True)
    base = transformers.LlavaForConditionalGeneration.from_pretrained(tiny_ckpt).model.multi_modal_projector
    assert not torch.equal(sd['model.mm_projector.0.weight'], base.linear_1.weight)    # it trained
    m, _, _ = load_adapter_model(pre/'checkpoint-4')
    assert torch.equal(m.model.multi_modal_projector.linear_2.weight, sd['model.mm_projector.2.weight'])
    # interrupted after checkpoint-2, resumed: the same projector as the uninterrupted run
    with pytest.raises(Interrupt): train(*args(tmp_path/'again', '--tune_mm_mlp_adapter', 'True'), callbacks=[Stop(3)], verbose=False)
    train(*args(tmp_path/'again', '--tune_mm_mlp_adapter', 'True'), verbose=False)
    again = torch.load(tmp_path/'again'/MM_PROJECTOR_NAME, weights_only=True)
    for k in PROJ_KEYS: torch.testing.assert_close(again[k], sd[k], rtol=0, atol=1e-6, msg=k)
    # stage 2: LoRA starting from that projector
    cap = StartingProjector()
    train(*args(tmp_path/'lora', '--lora_enable', 'True', '--lora_r', '4', '--pretrain_mm_mlp_adapter', str(pre/MM_PROJECTOR_NAME),
                '--max_steps', '1', '--save_strategy', 'no'), callbacks=[cap], verbose=False)
    for ours, orig in (('linear_1', '0'), ('linear_2', '2')):
        for t in ('weight', 'bias'): assert torch.equal(cap.w[f'{ours}.{t}'], sd[f'model.mm_projector.{orig}.{t}']), (ours, t)
