#!/usr/bin/env python
"""Edit notebooks as plain text: convert between .ipynb and a percent-format script.

    python tools/nbpy.py to-py  nbs/01_records.ipynb  /tmp/01_records.py   # notebook -> script
    python tools/nbpy.py to-nb  /tmp/01_records.py    nbs/01_records.ipynb # script -> notebook (outputs dropped)

Cells are separated by lines `# %%` (code) and `# %% [markdown]` (markdown; each line of the
markdown cell is prefixed by `# `). Run `nbdev_clean` afterwards.
"""
import json, sys
from pathlib import Path

def to_py(nb_path, py_path):
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            out.append('# %% [markdown]\n' + '\n'.join(('# ' + l) if l else '#' for l in src.split('\n')))
        else: out.append('# %%\n' + src)
    Path(py_path).write_text('\n\n'.join(out) + '\n')

def to_nb(py_path, nb_path):
    text = Path(py_path).read_text()
    cells, cur, kind = [], [], None
    def flush():
        if kind is None: return
        lines = cur[:]
        while lines and not lines[-1].strip(): lines.pop()
        if kind == 'markdown': lines = [l[2:] if l.startswith('# ') else l[1:] if l.startswith('#') else l for l in lines]
        src = '\n'.join(lines)
        c = {'cell_type': kind, 'metadata': {}, 'source': [l + '\n' for l in src.split('\n')]}
        c['source'][-1] = c['source'][-1].rstrip('\n')
        if kind == 'code': c.update(execution_count=None, outputs=[])
        cells.append(c)
    for line in text.split('\n'):
        if line.startswith('# %%'):
            flush(); cur = []; kind = 'markdown' if '[markdown]' in line else 'code'
        else: cur.append(line)
    flush()
    nb = {'cells': cells, 'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    Path(nb_path).write_text(json.dumps(nb, indent=1) + '\n')

if __name__ == '__main__':
    cmd, a, b = sys.argv[1:4]
    {'to-py': to_py, 'to-nb': to_nb}[cmd](a, b)
