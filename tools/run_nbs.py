#!/usr/bin/env python
"""Execute the notebooks, each once, in fresh kernels: the notebook tests of `make test`, and `make outputs`.

    python tools/run_nbs.py --to _exec --run_all nbs/10_tutorial.ipynb   # make test: executed copies into _exec/
    python tools/run_nbs.py                                              # make outputs: every notebook, in place
    python tools/run_nbs.py nbs/10_tutorial.ipynb nbs/08_merge.ipynb     # some of them, in place

Each notebook runs top to bottom in a fresh kernel (cwd `nbs/`, no network needed, one torch thread per kernel when
two run at a time on two cores), skipping what `nbdev_test` skips: cells flagged `slow` or `cuda` (their outputs are
cleared: they need a GPU, the hub or minutes), `#| eval: false`, the `nbdev_export()` cell, and notebooks whose
frontmatter says `skip_exec: true`. A notebook named with `--run_all` runs as JupyterLab's *Run All* would: flagged cells
too (on a CPU machine each says in one line why it skipped, which `tests/test_run_all.py` checks).

`--to DIR` (what `make test` runs): the sources are left alone; each executed notebook is written to DIR, with
`DIR/.sources.json` recording the digest of the sources (`tools/docs_html.py`'s `source_digest`), which notebooks ran
as Run All, and the seconds each took. The docs site (`docs_html.py --executed DIR`) and the Run-All test read these
copies instead of executing the notebooks again; the exit status is 1 when any notebook failed, each named with its error.

In place (`make outputs`): the result is written to a temporary file next to the notebook and renamed over it only
when the whole notebook ran (without the saved widget state: GitHub shows a widget's text form, the finished bar);
then `nbdev_clean` strips the metadata, as for any commit. A notebook that fails is left as it was and named.
"""
from __future__ import annotations
import argparse, importlib.util, json, os, re, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor, as_completed
import multiprocessing as mp
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
STAMP = '.sources.json'
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

def _docs_html():
    spec = importlib.util.spec_from_file_location('docs_html', ROOT/'tools'/'docs_html.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m

def _skip_exec(path:Path) -> bool:
    "Does the notebook's frontmatter say `skip_exec: true` (nbdev_test and the docs then leave it unexecuted)?"
    from nbdev.process import NBProcessor
    from nbdev.frontmatter import FrontmatterProc
    fm = getattr(NBProcessor(path, procs=FrontmatterProc, process=True).nb, 'frontmatter_', {})
    return str(fm.get('skip_exec', 'false')).lower() in ('true', '1', 'yes')

def _error_text(e:Exception) -> str:
    "The end of a cell error (nbclient's message holds the cell source and the traceback), colour codes removed."
    lines = re.sub(r'\x1b\[[0-9;]*m', '', str(e)).strip().splitlines()
    return '\n'.join(lines[-30:])

def run_one(path:str, timeout:int=1200, dest:str|None=None, run_all:bool=False, threads:int|None=None) -> tuple[str, float, str|None]:
    "Execute notebook `path` (skipping flagged cells unless `run_all`); into `dest/` or in place. (name, seconds, error or None)."
    if threads: os.environ['OMP_NUM_THREADS'] = str(threads)   # inherited by the kernel
    os.environ.update(HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false', IN_TEST='1')
    import nbformat
    from nbclient import NotebookClient
    path = Path(path); start = time.time()
    nb = nbformat.read(path, as_version=4)
    if _skip_exec(path):
        if dest: nbformat.write(nb, Path(dest)/path.name)
        return path.name, 0.0, None
    skip = set() if run_all else _skip_flags()
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
    from nbclient.exceptions import CellExecutionError, CellTimeoutError
    for attempt in (1, 2):
        try:
            NotebookClient(run, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}},
                           extra_arguments=['--IPKernelApp.log_level=40']).execute()
            break
        except (CellExecutionError, CellTimeoutError) as e:   # a cell failed: the notebook's own error
            return path.name, time.time() - start, _error_text(e)
        except Exception as e:   # the kernel did not start (e.g. a port taken between its choice and its bind): once more
            if attempt == 2: return path.name, time.time() - start, f'the kernel failed twice: {_error_text(e)}'
            print(f'  {path.name}: the kernel did not start ({type(e).__name__}: {str(e)[:120]}); starting it again', flush=True)
            for c in run.cells:
                if c.cell_type == 'code': c.outputs, c.execution_count = [], None
    for j, i in enumerate(idx): nb.cells[i] = run.cells[j]
    if dest:
        nbformat.write(nb, Path(dest)/path.name)
        return path.name, time.time() - start, None
    nb.metadata.pop('widgets', None)   # widget state: kilobytes per bar; GitHub shows each widget's text form (the finished bar)
    tmp = path.with_name(f'.{path.name}.running')
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return path.name, time.time() - start, None

