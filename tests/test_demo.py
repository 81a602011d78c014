"The main job as a user runs it: `llava_lora_demo` in a subprocess (short run; `make demo` runs the full default)."
import json
from conftest import run_cli
import pytest

pytestmark = pytest.mark.e2e   # trains, merges or runs console scripts: not in `make test-fast`

def test_demo_cli(tmp_path):
    out = tmp_path/'demo'
    r = run_cli('llava_lora_demo', '--output_dir', out, '--steps', '24', '--n_train', '128', '--quiet')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'held-out accuracy' in r.stdout and 'merge            : verified' in r.stdout
    rep = json.loads((out/'report.json').read_text())
    assert rep['loss_end'] < rep['loss_start']
    assert rep['served_same'] == rep['served_total'] > 0 and 'served           : ' in r.stdout, rep   # a standard client: the same answers
    assert rep['served_adapter_same'] == rep['served_total'], rep   # the adapter folder through PEFT too
    assert (out/'merged'/'config.json').exists() and (out/'adapter'/'non_lora_trainables.safetensors').exists()
    # re-running into the same folder refuses (never silently overwrites) and says what to do
    again = run_cli('llava_lora_demo', '--output_dir', out, '--steps', '24', '--n_train', '128', '--quiet')
    assert again.returncode == 2 and '--overwrite' in again.stderr


def test_demo_next_learns(tmp_path):
    "`llava_lora_demo --arch next`: the tiny LLaVA-NeXT learns the shapes task (images of three aspect ratios)."
    out = tmp_path/'demo-next'
    r = run_cli('llava_lora_demo', '--arch', 'next', '--output_dir', out, '--steps', '100', '--n_train', '400', '--quiet')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'LLaVA-NeXT' in r.stdout and 'LlavaNextForConditionalGeneration.from_pretrained' in r.stdout
    assert 'Loading weights' not in r.stdout + r.stderr   # --quiet: no bars, transformers' included
    rep = json.loads((out/'report.json').read_text())
    assert rep['accuracy_finetuned'] >= rep['accuracy_base'] + 0.4, rep
    bad = run_cli('llava_lora_demo', '--arch', 'nxt', '--output_dir', tmp_path/'x')
    assert bad.returncode == 2 and 'invalid choice' in bad.stderr


def test_demo_onevision_learns(tmp_path):
    "`llava_lora_demo --arch onevision`: the tiny LLaVA-OneVision (Qwen2, SigLIP, anyres_max_9, ChatML) learns, merges and serves as trained."
    out = tmp_path/'demo-ov'
    r = run_cli('llava_lora_demo', '--arch', 'onevision', '--output_dir', out, '--steps', '100', '--n_train', '400', '--quiet')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'LLaVA-OneVision' in r.stdout and 'LlavaOnevisionForConditionalGeneration.from_pretrained' in r.stdout
    rep = json.loads((out/'report.json').read_text())
    assert rep['accuracy_finetuned'] >= rep['accuracy_base'] + 0.4, rep
    assert rep['served_same'] == rep['served_total'] > 0 and rep['served_adapter_same'] == rep['served_total'], rep
    settings = json.loads((out/'adapter'/'llava_lora_settings.json').read_text())
    assert settings['version'] == 'qwen_1_5', settings   # the family's template (qwen_1_5, ChatML)
    assert '<|im_start|>assistant' in (out/'merged'/'chat_template.jinja').read_text()


def test_demo_multi_image_learns(tmp_path):
    "`llava_lora_demo --multi_image`: two pictures per question (which shows the shape, the colour in one); learned, merged, served as trained."
    out = tmp_path/'demo-multi'
    r = run_cli('llava_lora_demo', '--multi_image', '--output_dir', out, '--steps', '100', '--n_train', '400', '--quiet')
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((out/'report.json').read_text())
    assert rep['accuracy_finetuned'] >= rep['accuracy_base'] + 0.4, rep
    assert rep['served_same'] == rep['served_total'] > 0, rep   # the pipeline, two images per question, the folder's chat template
    held = json.loads((out/'data'/'heldout.json').read_text())
    assert all(isinstance(x['image'], list) and len(x['image']) == 2 for x in held)
    assert 'two pictures per question' in r.stdout and ' + images/' in r.stdout
    # the console script with --image given twice answers as evaluation did (the same prompt, the same two images)
    row = json.loads((out/'heldout_results.jsonl').read_text().splitlines()[0])
    p = run_cli('llava_lora_predict', '--model_path', out/'merged', '--image', out/'data'/row['image'][0], '--image', out/'data'/row['image'][1],
                '--prompt', '<image>\n<image>\n' + row['question'])
    assert p.returncode == 0 and p.stdout.strip() == rep['prediction']['answer'] == row['answer'], (p.stdout, p.stderr[-2000:], row)
