"Merge: verified in-memory merge, bitwise-identical streaming merge, plain-transformers reload, `llava_lora_merge` as a subprocess."
import hashlib, json, shutil
from pathlib import Path
import pytest, torch
from conftest import run_cli
from llava_lora_nb.testing import make_tiny_adapter
from llava_lora_nb.output import load_adapter_model
from llava_lora_nb.merge import (merge_lora, merge_in_memory, checkpoint_tensors,
                                 same_tensors, probe_batch, logits_error, _logits, MERGE_TOLERANCE, MergeError, _shards, merge_cli)

pytestmark = pytest.mark.e2e   # trains, merges or runs console scripts: not in `make test-fast`


@pytest.fixture()
def adapter(tiny_adapter):
    "The session's random adapter (conftest.py): only read here."
    return tiny_adapter


@pytest.fixture(scope='module')
def sharded_bf16(tiny_ckpt, tmp_path_factory):
    "The tiny base re-saved in bfloat16 in several shards."
    from transformers import LlavaForConditionalGeneration, AutoProcessor
    d = tmp_path_factory.mktemp('bf16')/'base'
    LlavaForConditionalGeneration.from_pretrained(tiny_ckpt, dtype=torch.bfloat16).save_pretrained(d, max_shard_size='200KB')
    AutoProcessor.from_pretrained(tiny_ckpt).save_pretrained(d)
    assert len(_shards(d)[0]) > 3
    return d


def test_merged_logits_match_adapter(adapter, tiny_ckpt, tmp_path):
    "The merged checkpoint, reloaded with plain transformers (no PEFT), reproduces the adapter model's logits."
    from transformers import LlavaForConditionalGeneration
    rep = merge_lora(adapter, tiny_ckpt, tmp_path/'merged', progress=False)
    assert rep.error is not None and rep.error <= MERGE_TOLERANCE[torch.float32] and rep.seconds > 0
    assert (tmp_path/'merged'/'chat_template.jinja').exists() and (tmp_path/'merged'/'llava_lora_settings.json').exists()
    pm, proc, _ = load_adapter_model(adapter, tiny_ckpt)
    batch = probe_batch(proc, n=3, seed=1)
    ref = _logits(pm, batch)
    merged = LlavaForConditionalGeneration.from_pretrained(tmp_path/'merged')
    assert logits_error(ref, _logits(merged, batch)) < MERGE_TOLERANCE[torch.float32]
    base = LlavaForConditionalGeneration.from_pretrained(tiny_ckpt)
    assert logits_error(ref, _logits(base, batch)) > 100 * MERGE_TOLERANCE[torch.float32]  # the merge is not a no-op


@pytest.mark.parametrize('use_rslora', [False, True])
def test_streaming_bitwise_equals_in_memory_fp32(tiny_ckpt, tmp_path, use_rslora):
    ad = make_tiny_adapter(tiny_ckpt, tmp_path/'run', r=4, lora_alpha=32, use_rslora=use_rslora, seed=3)
    merge_lora(ad, tiny_ckpt, tmp_path/'mem', progress=False)
    rep = merge_lora(ad, tiny_ckpt, tmp_path/'stream', streaming=True, progress=False)
    assert rep.streaming and rep.error <= MERGE_TOLERANCE[torch.float32]
    assert same_tensors(checkpoint_tensors(tmp_path/'mem'), checkpoint_tensors(tmp_path/'stream'))


def test_streaming_bitwise_equals_in_memory_bf16_sharded(adapter, sharded_bf16, tmp_path):
    from transformers import LlavaForConditionalGeneration
    r1 = merge_lora(adapter, sharded_bf16, tmp_path/'mem', max_shard_size='200KB', progress=False)
    r2 = merge_lora(adapter, sharded_bf16, tmp_path/'stream', streaming=True, progress=False)
    assert r1.dtype == r2.dtype == 'bfloat16'
    a, b = checkpoint_tensors(tmp_path/'mem'), checkpoint_tensors(tmp_path/'stream')
    assert same_tensors(a, b) and all(v.dtype == torch.bfloat16 for v in b.values())
    assert len(_shards(tmp_path/'stream')[0]) == len(_shards(sharded_bf16)[0])
    m = LlavaForConditionalGeneration.from_pretrained(tmp_path/'stream')  # the streamed output loads with plain transformers
    assert m.dtype == torch.bfloat16