def executed_copy(name:str, dest:Path=ROOT/'_exec', run_all:bool=False) -> Path|None:
    "The executed copy of notebook `name` in `dest` when it was made from the current sources (and as Run All if asked), else None."
    f = Path(dest)/STAMP
    if not f.exists(): return None
    s = json.loads(f.read_text())
    if s.get('digest') != _docs_html().source_digest() or name not in s.get('ok', []): return None
    if run_all and name not in s.get('run_all', []): return None
    return Path(dest)/name

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('notebooks', nargs='*', help='notebooks to run (default: every nbs/*.ipynb)')
    p.add_argument('--to', default=None, help='write the executed notebooks to this folder (sources unchanged) instead of in place')
    p.add_argument('--run_all', nargs='*', default=[], help='notebooks run as Run All: `slow`/`cuda` cells too')
    p.add_argument('--n_workers', type=int, default=2)
    p.add_argument('--timeout', type=int, default=1200, help='seconds per cell')
    a = p.parse_args(argv)
    nbs = [Path(n) for n in a.notebooks] or sorted(n for n in NBS.glob('*.ipynb') if not n.name.startswith(('_', '.')))
    missing = [str(n) for n in nbs + [Path(n) for n in a.run_all] if not n.exists()]
    if missing: sys.exit(f"run_nbs: error: no such notebook: {', '.join(missing)}")
    run_all = {Path(n).name for n in a.run_all}
    dest = Path(a.to).resolve() if a.to else None
    digest = _docs_html().source_digest() if dest else None   # taken before running: a source edited meanwhile makes the copies stale
    if dest:
        dest.mkdir(parents=True, exist_ok=True)
        (dest/STAMP).unlink(missing_ok=True)
    threads = max(1, (os.cpu_count() or 2) // max(1, a.n_workers))
    failed, times, t0 = {}, {}, time.time()
    # slowest first (last run's timings; with none, the Run-All ones: the tutorial), so that the last to finish is a short one
    prev = {}
    if dest and (dest/'.timings.json').exists(): prev = json.loads((dest/'.timings.json').read_text())
    nbs.sort(key=lambda n: (-prev.get(n.name, 0), n.name not in run_all))
    with ProcessPoolExecutor(a.n_workers, mp_context=mp.get_context('spawn')) as ex:
        futs = [ex.submit(run_one, str(n), a.timeout, str(dest) if dest else None, n.name in run_all, threads) for n in nbs]
        for f in as_completed(futs):
            name, secs, err = f.result()
            times[name] = round(secs, 1)
            print(f'  {name:24s} {secs:6.0f} s  ' + ('ok' + (' (Run All)' if name in run_all else '') if err is None else 'FAILED'), flush=True)
            if err: failed[name] = err
    if dest:
        (dest/'.timings.json').write_text(json.dumps(times, indent=1))
        if not failed:
            (dest/STAMP).write_text(json.dumps({'digest': digest, 'ok': sorted(times), 'run_all': sorted(run_all),
                                                'seconds': times, 'wall_s': round(time.time() - t0, 1)}, indent=1))
    else: subprocess.run(['nbdev_clean'], cwd=ROOT, check=True)
    for name, err in failed.items():
        print(f'\n---- nbs/{name} failed:\n{err}\n  -> reproduce with `nbdev_test --path nbs/{name}`', file=sys.stderr)
    if failed:
        left = '' if dest else ' and were left as they were'
        sys.exit(f"run_nbs: {len(failed)} notebook(s) failed{left}: {', '.join(failed)}")
    print(f'run_nbs: {len(times)} notebooks in {time.time() - t0:.0f} s' + (f' -> {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}/' if dest else ''))

if __name__ == '__main__': main()
