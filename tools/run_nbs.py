#!/usr/bin/env python
"""Re-execute notebooks in place so their committed outputs (plots, tables, results) show on GitHub: `make outputs`.

    python tools/run_nbs.py                      # every notebook in nbs/ (two at a time)
    python tools/run_nbs.py nbs/10_tutorial.ipynb nbs/08_merge.ipynb

Each notebook runs top to bottom in a fresh kernel (cwd `nbs/`, no network needed), skipping what `nbdev_test`
skips: cells flagged `slow` or `cuda` (their outputs are cleared: they need a GPU, the hub or minutes), `#| eval: false`
and the `nbdev_export()` cell. The result is written to a temporary file next to the notebook and renamed over it
only when the whole notebook ran (without the saved widget state: GitHub shows a widget's text form, the finished
bar); then `nbdev_clean` strips the metadata, as for any commit. A notebook that
fails is left as it was and named, with its error, in the exit status.
"""
from __future__ import annotations
import argparse, os, re, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
_re_flag = re.compile(r'^\s*#\|\s*([\w-]+:?)\s*(.*)$')

def _flags(src:str) -> dict:
    d = {}
    for line in src.splitlines():
        if not line.strip(): continue
        m = _re_flag.match(line)
        if not m: break
        d[m.group(1)] = m.group(2).strip()
    return d

def _skip_flags() -> set:
    from configparser import ConfigParser
    c = ConfigParser(); c.read(ROOT/'settings.ini')
    return set(c['DEFAULT'].get('tst_flags', 'slow cuda').split())

def run_one(path:str, timeout:int=1200) -> tuple[str, float, str|None]:
    "Execute notebook `path` in place (skipping flagged cells); (name, seconds, error or None)."
    import nbformat
    from nbclient import NotebookClient
    path = Path(path); start = time.time()
    nb = nbformat.read(path, as_version=4)
    skip = _skip_flags()
    keep = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != 'code': continue
        d = _flags(c.source)
        if 'nbdev_export(' in c.source or d.get('eval:', '').lower() == 'false' or skip & set(d):
            c.outputs, c.execution_count = [], None
            keep.append(i)
    # run the other cells: nbclient executes every code cell, so hand it a copy without the skipped ones
    run = nbformat.v4.new_notebook(metadata=nb.metadata)
    idx = [i for i, c in enumerate(nb.cells) if i not in keep]
    run.cells = [nb.cells[i] for i in idx]
    env_keep = {k: os.environ.get(k) for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'TOKENIZERS_PARALLELISM')}
    os.environ.update(HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false')
    try:
        NotebookClient(run, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}},
                       extra_arguments=['--IPKernelApp.log_level=40']).execute()
    except Exception as e:
        return path.name, time.time() - start, f'{type(e).__name__}: {str(e)[-1500:]}'
    finally:
        for k, v in env_keep.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    for j, i in enumerate(idx): nb.cells[i] = run.cells[j]
    nb.metadata.pop('widgets', None)   # widget state: kilobytes per bar; GitHub shows each widget's text form (the finished bar)
    tmp = path.with_name(f'.{path.name}.running')
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return path.name, time.time() - start, None

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('notebooks', nargs='*', help='notebooks to run (default: every nbs/*.ipynb)')
    p.add_argument('--n_workers', type=int, default=2)
    p.add_argument('--timeout', type=int, default=1200, help='seconds per cell')
    a = p.parse_args(argv)
    nbs = [Path(n) for n in a.notebooks] or sorted(NBS.glob('*.ipynb'))
    missing = [str(n) for n in nbs if not n.exists()]
    if missing: sys.exit(f"run_nbs: error: no such notebook: {', '.join(missing)}")
    failed = []
    with ProcessPoolExecutor(a.n_workers) as ex:
        futs = [ex.submit(run_one, str(n), a.timeout) for n in nbs]
        for f in as_completed(futs):
            name, secs, err = f.result()
            print(f'{name:24s} {secs:6.0f} s  ' + ('ok' if err is None else f'FAILED: {err}'), flush=True)
            if err: failed.append(name)
    subprocess.run(['nbdev_clean'], cwd=ROOT, check=True)
    if failed: sys.exit(f"run_nbs: {len(failed)} notebook(s) failed and were left as they were: {', '.join(failed)}")

if __name__ == '__main__': main()