def test_streaming_mismatch_is_refused_and_nothing_written(adapter, tiny_ckpt, tmp_path):
    "A streaming merge whose per-weight check fails raises with the size of the error and leaves no output folder."
    import llava_lora_nb.merge as M
    old = M._delta
    M._delta = lambda A, B, s, fif: old(A, B, 2 * s, fif)  # a deliberately wrong scale
    try:
        with pytest.raises(MergeError, match=r'off by [0-9.e-]+ \(relative\) > tolerance'):
            merge_lora(adapter, tiny_ckpt, tmp_path/'out', streaming=True, progress=False)
    finally: M._delta = old
    assert not (tmp_path/'out').exists() and not [p for p in tmp_path.iterdir() if p.name.startswith('.out')]


def test_in_memory_mismatch_is_refused_and_nothing_written(adapter, tiny_ckpt, tmp_path, monkeypatch):
    "With a zero tolerance, the real rounding difference (~1e-6) is a mismatch: the error reports it, nothing is written."
    import llava_lora_nb.merge as M
    monkeypatch.setitem(M.MERGE_TOLERANCE, torch.float32, 0.0)
    with pytest.raises(MergeError, match=r'max relative logit difference [0-9.e-]+ > tolerance 0 for torch.float32; nothing written'):
        merge_lora(adapter, tiny_ckpt, tmp_path/'out', progress=False)
    assert list(tmp_path.iterdir()) == []


def test_4bit_base_refused(adapter, tiny_ckpt, tmp_path):
    q4 = tmp_path/'base4'; shutil.copytree(tiny_ckpt, q4)
    cfg = json.loads((q4/'config.json').read_text())
    cfg['quantization_config'] = {'quant_method': 'bitsandbytes', 'load_in_4bit': True, 'bnb_4bit_quant_type': 'nf4'}
    (q4/'config.json').write_text(json.dumps(cfg))
    with pytest.raises(MergeError, match='Merge into the 16-bit base instead'):
        merge_lora(adapter, q4, tmp_path/'out')
    assert not (tmp_path/'out').exists()


def test_merge_cli(adapter, tiny_ckpt, tmp_path):
    out = tmp_path/'merged'
    r = run_cli('llava_lora_merge', '--model-path', adapter, '--model-base', tiny_ckpt, '--save-model-path', out, '--streaming')
    assert r.returncode == 0, r.stderr
    assert 'merged (streaming, float32)' in r.stdout and 'verified' in r.stdout
    r = run_cli('llava_lora_merge', '--model-path', adapter, '--model-base', tiny_ckpt, '--save-model-path', out)
    assert r.returncode == 2 and 'already exists' in r.stderr and 'Traceback' not in r.stderr
    r = run_cli('llava_lora_merge', '--model-path', adapter, '--model-base', tiny_ckpt, '--save-model-path', out, '--overwrite')
    assert r.returncode == 0, r.stderr
    assert 'in memory' in r.stdout
    card = (out/'README.md').read_text()   # the model card names the folder it ended in, not its staging name
    assert '# merged\n' in card and f"folder = {str(out.resolve())!r}" in card and '.tmp' not in card, card


def _tree(*folders):
    "{file: sha256} of every file under `folders`, to show inputs are untouched."
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for d in folders for f in sorted(Path(d).rglob('*')) if f.is_file()}


@pytest.fixture()
def inputs(tiny_ckpt, tmp_path):
    "A private base and adapter (the overlap tests must never risk the shared fixtures)."
    base = tmp_path/'base'; shutil.copytree(tiny_ckpt, base)
    return make_tiny_adapter(base, tmp_path/'run'), base


