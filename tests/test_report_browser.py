"""report.html in a real browser: headless Chromium loads the page from disk, offline."""

import os
import time

import pytest

from browser import available, chromium, console_errors, full_page_screenshot, requests_made
from harmonycell.tools.report.html import render_compare
from harmonycell.tools.report.publish import write_report_html
from harmonycell.tools.report.rundata import load_run
from report_support import FAILED_CODE, enrich, report_run  # noqa: F401  (session fixture)

# CI (make test) installs Chromium and sets HARMONYCELL_REQUIRE_BROWSER: there a missing browser fails
pytestmark = pytest.mark.skipif(available() is not None and not os.environ.get("HARMONYCELL_REQUIRE_BROWSER"),
                                reason=str(available()))

NODE_POINTS = """
const gd = document.getElementById('tree'), out = {};
const traces = gd.querySelectorAll('.scatterlayer .trace');
gd.data.forEach((t, k) => { if (!t.customdata) return;
  traces[k].querySelectorAll('path.point').forEach((el, j) => { out[t.customdata[j]] = el; }); });
return out;
"""


def visible_detail(driver):
    return driver.execute_script(
        "const d=[...document.querySelectorAll('.node-detail')].filter(x=>!x.hidden);"
        "return d.map(x=>[x.dataset.node, (x.querySelector('pre.code')||{}).textContent||'']);")


def wait_for(driver, script, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if driver.execute_script(script):
            return True
        time.sleep(0.25)
    return False


def test_report_loads_offline_without_errors_and_a_click_shows_the_node(report_run, tmp_path):  # noqa: F811
    from selenium.webdriver import ActionChains

    run = enrich(report_run, tmp_path / "run")
    page = write_report_html(run)
    n_nodes = len(load_run(run).tree["nodes"])
    with chromium() as driver:
        driver.get(page.resolve().as_uri())
        assert wait_for(driver, "return document.querySelectorAll('#tree .scatterlayer path.point').length > 0")
        assert console_errors(driver) == []
        requests = requests_made(driver, page.resolve().as_uri())
        assert requests == [], f"the page asked for {requests}"
        points = driver.execute_script(NODE_POINTS)
        assert sorted(points) == sorted(load_run(run).tree["nodes"]) and len(points) == n_nodes
        assert driver.execute_script("return document.querySelectorAll('#tree .scatterlayer path.point').length") == n_nodes
        best = load_run(run).best_node
        assert [d[0] for d in visible_detail(driver)] == [best]  # the selected node is shown first
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", points["n090"])
        ActionChains(driver).move_to_element(points["n090"]).pause(0.3).click().perform()
        assert wait_for(driver, "return document.body.dataset.selectedNode === 'n090'", timeout=20)
        [(shown, code)] = visible_detail(driver)
        assert shown == "n090" and code == FAILED_CODE
        assert console_errors(driver) == []
        shot = full_page_screenshot(driver, tmp_path / "report.png")
        print(f"\nscreenshot of report.html: {shot}")
        assert shot.stat().st_size > 50_000

        cmp = tmp_path / "compare.html"
        cmp.write_text(render_compare([load_run(report_run), load_run(run)]))
        driver.get(cmp.resolve().as_uri())
        assert wait_for(driver, "return document.querySelectorAll('#compare-trees path.point').length > 0")
        assert console_errors(driver) == []
        assert requests_made(driver, cmp.resolve().as_uri()) == []
        assert driver.execute_script("return document.querySelectorAll('#compare-trees path.point').length") == (
            n_nodes + len(load_run(report_run).tree["nodes"]))
