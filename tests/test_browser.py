"""The built HTML book in headless Chromium, with the network off.

Most readers never run a notebook: they read the built book. These tests build it (strict, as CI does), serve it
on 127.0.0.1, and open every page in Debian's ``chromium`` driven by Playwright, with
every request to another host blocked and recorded. For each page: no failed request, no request off the local
server, no JavaScript error or console error; math typeset, widgets rendered from their saved state, plotly
figures drawn. The figures with sliders must respond to a slider change without a kernel; the Colab badge and
launch button of each notebook page must point at that notebook on the configured repository and branch;
each section page and its notebook link to each other; search finds Chinese words. With
``DSCOURSE_SCREENSHOTS=1`` a full-page screenshot of every page, at both widths, is kept in ``_build/screenshots/``
(for a person to look at; no test reads them, and on 2 cores they cost about a minute of CPU).

Needs ``chromium`` (Debian's package; ``.ci/run`` installs it) and the ``playwright`` Python package (pinned in
requirements.txt), which drives that browser: Playwright's own browser download is never used. Without Chromium the
browser tests are skipped with one line saying how to install it, except in CI (``CI=true``) or with
``DSCOURSE_REQUIRE_BROWSER=1``, where a missing browser fails them: CI never skips them silently.

The book is built once, strictly and from scratch (``--all``), into ``_build/html``: the README's book command.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

pytestmark = pytest.mark.engine  # builds the book and drives a browser: not in the fast loop

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "_build" / "screenshots"
KEEP_SCREENSHOTS = os.environ.get("DSCOURSE_SCREENSHOTS") == "1"
CHROMIUM = os.environ.get("DSCOURSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT_MS = 90_000  # generous: a slow 2-core machine parses plotly.js, MathJax and the widget manager per page


def _toc_pages() -> list[tuple[str, str | None]]:
    """(page, parent) for every page of _toc.yml, in reading order; parent: the chapter page a section hangs on."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    pages = [(toc["root"], None)]
    for chapter in toc.get("chapters", []):
        pages.append((chapter["file"], None))
        pages += [(s["file"], chapter["file"]) for s in chapter.get("sections", [])]
    return pages


PAGES = [page for page, _ in _toc_pages()] + ["search", "genindex"]
NOTEBOOK_PAGES = [(page, parent) for page, parent in _toc_pages() if page.startswith("notebooks/")]


