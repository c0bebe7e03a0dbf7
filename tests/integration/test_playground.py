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


async def _target(messages):
    """A stand-in target LLM: echoes what it was asked; fails on "boom", hangs on "slow"."""
    import asyncio

    prompt = messages[-1][1]
    if "boom" in prompt:
        raise RuntimeError("the target is down")
    if "slow" in prompt:
        await asyncio.sleep(30)
    return f"answer to: {prompt}"


@pytest.fixture(scope="module")
def root_with_target(backend):
    from bpo_core.chat import as_chat_model
    from bpo_core.server import create_app

    app = create_app(
        BPOOptimizer(backend, max_new_tokens=32),
        target=as_chat_model(_target, name="echo-llm"),
        target_timeout_s=1.0,
    )
    with live_server(app) as url:
        yield url.removesuffix("/v1")


def test_answers_side_by_side_each_side_failing_on_its_own(root_with_target):
    root = root_with_target
    assert httpx.get(f"{root}/health", timeout=30).json()["target"] == "echo-llm"
    both = httpx.post(f"{root}/v1/answers", json={"original": "hi", "optimized": "hi. Be brief."}, timeout=30).json()
    assert both["original"]["answer"] == "answer to: hi"
    assert both["optimized"]["answer"] == "answer to: hi. Be brief."
    assert both["target"] == "echo-llm" and both["original"]["seconds"] >= 0
    broken = httpx.post(f"{root}/v1/answers", json={"original": "hi", "optimized": "hi boom"}, timeout=30).json()
    assert broken["original"]["answer"] == "answer to: hi"
    assert "the target is down" in broken["optimized"]["error"] and "answer" not in broken["optimized"]
    late = httpx.post(f"{root}/v1/answers", json={"original": "slow", "optimized": "slow"}, timeout=30).json()
    assert "did not answer within 1 s" in late["original"]["error"]


def test_without_a_target_answers_is_a_clear_404(root):
    resp = httpx.post(f"{root}/v1/answers", json={"original": "a", "optimized": "b"}, timeout=30)
    assert resp.status_code == 404 and "--target" in resp.json()["error"]["message"]
    assert httpx.get(f"{root}/health", timeout=30).json()["target"] is None


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


def _optimize_in_page(browser, root: str, prompt: str, style: str) -> None:
    """Open the playground, type ``prompt``, pick ``style`` and press Optimize."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{root}/")
    browser.find_element(By.ID, "prompt").send_keys(prompt)
    Select(browser.find_element(By.ID, "style")).select_by_value(style)
    browser.find_element(By.ID, "go").click()


def test_a_prompt_typed_in_the_browser_shows_its_rewrite_as_a_diff(root, browser):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    prompt = "how can I create a profile on Facebook?"
    _optimize_in_page(browser, root, prompt, "rewrite")
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


def test_with_a_target_the_page_shows_both_answers_side_by_side(root_with_target, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    prompt = "how can I create a profile on Facebook?"
    _optimize_in_page(browser, root_with_target, prompt, "augment")
    WebDriverWait(browser, 120).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "answer-optimized"), "answer to:")
    )
    result = httpx.post(f"{root_with_target}/v1/optimize", json={"prompts": [prompt], "style": "augment"}, timeout=120)
    optimized = result.json()["results"][0]["optimized"]
    left, right = (browser.find_element(By.ID, i).text for i in ("answer-original", "answer-optimized"))
    assert left.startswith(f"answer to: {prompt}") and right.startswith(f"answer to: {optimized}")
    assert browser.find_element(By.ID, "target-name").text == "echo-llm"
    boxes = [browser.find_element(By.ID, i).rect for i in ("answer-original", "answer-optimized")]
    assert boxes[0]["x"] < boxes[1]["x"] and abs(boxes[0]["y"] - boxes[1]["y"]) < 5  # side by side
