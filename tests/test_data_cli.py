"`llava_lora_check` as a user runs it: a subprocess on clean and broken files."
import json
from conftest import run_cli
from llava_lora_nb.records import load_records

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
    r = run_cli('llava_lora_check', bad, '--image-folder', folder)   # data problems: exit 1 with the report
    assert r.returncode == 1, r.stdout + r.stderr
    _no_traceback(r)
    assert f"record 3 (id={recs[3]['id']!r}) [conversations[1].from]" in r.stdout
    assert f"record 5 (id={recs[5]['id']!r}) [image]" in r.stdout and 'absolute' in r.stdout
    empty = tmp_path/'empty.json'; empty.write_text('[]')   # issue 25: no records is a data problem, found before training
    r = run_cli('llava_lora_check', empty, '--image-folder', folder)
    assert r.returncode == 1 and 'no records' in r.stdout, r.stdout + r.stderr
    _no_traceback(r)

def _usage_error(r, *words):
    "Exit 2, one `llava_lora_check: error: ...` line on stderr naming `words`, nothing on stdout, no traceback."
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr); _no_traceback(r)
    assert r.stderr.startswith('llava_lora_check: error: ') and r.stderr.count('\n') == 1 and not r.stdout.strip(), (r.stdout, r.stderr)
    for w in words: assert str(w) in r.stderr, (w, r.stderr)

def test_check_bad_input(tmp_path, shapes):
    _, _, folder = shapes
    p = tmp_path/'bad.json'; p.write_text('[{"id": "a",\n "conversations": [}]')
    _usage_error(run_cli('llava_lora_check', p, '--image_folder', folder), p, 'line 2, column')
    for args, words in (([tmp_path/'missing.json'], [tmp_path/'missing.json', 'not found']),
                        ([p, '--model', tmp_path/'no-model'], ['--model', tmp_path/'no-model']),
                        ([p, '--template', 'chatml'], ["'chatml'", 'vicuna_v1'])):
        _usage_error(run_cli('llava_lora_check', *args), *words)
    r = run_cli('llava_lora_check', p, '--no-such-flag')   # argparse's own usage error
    assert r.returncode == 2 and 'llava_lora_check: error:' in r.stderr and not r.stdout.strip(), r.stderr; _no_traceback(r)

def _half_jpeg(path):
    "A JPEG cut to half its bytes: PIL's verify() passes it, decoding fails."
    import numpy as np
    from PIL import Image
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    raw = path.read_bytes(); path.write_bytes(raw[:len(raw) // 2])
    return path

def test_check_truncated_jpeg(shapes, tmp_path):
    train, _, folder = shapes
    recs = [r for r in load_records(train) if 'image' in r][:3]
    import shutil
    shutil.copytree(folder/'images', tmp_path/'images'); _half_jpeg(tmp_path/'images'/'half.jpg')
    recs[1] = {**recs[1], 'id': 'cut-in-half', 'image': 'images/half.jpg'}
    p = tmp_path/'data.json'; p.write_text(json.dumps(recs))
    r = run_cli('llava_lora_check', p, '--image_folder', tmp_path, '--workers', 2)
    assert r.returncode == 1, r.stdout + r.stderr
    _no_traceback(r)
    line = [l for l in r.stdout.splitlines() if 'cut-in-half' in l]
    assert len(line) == 1 and str(tmp_path/'images'/'half.jpg') in line[0] and 'truncated' in line[0], r.stdout
    assert 'problem(s) in 1 record(s)' in r.stdout

def test_check_missing_image_folder(shapes, tmp_path):
    "A typo'd --image_folder is a wrong command (exit 2), said once; the hyphenated spelling works the same."
    train, _, folder = shapes
    for flag in ('--image_folder', '--image-folder'):
        r = run_cli('llava_lora_check', train, flag, tmp_path/'nope')
        _usage_error(r, f"{tmp_path/'nope'} does not exist", '--image_folder')
        assert r.stderr.count('does not exist') == 1 and 'not found' not in r.stderr, r.stderr

def test_check_bom_and_warnings(shapes, tmp_path, tiny_ckpt):
    "A UTF-8 file with a byte-order mark is read; special-token text is a warning (exit 0) naming record and turn."
    train, _, folder = shapes
    recs = load_records(train)[:4]
    recs[2] = {**recs[2], 'id': 'html'}
    recs[2]['conversations'] = [dict(t) for t in recs[2]['conversations']]; recs[2]['conversations'][1]['value'] += ' </s> end'
    for suffix, text in (('.json', json.dumps(recs)), ('.jsonl', '\n'.join(json.dumps(x) for x in recs))):
        p = tmp_path/f'bom{suffix}'; p.write_text(text, encoding='utf-8-sig')
        r = run_cli('llava_lora_check', p, '--image_folder', folder, '--model', tiny_ckpt)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "record 2 (id='html') [conversations[1].value]: warning:" in r.stdout and "'</s>'" in r.stdout, r.stdout