def test_merge_cli_refuses_output_overlapping_inputs(inputs, tmp_path, capsys):
    "issue 13 item 8: --save-model-path equal to, inside or containing either input is refused (exit 2), even with --overwrite."
    adapter, base = inputs
    before = _tree(adapter, base)
    for which, target in (('adapter', adapter), ('base', base)):
        link = tmp_path/f'link-{which}'; link.symlink_to(target)   # spelled through a symlink and `..`: the check resolves both
        for where, out in (('equal', link), ('inside', link/'x'/'..'/'merged'), ('containing', target.parent)):
            for extra in ([], ['--overwrite']):
                rc = merge_cli(['--model-path', str(adapter), '--model-base', str(base), '--save-model-path', str(out), *extra])
                err = capsys.readouterr().err
                assert rc == 2 and 'would destroy its input' in err, (which, where, extra, err)
    assert _tree(adapter, base) == before
    # the console script itself: exit 2, one line, no traceback, inputs intact
    r = run_cli('llava_lora_merge', '--model-path', adapter, '--model-base', base, '--save-model-path', adapter, '--overwrite')
    assert r.returncode == 2 and 'would destroy its input' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert _tree(adapter, base) == before


def _truncate(f, n=100): f.write_bytes(f.read_bytes()[:-n])


def _cases(adapter, base, tmp_path):
    "(label, broken adapter folder, base, the path the error must name, extra flags)"
    def copy(name):
        d = tmp_path/name; shutil.copytree(adapter, d); return d
    a = copy('trunc-adapter'); _truncate(a/'adapter_model.safetensors')
    n = copy('trunc-nonlora'); _truncate(n/'non_lora_trainables.safetensors')
    m = copy('no-adapter-weights'); (m/'adapter_model.safetensors').unlink()
    p = copy('no-projector'); (p/'non_lora_trainables.safetensors').unlink()
    other = tmp_path/'other-seed'
    from llava_lora_nb.testing import save_tiny_checkpoint
    save_tiny_checkpoint(other, seed=1)
    return {'truncated adapter_model': (a, base, a/'adapter_model.safetensors'),
            'truncated non_lora_trainables': (n, base, n/'non_lora_trainables.safetensors'),
            'missing adapter_model': (m, base, m),
            'missing projector': (p, base, p),
            'nonexistent base': (adapter, tmp_path/'no-such-base', tmp_path/'no-such-base'),
            'other-seed base': (adapter, other, other)}


def test_merge_cli_input_errors_one_line_exit_2(inputs, tmp_path):
    "issue 13 items 4 and 10: each bad input is one line on stderr naming the path, exit 2, no traceback, nothing written."
    adapter, base = inputs
    for label, (ad, bs, named) in _cases(adapter, base, tmp_path).items():
        out = tmp_path/f'out-{label.replace(" ", "-")}'
        r = run_cli('llava_lora_merge', '--model-path', ad, '--model-base', bs, '--save-model-path', out)
        assert r.returncode == 2, (label, r.stdout, r.stderr[-3000:])
        assert str(named) in r.stderr and 'Traceback' not in r.stderr, (label, r.stderr[-3000:])
        assert len([l for l in r.stderr.splitlines() if 'error' in l]) == 1, (label, r.stderr)
        assert not out.exists()


def test_merge_cli_streaming_input_errors(inputs, tmp_path, capsys):
    "The same inputs on the streaming path (in-process: the console script's function, same exit status and message)."
    adapter, base = inputs
    for label, (ad, bs, named) in _cases(adapter, base, tmp_path).items():
        out = tmp_path/f'out-{label.replace(" ", "-")}'
        assert merge_cli(['--model-path', str(ad), '--model-base', str(bs), '--save-model-path', str(out), '--streaming']) == 2, label
        err = capsys.readouterr().err
        assert str(named) in err and len([l for l in err.splitlines() if 'error' in l]) == 1, (label, err)
        assert not out.exists()


def test_merge_cli_allow_other_base(inputs, tmp_path):
    "issue 13 item 4: the other-seed base merges when --allow-other-base says it is intended."
    from llava_lora_nb.testing import save_tiny_checkpoint
    adapter, _ = inputs
    other = save_tiny_checkpoint(tmp_path/'other-seed', seed=1)
    r = run_cli('llava_lora_merge', '--model-path', adapter, '--model-base', other, '--save-model-path', tmp_path/'m', '--allow-other-base')
    assert r.returncode == 0, r.stderr[-3000:]
    assert merge_cli(['--model-path', str(adapter), '--model-base', str(other), '--save-model-path', str(tmp_path/'s'),
                      '--streaming', '--allow_other_base']) == 0
