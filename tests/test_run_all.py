"""JupyterLab's Run All on a CPU with no network: every cell of the tutorial, `#| cuda`/`#| slow` flags ignored (as
`jupyter nbconvert --execute` ignores them), runs without error; the full-size cells say in one line why they skipped.

`make test` executes every notebook once (`tools/run_nbs.py --to _exec --run_all nbs/10_tutorial.ipynb`), the tutorial
as Run All: this test checks that copy when it was made from the current sources, and executes the tutorial itself
otherwise (e.g. `pytest tests/test_run_all.py` on its own)."""
import importlib.util, os
import nbformat
from nbconvert.preprocessors import ExecutePreprocessor
from conftest import ROOT
import pytest

pytestmark = pytest.mark.e2e   # trains, merges or runs console scripts: not in `make test-fast`

def _flagged(src): return any(l.strip().replace(' ', '') in ('#|cuda', '#|slow') for l in src.splitlines())

def _executed_copy():
    spec = importlib.util.spec_from_file_location('run_nbs', ROOT/'tools'/'run_nbs.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m.executed_copy('10_tutorial.ipynb', ROOT/'_exec', run_all=True)

def _run_all(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1'); monkeypatch.setenv('TRANSFORMERS_OFFLINE', '1')
    monkeypatch.setenv('TOKENIZERS_PARALLELISM', 'false')
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))   # this checkout's library
    nb = nbformat.read(ROOT/'nbs'/'10_tutorial.ipynb', as_version=4)
    ExecutePreprocessor(timeout=600, kernel_name='python3').preprocess(nb, {'metadata': {'path': str(ROOT/'nbs')}})  # raises on an error
    return nb

def test_tutorial_run_all(monkeypatch):
    copy = _executed_copy()
    nb = nbformat.read(copy, as_version=4) if copy else _run_all(monkeypatch)
    flagged = [c for c in nb.cells if c.cell_type == 'code' and _flagged(c.source)]
    assert flagged
    import torch
    for c in flagged:
        assert 'needs(' in c.source, f"a full-size cell checks what it needs first: {c.source[:80]!r}"
        text = ''.join(o.get('text', '') for o in c.outputs if o.output_type == 'stream')
        if not torch.cuda.is_available():   # no GPU here (nor the full-size model): each says so in one line, and does nothing else
            want = 'skipped: needs a CUDA GPU' if 'cuda=True' in c.source else 'skipped: needs '
            assert text.startswith(want) and text.count('\n') == 1, (c.source[:80], text)
    assert not [o for c in nb.cells for o in c.get('outputs', []) if o.output_type == 'error']
    code = [c for c in nb.cells if c.cell_type == 'code' and c.source.strip() and 'nbdev_export(' not in c.source]
    assert all(c.get('execution_count') for c in code), 'every cell ran'
