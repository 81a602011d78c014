#!/usr/bin/env python
"Write README.md from nbs/index.ipynb (what `nbdev_readme` does with Quarto, which these machines lack)."
import json, re, sys
from pathlib import Path

def render(nb_path='nbs/index.ipynb'):
    nb = json.loads(Path(nb_path).read_text())
    parts = []
    for c in nb['cells']:
        src = ''.join(c['source']).strip()
        if not src or src.startswith('#| hide'): continue
        if c['cell_type'] == 'markdown': parts.append(re.sub(r'\]\((\w+\.ipynb)\)', r'](nbs/\1)', src))  # links work on the repo page
        else: parts.append('```python\n' + src + '\n```')
    return '<!-- WARNING: generated from nbs/index.ipynb by tools/readme.py; do not edit -->\n\n' + '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    out = render()
    if '--check' in sys.argv:
        if Path('README.md').read_text() != out: sys.exit('FAIL: README.md is out of date: run `python tools/readme.py`')
        print('README.md in sync with nbs/index.ipynb')
    else: Path('README.md').write_text(out)
