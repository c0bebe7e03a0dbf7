"""The playground page of ``bpo serve``, in a real headless browser (Chromium + chromedriver)."""

from __future__ import annotations

import io
import shutil

import httpx
import pytest

from bpo_core import BPOOptimizer
from tests.conftest import live_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def root(backend):
    from bpo_core.server import create_app

    with live_server(create_app(BPOOptimizer(backend, max_new_tokens=32), model_name="bpo-test")) as url:
        yield url.removesuffix("/v1")


def test_the_page_is_served_without_external_assets(root):
    page = httpx.get(f"{root}/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "v1/optimize" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_a_prompt_typed_in_the_browser_shows_its_rewrite_as_a_diff(root, browser):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    prompt = "how can I create a profile on Facebook?"
    browser.get(f"{root}/")
    browser.find_element(By.ID, "prompt").send_keys(prompt)
    Select(browser.find_element(By.ID, "style")).select_by_value("rewrite")
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 120).until(expected_conditions.presence_of_element_located((By.ID, "applied")))

    expected = httpx.post(f"{root}/v1/optimize", json={"prompts": [prompt], "style": "rewrite"}, timeout=120)
    result = expected.json()["results"][0]
    diff = browser.find_element(By.ID, "diff")
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('#diff > :not(del)')).map(e => e.textContent).join('')"
    )
    assert shown == result["optimized"]  # the diff, less its deletions, is the rewrite byte for byte
    meta = browser.find_element(By.ID, "meta").text
    assert browser.find_element(By.ID, "applied").text == (result["style"] if result["changed"] else "unchanged")
    assert meta.endswith(" s")  # the time it took
    if not result["changed"]:
        assert result["reason"] in meta
        return
    inserted = [e.text for e in diff.find_elements(By.TAG_NAME, "ins")]
    deleted = [e.text for e in diff.find_elements(By.TAG_NAME, "del")]
    assert inserted and "".join(inserted) in result["optimized"]
    assert not deleted or "".join(deleted).strip() in prompt
    # The diff renders: the inserted words' green background is on screen.
    shot = Image.open(io.BytesIO(diff.screenshot_as_png)).convert("RGB")
    green = sum(1 for p in shot.getdata() if abs(p[0] - 212) < 8 and abs(p[1] - 245) < 8 and abs(p[2] - 212) < 8)
    assert green > 50
