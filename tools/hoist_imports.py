#!/usr/bin/env python
"""Move imports out of example cells into one hidden import cell near the top of each notebook.

nbdev's docs processing executes every (non-exported) cell that contains an import anywhere, in a fresh
kernel: a cell mixing an import with code that uses earlier variables then fails the docs build. This
rewrites such cells (exported cells are left alone).

    python tools/hoist_imports.py nbs/01_records.ipynb [...]    # rewrite in place; then nbdev_clean
    python tools/hoist_imports.py --check nbs/*.ipynb        # exit 1 listing offending cells
"""
import ast, json, sys
from pathlib import Path

SHOW = ('#| export', '#| exports', '#| exporti', '#| exec_doc', '#|export')

def _is_exported(src): return any(l.strip().startswith(SHOW) for l in src.splitlines())

def _offending(src):
    try: tree = ast.parse(src)
    except SyntaxError: return None
    if 'nbdev_export()' in src: return None
    imps = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    if not imps: return None
    others = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom))]
    return imps if others else None

def _cut(src, nodes):
    "Remove the source text of `nodes` from `src`; return (new_src, import_lines)."
    lines = src.split('\n')
    got = []
    for n in sorted(nodes, key=lambda n: (n.lineno, n.col_offset), reverse=True):
        l0, l1 = n.lineno - 1, n.end_lineno - 1
        text = '\n'.join(lines[l0:l1 + 1])
        start, end = n.col_offset, len(text) - (len(lines[l1]) - n.end_col_offset)
        stmt = text[start:end]
        got.append(' '.join(s.strip() for s in stmt.split('\n')))
        rest = text[:start] + text[end:]
        head, tail = rest[:start], rest[start:]
        tail = tail.lstrip()
        if tail.startswith(';'): tail = tail[1:].lstrip()
        elif head.rstrip().endswith(';'): head = head.rstrip()[:-1]
        new = head + tail
        if not new.strip():
            indent = text[:len(text) - len(text.lstrip())]
            new = indent + 'pass' if indent else ''
        lines[l0:l1 + 1] = new.split('\n') if new else []
    out = '\n'.join(lines)
    ast.parse(out)
    return out, list(reversed(got))

def fix(path, check=False):
    nb = json.loads(Path(path).read_text())
    moved, bad = [], []
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] != 'code': continue
        src = ''.join(c['source'])
        if _is_exported(src): continue
        nodes = _offending(src)
        if not nodes: continue
        bad.append(i)
        if check: continue
        new, imps = _cut(src, nodes)
        c['source'] = [l + '\n' for l in new.split('\n')]; c['source'][-1] = c['source'][-1].rstrip('\n')
        moved += [m for m in imps if m not in moved]
    if check or not moved: return bad
    # insert after the last leading cell that is an export/import/default_exp/hide-import cell
    pos = 0
    for i, c in enumerate(nb['cells']):
        s = ''.join(c['source'])
        if c['cell_type'] == 'code' and ('default_exp' in s or _is_exported(s) and 'import' in s or
                                         (not _offending(s) and 'import' in s and 'nbdev_export()' not in s)):
            pos = i + 1
        elif c['cell_type'] == 'code': break
    cell = {'cell_type': 'code', 'execution_count': None, 'metadata': {}, 'outputs': [],
            'source': [l + '\n' for l in (['#| hide'] + moved)]}
    cell['source'][-1] = cell['source'][-1].rstrip('\n')
    nb['cells'].insert(pos, cell)
    Path(path).write_text(json.dumps(nb, indent=1) + '\n')
    return bad

if __name__ == '__main__':
    check = '--check' in sys.argv
    failed = False
    for p in [a for a in sys.argv[1:] if not a.startswith('--')]:
        bad = fix(p, check)
        if bad:
            print(f"{p}: cells {bad} mix imports with other code" + ('' if check else ' (imports hoisted)'))
            failed = True
    sys.exit(1 if failed and check else 0)
