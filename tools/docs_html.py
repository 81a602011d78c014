#!/usr/bin/env python
"""The docs site without Quarto (what `make docs` runs when `quarto` is not on the PATH).

Per notebook in `nbs/` (in parallel):
  1. execute a copy with nbconvert's ExecutePreprocessor (kernel `python3` of this venv, cwd `nbs/`),
     skipping what `nbdev_test` skips: cells flagged with `tst_flags` (`slow`, `cuda`), `#| eval: false`,
     the `nbdev_export()` cell, and whole notebooks with `skip_exec: true` in their frontmatter;
  2. apply nbdev's own docs processing (`FilterDefaults`, exactly what `nbdev_proc_nbs` / `nbdev_docs`
     apply: hide/export cells removed, `show_doc` added and executed, frontmatter) and save the result
     in `_proc/` as nbdev does;
  3. write what Quarto would show (cell options applied, the frontmatter as title and description) as a notebook
     named as its page (nbdev's `output-file`: `01_records.ipynb` -> `records.html`, `index.ipynb` -> `index.html`),
     generate an mkdocs.yml (nav from `nbs/sidebar.yml`, name and description from settings.ini; mkdocs-material with
     top tabs, search and a right-hand table of contents; `tools/docs_mkdocs_hooks.py`) and run `mkdocs build`, whose
     mkdocs-jupyter plugin renders the notebooks (JupyterLab look, plots as embedded PNGs); links to notebooks and
     nbdev's symbol links are rewritten to relative page links, and no page loads anything from the web.
The site is written to a temporary folder next to the destination and renamed into place when complete.
"""
from __future__ import annotations
import argparse, hashlib, html, json, os, re, shutil, subprocess, sys, time, traceback
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
    fs += list((root/'llava_lora_nb').rglob('*.py')) + [root/'settings.ini', Path(__file__).resolve(),
                                                          Path(__file__).resolve().parent/'docs_mkdocs_hooks.py']
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

# ---------------------------------------------------------------- step 3: render (mkdocs-material + mkdocs-jupyter)
SITE_CSS = """
/* llava_lora_nb docs: notebooks rendered by mkdocs-jupyter inside mkdocs-material */
.md-grid { max-width: 90rem; }
/* code wraps at the column's edge (nothing hidden past it); outputs (tables, logs) scroll sideways inside their cell */
.jupyter-wrapper .highlight-ipynb pre, .md-typeset .highlight pre > code { white-space: pre-wrap; overflow-wrap: anywhere; }
/* a heading's permalink drawn by CSS, so its ¶ is not part of the heading's text (search results, titles) */
.jupyter-wrapper a.anchor-link::after { content: '¶'; }
.jupyter-wrapper .highlight-ipynb, .jupyter-wrapper .jp-OutputArea-output pre, .md-typeset pre > code { overflow-x: auto; }
.jupyter-wrapper .jp-OutputArea-output pre { white-space: pre; }
.jupyter-wrapper .jp-RenderedHTMLCommon pre { overflow-x: auto; }
.jupyter-wrapper .jp-Cell { overflow: visible; }
.jupyter-wrapper .jp-OutputArea-output { overflow-x: auto; }
.jupyter-wrapper .jp-RenderedImage img, .jupyter-wrapper .jp-RenderedHTMLCommon img { max-width: 100%; height: auto; }
.jupyter-wrapper .jp-InputPrompt, .jupyter-wrapper .jp-OutputPrompt { display: none !important; }
.jupyter-wrapper p.nb-description { font-size: 1.1em; opacity: .75; font-style: italic; margin-top: -.4em; }
.jupyter-wrapper table { width: auto; max-width: 100%; }
"""

_re_attr_link = re.compile(r'\[([^\]]+)\]\(([^)\s]+)\)\{([^}]*)\}')

def _pandoc_links(md:str) -> str:
    """Pandoc's `[text](url){attrs}` (nbdev's show_doc `[source]` links) as HTML, which nbconvert's markdown understands.
    A `source` link that is not a web address (settings.ini `git_url` blank: nbdev makes it `/blob/...`) is left out."""
    def sub(m):
        if m.group(1) == 'source' and not m.group(2).startswith(('http://', 'https://')): return ''
        return f'<a href="{m.group(2)}" {m.group(3)}>{m.group(1)}</a>'
    return _re_attr_link.sub(sub, md)

_re_sig_link = re.compile(r'\[`([^`\]]+)`\]\([^)\s]+\)')

