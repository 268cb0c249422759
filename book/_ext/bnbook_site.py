"""Small fixes to the HTML pages of the book (a local Sphinx extension, see _config.yml).

* Drop sphinx-thebe's scripts. The book offers no live-code button (launch_buttons.thebe is
  false), yet Jupyter Book always loads sphinx-thebe, and with Sphinx 7.4 its inline
  ``const THEBE_JS_URL`` ends up twice on every page: a console error ("Identifier 'THEBE_JS_URL'
  has already been declared") that the browser tests would rightly report.
* Citations as a list that assistive technology can read: docutils writes the bibliography as
  ``role="list"`` whose entries have ``role="doc-biblioentry"``, a role deprecated in ARIA 1.2
  that is no list item (axe-core: aria-required-children, critical). The entries become
  ``role="listitem"``.
* The book's stylesheet, book/_static/bnbook.css (link contrast inside admonitions).
"""

from __future__ import annotations


def _is_thebe(asset) -> bool:
    name = str(getattr(asset, "filename", asset) or "")
    body = str(getattr(asset, "attributes", {}).get("body", ""))
    return "sphinx-thebe" in name or "THEBE_JS_URL" in body


def drop_thebe(app, pagename, templatename, context, doctree):
    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [asset for asset in context[key] if not _is_thebe(asset)]


def readable_citations(app, pagename, templatename, context, doctree):
    if "body" in context and 'role="doc-biblioentry"' in context["body"]:
        context["body"] = context["body"].replace('role="doc-biblioentry"', 'role="listitem"')


def setup(app):
    app.connect("html-page-context", drop_thebe)
    app.connect("html-page-context", readable_citations)
    app.add_css_file("bnbook.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
