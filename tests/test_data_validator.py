"Table-driven validator test: one malformed file per problem kind; each error names the record."
import copy, json
from pathlib import Path
import pytest
from llava_lora_nb.data import load_records, validate_records, DataError, tokenize_conversation
from llava_lora_nb.testing import tiny_processor

@pytest.fixture(scope='module')
def proc(): return tiny_processor()

@pytest.fixture(scope='module')
def base(shapes):
    "Three valid records (image, image, text-only) and the image folder."
    train, _, folder = shapes
    recs = load_records(train)
    img = [r for r in recs if 'image' in r]
    txt = [r for r in recs if 'image' not in r]
    return [copy.deepcopy(img[0]), copy.deepcopy(img[1]), copy.deepcopy(txt[0])], folder

def conv(*turns): return [{'from': f, 'value': v} for f, v in turns]

def _half_jpeg(f):
    "images/half.jpg in folder `f`: a JPEG cut to half its bytes (PIL's verify() passes it; decoding fails)."
    import numpy as np
    from PIL import Image
    p = Path(f)/'images'/'half.jpg'
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(p, quality=95)
    raw = p.read_bytes(); p.write_bytes(raw[:len(raw) // 2])
    return 'images/half.jpg'
Q, A = ('human', '<image>\nWhat colour is the shape?'), ('gpt', 'red')

# name: (mutation of record 1 -> new record, expected field prefix, words expected in the message, needs processor)
CASES = {
    'not_an_object':      (lambda r, f: ['a', 'list'], 'record', 'JSON object'),
    'missing_id':         (lambda r, f: {k: v for k, v in r.items() if k != 'id'}, 'id', 'missing'),
    'missing_conversations': (lambda r, f: {k: v for k, v in r.items() if k != 'conversations'}, 'conversations', 'missing'),
    'conversations_not_list': (lambda r, f: {**r, 'conversations': 'hello'}, 'conversations', 'must be a list'),
    'empty_conversations': (lambda r, f: {**r, 'conversations': []}, 'conversations', 'empty'),
    'turn_not_from_value': (lambda r, f: {**r, 'conversations': [{'role': 'user', 'content': 'x'}, {'from': 'gpt', 'value': 'a'}]}, 'conversations[0]', "'from'"),
    'empty_value':        (lambda r, f: {**r, 'conversations': conv(Q, ('gpt', '  '))}, 'conversations[1].value', 'empty'),
    'non_string_value':   (lambda r, f: {**r, 'conversations': conv(Q, ('gpt', 3))}, 'conversations[1].value', 'string'),
    'unknown_role':       (lambda r, f: {**r, 'conversations': conv(Q, ('assistant', 'red'))}, 'conversations[1].from', "unknown role"),
    'not_alternating':    (lambda r, f: {**r, 'conversations': conv(Q, ('human', 'again?'), A)}, 'conversations[1].from', 'alternate'),
    'starts_with_gpt':    (lambda r, f: {**r, 'conversations': conv(('gpt', 'hi'), Q, A)}, 'conversations[0].from', 'starting with human'),
    'no_final_answer':    (lambda r, f: {**r, 'conversations': conv(Q, A, ('human', 'And the shape?'))}, 'conversations[2]', 'no answer'),
    'image_no_placeholder': (lambda r, f: {**r, 'conversations': conv(('human', 'What colour?'), A)}, 'conversations[0].value', "'<image>'"),
    'placeholder_no_image': (lambda r, f: {k: v for k, v in r.items() if k != 'image'}, 'image', 'no \'image\''),
    'two_placeholders':   (lambda r, f: {**r, 'conversations': conv(Q, A, ('human', '<image>\nAgain?'), A)}, 'conversations', '2 '),
    'placeholder_later_turn': (lambda r, f: {**r, 'conversations': conv(('human', 'Hi'), A, ('human', '<image>\nNow?'), A)}, 'conversations[2].value', 'first human turn'),
    'image_missing':      (lambda r, f: {**r, 'image': 'images/nope.png'}, 'image', 'not found'),
    'image_not_an_image': (lambda r, f: {**r, 'image': 'images/fake.png'}, 'image', 'cannot be read'),
    'image_truncated_jpeg': (lambda r, f: {**r, 'image': _half_jpeg(f)}, 'image', 'image file is truncated'),
    'image_absolute':     (lambda r, f: {**r, 'image': str((Path(f)/r['image']).resolve())}, 'image', 'absolute'),
    'image_escapes':      (lambda r, f: {**r, 'image': '../' + Path(f).name + '/' + r['image']}, 'image', "'..'"),
    'image_not_string':   (lambda r, f: {**r, 'image': ['a.png']}, 'image', 'relative path'),
}
# kinds that need the processor and a model_max_length: (mutation, field, words, model_max_length)
TOKEN_CASES = {
    'image_truncated':    (lambda r, f: r, 'conversations', 'cut the image', 40),  # the image block ends at 42
    'answers_truncated':  (lambda r, f: {**r, 'conversations': conv(('human', '<image>\n' + 'What colour is the shape? ' * 10), A)}, 'conversations', 'every answer', 60),
    'template_mismatch':  (lambda r, f: {**r, 'conversations': conv(Q, A, ('human', 'Shape?'), ('gpt', 'circle'))}, 'conversations', "'plain'", 2048),
}

def _check(rep, name, field, words, rid):
    hits = [p for p in rep.problems if p.index == 1]
    assert hits, f"{name}: no problem reported for record 1:\n{rep}"
    assert any(p.field.startswith(field) and words in p.message for p in hits), f"{name}: expected [{field}] '{words}' in\n{rep}"
    assert not [p for p in rep.problems if p.index not in (1, None)], f"{name}: good records flagged:\n{rep}"
    if rid is not None: assert f"id={rid!r}" in str(rep) and 'record 1' in str(rep)

@pytest.mark.parametrize('name', list(CASES))
def test_structural_problem(name, base, tmp_path):
    (good0, good1, good2), folder = base
    (Path(folder)/'images'/'fake.png').write_text('not a png')
    mut, field, words = CASES[name]
    bad = mut(copy.deepcopy(good1), folder)
    if isinstance(bad, dict) and 'id' in bad: bad['id'] = 'bad-record'
    p = tmp_path/f'{name}.json'; p.write_text(json.dumps([good0, bad, good2]))
    rep = validate_records(load_records(p), folder)
    assert not rep.ok
    _check(rep, name, field, words, bad.get('id') if isinstance(bad, dict) else None)

@pytest.mark.parametrize('name', list(TOKEN_CASES))
def test_token_problem(name, base, proc, tmp_path):
    (good0, good1, good2), folder = base
    mut, field, words, mml = TOKEN_CASES[name]
    bad = {**mut(copy.deepcopy(good1), folder), 'id': 'bad-record'}
    rows = [good2, bad, {**good2, 'id': 'other'}] if name == 'image_truncated' else [good0, bad, good2]  # text-only neighbours fit in 40
    p = tmp_path/f'{name}.json'; p.write_text(json.dumps(rows))
    tpl = 'plain' if name == 'template_mismatch' else 'vicuna_v1'
    recs = load_records(p)
    if tpl == 'plain': recs = [r for r in recs if 'image' in r]  # plain needs images; keep indices: good0, bad
    rep = validate_records(recs, folder, proc, mml, template=tpl)
    assert not rep.ok
    _check(rep, name, field, words, 'bad-record')
    assert validate_records(recs, folder, None, None, template=tpl).ok  # only the token checks find it

def test_duplicate_id(base, tmp_path):
    (good0, good1, good2), folder = base
    rep = validate_records([good0, {**good1, 'id': good0['id']}, good2], folder)
    _check(rep, 'duplicate', 'id', 'duplicate id, also used by record 0', good0['id'])

def test_absolute_path_is_never_opened(base, monkeypatch):
    (good0, good1, good2), folder = base
    from PIL import Image
    opened = []
    real = Image.open
    monkeypatch.setattr(Image, 'open', lambda f, *a, **k: (opened.append(str(f)), real(f, *a, **k))[1])
    absolute = str((Path(folder)/good1['image']).resolve())
    rep = validate_records([good0, {**good1, 'image': absolute}], folder)
    assert not rep.ok and absolute not in opened and any(good0['image'] in o for o in opened)

@pytest.mark.parametrize('text,words', [('[{"id": 1,\n "conversations": ]', 'line 2, column'),
                                        ('{"id": "a"}', 'JSON list')])
def test_bad_file(tmp_path, text, words):
    p = tmp_path/'bad.json'; p.write_text(text)
    with pytest.raises(DataError, match=words.replace('(', r'\(')): load_records(p)
    assert str(p) in str(pytest.raises(DataError, load_records, p).value)

def test_bad_jsonl_line(tmp_path):
    p = tmp_path/'bad.jsonl'; p.write_text('{"id": "a", "conversations": []}\n{oops}\n')
    with pytest.raises(DataError, match='line 2'): load_records(p)

def test_clean_summary(shapes, proc):
    train, _, folder = shapes
    recs = load_records(train)
    rep = validate_records(recs, folder, proc, 2048)
    assert rep.ok, rep
    s = rep.summary
    assert s['records'] == len(recs) == s['with_image'] + s['text_only'] and s['text_only'] > 0
    assert s['turns'] == sum(len(r['conversations']) // 2 for r in recs)
    lens = sorted(len(tokenize_conversation(r['conversations'], proc, has_image='image' in r)['input_ids']) for r in recs)
    assert s['token_lengths']['max'] == lens[-1] and lens[0] <= s['token_lengths']['p50'] <= lens[-1]

def test_missing_image_folder_said_once(base, tmp_path):
    (good0, good1, good2), folder = base
    rep = validate_records([good0, good1, good2], tmp_path/'nope')
    assert [(p.index, p.field) for p in rep.problems] == [(None, 'image_folder')], rep
    assert 'does not exist' in str(rep) and '2 record(s) have an image' in str(rep)

def test_special_text_warns(base, proc):
    "Special-token text in a turn is a warning naming record and turn; the record still validates and trains as text."
    (good0, good1, good2), folder = base
    bad = {**good2, 'id': 'html', 'conversations': conv(('human', 'What is <s>?'), ('gpt', 'A </s> B'))}
    rep = validate_records([good0, bad], folder, proc, 2048)
    assert rep.ok, rep
    assert [(p.index, p.id, p.field, p.level) for p in rep.problems] == [(1, 'html', 'conversations[0].value', 'warning'),
                                                                        (1, 'html', 'conversations[1].value', 'warning')]
    assert "'<s>'" in rep.problems[0].message and "'</s>'" in rep.problems[1].message
    d = tokenize_conversation(bad['conversations'], proc, has_image=False)
    assert (d['input_ids'] == proc.tokenizer.eos_token_id).sum() == 1 and (d['input_ids'] == proc.tokenizer.bos_token_id).sum() == 1
