"""LLaVA-NeXT (issue 16) end to end: train on images of several aspect ratios, reload, merge; the console scripts
train -> merge -> predict; DeepSpeed ZeRO-2/3 on CPU (text-only records: the model side alone)."""
import json, os, socket, subprocess, sys
from pathlib import Path
import pytest, torch

pytestmark = pytest.mark.e2e   # trains, merges or runs console scripts: not in `make test-fast`

HERE = Path(__file__).resolve()
def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _data_side_ready(ckpt, data, folder) -> bool:
    "True when the dataset gives LLaVA-NeXT batches (image_sizes) for an image record."
    from transformers import AutoProcessor
    from llava_lora_nb.dataset import LazySupervisedDataset
    ds = LazySupervisedDataset(str(data), str(folder), AutoProcessor.from_pretrained(ckpt), template='v1', model_max_length=512)
    recs = json.loads(Path(data).read_text())
    i = next(i for i, r in enumerate(recs) if 'image' in r)
    return 'image_sizes' in ds[i]

def _flags(ckpt, data, folder, out, *extra):
    return ['--model_name_or_path', str(ckpt), '--data_path', str(data), '--image_folder', str(folder), '--version', 'v1',
            '--lora_enable', 'True', '--lora_r', '8', '--lora_alpha', '16', '--learning_rate', '3e-3', '--mm_projector_lr', '1e-3',
            '--per_device_train_batch_size', '4', '--logging_steps', '1', '--model_max_length', '512', '--output_dir', str(out),
            '--report_to', 'none', '--disable_tqdm', 'True', '--seed', '0', *extra]

def test_next_images_train_reload_merge(tmp_path, next_ckpt, next_shapes):
    "LoRA on the tiny NeXT checkpoint with any-resolution images: the loss falls, image_newline trains, the output reloads and merges."
    data, folder = next_shapes
    assert _data_side_ready(next_ckpt, data, folder)   # the dataset gives any-resolution batches (image_sizes)
    from llava_lora_nb.arguments import parse_args
    from llava_lora_nb.train import train
    from llava_lora_nb.output import load_adapter_model, read_non_lora_trainables
    from llava_lora_nb.merge import merge_lora, probe_batch, logits_error, _logits, MERGE_TOLERANCE
    from transformers import LlavaNextForConditionalGeneration
    out = train(*parse_args(_flags(next_ckpt, data, folder, tmp_path/'out', '--max_steps', '12', '--save_steps', '6',
                                   '--group_by_modality_length', 'True')), verbose=False)
    log = [r['loss'] for r in json.loads((out/'trainer_state.json').read_text())['log_history'] if 'loss' in r]
    assert log[-1] < log[0], log
    base = LlavaNextForConditionalGeneration.from_pretrained(next_ckpt)
    trained = read_non_lora_trainables(out)
    assert not torch.equal(trained['model.image_newline'], base.model.image_newline)   # it got gradients from the images
    model, proc, _ = load_adapter_model(out)
    assert type(model.get_base_model()).__name__ == 'LlavaNextForConditionalGeneration'
    merge_lora(out, next_ckpt, tmp_path/'merged', progress=False)
    merged = LlavaNextForConditionalGeneration.from_pretrained(tmp_path/'merged').eval()
    batch = probe_batch(proc)
    assert logits_error(_logits(model, batch), _logits(merged, batch)) < MERGE_TOLERANCE[torch.float32]

