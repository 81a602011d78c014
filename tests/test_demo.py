"The main job as a user runs it: `llava_lora_demo` in a subprocess."
from conftest import run_cli

def test_demo_cli(tmp_path):
    r = run_cli('llava_lora_demo', '--output_dir', tmp_path/'demo')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'llava_lora_demo' in r.stdout
    assert (tmp_path/'demo'/'data'/'data.json').exists()
