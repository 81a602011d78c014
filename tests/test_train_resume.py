"Interrupt-and-resume, reload of every saved folder to the same logits, and the optimizer's learning rates (in-process, no DeepSpeed)."
import json
from pathlib import Path
import pytest, torch, transformers
from llava_lora_nb.arguments import parse_args
from llava_lora_nb.train import train
from llava_lora_nb.trainer import LLaVATrainer, is_projector_param
from llava_lora_nb.output import load_adapter_model, NON_LORA_NAME
from safetensors.torch import load_file

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group('resume')]   # one worker trains full_run once for every test here

def _argv(ckpt, data, folder, out, *extra):
    return ['--model_name_or_path', str(ckpt), '--data_path', str(data), '--image_folder', str(folder),
                       '--version', 'v1', '--lora_enable', 'True', '--lora_r', '8', '--lora_alpha', '16', '--lora_dropout', '0.1',
                       '--learning_rate', '3e-3', '--mm_projector_lr', '1e-3', '--group_by_modality_length', 'True',
                       '--per_device_train_batch_size', '4', '--max_steps', '8', '--save_steps', '4', '--logging_steps', '1',
                       '--lr_scheduler_type', 'cosine', '--warmup_steps', '2', '--model_max_length', '256',
                       '--output_dir', str(out), '--report_to', 'none', '--seed', '7', '--disable_tqdm', 'True', *extra]

def _args(ckpt, data, folder, out, *extra): return parse_args(_argv(ckpt, data, folder, out, *extra))

class Interrupt(Exception): pass

class Stop(transformers.TrainerCallback):
    "Raise at step `k` (after the checkpoint at step 4 was written), like a killed job."
    def __init__(self, k): self.k = k
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.k: raise Interrupt(f"stopped at step {self.k}")

class Capture(transformers.TrainerCallback):
    "Record, at every save, the logits of the live model on a fixed batch, and the optimizer's learning rates."
    def __init__(self, batch): self.batch, self.logits, self.lrs = batch, {}, []
    def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
        self.lrs.append([g['lr'] for g in optimizer.param_groups])
    def on_save(self, args, state, control, model=None, **kw):
        was = model.training; model.eval()
        with torch.no_grad(): self.logits[state.global_step] = model(**self.batch).logits.clone()
        model.train(was)

def _batch(ckpt, data, folder):
    from llava_lora_nb.dataset import LazySupervisedDataset, DataCollatorForSupervisedDataset
    proc = transformers.AutoProcessor.from_pretrained(ckpt)
    ds = LazySupervisedDataset(data, folder, proc, template='v1', model_max_length=256)
    b = DataCollatorForSupervisedDataset(proc.tokenizer.pad_token_id, 256)([ds[i] for i in range(6)])
    b.pop('labels'); return b

def _trained(folder):
    f = Path(folder)
    return {**load_file(str(f/'adapter_model.safetensors')), **load_file(str(f/f'{NON_LORA_NAME}.safetensors'))}

@pytest.fixture(scope='module')
def full_run(tmp_path_factory, tiny_ckpt, shapes):
    data, _, folder = shapes
    out = tmp_path_factory.mktemp('full')/'out'
    cap = Capture(_batch(tiny_ckpt, data, folder))
    train(*_args(tiny_ckpt, data, folder, out), callbacks=[cap], verbose=False)
    return out, cap

