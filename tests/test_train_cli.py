"`llava_lora_train` as a user runs it: a subprocess with the original `train.py` flags."
import json
from pathlib import Path
from conftest import run_cli
import pytest

pytestmark = pytest.mark.e2e   # trains, merges or runs console scripts: not in `make test-fast`

ORIGINAL_FLAGS = [  # as in LLaVA's scripts/v1_5/finetune_task_lora.sh, scaled down
    '--version', 'v1', '--lora_enable', 'True', '--lora_r', '8', '--lora_alpha', '16', '--mm_projector_lr', '1e-3',
    '--vision_tower', 'openai/clip-vit-tiny-patch8-32', '--mm_projector_type', 'mlp2x_gelu', '--mm_vision_select_layer', '-2',
    '--mm_use_im_start_end', 'False', '--mm_use_im_patch_token', 'False', '--image_aspect_ratio', 'pad',
    '--group_by_modality_length', 'True', '--bf16', 'True', '--num_train_epochs', '1', '--per_device_train_batch_size', '4',
    '--gradient_accumulation_steps', '1', '--evaluation_strategy', 'no', '--save_strategy', 'steps', '--save_total_limit', '3',
    '--learning_rate', '3e-3', '--weight_decay', '0.', '--warmup_ratio', '0.03', '--lr_scheduler_type', 'cosine',
    '--logging_steps', '2', '--tf32', 'True', '--model_max_length', '256', '--gradient_checkpointing', 'True',
    '--dataloader_num_workers', '0', '--lazy_preprocess', 'True', '--report_to', 'none']

WANT = {'adapter_config.json', 'adapter_model.safetensors', 'non_lora_trainables.safetensors',
        'config.json', 'llava_lora_settings.json', 'processor_config.json', 'tokenizer_config.json'}

def test_train_cli_original_flags(tmp_path, tiny_ckpt, shapes):
    data, _, folder = shapes
    out = tmp_path/'out'
    r = run_cli('llava_lora_train', '--model_name_or_path', tiny_ckpt, '--data_path', data, '--image_folder', folder,
                '--output_dir', out, '--max_steps', '16', '--save_steps', '8', *ORIGINAL_FLAGS)
    assert r.returncode == 0, r.stderr[-4000:]
    assert 'note: --mm_projector_type mlp2x_gelu' in r.stdout and 'data OK' in r.stdout
    log = json.loads((out/'trainer_state.json').read_text())['log_history']
    losses = [x['loss'] for x in log if 'loss' in x]
    assert losses[-1] < 0.8 * losses[0], losses                              # it learns
    assert all('learning_rate' in x for x in log if 'loss' in x)
    for d in (out, out/'checkpoint-8', out/'checkpoint-16'):
        files = {p.name for p in d.iterdir()}
        assert WANT <= files, (d, files)
    assert (out/'loss.png').stat().st_size > 1000
    s = json.loads((out/'llava_lora_settings.json').read_text())
    assert s['version'] == 'v1' and s['lora']['lora_r'] == 8 and s['model_name_or_path'] == str(tiny_ckpt)
    import yaml
    assert yaml.safe_load((out/'README.md').read_text().split('---')[1])['base_model'] == str(tiny_ckpt)   # the Hub model card names the base
    # issue 13 item 4: the run records its base, and a merge onto another base of the same shapes is refused
    from llava_lora_nb.output import base_fingerprint
    from llava_lora_nb.testing import save_tiny_checkpoint
    assert s['base_fingerprint'] == base_fingerprint(tiny_ckpt)
    other = save_tiny_checkpoint(tmp_path/'other-seed', seed=1)
    r = run_cli('llava_lora_merge', '--model-path', out, '--model-base', other, '--save-model-path', tmp_path/'merged', '--streaming')
    assert r.returncode == 2 and '--allow-other-base' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path/'merged').exists()

