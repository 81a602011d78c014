"""A long run you can trust (issue 25): one test per fault a preempted, restarted, edited run meets. Process-level faults
(a second process, SIGTERM) use the real console script in a subprocess; the rest run in-process on the tiny model.
The README's "Guarantees" table points here. A kill -9 during a checkpoint save is `test_train_resume.py::
test_kill_during_checkpoint_save_resumes`; the input checks made before anything loads are in `test_train_cli.py`,
`test_data_cli.py` and `test_validate.py` (listed in the same table)."""
import json, os, signal, socket, subprocess, sys, time
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from conftest import BIN

pytestmark = pytest.mark.e2e

def _argv(ckpt, data, folder, out, *extra, steps=2):
    return ['--model_name_or_path', str(ckpt), '--data_path', str(data), '--image_folder', str(folder), '--output_dir', str(out),
            '--version', 'v1', '--lora_enable', 'True', '--lora_r', '8', '--lora_alpha', '16', '--lora_dropout', '0.1',
            '--learning_rate', '3e-3', '--per_device_train_batch_size', '4', '--max_steps', str(steps), '--save_steps', '1',
            '--logging_steps', '1', '--model_max_length', '256', '--report_to', 'none', '--seed', '7', '--disable_tqdm', 'True', *extra]

def _train(*argv):
    from llava_lora_nb.arguments import parse_args
    from llava_lora_nb.train import train
    return train(*parse_args(list(argv)), verbose=False)

def _weights(folder):
    f = Path(folder)
    return {**load_file(str(f/'adapter_model.safetensors')), **load_file(str(f/'non_lora_trainables.safetensors'))}

