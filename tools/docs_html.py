#!/usr/bin/env python
"""The docs site without Quarto (what `make docs` runs when `quarto` is not on the PATH).

Per notebook in `nbs/` (in parallel):
  1. execute a copy with nbconvert's ExecutePreprocessor (kernel `python3` of this venv, cwd `nbs/`),
     skipping what `nbdev_test` skips: cells flagged with `tst_flags` (`slow`, `cuda`), `#| eval: false`,
     the `nbdev_export()` cell, and whole notebooks with `skip_exec: true` in their frontmatter;
  2. apply nbdev's own docs processing (`FilterDefaults`, exactly what `nbdev_proc_nbs` / `nbdev_docs`
     apply: hide/export cells removed, `show_doc` added and executed, frontmatter) and save the result
     in `_proc/` as nbdev does;
  3. render it to HTML with nbconvert (JupyterLab look, plots as embedded PNGs) into a page named as
     Quarto names it (nbdev's `output-file`: `01_records.ipynb` -> `records.html`, `index.ipynb` -> `index.html`),
     with a sidebar in `nbs/sidebar.yml` order, links to notebooks rewritten to their pages.
The site is written to a temporary folder next to the destination and renamed into place when complete.
"""
from __future__ import annotations
import argparse, hashlib, html, json, os, re, shutil, sys, time, traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
import multiprocessing as mp
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
STAMP = '.sources.json'   # in the built site: digest of everything the site is built from

# ---------------------------------------------------------------- what the site is built from
def source_files(root:Path=ROOT) -> list[Path]:
    "Every file the site depends on: notebooks, sidebar/quarto/css, the library, this builder."
    nbs = root/'nbs'
    fs = [p for p in nbs.rglob('*') if p.is_file() and not any(q.startswith(('.', '_proc', '_docs')) for q in p.relative_to(nbs).parts[:-1])
          and p.suffix in ('.ipynb', '.yml', '.css', '.png', '.jpg', '.svg')]
    fs += list((root/'llava_lora_nb').rglob('*.py')) + [root/'settings.ini', Path(__file__).resolve()]
    return sorted(fs)

def source_digest(root:Path=ROOT) -> str:
    "sha256 over the paths and contents of `source_files`: the site in a folder is fresh when its stamp matches."
    h = hashlib.sha256()
    for p in source_files(root):
        h.update(str(p.relative_to(root)).encode()); h.update(b'\0'); h.update(p.read_bytes())
    return h.hexdigest()

def is_fresh(dest:Path, root:Path=ROOT) -> bool:
    "Was the site in `dest` built from the current sources?"
    f = Path(dest)/STAMP
    return f.exists() and json.loads(f.read_text()).get('digest') == source_digest(root)

# ---------------------------------------------------------------- directives and sidebar
_re_dir = re.compile(r'^\s*#\|\s*([\w-]+:?)\s*(.*)$')

def directives(src:str) -> dict:
    "nbdev/Quarto `#| key: value` lines at the top of a code cell, as {key(with ':' if any): value}."
    d = {}
    for line in src.splitlines():
        if not line.strip(): continue
        m = _re_dir.match(line)
        if not m: break
        d[m.group(1)] = m.group(2).strip()
    return d

def strip_directives(src:str) -> str:
    "The cell source without its leading `#|` lines (Quarto does not show them)."
    lines = src.splitlines(); i = 0
    while i < len(lines) and (not lines[i].strip() or _re_dir.match(lines[i])): i += 1
    return '\n'.join(lines[i:])

def sidebar(nbs:Path=NBS) -> list[tuple[str|None, str]]:
    "(section or None, notebook file name) for every entry of `sidebar.yml`, in order."
    import yaml
    f = nbs/'sidebar.yml'
    if not f.exists(): return []
    out = []
    def walk(items, section):
        for it in items or []:
            if isinstance(it, str): out.append((section, it))
            elif isinstance(it, dict) and 'contents' in it: walk(it['contents'], it.get('section', section))
            elif isinstance(it, dict) and 'href' in it: out.append((section, it['href']))
    walk(yaml.safe_load(f.read_text())['website']['sidebar']['contents'], None)
    return out

def page_name(nb_name:str) -> str:
    "The page Quarto writes for a notebook under nbdev: numeric prefix dropped, `.html` (nbdev's `output-file`)."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(Path(nb_name)).as_posix()

