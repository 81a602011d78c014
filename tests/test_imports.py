"""The library's shape, checked on the installed package: which module imports which (one home per concept,
no import running back up the workflow), what importing a step costs (no Trainer stack, DeepSpeed or
bitsandbytes for data, merge and validate), and that nothing is printed at import or by `--help`.
Each import is measured in a fresh interpreter, as a user's first `import` or console script would run."""
import ast, os, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT, BIN

PKG = ROOT/'llava_lora_nb'
# the workflow order: a module may import only modules before it (the fixtures and demo sit on top of everything)
ORDER = ['core', 'families', 'records', 'images', 'prompts', 'chat_templates', 'dataset', 'check', 'packing', 'targets', 'convert', 'loading', 'memory', 'explain', 'output', 'card', 'checkpoints', 'generation', 'loss', 'trainer',
         'arguments', 'live',
         'train', 'merge', 'validate', 'gguf_layout', 'export', 'testing', 'testing_original', 'demo']
HEAVY = ('transformers.trainer', 'deepspeed', 'bitsandbytes')
LIGHT = ['core', 'families', 'records', 'images', 'prompts', 'chat_templates', 'dataset', 'check', 'packing', 'targets', 'convert', 'loading', 'memory', 'explain', 'output', 'card', 'checkpoints', 'generation', 'loss', 'merge', 'validate', 'gguf_layout', 'export']
SCRIPTS = ['llava_lora_check', 'llava_lora_train', 'llava_lora_merge', 'llava_lora_predict', 'llava_lora_eval', 'llava_lora_demo', 'llava_lora_export']

def _modules(): return sorted(p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_'))

def _imports(name):
    "The `llava_lora_nb` modules that module `name` imports anywhere in its source (top level or inside functions)."
    out = set()
    for node in ast.walk(ast.parse((PKG/f'{name}.py').read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level:                            # `from .x import y` / `from . import x`
                if mod: out.add(mod.split('.')[0])
                else: out.update(a.name for a in node.names)
            elif mod.startswith('llava_lora_nb.'): out.add(mod.split('.')[1])
            elif mod == 'llava_lora_nb': out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split('.')[1] for a in node.names if a.name.startswith('llava_lora_nb.'))
    return out - {name}

def _fresh(code):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}   # what a user sees, warnings included
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={**env, 'HF_HUB_OFFLINE': '1'}, timeout=300)

def test_every_module_is_in_the_workflow_order():
    assert _modules() == sorted(ORDER), f"add new modules to ORDER: {sorted(set(_modules()) ^ set(ORDER))}"
    assert set(LIGHT) <= set(ORDER), sorted(set(LIGHT) - set(ORDER))

@pytest.mark.parametrize('name', ORDER)
def test_imports_only_run_forward(name):
    back = {m for m in _imports(name) if m in ORDER and ORDER.index(m) >= ORDER.index(name)}
    assert not back, f"llava_lora_nb.{name} imports {sorted(back)}, which come after it in the workflow"

def test_train_merge_validate_stand_side_by_side():
    for a in ('train', 'merge', 'validate'):
        assert not _imports(a) & ({'train', 'merge', 'validate'} - {a}), (a, _imports(a))

def test_fixtures_only_for_demo():
    assert [m for m in _modules() if 'testing' in _imports(m)] == ['demo', 'testing_original']   # the fixtures' second half builds on the first

@pytest.mark.parametrize('name', ORDER)
def test_import_is_light_and_quiet(name, tmp_path):
    "One fresh interpreter per module: importing it prints nothing, and a step in LIGHT loads no Trainer stack, DeepSpeed or bitsandbytes."
    heavy = tmp_path/'heavy.json'   # reported through a file: stdout and stderr must stay empty
    r = _fresh(f"import sys, json, llava_lora_nb.{name}; open({str(heavy)!r}, 'w').write(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (r.stdout, r.stderr) == ('', ''), f"import llava_lora_nb.{name} printed:\n{r.stdout}{r.stderr}"
    if name in LIGHT: assert heavy.read_text() == '[]', f"import llava_lora_nb.{name} loads {heavy.read_text()}"

def test_nothing_printed_when_deepspeed_is_imported_too():
    r = _fresh("import llava_lora_nb.train, deepspeed, bitsandbytes, peft")
    assert r.returncode == 0 and (r.stdout, r.stderr) == ('', ''), r.stdout + r.stderr

@pytest.mark.parametrize('script', SCRIPTS)
def test_help(script):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}
    r = subprocess.run([str(BIN/script), '--help'], capture_output=True, text=True, timeout=300,
                       env={**env, 'HF_HUB_OFFLINE': '1', 'COLUMNS': '300'})   # a wide terminal: the help still keeps to 100 columns
    assert r.returncode == 0, r.stderr[-2000:]
    assert '--traceback' in r.stdout and r.stderr == '', (r.stdout[-2000:], r.stderr[-2000:])
    assert max(map(len, r.stdout.splitlines())) <= 100, max(r.stdout.splitlines(), key=len)
    assert 'deprecat' not in r.stdout.lower() and len(r.stdout.splitlines()) < 200, r.stdout

def test_train_help_all():
    "`llava_lora_train --help-all`: every flag, transformers' rare ones included, in 100 columns; `--help` only the common ones."
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}
    r = subprocess.run([str(BIN/'llava_lora_train'), '--help-all'], capture_output=True, text=True, timeout=300,
                       env={**env, 'HF_HUB_OFFLINE': '1', 'COLUMNS': '300'})
    assert r.returncode == 0 and r.stderr == '', r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 100 and 'deprecat' not in r.stdout.lower(), max(lines, key=len)
    for flag in ('--ddp_bucket_cap_mb', '--torch_empty_cache_steps', '--activation_checkpointing', '--debug', '--no_double_quant'):
        assert any(l.startswith(f'  {flag} ') for l in lines), flag
