"""The docs site in a real browser: serve the built site on localhost and open every page in headless
Chromium (Debian's /usr/bin/chromium driven by Playwright's Python package; no browser download).
The site is mkdocs-material's (`tools/docs_html.py`, what `make docs` builds without Quarto): top tabs and a
left navigation (`nav.md-nav--primary`), a search box, and a table of contents on the right (`.md-sidebar--secondary`).

Uses the site `tools/test.sh` just built in `_docs/` when it was built from the current sources (its
`.sources.json` digest matches); otherwise builds one into a temporary folder with `tools/docs.sh`'s builder.
"""
import functools, http.server, importlib.util, os, re, subprocess, sys, threading
from pathlib import Path
from urllib.parse import urljoin, urlparse
from urllib.request import urlopen
from urllib.error import HTTPError
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group('docs')]   # one worker opens the browser and serves the site once

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = '/usr/bin/chromium'
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync']

def _docs_html():
    spec = importlib.util.spec_from_file_location('docs_html', ROOT/'tools'/'docs_html.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Folder of a site built from the current sources: `_docs/` if fresh, else a new build in a temp folder."
    dh = _docs_html()
    if (ROOT/'_docs').exists() and dh.is_fresh(ROOT/'_docs'): return ROOT/'_docs'
    dest = tmp_path_factory.mktemp('site')/'_docs'
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'docs_html.py'), '--dest', str(dest)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f'docs build failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}'
    return dest

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass

class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address):   # the browser dropping a connection is not a site error
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)): super().handle_error(request, client_address)

# The pages' visit takes half a minute. It is made once per test session (`shared`, a file lock) and saved with the
# server's address written as SERVER, then read back with the reading server's address: module fixtures are set up
# again whenever a worker's queue runs dry, and before conftest's fix of `xdist_group` both workers visited every page.
# A server lives as long as its worker.
_SERVED, SERVER = {}, '@@SERVER@@/'

