"The benchmark scripts still run (smoke size, nothing timed) and bench/README.md is what the committed results give."
import json, subprocess, sys
from pathlib import Path
import pytest

pytestmark = pytest.mark.e2e   # trains, merges or runs console scripts: not in `make test-fast`

BENCH = Path(__file__).resolve().parents[1]/'bench'

def bench(script, tmp_path, *args, timeout=900):
    out = tmp_path/'result.json'
    r = subprocess.run([sys.executable, str(BENCH/script), '--quick', '--workdir', str(tmp_path), '--json', str(out), *args],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(out.read_text())

def test_bench_data_quick(tmp_path):
    d = bench('bench_data.py', tmp_path)
    same = d['fast_path_equals_plain']
    assert same['input_ids'] == same['labels'] == same['pixel_values'] == d['n_records']   # the cached path is the plain path, bitwise
    assert d['comparison']['pixels_equal'] == d['comparison']['image_records']             # and our images are the baseline's
    assert set(d['records_per_s_median']) == {f'{k}_w{w}' for k in ('baseline', 'ours', 'ours_cached') for w in (0, 2)}
    assert d['machine']['loadavg_start'] and d['loadavg_end']

def test_bench_data_next_quick(tmp_path):
    d = bench('bench_data_next.py', tmp_path)
    same, c = d['fast_path_equals_plain'], d['comparison']
    assert same['input_ids'] == same['labels'] == same['pixel_values'] == same['image_sizes'] == d['n_records']   # cached = plain, bitwise
    assert c['ids_equal'] == d['n_records'] and c['pixels_equal'] == c['image_sizes_equal'] == c['image_records'] > 0   # ours = the processor
    assert set(d['records_per_s_median']) == {f'{k}_w{w}' for k in ('processor', 'ours', 'ours_cached') for w in (0, 2)}

def test_bench_train_quick(tmp_path):
    d = bench('bench_train.py', tmp_path)
    r = d['results']['tiny']
    assert set(r['sec_per_step']) == {'ours', 'ours_same_batches', 'plain'}
    assert {'lora', 'qlora', 'full'} <= set(r['methods'])
    assert all(l == l for l in r['final_loss'].values())   # finite, not NaN

def test_bench_packing_quick(tmp_path):
    "Packed rows carry no padding and the same supervised tokens as padded batches; with TRL installed, its labels are ours."
    try: import trl; methods = 'padded,grouped,packed,trl'
    except ImportError: methods = 'padded,grouped,packed'   # TRL is the `bench` extra, not part of CI's install
    d = bench('bench_packing.py', tmp_path, '--methods', methods)
    m = d['sizes']['tiny']['median']
    assert m['packed']['padding_fraction'] == 0 < m['padded']['padding_fraction']
    assert len({x['supervised_tokens'] for x in m.values()}) == 1   # every method trains on the same supervised tokens
    if 'trl' in m: assert d['labels_vs_trl']['labels_equal'] == d['labels_vs_trl']['ids_equal'] == d['labels_vs_trl']['records']

def test_bench_memory_quick(tmp_path):
    "Both loss paths train to the same losses, packed and padded (nothing timed here)."
    d = bench('bench_memory.py', tmp_path)
    assert set(d['layouts']) == {'packed', 'padded+checkpointing'} and all(m['same_losses'] < 1e-4 for m in d['layouts'].values()), d['layouts']

def test_bench_roofline_quick(tmp_path):
    "The roofline script counts FLOPs, times bare matmul at the same shapes and profiles a step (nothing timed here)."
    d = bench('bench_roofline.py', tmp_path)
    r = d['sizes']['tiny']
    assert set(r) == {'plain', 'packed'} and all(x['achieved_flops_per_s'] > 0 and x['bare_mm_flops_per_s'] > 0 for x in r.values())
    assert sum(r['packed']['profile_s'].values()) > 0

def test_bench_merge_quick(tmp_path):
    d = bench('bench_merge.py', tmp_path)
    assert d['summary']['targets']['outputs_identical'] is True

def test_bench_eval_quick(tmp_path):
    d = bench('bench_eval.py', tmp_path)
    assert all(d['answers_identical_to_bs1'].values()), d['answers_identical_to_bs1']   # batched answers are the one-by-one answers
    assert set(d['answers_per_s_median']) == {'bs1', 'bs4', 'bs8'} and set(d['speedup_over_bs1']) == {'bs4', 'bs8'}

def test_bench_readme_in_sync():
    r = subprocess.run([sys.executable, str(BENCH/'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