def test_train_cli_refuses_bad_data(tmp_path, tiny_ckpt, shapes):
    _, _, folder = shapes
    bad = tmp_path/'bad.json'
    bad.write_text(json.dumps([{'id': 'no-such-image', 'image': 'images/missing.png', 'conversations': [
        {'from': 'human', 'value': '<image>\nWhat colour?'}, {'from': 'gpt', 'value': 'red'}]},
        {'id': 'wrong-role', 'conversations': [{'from': 'gpt', 'value': 'hi'}]}]))
    r = run_cli('llava_lora_train', '--model_name_or_path', tiny_ckpt, '--data_path', bad, '--image_folder', folder,
                '--output_dir', tmp_path/'out', '--report_to', 'none')
    assert r.returncode == 2, r.stderr[-3000:]
    assert 'no-such-image' in r.stderr and 'wrong-role' in r.stderr
    assert not (tmp_path/'out'/'adapter_model.safetensors').exists()

def test_train_cli_refuses_inconsistent_architecture(tmp_path, tiny_ckpt, shapes):
    data, _, folder = shapes
    r = run_cli('llava_lora_train', '--model_name_or_path', tiny_ckpt, '--data_path', data, '--image_folder', folder,
                '--output_dir', tmp_path/'out', '--report_to', 'none', '--mm_projector_type', 'linear',
                '--mm_vision_select_layer', '-1', '--mm_use_im_start_end', 'True')
    assert r.returncode == 2
    for s in ('--mm_projector_type linear', 'pass -2', '--mm_use_im_start_end True'): assert s in r.stderr, r.stderr[-3000:]

def test_train_cli_yaml_config(tmp_path, tiny_ckpt, shapes):
    data, _, folder = shapes
    cfg = tmp_path/'run.yaml'
    cfg.write_text(f"model_name_or_path: {tiny_ckpt}\ndata_path: {data}\nimage_folder: {folder}\noutput_dir: {tmp_path/'out'}\n"
                   "lora_enable: true\nlora_r: 4\nmax_steps: 2\nper_device_train_batch_size: 2\nreport_to: none\nsave_strategy: 'no'\n")
    r = run_cli('llava_lora_train', cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path/'out'/'adapter_config.json').read_text())['r'] == 4

