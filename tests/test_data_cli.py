"`llava_lora_check` as a user runs it: a subprocess on clean and broken files."
import json
from conftest import run_cli
from llava_lora_nb.data import load_records

def _no_traceback(r): assert 'Traceback' not in r.stdout + r.stderr, r.stdout + r.stderr

def test_check_clean(shapes, tiny_ckpt):
    train, _, folder = shapes
    r = run_cli('llava_lora_check', train, '--image_folder', folder, '--model', tiny_ckpt, '--model_max_length', 2048)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'OK: no problems found' in r.stdout and 'token lengths' in r.stdout
    assert f"{len(load_records(train))} records" in r.stdout

def test_check_broken(shapes, tmp_path):
    train, _, folder = shapes
    recs = load_records(train)
    recs[3]['conversations'][1]['from'] = 'bot'
    recs[5]['image'] = '/etc/passwd'
    bad = tmp_path/'broken.json'; bad.write_text(json.dumps(recs))
    r = run_cli('llava_lora_check', bad, '--image_folder', folder)
    assert r.returncode == 1
    _no_traceback(r)
    assert f"record 3 (id={recs[3]['id']!r}) [conversations[1].from]" in r.stdout
    assert f"record 5 (id={recs[5]['id']!r}) [image]" in r.stdout and 'absolute' in r.stdout

def test_check_bad_input(tmp_path, shapes):
    _, _, folder = shapes
    p = tmp_path/'bad.json'; p.write_text('[{"id": "a",\n "conversations": [}]')
    r = run_cli('llava_lora_check', p, '--image_folder', folder)
    assert r.returncode == 1 and 'line 2, column' in r.stdout; _no_traceback(r)
    for args in ([tmp_path/'missing.json'], [p, '--model', tmp_path/'no-model'], [p, '--template', 'chatml']):
        r = run_cli('llava_lora_check', *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr); _no_traceback(r)
        assert (r.stdout + r.stderr).strip()
