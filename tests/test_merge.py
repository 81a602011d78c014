"Merge: verified in-memory merge, bitwise-identical streaming merge, plain-transformers reload, `llava_lora_merge` as a subprocess."
import json, shutil
import pytest, torch
from conftest import run_cli
from llava_lora_nb.merge import (make_tiny_adapter, merge_lora, merge_in_memory, load_adapter_model, checkpoint_tensors,
                                 same_tensors, probe_batch, logits_error, _logits, MERGE_TOLERANCE, MergeError, _shards)


@pytest.fixture(scope='module')
def adapter(tiny_ckpt, tmp_path_factory):
    return make_tiny_adapter(tiny_ckpt, tmp_path_factory.mktemp('adapter')/'run')


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
    assert r.returncode == 1 and 'already exists' in r.stdout
    r = run_cli('llava_lora_merge', '--model-path', adapter, '--model-base', tiny_ckpt, '--save-model-path', out, '--overwrite')
    assert r.returncode == 0, r.stderr
    assert 'in memory' in r.stdout
