"""Validate: predict/eval console scripts as subprocesses on a model trained with `llava_lora_train` (the session's `trained`
fixture, conftest.py); the finetuned model beats the base."""
import json, shutil
import pytest
from conftest import run_cli

pytestmark = pytest.mark.e2e   # trains, merges or runs console scripts: not in `make test-fast`


def test_predict_cli_adapter_equals_merged(trained, tiny_ckpt, shapes):
    "Greedy answers from the adapter on its base and from the merged folder (no base, no PEFT) are the same."
    adapter, merged = trained
    _, heldout, folder = shapes
    rec = next(r for r in json.loads(heldout.read_text()) if r.get('image'))
    q = rec['conversations'][0]['value'].replace('<image>\n', '')
    a = run_cli('llava_lora_predict', '--model-path', adapter, '--model-base', tiny_ckpt, '--image', folder/rec['image'],
                '--prompt', q, '--max_new_tokens', '4')
    b = run_cli('llava_lora_predict', '--model-path', merged, '--image', folder/rec['image'], '--prompt', q, '--max_new_tokens', '4')
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-2000:] + b.stderr[-2000:]
    assert a.stdout.strip() and a.stdout == b.stdout


def test_predict_cli_adapter_needs_base(trained):
    r = run_cli('llava_lora_predict', '--model-path', trained[0], '--prompt', 'Is red a colour or a shape?')
    assert r.returncode == 2 and 'pass the base it was trained from' in r.stderr and 'Traceback' not in r.stderr


def test_load_for_inference_wrong_base(trained, tmp_path):
    from llava_lora_nb.testing import save_tiny_checkpoint
    from llava_lora_nb.validate import load_for_inference
    wide = save_tiny_checkpoint(tmp_path/'wide', hidden_size=64)
    with pytest.raises(ValueError, match='text_config.hidden_size: adapter 128 vs base 64'):
        load_for_inference(trained[0], wide)


def test_eval_cli_finetuned_beats_base(trained, tiny_ckpt, shapes, tmp_path):
    "On held-out shapes records, the merged finetuned model's exact match is higher than the base's."
    _, heldout, folder = shapes
    out = tmp_path/'results.jsonl'
    r = run_cli('llava_lora_eval', '--model-path', trained[1], '--compare', tiny_ckpt, '--data', heldout, '--image_folder', folder,
                '--limit', '16', '--max_new_tokens', '4', '--output', out)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    summary = json.loads(out.with_suffix('.summary.json').read_text())
    assert len(rows) == 16 and all(set(x['answers']) == {'model', 'compare'} for x in rows)
    print(r.stdout)
    assert summary['model']['exact_match'] > summary['compare']['exact_match'], summary
    assert summary['model']['correct'] == sum(x['correct']['model'] for x in rows)


def test_predict_eval_input_errors_exit_2(tiny_adapter, tiny_ckpt, shapes, tmp_path):
    "issue 13 item 10: truncated/missing adapter files and a nonexistent --model-base: one line naming the path, exit 2."
    _, heldout, folder = shapes
    a = tmp_path/'trunc'; shutil.copytree(tiny_adapter, a)
    f = a/'non_lora_trainables.safetensors'; f.write_bytes(f.read_bytes()[:-64])
    m = tmp_path/'no-weights'; shutil.copytree(tiny_adapter, m); (m/'adapter_model.safetensors').unlink()
    cases = [(a, tiny_ckpt, f), (m, tiny_ckpt, m), (tiny_adapter, tmp_path/'no-such-base', tmp_path/'no-such-base')]
    for i, (ad, base, named) in enumerate(cases):
        cmd = ('llava_lora_predict', '--prompt', 'Which colour?') if i % 2 == 0 else \
              ('llava_lora_eval', '--data', heldout, '--image_folder', folder, '--limit', '1')
        r = run_cli(*cmd, '--model-path', ad, '--model-base', base)
        assert r.returncode == 2, (cmd[0], named, r.stdout, r.stderr[-3000:])
        assert str(named) in r.stderr and 'Traceback' not in r.stderr, (cmd[0], r.stderr[-3000:])