def _code_links(md:str) -> str:
    """nbdev links backticked names in a docment (`# comment` after a parameter) even when show_doc puts the
    comment inside the signature's ```python block, where markdown shows `[`name`](url)` raw: unlink them there."""
    out, in_fence = [], False
    for line in md.split('\n'):
        if line.lstrip().startswith('```'): in_fence = not in_fence
        elif in_fence: line = _re_sig_link.sub(r'`\1`', line)
        out.append(line)
    return '\n'.join(out)

_re_bar = re.compile(r'\d+%\|')

def _to_html_nb(nb, title:str='', description:str=''):
    "nbdev's processed notebook -> an nbformat notebook ready for mkdocs-jupyter (Quarto's cell options applied)."
    import nbformat
    cells = []
    for c in nb.cells:
        if c.get('source') is None: continue
        if c.cell_type == 'raw' and c.source.lstrip().startswith('---'): continue   # frontmatter: shown as the title cell
        if c.cell_type == 'markdown': c.source = _pandoc_links(c.source)
        if c.cell_type == 'code':
            for o in c.get('outputs', []):
                if 'text/markdown' in o.get('data', {}):
                    md = o['data']['text/markdown']
                    o['data']['text/markdown'] = _code_links(_pandoc_links(''.join(md) if isinstance(md, list) else md))
            d = directives(c.source)
            if d.get('include:', '').lower() == 'false': continue
            if d.get('output:', '').lower() == 'false': c.outputs = []
            c.source = strip_directives(c.source)
            if d.get('echo:', '').lower() == 'false':
                c.metadata.setdefault('transient', {})['remove_source'] = True
                c.metadata.setdefault('tags', []).append('remove_input')
            # a tqdm.auto progress bar is a widget whose text fallback is its first state ("0%|     | 0/64"): the
            # site cannot run widgets, so such a bar would show frozen at 0%: leave it out
            c.outputs = [o for o in c.get('outputs', []) if not ('application/vnd.jupyter.widget-view+json' in o.get('data', {})
                         and _re_bar.search(''.join(o['data'].get('text/plain', ''))))]
            for o in c.get('outputs', []):            # other widgets cannot render offline: keep their text fallback
                data = o.get('data', {})
                if 'application/vnd.jupyter.widget-view+json' in data and len(data) > 1:
                    del data['application/vnd.jupyter.widget-view+json']
            c.outputs = [o for o in c.get('outputs', []) if o.get('data', True) and
                         list(o.get('data', {'x': 0})) != ['application/vnd.jupyter.widget-view+json']]
            if not c.source.strip() and not c.outputs: continue
        cells.append(c)
    if title:   # the page title (mkdocs-jupyter takes the first h1) and description, from nbdev's frontmatter
        head = f'# {title}' + (f'\n\n<p class="nb-description">{_inline_md(description)}</p>' if description else '')
        cells.insert(0, dict(cell_type='markdown', metadata={}, source=head))
    nb.cells = cells
    nb.metadata.pop('widgets', None)
    from execnb.nbio import nb2dict
    return nbformat.reads(json.dumps(nb2dict(nb)), as_version=4)

def _inline_md(s:str) -> str:
    "Escape `s` for HTML, then render `code` spans (frontmatter descriptions use them)."
    return re.sub(r'`([^`]+)`', r'<code>\1</code>', html.escape(s))

_re_href = re.compile(r'''(href|src)=(["'])(?!https?:|//|#|data:|mailto:)([^"'#?]+?)\.ipynb([#?][^"']*)?\2''')
_re_remote_script = re.compile(r'<script[^>]*\bsrc="(?:(?:https?:)?//[^"]*)?"[^>]*>\s*</script>|'   # src="": MathJax unset
                               r'<script type="module">\s*import mermaid[^<]*</script>', re.S)

def _rewrite_links(text:str, pagemap:dict, site_url:str, missing:set) -> str:
    "Links to notebooks -> their pages; links into this site (nbdev's symbol links, absolute or root-relative) -> relative."
    def sub(m):
        target = m.group(3) + '.ipynb'
        name = Path(target).name
        if name not in pagemap: missing.add(target)
        page = pagemap.get(name, page_name(name))
        return f'{m.group(1)}={m.group(2)}{page}{m.group(4) or ""}{m.group(2)}'
    text = _re_href.sub(sub, text)
    if site_url: text = text.replace(f'href="{site_url.rstrip("/")}/', 'href="')
    return text

