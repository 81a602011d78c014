#!/usr/bin/env python
"""Where `make test`'s time went: the ten slowest notebooks and tests, each stage and the total.

    python tools/test_report.py _exec            # after tools/test.sh: reads _exec/.sources.json, _exec/pytest.xml, _exec/stages.tsv

Notebook seconds are each notebook's own execution (`tools/run_nbs.py --to`, two at a time); test seconds are pytest's
per-test durations (setup, call and teardown, from its JUnit XML: a test that builds a shared fixture first pays for it).
"""
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

def notebook_times(d:Path) -> dict:
    f = d/'.timings.json'
    return json.loads(f.read_text()) if f.exists() else {}

def test_times(d:Path) -> dict:
    "{'file::test': seconds} from pytest's JUnit XML (xdist workers' reports are merged into it by pytest)."
    f = d/'pytest.xml'
    if not f.exists(): return {}
    out = {}
    for tc in ET.parse(f).getroot().iter('testcase'):
        name = f"{tc.get('classname', '').replace('.', '/')}.py::{tc.get('name')}"
        out[name] = out.get(name, 0.0) + float(tc.get('time', 0))
    return out

def stages(d:Path) -> list:
    f = d/'stages.tsv'
    if not f.exists(): return []
    return [(l.split('\t')[0], float(l.split('\t')[1])) for l in f.read_text().splitlines() if '\t' in l]

def report(d:Path, total:float|None=None, n:int=10) -> str:
    nb, ts, st = notebook_times(d), test_times(d), stages(d)
    items = [(s, f'notebook  nbs/{k}') for k, s in nb.items()] + [(s, f'test      {k}') for k, s in ts.items()]
    lines = [f'== where the time went: the {n} slowest of {len(nb)} notebooks and {len(ts)} tests (seconds of their own; '
             'they run two at a time)']
    lines += [f'  {s:7.1f} s  {what}' for s, what in sorted(items, reverse=True)[:n]]
    if nb or ts: lines.append(f'  sums: notebooks {sum(nb.values()):.0f} s, tests {sum(ts.values()):.0f} s')
    if st: lines.append('  stages (wall): ' + ', '.join(f'{k} {v:.0f} s' for k, v in st))
    if total is not None: lines.append(f'  total (wall): {total:.0f} s')
    return '\n'.join(lines)

if __name__ == '__main__':
    d = Path(sys.argv[1] if len(sys.argv) > 1 else '_exec')
    total = float(sys.argv[2]) if len(sys.argv) > 2 else None
    print(report(d, total))