def test_reload_every_folder_same_logits(full_run, tiny_ckpt, shapes):
    out, cap = full_run
    assert sorted(cap.logits) == [4, 8]
    for step in (4, 8):
        folder = out/f'checkpoint-{step}'
        model, _, _ = load_adapter_model(folder, model_base=tiny_ckpt)
        with torch.no_grad(): got = model(**cap.batch).logits
        torch.testing.assert_close(got, cap.logits[step], rtol=1e-5, atol=1e-5)
    model, _, _ = load_adapter_model(out)            # the final folder = the last step
    with torch.no_grad(): torch.testing.assert_close(model(**cap.batch).logits, cap.logits[8], rtol=1e-5, atol=1e-5)
    base = transformers.LlavaForConditionalGeneration.from_pretrained(tiny_ckpt).eval()
    with torch.no_grad(): assert (base(**cap.batch).logits - cap.logits[8]).abs().max() > 1e-2   # training changed something
    nl = load_file(str(out/f'{NON_LORA_NAME}.safetensors'))
    assert nl and all(is_projector_param(k) and k.startswith('base_model.model.') for k in nl)
    assert not (out/f'{NON_LORA_NAME}.bin').exists()   # written once, as safetensors
    ad = load_file(str(out/'adapter_model.safetensors'))   # and beside the LoRA weights, under the same names, for PEFT's loaders
    assert all(torch.equal(ad[k], nl[k]) for k in nl)

def test_param_group_learning_rates(full_run):
    out, cap = full_run
    lr, plr = 3e-3, 1e-3
    # groups: LoRA (decay), projector (decay), projector (no decay): every projector group runs at mm_projector_lr
    # on the same schedule, so at each step the ratio is exactly plr/lr
    for lrs in cap.lrs:
        assert len(lrs) == 3
        assert lrs[1] == pytest.approx(lrs[0] * plr / lr) and lrs[2] == pytest.approx(lrs[1])
    assert cap.lrs[1][0] == pytest.approx(lr)            # end of warm-up (2 steps): the peak
    assert cap.lrs[1][1] == pytest.approx(plr)

def test_interrupt_and_resume_matches(full_run, tmp_path, tiny_ckpt, shapes):
    data, _, folder = shapes
    out = tmp_path/'out'
    with pytest.raises(Interrupt): train(*_args(tiny_ckpt, data, folder, out), callbacks=[Stop(5)], verbose=False)
    assert (out/'checkpoint-4').exists() and not (out/'checkpoint-8').exists()
    train(*_args(tiny_ckpt, data, folder, out), verbose=False)   # resumes from checkpoint-4, as the original does
    state = json.loads((out/'trainer_state.json').read_text())
    assert state['global_step'] == 8
    ref, got = _trained(full_run[0]), _trained(out)
    assert ref.keys() == got.keys()
    for k in ref: torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6, msg=k)

# --- a kill -9 during a checkpoint save (issue 13, item 7) -----------------------------------------------------------
# The child trains the same run and SIGKILLs itself at one moment of the save of checkpoint-8 (fault injection by
# wrapping the function that runs at that moment); the parent then resumes in-process and must end where the
# uninterrupted run ended. Before the fix, each of these left a `checkpoint-8` that every resume picked and failed on.
KILL_CHILD = r'''
import json, os, signal, sys
import transformers
from llava_lora_nb import train as T, trainer as TR
argv, moment = json.loads(sys.argv[1]), sys.argv[2]
def die(): os.kill(os.getpid(), signal.SIGKILL)
def at_step8(f, before=None):
    def g(self, *a, **k):
        if self.state.global_step == 8:
            if before: before(*a)
            die()
        return f(self, *a, **k)
    return g
if moment == 'before_optimizer':   # the model files are written, the optimizer not yet
    TR.LLaVATrainer._save_optimizer_and_scheduler = at_step8(transformers.Trainer._save_optimizer_and_scheduler)
elif moment == 'optimizer_empty':  # killed while writing optimizer.pt: a 0-byte file, no trainer_state.json
    TR.LLaVATrainer._save_optimizer_and_scheduler = at_step8(transformers.Trainer._save_optimizer_and_scheduler,
                                                           before=lambda d: open(os.path.join(d, 'optimizer.pt'), 'wb').close())
elif moment == 'before_state':     # everything but trainer_state.json
    orig = transformers.TrainerState.save_to_json
    def save_to_json(self, path):
        if self.global_step == 8: die()
        return orig(self, path)
    transformers.TrainerState.save_to_json = save_to_json
elif moment == 'before_rename':    # complete, not yet renamed
    orig_pub = TR._publish
    def _publish(src, final):
        if final.name == 'checkpoint-8': die()
        return orig_pub(src, final)
    TR._publish = _publish
T.train(*T.parse_args(argv), verbose=False)
'''