def _finish_page(text:str, pagemap:dict, site_url:str, missing:set) -> str:
    "A built page: links fixed, and no scripts from the web (MathJax/Mermaid/require.js: the site works offline)."
    return _re_remote_script.sub('', _rewrite_links(text, pagemap, site_url, missing))

def mkdocs_config(nav_pages:list, cfg, site_title:str, src_docs:Path, site_dir:Path) -> dict:
    "mkdocs.yml for the site: material theme (top tabs, search, right-hand ToC), mkdocs-jupyter for the notebooks."
    nav, sections = [], {}
    for p in nav_pages:
        label = 'Home' if p['page'] == 'index.html' else p['title'].split(':')[0].strip()   # 'Merge: fold ...' -> 'Merge'
        item = {label: p['page'][:-len('.html')] + '.ipynb'}
        if p['section'] is None: nav.append(item)
        else:
            if p['section'] not in sections: sections[p['section']] = []; nav.append({p['section']: sections[p['section']]})
            sections[p['section']].append(item)
    git_url = (cfg.get('git_url') or '').strip()
    doc_host = (cfg.get('doc_host') or '').strip()
    conf = dict(
        site_name=site_title, site_description=cfg.get('description', ''),
        docs_dir=str(src_docs), site_dir=str(site_dir), use_directory_urls=False, strict=False,
        nav=nav,
        theme=dict(name='material', font=False, language='en',   # font: no Google Fonts (the site works offline)
                   palette=dict(primary='indigo', accent='indigo'),
                   features=['navigation.tabs', 'navigation.tabs.sticky', 'navigation.sections', 'navigation.top',
                             'navigation.footer', 'search.suggest', 'search.highlight', 'toc.follow',
                             'content.code.copy']),
        plugins=[dict(search=dict(separator=r'[\s\-\.]+')),   # `find_all_linear_names` stays one word
                 {'mkdocs-jupyter': dict(include_source=False, execute=False, cache=False, toc_depth=3,
                                         include_requirejs=False, ignore_h1_titles=True, no_prompt=True,   # nav/tab labels as given
                                         remove_tag_config=dict(remove_input_tags=['remove_input']))}],
        hooks=[str(Path(__file__).resolve().parent/'docs_mkdocs_hooks.py')],   # ToC from every heading of the page
        markdown_extensions=['toc', 'admonition', 'pymdownx.superfences', 'pymdownx.highlight'],
        extra_css=['site.css', 'styles.css'],
        copyright=f"Built from the notebooks in nbs/ by <code>make docs</code> (mkdocs-material fallback; with Quarto installed, <code>nbdev_docs</code> builds the site).",
    )
    if git_url: conf.update(repo_url=git_url, edit_uri='')
    if doc_host: conf['site_url'] = f"{doc_host.rstrip('/')}{cfg.get('doc_baseurl', '')}/"
    return conf

# ---------------------------------------------------------------- one notebook, all steps
def build_one(*args, **kwargs) -> dict:
    "`_build_one` in a worker that may take the next notebook: nbdev's processing runs an IPython shell, which replaces `__main__`."
    main = sys.modules.get('__main__')
    try: return _build_one(*args, **kwargs)
    finally: sys.modules['__main__'] = main

def _build_one(nb_path:str, src_docs:str, proc_dir:str, pagemap:dict, skip_flags:list, timeout:int, threads:int,
               reuse_proc:bool=False, executed_dir:str|None=None) -> dict:
    """Execute and process one notebook (steps 1-2), and write the notebook mkdocs-jupyter renders into `src_docs`
    (named as its page: `records.ipynb` -> `records.html`); returns a dict for the summary (or raises with the notebook named).
    `reuse_proc`: take nbdev's processed notebook from `_proc/` as the last build left it (fast, to work on the rendering).
    `executed_dir`: a folder of notebooks `tools/run_nbs.py --to` executed from the current sources: step 1 reads them instead."""
    os.environ.setdefault('OMP_NUM_THREADS', str(threads)); os.environ['IN_TEST'] = '1'
    import nbformat
    from execnb.nbio import dict2nb, nb2dict, write_nb
    from nbdev.process import NBProcessor
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.processors import FilterDefaults
    nb_path, t0 = Path(nb_path), time.time()
    name = nb_path.name
    fm = getattr(NBProcessor(nb_path, procs=FrontmatterProc, process=True).nb, 'frontmatter_', {})
    nb = nbformat.read(nb_path, as_version=4)
    executed = False
    if reuse_proc:
        pnb = dict2nb(json.loads((Path(proc_dir)/name).read_text()))
        return _write_render_nb(pnb, fm, name, src_docs, pagemap, dict(executed=False, exec_s=0, proc_s=0, t0=t0))
    if executed_dir:
        nb = nbformat.read(Path(executed_dir)/name, as_version=4)
        executed = str(fm.get('skip_exec', 'false')).lower() not in ('true', '1', 'yes')
    elif str(fm.get('skip_exec', 'false')).lower() not in ('true', '1', 'yes'):
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
    return _write_render_nb(pnb, fm, name, src_docs, pagemap, dict(executed=executed, exec_s=t_exec, proc_s=t_proc, t0=t0))

