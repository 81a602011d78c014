"""`llava_lora_export` as a user runs it (issue 28): a finetuned, merged tiny LLaVA-1.5 exported for llama.cpp, read back,
verified again, and the wrong inputs refused in one line with exit status 2 and nothing written. (`nbs/09c_export.ipynb`
covers adapters, q8_0 and the checks in-process; `tests/test_export_llama_cpp.py` runs llama.cpp itself.)"""
import json
import pytest
from conftest import run_cli

pytestmark = pytest.mark.e2e

def test_export_merged_then_verify(trained, shapes, tmp_path):
    from llava_lora_nb.gguf_layout import llama_cpp_chat_template
    from llava_lora_nb.export import field_value, EXPORT_JSON
    _, merged = trained
    r = run_cli('llava_lora_export', '--model-path', merged, '--out', tmp_path/'gguf')
    assert r.returncode == 0 and r.stdout.startswith('llava_lora_export: wrote') and r.stdout.count('\n') == 1, r.stdout + r.stderr
    files = sorted(p.name for p in (tmp_path/'gguf').iterdir())
    assert files == ['Modelfile', 'README.md', EXPORT_JSON, 'merged-f16.gguf', 'mmproj-merged-f16.gguf'], files
    ct = field_value(tmp_path/'gguf'/'merged-f16.gguf', 'tokenizer.chat_template')
    assert ct == "{{ ' ' }}" + llama_cpp_chat_template('vicuna_v1')   # the training template; its `▁` as a leading space
    assert 'FROM ./mmproj-merged-f16.gguf' in (tmp_path/'gguf'/'Modelfile').read_text()
    r = run_cli('llava_lora_export', '--verify', '--out', tmp_path/'gguf')
    assert r.returncode == 0 and 'verified' in r.stdout, r.stdout + r.stderr

def test_export_refusals(trained, tmp_path):
    run, merged = trained
    for args, msg in [(['--model_path', tmp_path/'mergd', '--out', tmp_path/'x'], 'does not exist'),
                      (['--model_path', run, '--out', tmp_path/'x'], 'pass --model_base'),
                      (['--model_path', merged, '--out', tmp_path/'x', '--type', 'q4_k'], "--type 'q4_k'")]:
        r = run_cli('llava_lora_export', *args)
        assert r.returncode == 2 and r.stderr.startswith('llava_lora_export: error:') and msg in r.stderr, r.stderr
        assert r.stderr.count('\n') == 1 and not r.stdout, r.stderr   # one line, no traceback
    assert not any(tmp_path.iterdir())   # nothing written, not even a staging folder
