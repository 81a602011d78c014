"""Shared fixtures. `make test` runs pytest on two workers (pytest-xdist): the fixtures a test only *reads* — the tiny
checkpoints, the shapes data, a random adapter, a trained adapter with its merged model, a LLaVA-NeXT adapter — are
built once per session for both workers (`shared`: the first worker to ask builds it under a file lock, the other
waits and reads it), never once per test module or per worker."""
import os, shutil, sys, subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def pytest_configure(config):
    config.addinivalue_line('markers', 'e2e: an end-to-end test (trains, merges or runs console scripts on the tiny models); '
                                       '`make test-fast` leaves these out')
    config.addinivalue_line('markers', 'slow: needs what CI does not install (llama-cpp-python) or minutes; skipped there')

# the files whose tests take longest go first, so that two workers finish together instead of one waiting on the other's
# last long test (figures from `make test`'s report: tools/test_report.py)
_FIRST = ['test_train_next', 'test_faults', 'test_demo', 'test_train_deepspeed', 'test_packing', 'test_bench', 'test_train_cli', 'test_train_resume',
          'test_validate', 'test_train_stages', 'test_merge', 'test_docs']

@pytest.hookimpl(trylast=True)   # after pytest-xdist's own implementation
def pytest_collection_modifyitems(config, items):
    """Longest files first; and each `xdist_group`'s tests to one worker. `--dist loadgroup` groups by the `@group` suffix
    a worker adds to the test ids, but pytest-xdist 3.8 writes `item._nodeid`, which pytest 9 no longer reads (ids live in
    `item._id`): the groups were spread over both workers (the docs tests visited every page on each), so the suffix is
    added here the way pytest 9 reads it."""
    rank = {name: i for i, name in enumerate(_FIRST)}
    items.sort(key=lambda it: rank.get(Path(str(it.fspath)).stem, len(_FIRST)))   # stable: the order within a file is kept
    if not getattr(config.option, 'loadgroup', False): return
    try: from _pytest.nodeid import NodeId
    except ImportError: return   # an older pytest: xdist's own suffix works
    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get('name', 'default')) for m in item.iter_markers('xdist_group')})
        if groups and '@' not in item.nodeid and hasattr(item, '_id'): item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")

def run_cli(name, *args, timeout=600, env=None, cwd=None):
    "Run console script `name` from this venv as a subprocess; returns the CompletedProcess (text)."
    e = {**os.environ, 'TOKENIZERS_PARALLELISM': 'false', 'HF_HUB_OFFLINE': '1', **(env or {})}
    return subprocess.run([str(BIN/name), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=e, cwd=cwd)

def shared(tmp_path_factory, name:str, build):
    "Folder `name`, built once per test session by `build(folder)` even across xdist workers; only ever read afterwards."
    from filelock import FileLock
    root = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'): root = root.parent   # the workers' common base folder
    d = root/'shared'/name
    d.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(d) + '.lock'):
        if not (d/'.complete').exists():
            shutil.rmtree(d, ignore_errors=True); d.mkdir()
            build(d)
            (d/'.complete').write_text('')
    return d

@pytest.fixture(scope='session')
def tiny_ckpt(tmp_path_factory):
    "A tiny LLaVA checkpoint folder written with save_pretrained (shared by the whole session)."
    from llava_lora_nb.testing import save_tiny_checkpoint
    return shared(tmp_path_factory, 'ckpt', lambda d: save_tiny_checkpoint(d/'tiny-llava'))/'tiny-llava'

@pytest.fixture(scope='session')
def shapes(tmp_path_factory):
    "The shapes task: (train json, held-out json, image folder)."
    from llava_lora_nb.testing import make_shapes_dataset
    def build(d):
        make_shapes_dataset(d, n=96, seed=0); make_shapes_dataset(d, n=32, seed=1, name='heldout.json')
    d = shared(tmp_path_factory, 'shapes', build)
    return d/'data.json', d/'heldout.json', d

@pytest.fixture(scope='session')
def tiny_adapter(tiny_ckpt, tmp_path_factory):
    "A random (untrained) LoRA adapter folder for `tiny_ckpt`, in the trainer's output format."
    from llava_lora_nb.testing import make_tiny_adapter
    return shared(tmp_path_factory, 'tiny-adapter', lambda d: make_tiny_adapter(tiny_ckpt, d/'run'))/'run'

@pytest.fixture(scope='session')
def trained(tiny_ckpt, shapes, tmp_path_factory):
    "A LoRA adapter trained briefly on the shapes task with the real trainer (`train_cli`), and its streaming merge by `llava_lora_merge`."
    train_json, _, folder = shapes
    def build(d):
        from llava_lora_nb.train import train_cli  # in-process: the console script's exit status is the trainer's business
        out = train_cli(['--model_name_or_path', str(tiny_ckpt), '--data_path', str(train_json), '--image_folder', str(folder),
                         '--output_dir', str(d/'run'), '--lora_enable', 'True', '--lora_r', '16', '--lora_alpha', '32',
                         '--lora_dropout', '0.0', '--learning_rate', '2e-3', '--mm_projector_lr', '2e-3', '--max_steps', '40',
                         '--per_device_train_batch_size', '8', '--report_to', 'none', '--save_strategy', 'no', '--use_cpu', 'True',
                         '--seed', '0', '--disable_tqdm', 'True'])
        assert (d/'run'/'adapter_config.json').exists() and (d/'run'/'non_lora_trainables.safetensors').exists(), out
        r = run_cli('llava_lora_merge', '--model-path', d/'run', '--model-base', tiny_ckpt, '--save-model-path', d/'merged', '--streaming')
        assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    d = shared(tmp_path_factory, 'trained', build)
    return d/'run', d/'merged'

@pytest.fixture(scope='session')
def next_ckpt(tmp_path_factory):
    "A tiny LLaVA-NeXT checkpoint folder."
    from llava_lora_nb.testing import save_tiny_next_checkpoint
    return shared(tmp_path_factory, 'next', lambda d: save_tiny_next_checkpoint(d/'tiny-next'))/'tiny-next'

@pytest.fixture(scope='session')
def next_shapes(tmp_path_factory):
    "The shapes task with wide, square and tall images: (train json, image folder)."
    from llava_lora_nb.testing import make_shapes_dataset
    d = shared(tmp_path_factory, 'next-shapes', lambda d: make_shapes_dataset(d, n=48, seed=0, aspect_ratios=(0.5, 1, 2)))
    return d/'data.json', d

@pytest.fixture(scope='session')
def next_adapter(next_ckpt, tmp_path_factory):
    "A random LoRA adapter folder for the tiny LLaVA-NeXT checkpoint."
    from llava_lora_nb.testing import make_tiny_adapter
    return shared(tmp_path_factory, 'next-adapter', lambda d: make_tiny_adapter(next_ckpt, d/'run'))/'run'