def _write_render_nb(pnb, fm, name, src_docs, pagemap, info):
    from execnb.nbio import dict2nb, nb2dict
    import nbformat
    fm = {**fm, **getattr(pnb, 'frontmatter_', {})}
    page = pagemap[name]
    hnb = _to_html_nb(dict2nb(nb2dict(pnb)), str(fm.get('title', Path(name).stem)), str(fm.get('description', '')))
    nbformat.write(hnb, Path(src_docs)/(page[:-len('.html')] + '.ipynb'))
    n_img = sum('image/png' in o.get('data', {}) for c in hnb.cells for o in c.get('outputs', []))
    t0 = info.pop('t0')
    return dict(nb=name, page=page, total_s=time.time() - t0, n_img=n_img, **info)

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
def build(dest:Path=ROOT/'_docs', n_workers:int=2, timeout:int=300, quiet=False, reuse_proc=False, keep_src=False,
          executed:Path|None=None) -> Path:
    """Build the whole site into `dest` (via a temporary sibling folder, renamed into place when complete).
    `executed`: take the executed notebooks from this folder (`tools/run_nbs.py --to`) instead of executing them again;
    it must hold every notebook of the site, executed from the current sources (its `.sources.json`), or the build stops."""
    from nbdev.config import get_config
    cfg = get_config()
    skip_flags = cfg.get('tst_flags', '').split()
    import yaml
    nbdev_yml = yaml.safe_load((NBS/'nbdev.yml').read_text()) if (NBS/'nbdev.yml').exists() else {}
    site_title = cfg.get('title') or nbdev_yml.get('website', {}).get('title') or cfg.lib_name   # settings.ini
    site_url = f"{(cfg.get('doc_host') or '').rstrip('/')}{cfg.get('doc_baseurl') or ''}"   # nbdev's symbol links start with it
    from tqdm.auto import tqdm
    say = (lambda *a: None) if quiet else (lambda *a: tqdm.write(' '.join(map(str, a))))   # not into the progress bar

    order, have, pagemap, pages, notes = site_plan()
    for n in notes: say(f'docs: note: {n}')
    if executed:
        f = Path(executed)/STAMP
        s = json.loads(f.read_text()) if f.exists() else {}
        stale = [e for _, e in order if e not in s.get('ok', [])]
        if s.get('digest') != source_digest() or stale:
            raise RuntimeError(f'{executed} does not hold every notebook executed from the current sources'
                               f"{' (missing: ' + ', '.join(stale) + ')' if stale and s.get('digest') == source_digest() else ''}: "
                               f'run `python tools/run_nbs.py --to {executed}` first, or build without --executed')

    dest = Path(dest).resolve()
    tmp = dest.with_name(f'{dest.name}.tmp-{os.getpid()}')       # the built site, renamed to `dest` when complete
    src = dest.with_name(f'{dest.name}.src-{os.getpid()}')       # mkdocs' project: mkdocs.yml and docs/
    for d in (tmp, src): shutil.rmtree(d, ignore_errors=True)
    src_docs = src/'docs'; src_docs.mkdir(parents=True)
    proc = ROOT/'_proc'; proc.mkdir(exist_ok=True)
    digest = source_digest()
    threads = max(1, (os.cpu_count() or 2) // max(1, n_workers))
    t0, results, errors = time.time(), [], []
    say(f"docs: {'processing' if executed else 'building'} {len(order)} notebooks" + (f' executed in {executed}' if executed else f' ({n_workers} workers, {timeout} s per notebook)') + f", then mkdocs-material -> {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
    try:
        # executing: a fresh process per notebook; from executed copies (or _proc/), a worker keeps its imports: nbdev's
        # processing runs each notebook's import cells, and importing torch/transformers again costs ~5 s a notebook
        fresh = dict(max_tasks_per_child=1) if not (executed or reuse_proc) else {}
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=mp.get_context('spawn'), **fresh) as ex:
            futs = {ex.submit(build_one, str(have[e]), str(src_docs), str(proc), pagemap, skip_flags, timeout, threads,
                              reuse_proc, str(executed) if executed else None): e for _, e in order}
            for f in tqdm(as_completed(futs), total=len(futs), desc='docs', unit='nb', disable=quiet):
                try:
                    r = f.result(); results.append(r)
                    say(f"docs:   {r['nb']:<22} -> {r['page']:<16} {r['total_s']:5.0f} s (execute {r['exec_s']:.0f}, nbdev processing {r['proc_s']:.0f}), {r['n_img']} images"
                        + ('' if r['executed'] or reuse_proc else ' (skip_exec: stored outputs)') + (' (executed by run_nbs, not again)' if executed and r['executed'] else ''))
                except Exception as e: errors.append(f'{futs[f]}: {e}')
        if errors: raise RuntimeError('\n\n'.join(errors))
        # step 3: mkdocs-material renders the processed notebooks (mkdocs-jupyter: nbconvert's lab look, plots embedded)
        (src_docs/'site.css').write_text(SITE_CSS)
        if (NBS/'styles.css').exists(): shutil.copy2(NBS/'styles.css', src_docs/'styles.css')
        else: (src_docs/'styles.css').write_text('')
        for p in NBS.rglob('*'):   # images and other assets next to the notebooks
            if p.is_file() and p.suffix.lower() in ('.png', '.jpg', '.jpeg', '.gif', '.svg') and not any(
                    q.startswith(('_', '.')) for q in p.relative_to(NBS).parts):
                (src_docs/p.relative_to(NBS)).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(p, src_docs/p.relative_to(NBS))
        (src/'mkdocs.yml').write_text(yaml.safe_dump(mkdocs_config(pages, cfg, site_title, src_docs, tmp), sort_keys=False, allow_unicode=True))
        t1 = time.time()
        r = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--quiet', '--clean', '-f', str(src/'mkdocs.yml')],
                           cwd=src, capture_output=True, text=True, env={**os.environ, 'NO_MKDOCS_2_WARNING': '1', 'NO_COLOR': '1'})
        if r.returncode != 0 or not (tmp/'index.html').exists():
            raise RuntimeError(f'mkdocs build failed (exit {r.returncode}); its project is in {src}:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}')
        for line in r.stderr.splitlines():
            if line.strip() and 'is not found among documentation files' not in line: say(f'docs: mkdocs: {line}')
        missing = set()
        for p in tmp.glob('*.html'):
            p.write_text(_finish_page(p.read_text(encoding='utf-8'), pagemap, site_url, missing), encoding='utf-8')
        for m in sorted(missing): say(f"docs: warning: a page links to {m}, which does not exist in nbs/")
        say(f'docs: mkdocs build {time.time() - t1:.0f} s')
        (tmp/'.nojekyll').write_text('')
        write_stamp(tmp, {r['nb']: r['page'] for r in results}, digest)
        old = dest.with_name(f'{dest.name}.old-{os.getpid()}')
        if dest.exists(): dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
        if not keep_src: shutil.rmtree(src, ignore_errors=True)
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
    ap.add_argument('--reuse_proc', action='store_true', help='skip steps 1-2: render the notebooks the last build left in _proc/ (to work on the rendering)')
    ap.add_argument('--keep_src', action='store_true', help="keep mkdocs' generated project (mkdocs.yml, docs/) next to DEST")
    ap.add_argument('--executed', default=None, help='folder of notebooks `tools/run_nbs.py --to` executed from the current sources: not executed again')
    a = ap.parse_args()
    if a.stamp_only:
        _, _, pagemap, _, _ = site_plan(); write_stamp(Path(a.dest), pagemap); sys.exit(0)
    if a.if_stale and is_fresh(Path(a.dest)):
        print(f'docs: {a.dest} is up to date'); sys.exit(0)
    try: build(Path(a.dest), n_workers=a.n_workers, timeout=a.timeout, reuse_proc=a.reuse_proc, keep_src=a.keep_src,
               executed=Path(a.executed).resolve() if a.executed else None)
    except RuntimeError as e: sys.exit(f'docs: FAILED\n{e}')