@pytest.mark.parametrize('moment', ['optimizer_empty', 'before_state', 'before_rename'])
def test_kill_during_checkpoint_save_resumes(full_run, tmp_path, tiny_ckpt, shapes, moment, capfd):
    import subprocess, sys
    data, _, folder = shapes
    out = tmp_path/'out'
    r = subprocess.run([sys.executable, '-c', KILL_CHILD, json.dumps(_argv(tiny_ckpt, data, folder, out)), moment],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == -9, r.stderr[-3000:]                        # killed mid-save
    assert (out/'checkpoint-4'/'trainer_state.json').exists()
    assert not (out/'checkpoint-8').exists()                           # never a half-written checkpoint-N
    assert list(out.glob('.checkpoint-8*'))                            # only a staging folder
    resume = ('--resume_from_checkpoint', 'True') if moment == 'before_state' else ()
    train(*_args(tiny_ckpt, data, folder, out, *resume), verbose=False)  # resumes from checkpoint-4
    assert json.loads((out/'trainer_state.json').read_text())['global_step'] == 8
    assert not list(out.glob('.checkpoint-*')) and (out/'checkpoint-8'/'trainer_state.json').exists()
    ref, got = _trained(full_run[0]), _trained(out)
    for k in ref: torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6, msg=k)

def test_rerun_of_a_finished_run_trains_nothing(full_run, tmp_path, tiny_ckpt, shapes):
    "The same command again (auto-resume from checkpoint-8 = --max_steps, mid-epoch): no extra step, the same weights."
    import shutil
    data, _, folder = shapes
    out = tmp_path/'out'; shutil.copytree(full_run[0], out)
    card = (out/'README.md').read_text()
    train(*_args(tiny_ckpt, data, folder, out), verbose=False)
    assert json.loads((out/'trainer_state.json').read_text())['global_step'] == 8
    ref, got = _trained(full_run[0]), _trained(out)
    for k in ref: torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=k)
    assert (out/'README.md').read_text() == card and '| mean training loss | 0.0 |' not in card   # the finished run's figures stay
    (out/'README.md').unlink(); (out/'loss.png').unlink()   # a finished run whose card and figure were lost: the same command writes them back
    train(*_args(tiny_ckpt, data, folder, out), verbose=False)
    assert (out/'loss.png').exists() and '| steps | 8 |' in (out/'README.md').read_text()
    assert json.loads((out/'trainer_state.json').read_text())['global_step'] == 8

def test_resume_skips_incomplete_checkpoints(full_run, tmp_path, tiny_ckpt, shapes, capfd):
    "On-disk states an interrupted save of an older version leaves: an empty checkpoint folder, a 0-byte optimizer.pt."
    import shutil
    data, _, folder = shapes
    out = tmp_path/'out'
    shutil.copytree(full_run[0]/'checkpoint-4', out/'checkpoint-4')
    (out/'checkpoint-8').mkdir()                                       # killed right after mkdir
    shutil.copytree(full_run[0]/'checkpoint-4', out/'checkpoint-6')    # killed while writing the optimizer
    (out/'checkpoint-6'/'optimizer.pt').write_bytes(b''); (out/'checkpoint-6'/'trainer_state.json').unlink()
    train(*_args(tiny_ckpt, data, folder, out, '--save_total_limit', '1'), verbose=False)
    err = capfd.readouterr().err
    assert f'skipping {out/"checkpoint-8"}, incomplete: missing ' in err and f'skipping {out/"checkpoint-6"}, incomplete' in err, err
    assert 'trainer_state.json' in err.split('checkpoint-8, incomplete')[1].splitlines()[0]
    # rotation still works; the incomplete checkpoint-8, saved over, was moved aside (never deleted)
    assert sorted(p.name for p in out.iterdir() if 'checkpoint' in p.name) == ['checkpoint-8', 'incomplete-checkpoint-8']
    ref, got = _trained(full_run[0]), _trained(out)
    for k in ref: torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6, msg=k)