# one worker runs both: the first DeepSpeed run on a machine compiles DeepSpeed's CPU shm op (~30 s); together, the second
# finds it built instead of waiting for it on the other worker
@pytest.mark.xdist_group('next_deepspeed')
@pytest.mark.parametrize('stage', ['zero2', 'zero3'])
def test_next_deepspeed_text_only(tmp_path, next_ckpt, stage):
    "`llava_lora_train --deepspeed zero2/zero3` on the tiny NeXT checkpoint (one CPU process, text-only records): complete, loadable outputs."
    from llava_lora_nb.testing import make_shapes_dataset
    from safetensors.torch import load_file
    from llava_lora_nb.output import load_adapter_model
    data = make_shapes_dataset(tmp_path/'text', n=16, seed=0, text_only=1.0)
    env = {**os.environ, 'TOKENIZERS_PARALLELISM': 'false', 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1', 'MASTER_ADDR': '127.0.0.1',
           'MASTER_PORT': str(_free_port()), 'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '1'}
    out = tmp_path/stage
    r = subprocess.run([str(Path(sys.executable).parent/'llava_lora_train'),
                        *_flags(next_ckpt, data, tmp_path/'text', out, '--deepspeed', stage, '--max_steps', '4', '--save_steps', '2')],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    for d in (out, out/'checkpoint-2'):
        nl = load_file(str(d/'non_lora_trainables.safetensors'))
        assert 'base_model.model.model.image_newline' in nl and all(v.numel() > 0 for v in nl.values())   # ZeRO-3: gathered
    model, proc, _ = load_adapter_model(out)
    assert type(model.get_base_model()).__name__ == 'LlavaNextForConditionalGeneration'
    assert all(p.numel() > 0 for p in model.parameters())

def test_next_predict_evaluate_gallery_with_images(tmp_path, next_adapter, next_shapes):
    "predict / evaluate / gallery on a NeXT model with images of several aspect ratios: `image_sizes` reaches `generate`."
    data, folder = next_shapes
    from PIL import Image
    from llava_lora_nb.prompts import build_inference_inputs
    from llava_lora_nb.validate import load_for_inference, predict, evaluate, gallery
    model, proc, _ = load_for_inference(next_adapter)
    recs = [r for r in json.loads(Path(data).read_text()) if 'image' in r]
    img = Image.open(Path(folder)/recs[0]['image'])
    assert 'image_sizes' in build_inference_inputs('What colour is the shape?', proc, image=img)
    a = predict(model, proc, img, 'What colour is the shape?', max_new_tokens=4)
    assert isinstance(a, str) and a == predict(model, proc, img, 'What colour is the shape?', max_new_tokens=4)
    res = evaluate(model, proc, recs[:4], folder, max_new_tokens=3, progress=False)
    assert res.summary['n'] == 4 and not res.summary.get('failed'), res.rows
    assert gallery(res.rows, folder).data.count('<img') == 4

def test_next_resume_restores_image_newline(tmp_path, next_ckpt, capsys):
    "A NeXT run stopped at a checkpoint resumes from it: the checkpoint's image_newline (a non-LoRA trainable) is the one training continues from."
    from safetensors.torch import load_file, save_file
    from llava_lora_nb.testing import make_shapes_dataset
    from llava_lora_nb.arguments import parse_args
    from llava_lora_nb.train import train
    data = make_shapes_dataset(tmp_path/'text', n=16, seed=0, text_only=1.0)
    flags = _flags(next_ckpt, data, tmp_path/'text', tmp_path/'out', '--save_steps', '2', '--weight_decay', '0.0')
    train(*parse_args(flags + ['--max_steps', '2']), verbose=False)
    ck = tmp_path/'out'/'checkpoint-2'
    nl = load_file(str(ck/'non_lora_trainables.safetensors'))
    marked = torch.full_like(nl['base_model.model.model.image_newline'], 0.25)   # text-only steps never move it: a value to find again
    save_file({**nl, 'base_model.model.model.image_newline': marked}, str(ck/'non_lora_trainables.safetensors'), metadata={'format': 'pt'})
    capsys.readouterr()
    out = train(*parse_args(flags + ['--max_steps', '4']), verbose=True)
    assert f"resuming from {ck}" in capsys.readouterr().out
    assert json.loads((out/'trainer_state.json').read_text())['global_step'] == 4
    assert torch.equal(load_file(str(out/'non_lora_trainables.safetensors'))['base_model.model.model.image_newline'], marked)


def test_next_cli_train_merge_predict(tmp_path, next_ckpt, next_shapes):
    "A user's three commands on a tiny NeXT checkpoint: llava_lora_train -> llava_lora_merge -> llava_lora_predict; no flag says NeXT."
    from transformers import LlavaNextForConditionalGeneration
    data, folder = next_shapes
    bin_ = Path(sys.executable).parent
    env = {**os.environ, 'TOKENIZERS_PARALLELISM': 'false', 'HF_HUB_OFFLINE': '1'}
    run = lambda *a: subprocess.run([str(bin_/a[0]), *map(str, a[1:])], env=env, capture_output=True, text=True, timeout=600)
    out, merged = tmp_path/'adapter', tmp_path/'merged'
    r = run('llava_lora_train', *_flags(next_ckpt, data, folder, out, '--max_steps', '4', '--save_strategy', 'no',
                                        '--eval_data_path', data, '--eval_steps', '2', '--eval_generate', 'True', '--eval_max_records', '6',
                                        '--per_device_eval_batch_size', '3'))   # (evaluated on its training records: the run stays as before)
    assert r.returncode == 0, r.stderr[-3000:]
    settings = json.loads((out/'llava_lora_settings.json').read_text())
    assert settings['image_aspect_ratio'] == 'anyres', settings
    evals = [x for x in json.loads((out/'trainer_state.json').read_text())['log_history'] if 'eval_loss' in x]
    assert [x['step'] for x in evals] == [2, 4] and all('eval_accuracy' in x for x in evals), evals   # batched any-resolution answers
    assert settings['data']['eval_records'] == len(json.loads(Path(data).read_text())) and 'llava_lora_train: final: train_loss' in r.stdout
    r = run('llava_lora_merge', '--model_path', out, '--model_base', next_ckpt, '--save_model_path', merged)
    assert r.returncode == 0, r.stderr[-3000:]
    assert type(LlavaNextForConditionalGeneration.from_pretrained(merged)).__name__ == 'LlavaNextForConditionalGeneration'
    rec = next(r for r in json.loads(Path(data).read_text()) if 'image' in r)
    q = rec['conversations'][0]['value'].replace('<image>', '').strip()
    a = run('llava_lora_predict', '--model-path', out, '--model-base', next_ckpt, '--image', folder/rec['image'], '--prompt', q, '--max_new_tokens', '4')
    b = run('llava_lora_predict', '--model-path', merged, '--image', folder/rec['image'], '--prompt', q, '--max_new_tokens', '4')
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-2000:] + b.stderr[-2000:]
    assert a.stdout.strip() and a.stdout == b.stdout   # the merged model answers as adapter + base
    c = run('llava_lora_merge', '--model_path', out, '--model_base', tmp_path/'nope', '--save_model_path', tmp_path/'m2')
    assert c.returncode == 2 and 'nope' in c.stderr and 'Traceback' not in c.stderr
