"""mkdocs hook for the docs site `tools/docs_html.py` builds (listed under `hooks:` in its generated mkdocs.yml).

It also takes the `¶` out of nbconvert's heading permalinks (the site's CSS draws it), so search results and
titles show the heading alone. mkdocs-jupyter builds a page's table of contents from the notebook's markdown cells only, so the headings that
code cells print (nbdev's `show_doc` entries, reports shown with `Markdown(...)`) are missing from it. This hook
rebuilds every notebook page's table of contents from the headings (h1-h3 with an id) of the rendered page.
"""
import html, re
from mkdocs.structure.toc import get_toc

_re_h = re.compile(r'<h([1-3])[^>]*\bid="([^"]+)"[^>]*>(.*?)</h\1>', re.S)

def _text(s:str) -> str:
    s = re.sub(r'<a class="anchor-link".*?</a>', '', s, flags=re.S)
    return html.unescape(re.sub(r'<[^>]+>', '', s)).replace('¶', '').strip()

def toc_tokens(page_html:str) -> list:
    "Nested toc tokens ({level, id, name, children}) of the h1-h3 headings in `page_html`, in order."
    root, stack = [], []
    for m in _re_h.finditer(page_html):
        tok = dict(level=int(m.group(1)), id=m.group(2), name=_text(m.group(3)), children=[])
        while stack and stack[-1]['level'] >= tok['level']: stack.pop()
        (stack[-1]['children'] if stack else root).append(tok)
        stack.append(tok)
    return root

_re_anchor = re.compile(r'(<a class="anchor-link"[^>]*>)¶(</a>)')

def on_page_content(page_html, page, config, files):
    if page.file.src_path.endswith('.ipynb'):
        page_html = _re_anchor.sub(r'\1\2', page_html)   # the ¶ is drawn by the site's CSS: not in the search index's titles
        toks = toc_tokens(page_html)
        if toks: page.toc = get_toc(toks)
    return page_html