def test_eval_cli_bad_images_are_failed_rows(tiny_ckpt, shapes, tmp_path):
    "issue 13 item 9: `../`, absolute and truncated image paths are failed rows; the other records are evaluated and written."
    _, heldout, folder = shapes
    recs = [r for r in json.loads(heldout.read_text()) if r.get('image')][:4]
    outside = tmp_path/'outside.png'; shutil.copy(folder/recs[0]['image'], outside)
    imgs = tmp_path/'imgs'; shutil.copytree(folder, imgs)
    (imgs/'truncated.png').write_bytes((imgs/recs[2]['image']).read_bytes()[:80])
    recs[0] = {**recs[0], 'id': 'dotdot', 'image': '../outside.png'}          # exists, but outside the image folder
    recs[1] = {**recs[1], 'id': 'absolute', 'image': str(imgs/recs[1]['image'])}
    recs[2] = {**recs[2], 'id': 'truncated', 'image': 'truncated.png'}
    data = tmp_path/'bad.json'; data.write_text(json.dumps(recs))
    out = tmp_path/'res.jsonl'
    r = run_cli('llava_lora_eval', '--model-path', tiny_ckpt, '--data', data, '--image_folder', imgs, '--max_new_tokens', '2', '--output', out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '3 of 4 questions failed' in r.stderr, r.stderr[-3000:]
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    errs = [x['errors']['model'] for x in rows]
    assert [e is not None for e in errs] == [True, True, True, False], errs
    assert "'..'" in errs[0] and 'absolute' in errs[1] and f"{imgs/'truncated.png'} cannot be read" in errs[2], errs
    assert rows[3]['answers']['model'] is not None and all(x['answers']['model'] is None for x in rows[:3])
    summary = json.loads(out.with_suffix('.summary.json').read_text())
    assert summary['model']['failed'] == 3 and summary['model']['n'] == 4


def test_eval_cli_batch_size_gives_the_same_answers(trained, shapes, tmp_path):
    "`llava_lora_eval --batch_size 8` (left-padded batches) writes the same rows as `--batch_size 1` (one by one), on a trained model."
    _, heldout, folder = shapes
    rows = {}
    for bs in (1, 8):
        out = tmp_path/f'bs{bs}.jsonl'
        r = run_cli('llava_lora_eval', '--model-path', trained[1], '--data', heldout, '--image_folder', folder, '--turns', 'each',
                    '--max_new_tokens', '6', '--batch_size', bs, '--output', out, '--quiet')
        assert r.returncode == 0, r.stderr[-3000:]
        rows[bs] = [json.loads(l) for l in out.read_text().splitlines()]
    recs = json.loads(heldout.read_text())
    assert len(rows[1]) > 32 and any('image' not in x for x in recs) and any('image' in x for x in recs)   # images, text-only, multi-turn
    assert rows[8] == rows[1]
    assert any(x['correct']['model'] for x in rows[1]), rows[1][:4]   # trained: answers that mean something

def test_eval_cli_refuses_batch_size_zero(tmp_path):
    r = run_cli('llava_lora_eval', '--model_path', tmp_path, '--data', tmp_path/'d.json', '--image_folder', tmp_path, '--batch_size', '0')
    assert r.returncode == 2 and '--batch_size: must be at least 1, not 0' in r.stderr and 'Traceback' not in r.stderr, r.stderr

def test_eval_cli_refuses_output_over_data(tmp_path):
    "issue 25: `--output` (or its .summary.json) equal to `--data` would overwrite the questions: refused in one line, nothing loaded."
    data = tmp_path/'q.json'; data.write_text('[]')
    for out in (data, tmp_path/'q.jsonl'):   # q.jsonl's summary is q.summary.json, not q.json: only the first is refused
        r = run_cli('llava_lora_eval', '--model_path', tmp_path/'no-model', '--data', data, '--image_folder', tmp_path, '--output', out)
        if out == data:
            assert r.returncode == 2 and 'would overwrite the --data file' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert data.read_text() == '[]'

def test_served_through_pipeline_as_trained(trained, shapes):
    """The merged folder served by transformers' image-text-to-text pipeline with plain chat messages (its own chat template,
    generation_config.json) answers every held-out question exactly as `generate_answers` (our training prompt) does."""
    import torch, transformers
    from PIL import Image
    from llava_lora_nb.generation import generate_answers
    from llava_lora_nb.output import RunSettings
    from llava_lora_nb.chat_templates import chat_template
    _, merged = trained
    _, heldout, folder = shapes
    s = RunSettings.read(merged)
    assert (merged/'chat_template.jinja').read_text() == chat_template(s.version)   # the training template, not the base's
    recs = [r for r in json.loads(heldout.read_text()) if r.get('image')]
    qs = [r['conversations'][0]['value'].replace('<image>', '').strip() for r in recs]
    ims = [Image.open(folder/r['image']).convert('RGB') for r in recs]
    model = transformers.AutoModelForImageTextToText.from_pretrained(merged).eval()
    proc = transformers.AutoProcessor.from_pretrained(merged)
    ours = generate_answers(model, proc, [([{'from': 'human', 'value': '<image>\n' + q}], im) for q, im in zip(qs, ims)],
                            template=s.version, image_aspect_ratio=s.image_aspect_ratio, max_new_tokens=8)
    pipe = transformers.pipeline('image-text-to-text', model=str(merged), device='cpu')
    served = [pipe(text=[{'role': 'user', 'content': [{'type': 'image', 'image': im}, {'type': 'text', 'text': q}]}],
                   max_new_tokens=8, return_full_text=False)[0]['generated_text'] for q, im in zip(qs, ims)]
    assert [a.strip() for a in served] == [a.strip() for a in ours]
    assert len({a.strip() for a in ours}) > 1 and all(a.strip() for a in ours)   # real answers, not one repeated string

def test_adapter_served_through_peft_as_trained(trained, shapes, tiny_ckpt):
    """The adapter folder loaded as a PEFT user does (`PeftModel.from_pretrained(base, folder)`: LoRA weights and the trained
    projector, from adapter_model.safetensors) is our model, parameter for parameter, and transformers' pipeline on it with
    plain chat messages answers every held-out question exactly as our prompt builder does; so does `served_answers`
    (the base, then `load_adapter`)."""
    import torch, transformers
    from PIL import Image
    from peft import PeftModel
    from llava_lora_nb.generation import generate_answers, evaluate
    from llava_lora_nb.output import RunSettings, load_adapter_model
    from llava_lora_nb.validate import served_answers
    run, _ = trained
    heldout_json, heldout, folder = shapes[1], json.loads(shapes[1].read_text()), shapes[2]
    s = RunSettings.read(run)
    ours_model, proc, _ = load_adapter_model(run, tiny_ckpt)
    base = transformers.AutoModelForImageTextToText.from_pretrained(tiny_ckpt).eval()
    untrained = {k: v.clone() for k, v in base.named_parameters() if 'multi_modal_projector' in k}
    peft_model = PeftModel.from_pretrained(base, run).eval()
    ours, theirs = dict(ours_model.named_parameters()), dict(peft_model.named_parameters())
    assert sorted(ours) == sorted(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not all(torch.equal(theirs['base_model.model.' + k], v) for k, v in untrained.items())   # the trained projector, not the base's
    recs = [r for r in heldout if r.get('image')]
    qs = [r['conversations'][0]['value'].replace('<image>', '').strip() for r in recs]
    ims = [Image.open(folder/r['image']).convert('RGB') for r in recs]
    want = generate_answers(ours_model, proc, [([{'from': 'human', 'value': '<image>\n' + q}], im) for q, im in zip(qs, ims)],
                            template=s.version, image_aspect_ratio=s.image_aspect_ratio, max_new_tokens=8)
    pipe = transformers.pipeline('image-text-to-text', model=peft_model, processor=transformers.AutoProcessor.from_pretrained(run), device='cpu')
    served = [pipe(text=[{'role': 'user', 'content': [{'type': 'image', 'image': im}, {'type': 'text', 'text': q}]}],
                   max_new_tokens=8, return_full_text=False)[0]['generated_text'] for q, im in zip(qs, ims)]
    assert [a.strip() for a in served] == [a.strip() for a in want]
    res = evaluate(ours_model, proc, heldout, folder, s.version, s.image_aspect_ratio, max_new_tokens=8, progress=False)
    assert served_answers(run, heldout_json, folder, max_new_tokens=8) == [r['answer'].strip() for r in res.rows]
    assert len({a.strip() for a in want}) > 1