# ---------------------------------------------------------------- step 1: execute
def _make_executor(skip_flags, deadline, **kw):
    from nbconvert.preprocessors import ExecutePreprocessor
    class SkipFlaggedExecute(ExecutePreprocessor):
        "ExecutePreprocessor that skips the cells `nbdev_test` skips and enforces a per-notebook deadline."
        def preprocess_cell(self, cell, resources, index):
            if cell.cell_type != 'code': return cell, resources
            d = directives(cell.source)
            if ('nbdev_export' + '(' in cell.source or d.get('eval:', '').lower() == 'false'
                or set(skip_flags) & set(d)): return cell, resources
            if time.time() > deadline:
                raise TimeoutError(f'notebook timeout reached before cell {index}')
            self.timeout = max(1, int(deadline - time.time()))
            return super().preprocess_cell(cell, resources, index)
    return SkipFlaggedExecute(kernel_name='python3', extra_arguments=['--IPKernelApp.log_level=40'], **kw)  # no TCP banner

# ---------------------------------------------------------------- step 3: render
_TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}<link rel="stylesheet" href="site.css"><link rel="stylesheet" href="styles.css">{% endblock extra_css %}
{%- block body_header -%}
<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
{{ resources.site_nav }}
<main id="content">
<header id="title-block-header"><h1 class="title">{{ resources.page_title }}</h1>
{%- if resources.page_description %}<p class="description">{{ resources.page_description }}</p>{% endif %}</header>
{%- endblock body_header -%}
{% block body_footer %}
<footer class="site-footer">Built from <code>nbs/{{ resources.nb_name }}</code> by <code>make docs</code> (nbconvert fallback; with Quarto installed, <code>nbdev_docs</code> builds the full theme).</footer>
</main>
</body>
{% endblock body_footer %}
"""

SITE_CSS = """
body.jp-Notebook { margin: 0; padding: 0; }
nav#sidebar { position: fixed; top: 0; left: 0; bottom: 0; width: 16rem; overflow-y: auto; padding: 1.2rem 1rem;
  background: #f7f7f9; border-right: 1px solid #e3e3e8; font-family: system-ui, sans-serif; font-size: 0.95rem; box-sizing: border-box; }