@pytest.fixture(scope='module')
def server(site):
    "Base URL of `site` served by http.server on 127.0.0.1 with a free port (one server per site and process, a daemon thread)."
    if str(site) not in _SERVED:
        httpd = _Server(('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(site)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        _SERVED[str(site)] = f'http://127.0.0.1:{httpd.server_address[1]}/'
    return _SERVED[str(site)]

@pytest.fixture(scope='module')
def browser():
    if not Path(CHROMIUM).exists(): pytest.fail(f'{CHROMIUM} is missing: run `bash tools/install_browser.sh` (as root)')
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()

def _pages(site):
    "Every page the builder wrote (from its stamp), home page first."
    import json
    pages = sorted(json.loads((Path(site)/'.sources.json').read_text())['pages'].values())
    return ['index.html'] + [p for p in pages if p != 'index.html']

def _visit(browser, url):
    "Open `url`; returns (page, console errors, page errors, failed requests). Caller closes the page."
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    console, pageerr, failed = [], [], []
    page.on('console', lambda m: console.append(m.text) if m.type == 'error' else None)
    page.on('pageerror', lambda e: pageerr.append(str(e)))
    page.on('requestfailed', lambda r: failed.append(f'{r.url}: {r.failure}'))
    resp = page.goto(url, wait_until='load')
    assert resp is not None and resp.status == 200, f'{url}: HTTP {resp and resp.status}'
    return page, console, pageerr, failed

def test_site_has_the_pages(site):
    pages = _pages(site)
    assert (Path(site)/'index.html').exists() and len(pages) >= 2, pages
    for p in pages: assert (Path(site)/p).stat().st_size > 1000, p
    assert (Path(site)/'styles.css').exists()

def _swap(x, a, b):
    "`x` (strings, lists, dicts, sets) with every `a` in its strings replaced by `b`; sets become sorted lists (JSON)."
    if isinstance(x, str): return x.replace(a, b)
    if isinstance(x, dict): return {k: _swap(v, a, b) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)): return [_swap(v, a, b) for v in (sorted(x) if isinstance(x, set) else x)]
    return x

@pytest.fixture(scope='module')
def visits(site, server, request, tmp_path_factory):
    """Every page opened once in the browser: {page name: what the checks below look at}, collected in one visit
    (console and page errors, failed requests, links, navigation, images in outputs, headings and table of contents,
    output text) so that each page loads once per test session, not once per check or per worker."""
    import json
    from conftest import shared
    def visit(d): (d/'visits.json').write_text(json.dumps(_swap(_visit_all(site, server, request.getfixturevalue('browser')), server, SERVER)))
    got = _swap(json.loads((shared(tmp_path_factory, 'docs-visits', visit)/'visits.json').read_text()), SERVER, server)
    for v in got.values(): v['nav'], v['ids'] = set(v['nav']), set(v['ids'])
    return got

def _visit_all(site, server, browser):
    "`visits`' collection, page by page."
    out = {}
    for name in _pages(site):
        page, console, pageerr, failed = _visit(browser, urljoin(server, name))
        out[name] = dict(
            console=console, pageerr=pageerr, failed=failed,
            refs=page.eval_on_selector_all('a[href]', 'els => els.map(e => e.href)') +
                 page.eval_on_selector_all('img[src], link[href], script[src]', 'els => els.map(e => e.src || e.href)'),
            nav=set(page.eval_on_selector_all('nav.md-nav--primary a.md-nav__link[href]', 'els => els.map(e => e.href.split("#")[0])')),
            imgs=page.eval_on_selector_all('.jp-OutputArea-output img', 'els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])'),
            n_headings=page.locator('.md-content h2, .md-content h3').count(),
            toc=page.eval_on_selector_all('.md-sidebar--secondary nav a[href]', 'els => els.map(e => e.getAttribute("href"))'),
            toc_visible=page.locator('.md-sidebar--secondary').first.is_visible(),
            ids=set(page.eval_on_selector_all('[id]', 'els => els.map(e => e.id)')),
            clipped=page.eval_on_selector_all('.jupyter-wrapper .highlight-ipynb pre', 'els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText.split("\\n").find(l => l.length > 60) || e.innerText.slice(0, 80))'),
            outputs=page.eval_on_selector_all('.md-content .jp-OutputArea', 'els => els.map(e => e.innerText)'))   # outputs, not prose about them
        page.close()
    return out

def test_every_page_loads_clean_with_working_links(site, server, visits):
    problems, internal = [], {}
    for name, v in visits.items():
        problems += [f'{name}: console error: {m}' for m in v['console']] + [f'{name}: page error: {m}' for m in v['pageerr']]
        problems += [f'{name}: request failed: {m}' for m in v['failed']]
        for r in v['refs']:
            u = urlparse(r)
            if u.scheme in ('http', 'https') and u.netloc == urlparse(server).netloc:
                internal.setdefault(r.split('#')[0], name)
        if len(v['nav']) < len(visits): problems.append(f"{name}: navigation has {len(v['nav'])} pages of {len(visits)}")
    for target, src in sorted(internal.items()):
        try: code = urlopen(target, timeout=10).status
        except HTTPError as e: code = e.code
        if code != 200: problems.append(f'{src}: broken internal link {target} (HTTP {code})')
    for name, v in visits.items():   # every anchor of a link between pages (or within one) names an element of its page
        for r in v['refs']:
            u = urlparse(r)
            if u.netloc != urlparse(server).netloc or not u.fragment or not u.path.endswith('.html'): continue
            page = u.path.rsplit('/', 1)[-1]
            if page in visits and u.fragment not in visits[page]['ids']: problems.append(f'{name}: broken anchor {page}#{u.fragment}')
    assert not problems, '\n'.join(problems)
    assert len(internal) >= len(visits)  # at least the sidebar links were checked

def test_plots_are_images(site, visits):
    "Pages whose notebooks draw plots show them as loaded images of nonzero size."
    with_plots = []
    for name, v in visits.items():
        if not re.search(r'<img[^>]+src="data:image/png;base64', (Path(site)/name).read_text()): continue
        assert v['imgs'], f'{name}: has PNG data but no <img> in its outputs'
        bad = [s for s in v['imgs'] if not (s[0] and s[1] > 0 and s[2] > 0)]
        assert not bad, f'{name}: images that did not render: {bad}'
        with_plots.append(name)
    assert with_plots, 'no page of the site has a plot'

def test_home_page_screenshot(site, server, browser, tmp_path):
    page, *_ = _visit(browser, server)   # the site root serves index.html
    text = page.inner_text('body')
    for s in ('llava_lora_nb', 'Quick start', 'make demo', 'make test'):
        assert s in text, f'home page does not show {s!r}'
        assert page.locator('.md-content').get_by_text(s).first.is_visible(), f'{s!r} is on the home page but not visible'
    assert 'llava_lora_nb' in page.inner_text('.md-content h1')
    shot = Path(os.environ.get('DOCS_SCREENSHOT_DIR', tmp_path))/'home.png'
    page.screenshot(path=str(shot), full_page=False)
    page.close()
    from PIL import Image
    im = Image.open(shot).convert('L')
    assert im.size == (1280, 900)
    lo, hi = im.getextrema()
    assert hi - lo > 100, f'screenshot {shot} is blank (grey levels {lo}..{hi})'
    hist = im.histogram(); assert max(hist) < 0.98 * sum(hist), f'screenshot {shot} is almost one colour'

def test_search_finds_a_function(site, server, browser):
    "Material's search box finds `find_all_linear_names` and a result links to its page (targets)."
    page, *_ = _visit(browser, urljoin(server, 'index.html'))
    page.locator('input.md-search__input').click()
    page.keyboard.type('find_all_linear_names')   # key by key, as a reader types (a `fill` is not seen on a busy machine)
    for attempt in range(4):
        try: page.wait_for_selector('.md-search-result__item a[href]', timeout=15_000); break
        except Exception:   # a query typed before the search worker has loaded its index is not re-run: a keystroke re-runs it
            if attempt == 3: raise
            page.keyboard.press('Backspace'); page.keyboard.type('s')
    hrefs = page.eval_on_selector_all('.md-search-result__item a[href]', 'els => els.map(e => e.href)')
    page.close()
    assert any(urlparse(h).path.endswith('/targets.html') for h in hrefs), hrefs

def test_every_page_has_a_table_of_contents(visits):
    "Each page with section headings shows them in the right-hand table of contents."
    missing = [f"{name}: {v['n_headings']} headings, {len(v['toc'])} ToC links, visible={v['toc_visible']}"
               for name, v in visits.items() if v['n_headings'] and (not v['toc'] or not v['toc_visible'])]
    assert not missing, '\n'.join(missing)

_NOISE = {'frozen progress bar': re.compile(r'(?m)^.*\b0%\|.*$'), '[WARNING] line': re.compile(r'(?m)^.*\[WARNING\].*$'),
          'traceback': re.compile(r'(?m)^.*Traceback \(most recent call last\).*$')}

def test_no_frozen_progress_bars_warnings_or_tracebacks(visits):
    "No page shows a progress bar stuck at 0%, a `[WARNING]` log line or a traceback (outputs a reader should not see)."
    found, n_outputs = [], 0
    for name, v in visits.items():
        n_outputs += len(v['outputs'])
        text = '\n'.join(v['outputs'])
        for kind, rx in _NOISE.items():
            hits = [m.group(0).strip() for m in rx.finditer(text)]
            if hits: found.append(f'{name}: {len(hits)} × {kind}, e.g. {hits[0][:140]!r}')
    assert n_outputs > 50, n_outputs   # the check looked at the pages' outputs
    assert not found, '\n'.join(found)

_re_link = re.compile(r'\]\(([^()\s]+)\)')

def test_links_between_pages_work_on_github():
    """Every relative link in the notebooks' prose and the README names a file of the repository (what GitHub opens):
    a page's `.html` name 404s there, so links between notebooks name the `.ipynb` (the site turns it into its page)."""
    import json
    problems = []
    sources = [(p, ''.join(''.join(c['source']) for c in json.loads(p.read_text())['cells'] if c['cell_type'] == 'markdown'))
               for p in sorted((ROOT/'nbs').glob('*.ipynb'))] + [(ROOT/'README.md', (ROOT/'README.md').read_text())]
    for f, text in sources:
        for target in _re_link.findall(text):
            path = target.split('#')[0]
            if not path or re.match(r'^[a-z]+:', path): continue   # an anchor on the same page, or a URL
            if not (f.parent/path).exists(): problems.append(f'{f.relative_to(ROOT)}: link to {target}: no such file in the repository')
    assert not problems, '\n'.join(problems)

def test_code_is_never_clipped(visits):
    "No line of code runs past its cell's edge in a 1280-pixel window: it wraps (outputs may scroll sideways)."
    clipped = [f"{name}: {line[:100]}" for name, v in visits.items() for line in v['clipped']]
    assert not clipped, '\n'.join(clipped[:20])

def test_search_index_has_no_pilcrows(site):
    "Search results show a heading's text, not its permalink's ¶."
    import json
    docs = json.loads((Path(site)/'search'/'search_index.json').read_text())['docs']
    bad = [d['location'] for d in docs if '¶' in d['title'] or '¶' in d['text']]
    assert not bad, bad[:10]