def test_train_cli_refuses_multiprocess_deepspeed_without_gpu(tmp_path, tiny_ckpt, shapes):
    "accelerate cannot set DeepSpeed up between CPU processes: say so instead of training each process alone."
    import pytest, torch
    if torch.cuda.is_available(): pytest.skip('GPU machine: multi-process DeepSpeed is supported')
    data, _, folder = shapes
    r = run_cli('llava_lora_train', '--model_name_or_path', tiny_ckpt, '--data_path', data, '--image_folder', folder,
                '--output_dir', tmp_path/'out', '--report_to', 'none', '--deepspeed', 'zero2',
                env={'WORLD_SIZE': '2', 'RANK': '0', 'LOCAL_RANK': '0', 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': '29999'})
    assert r.returncode == 2 and 'without --deepspeed' in r.stderr, r.stderr[-3000:]

def test_train_cli_data_cache_trains_identically(tmp_path, tiny_ckpt, shapes):
    "--data_cache_dir: the cache is built, reused by the next run, and training on it is the same as on the plain path."
    data, _, folder = shapes
    cache = tmp_path/'cache'
    def train(out, *extra):
        r = run_cli('llava_lora_train', '--model_name_or_path', tiny_ckpt, '--data_path', data, '--image_folder', folder,
                    '--output_dir', tmp_path/out, '--max_steps', '6', '--save_steps', '100', *ORIGINAL_FLAGS, *extra)
        assert r.returncode == 0, r.stderr[-4000:]
        log = json.loads((tmp_path/out/'trainer_state.json').read_text())['log_history']
        return [x['loss'] for x in log if 'loss' in x], r
    plain, _ = train('plain')
    cached, _ = train('cached', '--data_cache_dir', cache)
    manifest = json.loads((cache/'manifest.json').read_text())
    assert manifest['n_records'] == len(json.loads(Path(data).read_text())) and manifest['n_images'] > 0
    assert cached == plain, (cached, plain)
    built_at = (cache/'images.npy').stat().st_mtime_ns
    again, r = train('again', '--data_cache_dir', cache)
    assert again == plain and (cache/'images.npy').stat().st_mtime_ns == built_at   # reused, not rebuilt
    assert 'rebuilding' not in r.stderr

def _hub_cache(cache, ckpt, repo='tiny-org/tiny-llava'):
    "A Hugging Face hub cache holding `ckpt` as `repo` (the layout from_pretrained resolves offline)."
    import shutil
    d = Path(cache)/f"models--{repo.replace('/', '--')}"
    shutil.copytree(ckpt, d/'snapshots'/('0' * 40))
    (d/'refs').mkdir(); (d/'refs'/'main').write_text('0' * 40)
    return repo

def test_train_cli_cache_dir_and_lora_header(tmp_path, tiny_ckpt, shapes):
    "--cache_dir reaches from_pretrained (a Hub id resolved offline from it); the first lines print the LoRA settings in force."
    data, _, folder = shapes
    repo = _hub_cache(tmp_path/'hub', tiny_ckpt)
    common = ['--model_name_or_path', repo, '--data_path', data, '--image_folder', folder, '--version', 'v1',
              '--report_to', 'none', '--max_steps', '1', '--save_strategy', 'no', '--per_device_train_batch_size', '2']
    r = run_cli('llava_lora_train', *common, '--output_dir', tmp_path/'out', '--cache_dir', tmp_path/'hub', '--lora_enable', 'True',
                '--lora_r', '8', '--lora_alpha', '16', '--lora_dropout', '0.1', '--mm_projector_lr', '1e-3', '--lora_weight_path', 'old/x.bin')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'llava_lora_train: trains: LoRA adapters on the language model + the projector' in r.stdout, r.stdout
    assert 'LoRA: r=8, alpha=16 (alpha/r = 2), dropout=0.1, bits=16, bias=none, targets=' in r.stdout, r.stdout
    assert 'q_proj' in r.stdout and 'projector lr 0.001' in r.stdout and 'the original train.py\'s are r=64, alpha=16' in r.stdout
    assert 'note: --lora_weight_path old/x.bin is ignored' in r.stdout
    assert json.loads((tmp_path/'out'/'llava_lora_settings.json').read_text())['model_name_or_path'] == repo
    # without --cache_dir the id is not found: one line naming it, exit 2
    r = run_cli('llava_lora_train', *common, '--output_dir', tmp_path/'out2')
    assert r.returncode == 2 and f'--model_name_or_path {repo}: no such folder' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-3000:]

def test_train_cli_one_line_errors(tmp_path, tiny_ckpt, shapes):
    "A nonexistent model folder, an --output_dir that is a file, --report_to wandb without wandb: one line naming it, exit 2."
    import importlib.util
    data, _, folder = shapes
    common = ['--data_path', data, '--image_folder', folder, '--max_steps', '1']
    cases = [(['--model_name_or_path', tmp_path/'no-such-model', '--output_dir', tmp_path/'o', '--report_to', 'none'],
              f'--model_name_or_path {tmp_path/"no-such-model"}'),
             (['--model_name_or_path', tiny_ckpt, '--output_dir', data, '--report_to', 'none'], f'--output_dir {data} is a file')]
    if importlib.util.find_spec('wandb') is None:
        cases.append((['--model_name_or_path', tiny_ckpt, '--output_dir', tmp_path/'o', '--report_to', 'wandb'],
                      'the wandb package is not installed; install it (pip install wandb) or pass --report_to none'))
    for args, want in cases:
        r = run_cli('llava_lora_train', *args, *common)
        assert r.returncode == 2 and want in r.stderr and 'Traceback' not in r.stderr, (args, r.stderr[-3000:])

def test_train_cli_truncated_weights_on_resume(tmp_path, tiny_ckpt, shapes):
    "A truncated adapter_model / non_lora_trainables safetensors in the checkpoint resumed from: one line naming the file, exit 2."
    import shutil
    data, _, folder = shapes
    out = tmp_path/'out'
    args = ['--model_name_or_path', tiny_ckpt, '--data_path', data, '--image_folder', folder, '--output_dir', out, '--version', 'v1',
            '--lora_enable', 'True', '--lora_r', '4', '--report_to', 'none', '--per_device_train_batch_size', '2', '--save_steps', '1']
    r = run_cli('llava_lora_train', *args, '--max_steps', '1')
    assert r.returncode == 0, r.stderr[-3000:]
    from llava_lora_nb.checkpoints import write_complete_marker
    ck = out/'checkpoint-1'
    for name in ('adapter_model.safetensors', 'non_lora_trainables.safetensors'):
        f = ck/name
        keep = f.read_bytes(); f.write_bytes(keep[:len(keep) // 2])
        if name == 'adapter_model.safetensors':   # cut short after its save: the marker's size says so, before anything loads
            r = run_cli('llava_lora_train', *args, '--max_steps', '2', '--resume_from_checkpoint', ck)
            assert r.returncode == 2 and f'{name} (cut short' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-3000:]
        write_complete_marker(ck)   # damaged with a marker that agrees: the file itself is read, and refused
        r = run_cli('llava_lora_train', *args, '--max_steps', '2')
        assert r.returncode == 2 and f'{f} cannot be read' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-3000:]
        f.write_bytes(keep); write_complete_marker(ck)

def test_train_and_merge_from_original_layout_checkpoint(tmp_path, shapes):
    "An original-layout checkpoint (LlavaLlamaForCausalLM, as liuhaotian/llava-v1.5-13b) trains (converted once) and merges onto itself both ways."
    from llava_lora_nb.testing_original import save_tiny_original_checkpoint
    from llava_lora_nb.merge import checkpoint_tensors, same_tensors
    data, _, folder = shapes
    orig, _ = save_tiny_original_checkpoint(tmp_path/'llava-v1.5-tiny')
    out = tmp_path/'out'
    r = run_cli('llava_lora_train', '--model_name_or_path', orig, '--data_path', data, '--image_folder', folder, '--version', 'v1',
                '--lora_enable', 'True', '--lora_r', '8', '--lora_alpha', '16', '--max_steps', '2', '--per_device_train_batch_size', '4',
                '--output_dir', out, '--report_to', 'none', '--disable_tqdm', 'True')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'original LLaVA layout' in r.stdout and (out/'adapter_model.safetensors').exists()
    for extra, m in (((), 'm1'), (('--streaming',), 'm2')):
        r = run_cli('llava_lora_merge', '--model-path', out, '--model-base', orig, '--save-model-path', tmp_path/m, *extra)
        assert r.returncode == 0 and 'verified' in r.stdout, r.stderr[-3000:]
    assert same_tensors(checkpoint_tensors(tmp_path/'m1'), checkpoint_tensors(tmp_path/'m2'))

def test_train_cli_validation_and_best_model(tmp_path, tiny_ckpt, shapes):
    """Issue 18: --eval_data_path gives a validation loss (and with --eval_generate an exact-match accuracy) every --eval_steps,
    in trainer_state.json and the model card; --load_best_model_at_end leaves the best checkpoint's adapter AND projector in
    the output folder (here 'best' is the highest validation loss, so that it is not the last step)."""
    from safetensors.torch import load_file
    data, heldout, folder = shapes
    out = tmp_path/'out'
    r = run_cli('llava_lora_train', '--model_name_or_path', tiny_ckpt, '--data_path', data, '--image_folder', folder,
                '--output_dir', out, '--version', 'v1', '--lora_enable', 'True', '--lora_r', '8', '--lora_alpha', '16',
                '--learning_rate', '3e-3', '--mm_projector_lr', '1e-3', '--per_device_train_batch_size', '4', '--max_steps', '12',
                '--logging_steps', '2', '--save_steps', '4', '--model_max_length', '256', '--report_to', 'none',
                '--eval_data_path', heldout, '--eval_steps', '4', '--eval_generate', 'True', '--eval_max_records', '8',
                '--per_device_eval_batch_size', '4', '--load_best_model_at_end', 'True', '--metric_for_best_model', 'loss',
                '--greater_is_better', 'True')
    assert r.returncode == 0, r.stderr[-4000:]
    state = json.loads((out/'trainer_state.json').read_text())
    evals = [x for x in state['log_history'] if 'eval_loss' in x]
    assert [x['step'] for x in evals][:3] == [4, 8, 12], evals
    assert all(0 <= x['eval_accuracy'] <= 1 for x in evals)
    worst = max(evals[:3], key=lambda x: x['eval_loss'])['step']
    assert worst != 12 and state['best_model_checkpoint'] == str(out/f'checkpoint-{worst}'), (worst, state['best_model_checkpoint'])
    for f in ('adapter_model.safetensors', 'non_lora_trainables.safetensors'):
        saved, best, last = (load_file(d/f) for d in (out, out/f'checkpoint-{worst}', out/'checkpoint-12'))
        assert all((saved[k] == best[k]).all() for k in best), f
        assert any((saved[k] != last[k]).any() for k in last), f
    assert evals[-1]['eval_loss'] == evals[[x['step'] for x in evals].index(worst)]['eval_loss']   # final metrics: the saved (best) model's
    card = (out/'README.md').read_text()
    assert '| validation loss (eval_loss) |' in card
    assert '| validation records | 32, `heldout.json` |' in card and '| training records | 96 (' in card
    assert f'| weights from (`--load_best_model_at_end`) | `checkpoint-{worst}`' in card and '| mean training loss |' in card
    assert '| validation exact match (eval_accuracy, on 8 of them) |' in card   # --eval_max_records 8 of the 32

def test_train_cli_validation_flag_errors(tmp_path, tiny_ckpt, shapes, capsys):
    import pytest
    from llava_lora_nb.train import train_cli
    data, heldout, folder = shapes
    base = ['--model_name_or_path', tiny_ckpt, '--data_path', data, '--image_folder', folder, '--output_dir', tmp_path/'out', '--report_to', 'none']
    for extra, said in ((['--eval_strategy', 'steps'], 'pass --eval_data_path'),
                        (['--eval_generate', 'True'], 'needs held-out data'),
                        (['--val_size', '0.1', '--eval_data_path', heldout], 'pass one of them'),
                        (['--val_size', '96'], 'number from 1 to 95'),
                        (['--eval_data_path', heldout, '--metric_for_best_model', 'accuracy'], 'needs --eval_generate True'),
                        (['--load_best_model_at_end', 'True'], '--load_best_model_at_end True: there is nothing to evaluate on'),
                        (['--val_size', '9', '--load_best_model_at_end', 'True', '--save_strategy', 'no'], 'needs checkpoints to choose from'),
                        (['--val_size', '1.5'], 'whole number of records'),
                        (['--eval_data_pth', heldout], 'unknown flag(s) --eval_data_pth (did you mean --eval_data_path'),
                        (['--debug'], "--debug is transformers' flag and needs a value"),   # ours is --traceback
                        (['--debug', 'no_such_option'], "argument --debug: invalid DebugOption value: 'no_such_option'")):
        with pytest.raises(SystemExit) as e: train_cli([str(a) for a in base + extra])   # the console script's function, in-process
        err = capsys.readouterr().err
        assert e.value.code == 2 and said in err and 'Traceback' not in err, (extra, err[-2000:])
    assert not (tmp_path/'out'/'adapter_model.safetensors').exists()