nav#sidebar .site-title { display: block; font-weight: 700; font-size: 1.15rem; margin-bottom: 1rem; color: #222; text-decoration: none; }
nav#sidebar .section { margin: 1rem 0 0.3rem; font-weight: 600; color: #555; text-transform: uppercase; font-size: 0.75rem; letter-spacing: .05em; }
nav#sidebar ul { list-style: none; margin: 0; padding: 0; }
nav#sidebar li a { display: block; padding: 0.2rem 0.4rem; border-radius: 4px; color: #2c5aa0; text-decoration: none; }
nav#sidebar li a:hover { background: #e8eef8; }
nav#sidebar li a.active { background: #2c5aa0; color: #fff; }
main#content { margin-left: 16rem; padding: 1.5rem 2.5rem 3rem; max-width: 60rem; }
header#title-block-header h1.title { font-family: system-ui, sans-serif; margin: 0 0 .4rem; font-size: 2.2rem; }
header#title-block-header p.description { font-style: italic; font-size: 1.2rem; opacity: .75; margin: 0 0 1.5rem; }
.jp-RenderedMarkdown pre, .jp-RenderedHTMLCommon pre { background: #f5f5f7; padding: .6rem .8rem; border-radius: 4px; }
footer.site-footer { margin-top: 3rem; font-size: .8rem; color: #777; }
.jp-RenderedImage img, .jp-RenderedHTMLCommon img { max-width: 100%; height: auto; }
@media (max-width: 50rem) { nav#sidebar { position: static; width: auto; } main#content { margin-left: 0; } }
"""

def _inline_md(s:str) -> str:
    "Escape `s` for HTML, then render `code` spans (frontmatter descriptions use them)."
    return re.sub(r'`([^`]+)`', r'<code>\1</code>', html.escape(s))

def _nav(pages:list[dict], current:str, title:str) -> str:
    out = [f'<nav id="sidebar"><a class="site-title" href="index.html">{html.escape(title)}</a>']
    section, open_ul = object(), False
    for p in pages:
        if p['section'] != section:
            if open_ul: out.append('</ul>')
            section = p['section']
            if section: out.append(f'<div class="section">{html.escape(section)}</div>')
            out.append('<ul>'); open_ul = True
        cls = ' class="active"' if p['page'] == current else ''
        out.append(f'<li><a href="{p["page"]}"{cls}>{html.escape(p["title"])}</a></li>')
    if open_ul: out.append('</ul>')
    return '\n'.join(out + ['</nav>'])

_re_attr_link = re.compile(r'\[([^\]]+)\]\(([^)\s]+)\)\{([^}]*)\}')

def _pandoc_links(md:str) -> str:
    "Pandoc's `[text](url){attrs}` (nbdev's show_doc `[source]` links) as HTML, which nbconvert's markdown understands."
    return _re_attr_link.sub(lambda m: f'<a href="{m.group(2)}" {m.group(3)}>{m.group(1)}</a>', md)

def _to_html_nb(nb):
    "nbdev's processed notebook -> an nbformat notebook ready for nbconvert (Quarto's cell options applied)."
    import nbformat
    cells = []
    for c in nb.cells:
        if c.get('source') is None: continue
        if c.cell_type == 'raw' and c.source.lstrip().startswith('---'): continue   # frontmatter: shown in the header
        if c.cell_type == 'markdown': c.source = _pandoc_links(c.source)
        if c.cell_type == 'code':
            for o in c.get('outputs', []):
                if 'text/markdown' in o.get('data', {}):
                    md = o['data']['text/markdown']
                    o['data']['text/markdown'] = _pandoc_links(''.join(md) if isinstance(md, list) else md)
            d = directives(c.source)
            if d.get('include:', '').lower() == 'false': continue
            if d.get('output:', '').lower() == 'false': c.outputs = []
            c.source = strip_directives(c.source)
            if d.get('echo:', '').lower() == 'false':
                c.metadata.setdefault('transient', {})['remove_source'] = True
            for o in c.get('outputs', []):            # widgets cannot render offline: keep their text fallback
                data = o.get('data', {})
                if 'application/vnd.jupyter.widget-view+json' in data and len(data) > 1:
                    del data['application/vnd.jupyter.widget-view+json']
            c.outputs = [o for o in c.get('outputs', []) if o.get('data', True) and
                         list(o.get('data', {'x': 0})) != ['application/vnd.jupyter.widget-view+json']]
            if not c.source.strip() and not c.outputs: continue
        cells.append(c)
    nb.cells = cells
    nb.metadata.pop('widgets', None)
    from execnb.nbio import nb2dict
    return nbformat.reads(json.dumps(nb2dict(nb)), as_version=4)

_re_href = re.compile(r'''(href|src)=(["'])(?!https?:|//|#|data:|mailto:)([^"'#?]+?)\.ipynb([#?][^"']*)?\2''')

def _rewrite_links(text:str, pagemap:dict, site_url:str, missing:set) -> str:
    "Links to notebooks -> their pages; absolute links into this site (nbdev's symbol links) -> relative."
    def sub(m):
        target = m.group(3) + '.ipynb'
        name = Path(target).name
        if name not in pagemap: missing.add(target)
        page = pagemap.get(name, page_name(name))
        return f'{m.group(1)}={m.group(2)}{page}{m.group(4) or ""}{m.group(2)}'
    text = _re_href.sub(sub, text)
    if site_url: text = text.replace(f'href="{site_url.rstrip("/")}/', 'href="')
    return text

# ---------------------------------------------------------------- one notebook, all steps
def build_one(nb_path:str, out_dir:str, proc_dir:str, tmpl_dir:str, nav_pages:list, pagemap:dict,
              site_title:str, site_url:str, skip_flags:list, timeout:int, threads:int) -> dict:
    "Execute, process and render one notebook; returns a dict for the summary (or raises with the notebook named)."
    os.environ.setdefault('OMP_NUM_THREADS', str(threads)); os.environ['IN_TEST'] = '1'
    import nbformat
    from execnb.nbio import dict2nb, nb2dict, write_nb
    from nbdev.process import NBProcessor
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.processors import FilterDefaults
    from nbconvert import HTMLExporter
    nb_path, t0 = Path(nb_path), time.time()
    name = nb_path.name
    fm = getattr(NBProcessor(nb_path, procs=FrontmatterProc, process=True).nb, 'frontmatter_', {})
    nb = nbformat.read(nb_path, as_version=4)
    executed = False
    if str(fm.get('skip_exec', 'false')).lower() not in ('true', '1', 'yes'):
        ep = _make_executor(skip_flags, time.time() + timeout, timeout=timeout, allow_errors=False)
        try: ep.preprocess(nb, {'metadata': {'path': str(nb_path.parent)}})
        except Exception as e:
            msg = re.sub(r'\x1b\[[0-9;]*m', '', str(e)).strip().splitlines()
            raise RuntimeError(f'nbs/{name} failed while executing for the docs: ' + '\n'.join(msg[-25:]) +
                               f'\n  -> reproduce with `nbdev_test --path nbs/{name}`') from None
        executed = True
    t_exec = time.time() - t0
    # nbdev's docs processing, as in nbdev_proc_nbs (serve_drv.exec_nb): read as execnb nb, FilterDefaults, write to _proc
    pnb = dict2nb(json.loads(nbformat.writes(nb)))
    pnb.path_ = str(nb_path)
    try: FilterDefaults()(pnb)
    except Exception as e:
        cause = e.__cause__
        raise RuntimeError(f'nbs/{name}: nbdev\'s docs processing failed (nbdev_docs with Quarto would fail the same way).\n{e}\n'
                           f'  cause: {type(cause).__name__}: {cause}\n'
                           '  -> nbdev runs every cell that contains an import (plus exported and show_doc cells) in a '
                           'fresh shell to build the API docs; put imports in their own import-only cells at the top '
                           'of the notebook, never in a cell that also uses variables from earlier example cells.') from None
    write_nb(pnb, Path(proc_dir)/name)
    t_proc = time.time() - t0 - t_exec
    fm = {**fm, **getattr(pnb, 'frontmatter_', {})}
    page = pagemap[name]
    hnb = _to_html_nb(dict2nb(nb2dict(pnb)))
    hnb.metadata['title'] = f"{fm.get('title', nb_path.stem)} – {site_title}" if page != 'index.html' else site_title
    exp = HTMLExporter(template_name='site', extra_template_basedirs=[tmpl_dir], embed_images=True,
                       exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exp.from_notebook_node(hnb, resources={
        'site_nav': _nav(nav_pages, page, site_title), 'nb_name': name,
        'page_title': _inline_md(str(fm.get('title', nb_path.stem))),
        'page_description': _inline_md(str(fm.get('description', ''))), 'metadata': {'name': nb_path.stem}})
    missing = set()
    body = _rewrite_links(body, pagemap, site_url, missing)
    (Path(out_dir)/page).write_text(body, encoding='utf-8')
    return dict(nb=name, page=page, executed=executed, exec_s=t_exec, proc_s=t_proc, total_s=time.time() - t0,
                n_img=body.count('<img'), missing_links=sorted(missing))

def site_plan():
    "The site's notebooks in sidebar order: (order [(section, nb)], {nb: path}, {nb: page}, nav pages, notes)."
    nbs = sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    have = {p.name: p for p in nbs}
    order, notes = [], []
    for section, entry in sidebar():
        if entry in have: order.append((section, entry))
        else: notes.append(f'sidebar.yml lists {entry}, which does not exist yet: left out of the site')
    listed = {e for _, e in order}
    for n in have:
        if n not in listed:
            order.append(('Other', n)); notes.append(f'{n} is not in sidebar.yml: listed under "Other"')
    if not any(e == 'index.ipynb' for _, e in order): sys.exit('docs: nbs/index.ipynb is missing: it is the home page')
    from nbdev.process import NBProcessor
    from nbdev.frontmatter import FrontmatterProc
    pagemap, pages = {}, []
    for section, e in order:
        fm = getattr(NBProcessor(have[e], procs=FrontmatterProc, process=True).nb, 'frontmatter_', {})
        pagemap[e] = fm.get('output-file', page_name(e))
        pages.append(dict(section=section, page=pagemap[e], title=str(fm.get('title', Path(e).stem))))
    return order, have, pagemap, pages, notes

def write_stamp(dest:Path, pages:dict, digest:str=None):
    "Record what `dest` was built from (`source_digest`) and its pages {notebook: page}."
    (Path(dest)/STAMP).write_text(json.dumps({'digest': digest or source_digest(), 'built': time.strftime('%Y-%m-%d %H:%M:%S'),
                                              'pages': pages}, indent=1))

# ---------------------------------------------------------------- the site
def build(dest:Path=ROOT/'_docs', n_workers:int=2, timeout:int=300, quiet=False) -> Path:
    "Build the whole site into `dest` (via a temporary sibling folder, renamed into place when complete)."
    from nbdev.config import get_config
    cfg = get_config()
    skip_flags = cfg.get('tst_flags', '').split()
    import yaml
    nbdev_yml = yaml.safe_load((NBS/'nbdev.yml').read_text()) if (NBS/'nbdev.yml').exists() else {}
    site_title = nbdev_yml.get('website', {}).get('title', cfg.get('title', cfg.lib_name))
    site_url = f"{cfg.get('doc_host', '').rstrip('/')}{cfg.get('doc_baseurl', '')}"
    from tqdm.auto import tqdm
    say = (lambda *a: None) if quiet else (lambda *a: tqdm.write(' '.join(map(str, a))))   # not into the progress bar

    order, have, pagemap, pages, notes = site_plan()
    for n in notes: say(f'docs: note: {n}')

    dest = Path(dest).resolve()
    tmp = dest.with_name(f'{dest.name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True); tmp.mkdir(parents=True)
    proc = ROOT/'_proc'; proc.mkdir(exist_ok=True)
    tmpl = tmp/'.templates'; (tmpl/'site').mkdir(parents=True)
    (tmpl/'site'/'index.html.j2').write_text(_TEMPLATE)
    (tmpl/'site'/'conf.json').write_text(json.dumps({'base_template': 'lab', 'mimetypes': {'text/html': True}}))
    digest = source_digest()
    threads = max(1, (os.cpu_count() or 2) // max(1, n_workers))
    t0, results, errors = time.time(), [], []
    say(f'docs: rendering {len(order)} notebooks with nbconvert ({n_workers} workers, {timeout} s per notebook) -> {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}')
    try:
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=mp.get_context('spawn'), max_tasks_per_child=1) as ex:
            futs = {ex.submit(build_one, str(have[e]), str(tmp), str(proc), str(tmpl), pages, pagemap, site_title,
                              site_url, skip_flags, timeout, threads): e for _, e in order}
            for f in tqdm(as_completed(futs), total=len(futs), desc='docs', unit='nb', disable=quiet):
                try:
                    r = f.result(); results.append(r)
                    say(f"docs:   {r['nb']:<22} -> {r['page']:<16} {r['total_s']:5.0f} s (execute {r['exec_s']:.0f}, nbdev processing {r['proc_s']:.0f}), {r['n_img']} images"
                        + ('' if r['executed'] else ' (skip_exec: stored outputs)'))
                except Exception as e: errors.append(f'{futs[f]}: {e}')
        if errors: raise RuntimeError('\n\n'.join(errors))
        for r in results:
            for m in r['missing_links']: say(f"docs: warning: {r['nb']} links to {m}, which does not exist in nbs/")
        shutil.rmtree(tmpl)
        (tmp/'site.css').write_text(SITE_CSS)
        if (NBS/'styles.css').exists(): shutil.copy2(NBS/'styles.css', tmp/'styles.css')
        else: (tmp/'styles.css').write_text('')
        for p in NBS.rglob('*'):   # images and other assets next to the notebooks
            if p.is_file() and p.suffix.lower() in ('.png', '.jpg', '.jpeg', '.gif', '.svg') and not any(
                    q.startswith(('_', '.')) for q in p.relative_to(NBS).parts):
                (tmp/p.relative_to(NBS)).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(p, tmp/p.relative_to(NBS))
        (tmp/'.nojekyll').write_text('')
        write_stamp(tmp, {r['nb']: r['page'] for r in results}, digest)
        old = dest.with_name(f'{dest.name}.old-{os.getpid()}')
        if dest.exists(): dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True); raise
    say(f'docs: site written to {dest} ({len(results)} pages) in {time.time() - t0:.0f} s; open {dest}/index.html')
    return dest

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--dest', default=str(ROOT/'_docs'), help='output folder (default: _docs)')
    ap.add_argument('--n_workers', type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument('--timeout', type=int, default=300, help='seconds per notebook')
    ap.add_argument('--if_stale', action='store_true', help='do nothing when DEST was built from the current sources')
    ap.add_argument('--stamp_only', action='store_true', help='only record the sources and pages of a site built by nbdev_docs')
    a = ap.parse_args()
    if a.stamp_only:
        _, _, pagemap, _, _ = site_plan(); write_stamp(Path(a.dest), pagemap); sys.exit(0)
    if a.if_stale and is_fresh(Path(a.dest)):
        print(f'docs: {a.dest} is up to date'); sys.exit(0)
    try: build(Path(a.dest), n_workers=a.n_workers, timeout=a.timeout)
    except RuntimeError as e: sys.exit(f'docs: FAILED\n{e}')
