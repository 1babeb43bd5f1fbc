"""Every script, style and font the built book loads is served from the book itself, never from a CDN.

Without this, Jupyter Book's pages fetch MathJax, require.js and the ipywidgets HTML manager from public CDNs,
so the book breaks offline or behind a firewall. Here:

- plotly.js is copied from the installed ``plotly`` package (pinned in requirements.txt) and loaded only by the pages
  that draw a figure (4.8 MB); the notebooks'
  figures (:mod:`dscourse.plots`) draw with the page's ``Plotly``.
- MathJax 3, require.js and ``@jupyter-widgets/html-manager`` (which renders the widgets from the state saved in
  the notebooks) are vendored from their npm packages into ``book/_ext/vendor/``: only the files a page loads,
  at the versions pinned in :data:`NPM`, each tarball checked against the registry's sha512 integrity.
  ``python book/_ext/vendor_assets.py refresh`` re-creates that folder with ``npm pack`` (the only step that
  needs npm and the network); ``MANIFEST.json`` there records each file's sha256, checked at every build.

At build time the vendored files are copied under ``_static/`` and Sphinx's ``mathjax_path`` and myst-nb's
``nb_ipywidgets_js`` point at them. ``tests/test_browser.py`` proves that a built page makes no request
beyond the book's own server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
from pathlib import Path

VENDOR = Path(__file__).resolve().parent / "vendor"

# npm package -> (version, the registry's "dist.integrity" of its tarball, files or folders to keep, local folder)
NPM = {
    "mathjax": ("3.2.2", "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
                ["LICENSE", "package.json", "es5/tex-mml-chtml.js", "es5/output/chtml/fonts/woff-v2/",
                 "es5/input/tex/extensions/"], "mathjax-3.2.2"),
    "requirejs": ("2.3.7", "sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw==",
                  ["package.json", "require.js"], "requirejs-2.3.7"),
    # The widget manager that renders saved widget state in a static page (its fonts: the icons' font).
    "@jupyter-widgets/html-manager": (
        "1.0.15", "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        ["package.json", "dist/embed-amd.js", "dist/*.woff2", "dist/*.woff"], "html-manager-1.0.15"),
}
MATHJAX_PATH = "mathjax-3.2.2/es5/tex-mml-chtml.js"
REQUIREJS_PATH = "requirejs-2.3.7/require.js"
EMBED_AMD_PATH = "html-manager-1.0.15/dist/embed-amd.js"
# The widget manager finds its fonts next to the URL require.js gives its module: point that into _static
# (by default it resolves against the page's own folder, and every font request fails).
WIDGETS_SETUP_JS = "dscourse-widgets-setup.js"
WIDGETS_SETUP_BODY = """// Loaded between require.js and the vendored widget manager (book/_ext/vendor_assets.py).
(function () {
  // Where require.js places the manager's modules, and so where it looks for its fonts: this book's _static
  // folder (by default the page's own folder, where every font request fails).
  var dist = document.currentScript.src.split("?")[0].replace(/[^/]*$/, "") + "%s";
  require.config({paths: {"@jupyter-widgets/html-manager/dist": dist, "@jupyter-widgets": dist}});
  // The manager typesets widget labels with MathJax 2's MathJax.Hub.Queue; the book loads MathJax 3.
  document.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (mj && !mj.Hub) {
      mj.Hub = {Queue: function () {
        for (var i = 0; i < arguments.length; i++) {
          var job = arguments[i];
          if (Array.isArray(job) && job[0] === "Typeset" && mj.typesetPromise) mj.typesetPromise([job[2]]);
        }
      }};
    }
  });
})();
""" % EMBED_AMD_PATH.rsplit("/", 1)[0]  # noqa: UP031 (a JavaScript body: its braces rule out format())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_vendor() -> dict:
    """The vendored files, checked against MANIFEST.json (sha256); raises if one is missing or changed."""
    manifest = json.loads((VENDOR / "MANIFEST.json").read_text())
    bad = [rel for rel, digest in manifest["files"].items()
           if not (VENDOR / rel).is_file() or _sha256(VENDOR / rel) != digest]
    if bad:
        raise RuntimeError(f"vendored files missing or changed: {bad[:5]} (run: python book/_ext/vendor_assets.py refresh)")
    return manifest


def refresh() -> None:
    """Re-create book/_ext/vendor from the pinned npm packages (needs npm and the registry)."""
    import fnmatch
    import subprocess
    import tarfile
    import tempfile

    files = {}
    shutil.rmtree(VENDOR, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (version, integrity, keep, folder) in NPM.items():
            out = subprocess.run(["npm", "pack", f"{name}@{version}", "--json", "--pack-destination", tmp],
                                 check=True, capture_output=True, text=True, timeout=300)
            tgz = Path(tmp) / json.loads(out.stdout)[0]["filename"]
            got = "sha512-" + base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
            if got != integrity:
                raise RuntimeError(f"{name}@{version}: tarball integrity {got} != pinned {integrity}")
            with tarfile.open(tgz) as tar:
                for member in tar.getmembers():
                    rel = member.name.removeprefix("package/")
                    if member.isfile() and any(rel == k or (k.endswith("/") and rel.startswith(k))
                                               or fnmatch.fnmatch(rel, k) for k in keep):
                        dest = VENDOR / folder / rel
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_bytes(tar.extractfile(member).read())
                        files[f"{folder}/{rel}"] = _sha256(dest)
    manifest = {"packages": {name: {"version": v, "integrity": i, "folder": f} for name, (v, i, _, f) in NPM.items()},
                "files": dict(sorted(files.items()))}
    (VENDOR / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"vendored {len(files)} files, {sum((VENDOR / r).stat().st_size for r in files) / 1e6:.1f} MB")


def _configure(app, config):
    # Sphinx: a relative mathjax_path is relative to _static; myst-nb adds these scripts to pages with widgets.
    config.mathjax_path = MATHJAX_PATH
    config.nb_ipywidgets_js = {REQUIREJS_PATH: {}, WIDGETS_SETUP_JS: {}, EMBED_AMD_PATH: {}}


# The book's own styles: the layout that holds at 390 px and 1280 px (book/_ext/dscourse-book.css).
BOOK_CSS = "dscourse-book.css"
# Plotly figures on a phone: legends below the plot, long labels and titles wrapped (the figures' data untouched).
PLOTLY_NARROW_JS = "dscourse-plotly-narrow.js"


def _has_plotly_figure(app, pagename: str, context) -> bool:
    """Whether the page draws a plotly figure: in its body, or in the saved state of a widget (an ipywidgets Output
    holding a figure of dscourse.plots)."""
    if "Plotly." in (context.get("body") or ""):
        return True
    try:
        from myst_nb.sphinx_ import NbMetadataCollector
    except ImportError:
        return False
    files = NbMetadataCollector.get_js_files(app.env, pagename) if app.env is not None else {}
    return any("Plotly." in str((kwargs or {}).get("body", "")) for _, kwargs in files.values())


def _clean_page(app, pagename, templatename, context, doctree):
    """Pages that load without a console error, and with plotly.js only where a figure is.

    - sphinx-thebe's inline ``const THEBE_JS_URL`` is added twice under Jupyter Book 1 (once with filename None, once ""),
      and the second copy throws "Identifier 'THEBE_JS_URL' has already been declared" on every page: keep one.
    - pydata-sphinx-theme logs "Got invalid theme mode" on a first visit when no default mode is set.
    """
    # plotly.js (4.8 MB) only on the pages that draw a figure; before require.js (priority 500), which would
    # otherwise capture it as an AMD module and leave window.Plotly undefined.
    if _has_plotly_figure(app, pagename, context):
        app.add_js_file("plotly.min.js", priority=450)
        app.add_js_file(PLOTLY_NARROW_JS, priority=451)
    if not context.get("default_mode"):
        context["default_mode"] = "light"
    # Jupyter Book 1 hard-codes an English placeholder in the search box of this Chinese book.
    if context.get("theme_search_bar_text") == "Search this book...":
        context["theme_search_bar_text"] = "搜索本书…"
    seen, kept = set(), []
    for js in context.get("script_files", []):
        attrs = getattr(js, "attributes", {}) or {}
        key = (getattr(js, "filename", str(js)) or "", tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    context["script_files"][:] = kept  # in place: it is the builder's list, which later handlers extend


def _copy(app, exception):
    if exception is None and app.builder.format == "html":
        import plotly

        static = Path(app.outdir) / "_static"
        static.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", static / "plotly.min.js")
        (static / WIDGETS_SETUP_JS).write_text(WIDGETS_SETUP_BODY)
        for name in (BOOK_CSS, PLOTLY_NARROW_JS):
            shutil.copyfile(Path(__file__).resolve().parent / name, static / name)
        manifest = check_vendor()
        for package in manifest["packages"].values():
            shutil.copytree(VENDOR / package["folder"], static / package["folder"], dirs_exist_ok=True)


def setup(app):
    check_vendor()
    app.connect("config-inited", _configure, priority=100)  # before myst-nb reads its config
    app.add_css_file(BOOK_CSS)
    # early: Sphinx stops calling html-page-context handlers at the first that returns a template name
    app.connect("html-page-context", _clean_page, priority=100)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    if sys.argv[1:] == ["refresh"]:
        refresh()
    else:
        print("usage: python book/_ext/vendor_assets.py refresh")
