import os, sys, subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def run_cli(name, *args, timeout=600, env=None, cwd=None):
    "Run console script `name` from this venv as a subprocess; returns the CompletedProcess (text)."
    e = {**os.environ, 'TOKENIZERS_PARALLELISM': 'false', 'HF_HUB_OFFLINE': '1', **(env or {})}
    return subprocess.run([str(BIN/name), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=e, cwd=cwd)

@pytest.fixture(scope='session')
def tiny_ckpt(tmp_path_factory):
    "A tiny LLaVA checkpoint folder written with save_pretrained (shared by the whole session)."
    from llava_lora_nb.testing import save_tiny_checkpoint
    return save_tiny_checkpoint(tmp_path_factory.mktemp('ckpt')/'tiny-llava')

@pytest.fixture(scope='session')
def shapes(tmp_path_factory):
    "The shapes task: (train json, held-out json, image folder)."
    from llava_lora_nb.testing import make_shapes_dataset
    d = tmp_path_factory.mktemp('shapes')
    return make_shapes_dataset(d, n=96, seed=0), make_shapes_dataset(d, n=32, seed=1, name='heldout.json'), d