def _browser_required() -> bool:
    """In CI (CI=true, as CI sets it) or with DSCOURSE_REQUIRE_BROWSER=1 a missing browser is a failure."""
    return (os.environ.get("CI", "").lower() in ("1", "true", "yes")
            or os.environ.get("DSCOURSE_REQUIRE_BROWSER") == "1")


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def book() -> Path:
    """The book built strictly (warnings are errors) as the README says, every page re-read (``--all``: an
    incremental build would not repeat the warnings of unchanged pages); returns its html folder."""
    jb = Path(sys.executable).parent / "jupyter-book"
    shutil.rmtree(ROOT / "_build" / "html", ignore_errors=True)  # no page left over from an older build
    t0 = time.time()
    proc = subprocess.run([str(jb) if jb.exists() else "jupyter-book", "build", str(ROOT), "-W", "-n", "--keep-going",
                           "--all"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"strict book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    print(f"book built in {time.time() - t0:.1f} s")
    return ROOT / "_build" / "html"


@pytest.fixture(scope="module")
def server(book):
    """http://127.0.0.1:PORT/ serving the built book (file:// would block some scripts)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(book)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        message = (f"no Chromium at {CHROMIUM}: the browser tests need Debian's package "
                   "(apt-get install chromium fonts-wqy-microhei, as .ci/run does) or DSCOURSE_CHROMIUM=/path/to/chromium")
        if _browser_required():
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, timeout=TIMEOUT_MS,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-quic",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--disable-default-apps",
                  # the network is off: no name resolves but the local server's address, and every request off it
                  # (an address without a name too) goes to a proxy that is not there (loopback bypasses proxies)
                  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                  f"--proxy-server=http://127.0.0.1:{_closed_port()}"])
        yield b
        b.close()


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound and released: the system does not hand it out again soon)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme not in ("http", "https", "ws", "wss") or parts.hostname == "127.0.0.1"


class Visit:
    """One page opened in a new tab of the context for its width, every request, failure, error and console message
    recorded. The tabs of a width share one context, and so its HTTP cache, as a reader's browser does: plotly.js,
    MathJax and the theme are fetched once (about 15% of the CPU the page loads take)."""

    def __init__(self, context, url: str):
        self.requests, self.failed, self.offsite, self.errors = [], [], [], []
        self.page = page = context.new_page()
        page.on("request", self._request)
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url}: {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.url}: HTTP {r.status}"))
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.goto(url, wait_until="load")
        self.ready()

    def _request(self, request):
        self.requests.append(request.url)
        if not _is_local(request.url):  # the network is off (the browser's flags): record the attempt
            self.offsite.append(request.url)

    def ready(self):
        """Wait (on conditions, not time) until math is typeset, widgets rendered and figures drawn."""
        page = self.page
        page.wait_for_function("""() => document.readyState === 'complete' && (!document.querySelector('.math')
            || (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise))""", polling=250)
        page.evaluate("async () => { const mj = window.MathJax; if (mj && mj.startup && mj.startup.promise) await mj.startup.promise; }")
        page.wait_for_function("""() => {
            const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
            if (document.querySelectorAll('.widget-subarea > *').length < views.length) return false;
            for (const p of document.querySelectorAll('.dscourse-plot')) { if (!p.querySelector('.main-svg')) return false; }
            return true;
        }""", polling=250)
        page.wait_for_load_state("networkidle")

    def problems(self) -> list[str]:
        return ([f"failed request {f}" for f in self.failed] + [f"request off the local server: {u}" for u in self.offsite]
                + self.errors)

    def close(self):
        self.page.close()


@pytest.fixture(scope="module")
def context_of(browser):
    """``context_of(width)``: the browser context (a window of that width, Chinese locale) whose tabs the visits at
    that width open."""
    contexts = {}

    def context_of(width: int = 1280):
        if width not in contexts:
            contexts[width] = context = browser.new_context(viewport={"width": width, "height": 900}, locale="zh-CN",
                                                            service_workers="block")
            context.set_default_timeout(TIMEOUT_MS)
        return contexts[width]

    yield context_of
    for context in contexts.values():
        context.close()


@pytest.fixture(scope="module")
def visit_of(context_of, server):
    """``visit_of(page, width=1280)``: the page opened once for every test of it (the load checks, the overflow check,
    the links, and last the one that moves its sliders). Each page load costs seconds of a 2-core machine (plotly.js,
    MathJax and the widget manager parsed again)."""
    opened = {}

    def visit_of(page: str, width: int = 1280) -> Visit:
        if (page, width) not in opened:
            opened[(page, width)] = Visit(context_of(width), server + page + ".html")
        return opened[(page, width)]

    yield visit_of
    for visit in opened.values():
        visit.close()


def _name(page: str) -> str:
    return page.replace("/", "__")


def _screenshot(target, name: str, **options) -> None:
    """A screenshot of a page or an element into ``_build/screenshots/NAME.png``, where they are asked for."""
    if KEEP_SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        target.screenshot(path=str(SCREENSHOTS / f"{name}.png"), **options)


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_offline(visit_of, page):
    """Every page: no failed request, nothing requested off the local server, no JavaScript error; screenshot."""
    visit = visit_of(page)
    _screenshot(visit.page, _name(page), full_page=True)
    assert visit.requests, "no request recorded"
    assert not visit.problems(), "\n".join(visit.problems())
    assert visit.page.evaluate("document.documentElement.lang") == "zh-CN"


@pytest.mark.parametrize("width", [390, 1280])
@pytest.mark.parametrize("page", PAGES)
def test_no_horizontal_overflow(visit_of, page, width):
    """On a phone (390 px) and on a desktop (1280 px) no page is wider than the screen: long inline code wraps, code
    blocks, outputs and tables scroll inside their own box (book/_ext/dscourse-book.css), and no plotly figure's
    plot area is crushed by its legend or labels (book/_ext/dscourse-plotly-narrow.js moves them on a phone)."""
    visit = visit_of(page, width)
    got = visit.page.evaluate("""() => {
        const W = window.innerWidth, wide = [];
        for (const e of document.querySelectorAll('.bd-article *')) {
            const r = e.getBoundingClientRect();
            if (r.width > 0 && r.right > W + 1 && e.parentElement.getBoundingClientRect().right <= W + 1)
                wide.push(`${e.tagName}.${e.className.baseVal ?? e.className}: ${(e.textContent || '').slice(0, 60)}`);
        }
        const crushed = [...document.querySelectorAll('.js-plotly-plot')].filter(gd => gd._fullLayout
            && gd._fullLayout._size.w < 0.4 * gd.getBoundingClientRect().width).map(gd => gd.id);
        return {scroll: document.documentElement.scrollWidth, width: W, wide: wide.slice(0, 5), crushed};
    }""")
    if width < 600:
        _screenshot(visit.page, f"{_name(page)}__{width}px", full_page=True)
    assert got["scroll"] <= got["width"] + 1, f"{page} at {width} px is {got['scroll']} px wide: {got['wide']}"
    assert not got["crushed"], f"{page} at {width} px: plot area under 40% of the figure's width: {got['crushed']}"


def test_every_built_page_is_checked(book):
    built = {str(p.relative_to(book).with_suffix("")) for p in book.rglob("*.html") if "_static" not in p.parts
             and "_sources" not in p.parts}
    assert built - {"index"} == set(PAGES), "pages built but not opened by the browser tests (or the reverse)"


def _drive_slider(page, element_id: str, step: int):
    """Click a plotly slider's rail where ``step`` sits, as a reader would; wait until the figure took it."""
    rail = page.locator(f"#{element_id} rect.slider-rail-touch-rect").first
    rail.scroll_into_view_if_needed()
    box = rail.bounding_box()
    n = page.evaluate(f"document.getElementById('{element_id}').layout.sliders[0].steps.length")
    # plotly spaces the steps evenly along the rail, with the grip's half-width as padding at both ends
    pad = page.evaluate(f"""() => {{
        const g = document.querySelector('#{element_id} .slider-grip-rect');
        return g ? g.getBBox().width / 2 : 10; }}""")
    x = box["x"] + pad + (box["width"] - 2 * pad) * step / max(n - 1, 1)
    page.mouse.click(x, box["y"] + box["height"] / 2)
    page.wait_for_function(f"document.getElementById('{element_id}').layout.sliders[0].active === {step}")


def _pick_dropdown_entry(page, element_id: str, tries: int = 3):
    """Open the figure's first dropdown and click another entry, as a reader would; wait until the figure took it.

    The entry next to the current one, not the last: a long list can reach past the figure, where the click lands on
    something else. A click that the menu drops while it is still opening (seen once in CI on a loaded machine) is
    retried with the menu opened again.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    menu = f"document.getElementById('{element_id}').layout.updatemenus[0]"
    active = page.evaluate(f"{menu}.active || 0")
    count = page.evaluate(f"{menu}.buttons.length")
    target = active + 1 if active + 1 < count else active - 1
    for attempt in range(tries):
        page.locator(f"#{element_id} .updatemenu-header-group").first.click()
        buttons = page.locator(f"#{element_id} .updatemenu-dropdown-button-group .updatemenu-dropdown-button")
        buttons.nth(target).click()  # waits until the opened menu has drawn its entries
        try:
            page.wait_for_function(f"{menu}.active === {target}", timeout=15_000)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise


# what a figure shows, as one string: its traces' data and visibility
_FIGURE_STATE = "JSON.stringify(document.getElementById({!r}).data.map(t => [t.x, t.y, t.text, t.visible]))"


def _snapshot(page, element_id: str):
    return page.evaluate(f"() => {_FIGURE_STATE.format(element_id)}")


def _changed(page, element_id: str, before: str, timeout_ms: int = 10_000) -> bool:
    """Whether the figure's data differ from ``before`` within ``timeout_ms``: plotly sets the slider's
    ``active`` first and restyles after it, so a snapshot taken at once can still show the old data."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(f"(before) => {_FIGURE_STATE.format(element_id)} !== before", arg=before,
                               timeout=timeout_ms)
        return True
    except PlaywrightTimeout:
        return False


def _interactive_figures(page) -> list[str]:
    return page.evaluate("""() => [...document.querySelectorAll('.dscourse-plot')]
        .filter(gd => gd.layout && ((gd.layout.sliders || []).length || (gd.layout.updatemenus || []).length))
        .map(gd => gd.id)""")


EXPECTED_INTERACTIVE = {"notebooks/01_memory_accounting": 2, "notebooks/04_mixed_precision": 1,
                        "notebooks/05_multi_node": 1,
                        # the section pages draw the same explorers (book/_ext/section_figures.py)
                        "book/4_1_memory": 2, "book/4_2_ds_config": 1, "book/4_4_mixed_precision": 1,
                        "book/4_5_multi_node": 1, "book/4_6_fsdp": 1}


@pytest.mark.parametrize("page", sorted(EXPECTED_INTERACTIVE))
def test_figures_respond_without_kernel(visit_of, page):
    """Move each slider and pick another dropdown entry: the figure changes, with no kernel behind the page (the page
    the read-only tests opened, which run before this one: a moved slider changes nothing they look at)."""
    visit = visit_of(page)
    figures = _interactive_figures(visit.page)
    assert len(figures) >= EXPECTED_INTERACTIVE[page], f"interactive figures on {page}: {figures}"
    for fid in figures:
        visit.page.locator(f"#{fid}").scroll_into_view_if_needed()
        sliders = visit.page.evaluate(f"(document.getElementById('{fid}').layout.sliders || []).length")
        if sliders:
            before = _snapshot(visit.page, fid)
            active = visit.page.evaluate(f"document.getElementById('{fid}').layout.sliders[0].active || 0")
            n = visit.page.evaluate(f"document.getElementById('{fid}').layout.sliders[0].steps.length")
            target = 0 if active == n - 1 else n - 1
            _drive_slider(visit.page, fid, target)
            assert _changed(visit.page, fid, before), f"{fid}: slider moved but the figure did not change"
        menus = visit.page.evaluate(f"(document.getElementById('{fid}').layout.updatemenus || []).length")
        if menus:
            before = _snapshot(visit.page, fid)
            _pick_dropdown_entry(visit.page, fid)
            assert _changed(visit.page, fid, before), f"{fid}: dropdown changed but the figure did not"
    _screenshot(visit.page.locator(f"#{figures[0]}"), f"{_name(page)}__after-slider")
    assert not visit.problems(), "\n".join(visit.problems())


@pytest.mark.parametrize("page,parent", NOTEBOOK_PAGES)
def test_colab_links_and_section_links(visit_of, page, parent):
    """The Colab badge and the launch button open this notebook on the configured repository and branch;
    the section page links to its notebook page and back."""
    repo = _config()["repository"]
    owner_repo = urlsplit(repo["url"]).path.strip("/")
    expected = f"https://colab.research.google.com/github/{owner_repo}/blob/{repo['branch']}/{page}.ipynb"
    assert (ROOT / f"{page}.ipynb").exists()
    links = visit_of(page).page.evaluate("""() => [...document.querySelectorAll('a[href*="colab.research.google.com"]')]
        .map(a => ({href: a.href, launch: !!a.closest('.dropdown-launch-buttons, .header-article-items'),
                    text: a.textContent.trim()}))""")
    badges = [link for link in links if not link["launch"]]
    buttons = [link for link in links if link["launch"]]
    assert badges, f"no Colab badge in {page}"
    assert buttons, f"no Colab launch button on {page}"
    assert {link["href"] for link in links} == {expected}
    back = visit_of(page).page.evaluate("() => [...document.querySelectorAll('article a')].map(a => a.href)")
    assert any(h.split("#")[0].endswith(f"{parent}.html") for h in back), f"{page} does not link back to {parent}"
    hrefs = visit_of(parent).page.evaluate("() => [...document.querySelectorAll('article a')].map(a => a.href)")
    assert any(h.split("#")[0].endswith(f"{page}.html") for h in hrefs), f"{parent} does not link to {page}"


@pytest.mark.parametrize("word", ["优化", "显存"])
def test_chinese_search(context_of, server, word):
    """Search (with jieba's word segmentation in the index) finds Chinese words."""
    visit = Visit(context_of(), server + f"search.html?q={word}")
    try:
        visit.page.wait_for_function("document.querySelectorAll('#search-results li').length > 0")
        _screenshot(visit.page, f"search__{word}")
        assert not visit.problems(), "\n".join(visit.problems())
    finally:
        visit.close()


# --- what a reader sees, read from the built HTML (no browser needed) --------------------------------------------

def _article_text(book: Path, page: str) -> str:
    """The visible text of a page's article (scripts, styles and saved widget state left out)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup((book / f"{page}.html").read_text(encoding="utf-8"), "html.parser")
    article = soup.find("article") or soup.body
    for tag in article.find_all(["script", "style", "template"]):
        tag.decompose()
    return article.get_text()


@pytest.mark.parametrize("page", PAGES)
def test_chinese_quotation_marks_pair_up(book, page):
    """Every “ has its ” on the page, in order: Sphinx's smart quotes (off in _config.yml) once turned the "…" of
    Chinese prose into ”…” (about 290 closing marks against 35 opening)."""
    text = _article_text(book, page)
    depth, where = 0, []
    for i, ch in enumerate(text):
        if ch == "\u201c":
            depth += 1
        elif ch == "\u201d":
            depth -= 1
            if depth < 0:
                where.append(text[max(0, i - 40):i + 10].replace("\n", " "))
                depth = 0
    assert not where, f"{page}: ” without its “: {where[:5]}"
    assert depth == 0, f"{page}: {depth} “ never closed"


# what a notebook page must not show: the test markers, loggers' timestamped lines, the executing machine's paths
_MACHINERY = {
    "nbval marker": r"#\s*NBVAL_[A-Z_]+",
    "timestamped log line": r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\]",
    "temporary folder": r"/tmp/\S+",
    "home folder": r"/(?:root|home/[^/\s]+)/\S*",
    "virtual environment or site-packages": r"\S*/\.?venv/\S*|\S*/site-packages/\S*",
}


@pytest.mark.parametrize("page", PAGES)
def test_pages_show_no_test_machinery(book, page):
    """No NBVAL markers in displayed code, no timestamped log lines or machine paths in displayed outputs
    (book/_ext/lesson_view.py drops them from the HTML; the notebooks keep what nbval needs)."""
    import re

    text = _article_text(book, page)
    found = {what: [m.group(0) for m in re.finditer(pattern, text)][:3] for what, pattern in _MACHINERY.items()}
    assert not {k: v for k, v in found.items() if v}, f"{page} shows {found}"


def test_lesson_view_cleans_outputs():
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        from lesson_view import MARKER, reader_text
    finally:
        sys.path.pop(0)
    assert MARKER.sub("", "# NBVAL_IGNORE_OUTPUT\n# (times vary)\nimport deepspeed\n") == "# (times vary)\nimport deepspeed\n"
    log = "[2026-11-24 22:55:26,631] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU.\n"
    assert reader_text(log + "loss 1.0\n") == "loss 1.0\n"
    assert reader_text("/work/x/.venv/bin/python -m torch.distributed.run") == "python -m torch.distributed.run"
    assert reader_text("/usr/lib/python3/site-packages/deepspeed/a.py") == "site-packages/deepspeed/a.py"
    assert reader_text("saved to /tmp/dscourse-abc/ckpt, /root/x") == "saved to $TMPDIR, ~/x"


def test_page_titles_are_distinct(book):
    """A notebook page's title differs from its section page's (search results and prev/next links showed both
    with the same words): notebook pages are the section's 实验."""
    from bs4 import BeautifulSoup

    titles = {}
    for page in PAGES:
        h1 = BeautifulSoup((book / f"{page}.html").read_text(encoding="utf-8"), "html.parser").find("h1")
        titles[page] = h1.get_text().strip().rstrip("#").strip() if h1 else page
    same = {t: [p for p in titles if titles[p] == t] for t in titles.values()}
    assert all(len(pages) == 1 for pages in same.values()), {t: ps for t, ps in same.items() if len(ps) > 1}
    for page, _ in NOTEBOOK_PAGES:
        assert "实验" in titles[page], f"{page}: {titles[page]}"


# the words of the titles, and a page whose title carries each (book/_ext/search_zh.py, search_words.txt)
SEARCHES = {"混合精度": "book/4_4_mixed_precision", "多节点": "book/4_5_multi_node", "优化器": "book/4_1_memory",
            "主权重": "book/4_4_mixed_precision", "显存": "book/4_1_memory", "ZeRO": "book/4_1_memory"}


@pytest.mark.parametrize("query", sorted(SEARCHES))
def test_search_finds_the_titles_words(context_of, server, query):
    """Type the word into the search page's box as a reader would: its page is among the results."""
    visit = Visit(context_of(), server + "search.html")
    try:
        box = visit.page.locator(".bd-search-container input[type=search]")
        box.fill(query)
        box.press("Enter")
        # results appear one by one (each fetches its page for the summary): wait for the expected one, or the end
        found_js = """() => [...document.querySelectorAll('#search-results ul.search li a')]
            .map(a => new URL(a.href).pathname.replace(/^\\//, '').replace(/\\.html$/, ''))"""
        visit.page.wait_for_function(f"""(want) => ({found_js})().includes(want)
            || (typeof Search !== 'undefined' && Search._pulse_status === -1
                && (document.querySelector('#search-results .search-summary') || {{}}).innerText)""",
                                     arg=SEARCHES[query], polling=250)
        found = visit.page.evaluate(found_js)
        assert SEARCHES[query] in found, f"{query}: {SEARCHES[query]} not among the results {found}"
        assert not visit.problems(), "\n".join(visit.problems())
    finally:
        visit.close()


@pytest.mark.parametrize("page", PAGES)
def test_plotly_only_where_a_figure_is(book, page):
    """plotly.js (4.8 MB) is loaded by the pages that draw a figure (in the page or in a widget's saved state) and
    by no other; test_page_loads_offline proves that those pages draw their figures from it, with no CDN request."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup((book / f"{page}.html").read_text(encoding="utf-8"), "html.parser")
    loads = [s["src"] for s in soup.find_all("script", src=True) if "plotly.min.js" in s["src"]]
    draws = any("Plotly.newPlot" in (s.string or "") for s in soup.find_all("script"))
    assert len(loads) == (1 if draws else 0), f"{page}: draws a figure: {draws}, loads plotly.js: {loads}"
    if page in EXPECTED_INTERACTIVE:
        assert draws


@pytest.mark.parametrize("page,parent", NOTEBOOK_PAGES)
def test_widgets_say_they_need_a_kernel(book, page, parent):
    """In the static HTML an ipywidgets control is a picture of its saved state: a line right above each one says
    that it needs a running kernel and links this notebook in Colab (book/_ext/lesson_view.py)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup((book / f"{page}.html").read_text(encoding="utf-8"), "html.parser")
    views = soup.select('article script[type="application/vnd.jupyter.widget-view+json"]')
    repo = _config()["repository"]
    colab = (f"https://colab.research.google.com/github/{urlsplit(repo['url']).path.strip('/')}/blob/"
             f"{repo['branch']}/{page}.ipynb")
    for view in views:
        note = view.find_previous_sibling("p", class_="dscourse-kernel-note")
        assert note is not None and "内核" in note.get_text(), f"{page}: a widget without its note"
        assert note.find("a")["href"] == colab


def test_glued_numbers_read_as_prose(book):
    """A number the notebooks computed and the prose quotes ({glue}) is pasted as text in the sentence, not as pink
    inline code (dscourse.book.glue records it as HTML too)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup((book / "book" / "4_1_memory.html").read_text(encoding="utf-8"), "html.parser")
    glued = soup.select("article span.dscourse-glued")
    assert len(glued) >= 10, len(glued)
    assert not [g for g in glued if g.find_parent("code")]
    assert any(g.get_text() == "112" for g in glued)  # the H200 peak runs, in "H200 上的 … 次实测里"