def _start(argv):
    "The console script in its own process, its output read line by line."
    env = {**os.environ, 'TOKENIZERS_PARALLELISM': 'false', 'HF_HUB_OFFLINE': '1', 'PYTHONUNBUFFERED': '1'}
    return subprocess.Popen([str(BIN/'llava_lora_train'), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

def _wait_for_step(p, timeout=300):
    "Read the child's stdout until its first logged training loss (it is past step 1)."
    t0 = time.time()
    for line in p.stdout:
        if "'loss'" in line: return line
        assert time.time() - t0 < timeout, 'no training step logged'
    raise AssertionError(f'the run ended before its first step: {p.wait()} {p.stderr.read()[-3000:]}')

def test_one_run_per_folder_and_sigterm_saves(tmp_path, tiny_ckpt, shapes, tiny_adapter):
    "A second training (and a merge) into a live run's folder is refused within seconds, naming the holder; the first run goes on, and SIGTERM makes it save a complete checkpoint and exit 143."
    from llava_lora_nb.core import lock_path, FolderInUse
    from llava_lora_nb.merge import merge_lora
    from llava_lora_nb.checkpoints import checkpoint_missing
    data, _, folder = shapes
    out = tmp_path/'out'
    argv = _argv(tiny_ckpt, data, folder, out, '--save_steps', '1000', steps=400)
    p = _start(argv)
    try:
        t0 = time.time()
        while not lock_path(out).exists():
            assert p.poll() is None and time.time() - t0 < 300, p.stderr.read()[-3000:]
            time.sleep(0.05)
        t1 = time.time()
        with pytest.raises(FolderInUse, match=f'in use by llava_lora_train \\(pid {p.pid} on '): _train(*argv)   # a second notebook cell
        assert time.time() - t1 < 10
        with pytest.raises(FolderInUse, match=f'pid {p.pid}'): merge_lora(tiny_adapter, tiny_ckpt, out, overwrite=True)
        _wait_for_step(p)                                   # the first run trains on, unharmed
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=300)
        err = p.stderr.read()
    finally:
        if p.poll() is None: p.kill()
    assert rc == 143, err[-3000:]
    assert 'SIGTERM: finishing this step, saving a checkpoint' in err and 'Traceback' not in err, err[-3000:]
    saved = [c for c in out.glob('checkpoint-*')]
    assert len(saved) == 1 and f'saved {saved[0]}' in err and checkpoint_missing(saved[0]) == [], err[-3000:]
    assert not lock_path(out).exists()                   # released on the way out
    assert not (out/'README.md').exists()                # a stopped run is not a finished one

def test_sigterm_then_resume_is_the_uninterrupted_run(tmp_path, tiny_ckpt, shapes):
    "SIGTERM after a few steps leaves a checkpoint that resumes to the same weights as an uninterrupted run, bitwise on CPU."
    data, _, folder = shapes
    ref, out = tmp_path/'ref', tmp_path/'out'
    extra = ('--save_steps', '100', '--group_by_modality_length', 'True', '--mm_projector_lr', '1e-3')
    p = _start(_argv(tiny_ckpt, data, folder, out, *extra, steps=24))
    try:
        _wait_for_step(p); p.send_signal(signal.SIGTERM); rc = p.wait(timeout=300); err = p.stderr.read()
    finally:
        if p.poll() is None: p.kill()
    assert rc == 143, err[-3000:]
    (ck,) = out.glob('checkpoint-*')
    step = int(ck.name.split('-')[1])
    assert 0 < step < 24 and step % 100 != 0             # saved because of the signal, not the schedule
    _train(*_argv(tiny_ckpt, data, folder, out, *extra, steps=24))   # the same command again: resumes from it
    _train(*_argv(tiny_ckpt, data, folder, ref, *extra, steps=24))   # never interrupted
    assert json.loads((out/'trainer_state.json').read_text())['global_step'] == 24
    a, b = _weights(ref), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    resumed = json.loads((out/'llava_lora_settings.json').read_text())['resumes']
    assert [r['step'] for r in resumed] == [step] and f'| resumed | at step {step}' in (out/'README.md').read_text()

@pytest.fixture
def two_steps(tmp_path, tiny_ckpt, shapes):
    "A run of 2 steps with checkpoint-1 and checkpoint-2, and a copy of its data file to edit."
    import shutil
    data, _, folder = shapes
    mine = tmp_path/'data.json'; shutil.copy(data, mine)
    out = tmp_path/'out'
    _train(*_argv(tiny_ckpt, mine, folder, out))
    return out, mine, folder

def test_resume_under_changed_settings_refused_before_loading(two_steps, tiny_ckpt, monkeypatch):
    "A restart with another --lora_r, --lora_alpha, template or an edited data file is refused in one line, old -> new, before the model loads; a longer run is allowed and noted in the card."
    from llava_lora_nb import loading
    from llava_lora_nb.checkpoints import ResumeMismatch
    out, data, folder = two_steps
    base = _argv(tiny_ckpt, data, folder, out, steps=3)
    def at(flag, value): i = base.index(flag); return base[:i + 1] + [value] + base[i + 2:]
    real = loading.load_for_training
    def no_load(*a, **k): raise AssertionError('the model was loaded before the refusal')
    monkeypatch.setattr(loading, 'load_for_training', no_load)
    for argv, said in ((at('--lora_r', '16'), '--lora_r 8 -> 16'), (at('--lora_alpha', '32'), '--lora_alpha 16 -> 32'),
                       (at('--version', 'chatml_direct'), "--version (the template) 'v1' -> 'chatml_direct'")):
        with pytest.raises(ResumeMismatch, match=said.replace('(', r'\(').replace(')', r'\)')): _train(*argv)
    recs = json.loads(data.read_text()); data.write_text(json.dumps(recs + [{**r, 'id': f'more-{i}'} for i, r in enumerate(recs[:2])]))   # records appended
    with pytest.raises(ResumeMismatch, match='the training data .* -> sha256:.*--allow_data_change True'): _train(*base)
    monkeypatch.setattr(loading, 'load_for_training', real)
    _train(*base, '--allow_data_change', 'True')          # deliberate: resumes, and says so in the card
    card = (out/'README.md').read_text()
    assert '| resumed | at step 2 from `checkpoint-2` (data_sha256 ' in card and 'max_steps 2 → 3' in card, card

def test_incomplete_checkpoints_skipped_or_refused(two_steps, tiny_ckpt):
    "A latest checkpoint lacking a file a resume needs is skipped with a warning naming it and the file (and kept); asked for by name, it is refused."
    from llava_lora_nb.checkpoints import checkpoint_problem
    out, data, folder = two_steps
    ck = out/'checkpoint-2'
    for f in ('optimizer.pt', 'scheduler.pt', 'rng_state.pth', 'non_lora_trainables.safetensors', 'trainer_state.json'):
        (ck/f).rename(ck/'aside'); assert f in checkpoint_problem(ck); (ck/'aside').rename(ck/f)
    assert checkpoint_problem(ck) is None
    (ck/'optimizer.pt').unlink()                           # a sync that stopped
    with pytest.raises(ValueError, match='missing optimizer.pt'):
        _train(*_argv(tiny_ckpt, data, folder, out, '--resume_from_checkpoint', str(ck), steps=3))
    r = subprocess.run([str(BIN/'llava_lora_train'), *_argv(tiny_ckpt, data, folder, out, steps=3)], capture_output=True, text=True,
                       env={**os.environ, 'HF_HUB_OFFLINE': '1'}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f'skipping {ck}, incomplete: missing optimizer.pt' in r.stderr and f'resuming from {out/"checkpoint-1"}' in r.stdout, r.stderr[-2000:]
    assert (out/'incomplete-checkpoint-2').is_dir() and not (out/'incomplete-checkpoint-2'/'optimizer.pt').exists()   # kept, aside
    assert checkpoint_problem(out/'checkpoint-2') is None and checkpoint_problem(out/'checkpoint-3') is None

def test_merge_removes_leftovers_and_checks_disk(tmp_path, trained, tiny_ckpt, capfd, monkeypatch):
    "A merge removes the staging folders of killed merges into the same place (naming them) and refuses to start without the disk space."
    from llava_lora_nb import merge
    adapter, _ = trained
    out = tmp_path/'merged'
    gone = subprocess.Popen([sys.executable, '-c', 'pass']); gone.wait()
    left = tmp_path/f'.merged.tmp-{socket.gethostname()}-{gone.pid}'; left.mkdir(); (left/'model.safetensors').write_bytes(b'0' * 4096)
    merge.merge_lora(adapter, tiny_ckpt, out, streaming=True, progress=False)
    assert not left.exists() and f'removed {left}' in capfd.readouterr().err
    monkeypatch.setattr(merge, 'merged_size', lambda *a: 2**60)   # a base larger than any disk
    with pytest.raises(ValueError, match='needs about .* free'): merge.merge_lora(adapter, tiny_ckpt, tmp_path/'m2', progress=False)
    assert not (tmp_path/'m2').exists() and not list(tmp_path.glob('.m2.tmp-*'))

def test_model_card_any_name(tmp_path, trained):
    "The card of a folder whose name holds an emoji, a pipe and a newline is valid YAML (UTF-8) and valid markdown."
    import shutil, re, yaml
    from huggingface_hub import ModelCard
    from llava_lora_nb.card import write_model_card
    adapter, _ = trained
    odd = tmp_path/'run 😀 | v2\nfinal'; shutil.copytree(adapter, odd)
    text = write_model_card(odd).read_text(encoding='utf-8')
    head = yaml.safe_load(text.split('---')[1])
    assert ModelCard.load(odd/'README.md').data.base_model == head['base_model'] and '\\ud83d' not in text and '# run 😀 | v2 final' in text
    assert {len(re.split(r'(?<!\\)\|', l)) for l in text.splitlines() if l.startswith('| ')} == {4}

def test_symlinked_images_are_followed(tmp_path, shapes, tiny_ckpt):
    "An image folder of symlinks (a symlink farm) trains like the real folder; '..' and absolute paths stay refused."
    import transformers
    from llava_lora_nb.dataset import LazySupervisedDataset, validate_records
    from llava_lora_nb.records import load_records, resolve_image_path, DataError
    data, _, folder = shapes
    recs = [r for r in load_records(data) if 'image' in r][:8]
    farm = tmp_path/'farm'
    for r in recs:
        (farm/r['image']).parent.mkdir(parents=True, exist_ok=True)
        (farm/r['image']).symlink_to((Path(folder)/r['image']).resolve())
    proc = transformers.AutoProcessor.from_pretrained(tiny_ckpt)
    assert validate_records(recs, farm, proc, 256, 'v1').ok
    a = LazySupervisedDataset(recs, farm, proc, template='v1', model_max_length=256)
    b = LazySupervisedDataset(recs, folder, proc, template='v1', model_max_length=256)
    assert torch.equal(a[0]['pixel_values'], b[0]['pixel_values'])
    for bad in ('../x.png', '/etc/passwd'):
        with pytest.raises(DataError): resolve_image_path(farm, bad)
