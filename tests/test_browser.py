"""The browser fixture itself: it renders a page and reports the page's errors (so browser tests can fail)."""
from __future__ import annotations

from pathlib import Path

from browser import BrowserPage

def test_renders_a_page_and_reports_its_errors(browser_page: BrowserPage, tmp_path: Path) -> None:
    page_file = tmp_path / "page.html"
    page_file.write_text("<html><body><p id='x'>static</p><script>document.getElementById('x').textContent"
                         " = 'scripted'; console.error('boom'); undefinedFunction();</script></body></html>")
    browser_page.page.goto(page_file.as_uri())
    assert browser_page.page.text_content("#x") == "scripted"
    assert browser_page.errors[0] == "boom"
    assert any("undefinedFunction" in error for error in browser_page.errors[1:])
