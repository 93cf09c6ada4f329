"""The page at `/` in Debian's headless Chromium (driven through chromedriver): status,
a search and an ask against the echoing chat backend, and the token gate in front of it."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Serve
from tests.assist.echo import EchoBackend, blocks, echo_settings, wait_indexed
from tests.assist.fixture import make_repo

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "page-token-0123456789abcdef"

pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, check: Callable[[Any], Any]) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 20).until(check)


def texts(driver: Any, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def attrs(driver: Any, css: str, name: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.get_attribute(name) for e in driver.find_elements(By.CSS_SELECTOR, css)]


def submit(driver: Any, field: str, text: str, button: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, field)
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, button).click()


async def test_page_shows_status_searches_and_asks(
    serve: Serve, http: httpx.AsyncClient, tmp_path: Path, browser: Any
) -> None:
    echo = EchoBackend()
    app = serve(echo_settings(), {"echo": echo})
    root = make_repo(tmp_path / "repo").resolve()
    await wait_indexed(root, app.url, http)

    browser.get(app.url + "/")
    wait(browser, lambda d: texts(d, "#status-indexes tr.index"))
    assert browser.title == "Mimiverse"
    assert texts(browser, "#status-tasks tr.task") == [
        "completion m echo", "chat chat-m echo", "embedding bow-64 echo"]
    assert texts(browser, "#status-backends tr.backend") == ["echo echo ok"]
    [index] = texts(browser, "#status-indexes tr.index")
    assert index.startswith(f"{root} ready 9 files, ")
    assert texts(browser, "#repo option") == [str(root)]
    assert texts(browser, "#status-cache")[0].startswith("memory · ok · ")

    # Search: what the API finds, each linked to its lines.
    submit(browser, "search-query", "cart total", "search-go")
    wait(browser, lambda d: texts(d, "#search-results li.hit"))
    found = (await http.post(f"{app.url}/api/codebase/search",
                             json={"query": "cart total", "repo": str(root)})).json()["results"]
    where = [f"{h['path']}:{h['start_line']}-{h['end_line']}" for h in found]
    assert texts(browser, "#search-results a.loc") == where
    assert attrs(browser, "#search-results a.loc", "href") == [
        f"vscode://file{root}/{h['path']}:{h['start_line']}" for h in found]
    assert texts(browser, "#search-results pre")[0] == found[0]["snippet"]

    # Ask: streamed; the sources shown are the prompt's, the answer is the echoed prompt.
    submit(browser, "ask-question", "where is the cart total computed?", "ask-go")
    wait(browser, lambda d: texts(d, "#ask-state")[0].startswith("done"))
    [prompt] = echo.prompts
    shown = [f"{p}:{a}-{b}" for p, a, b in blocks(prompt)]
    assert len(shown) == 10 and texts(browser, "#ask-sources a.loc") == shown
    assert texts(browser, "#ask-state") == ["done · chat-m on echo"]
    answer = browser.execute_script("return document.getElementById('ask-answer').textContent")
    assert answer == prompt


async def test_page_is_behind_the_token_gate(
    serve: Serve, http: httpx.AsyncClient, tmp_path: Path, browser: Any
) -> None:
    echo = EchoBackend()
    app = serve(echo_settings(auth={"tokens": [TOKEN]}), {"echo": echo})
    r = await http.get(app.url + "/")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Basic realm="Mimiverse", charset="UTF-8"'
    assert "<html" not in r.text
    r = await http.get(app.url + "/api/status")  # the API keeps its Bearer challenge
    assert (r.status_code, r.headers["www-authenticate"]) == (401, "Bearer")
    basic = base64.b64encode(f"me:{TOKEN}".encode()).decode()
    for wrong in ["me:not-the-token", "no-colon", "%%%"]:
        raw = base64.b64encode(wrong.encode()).decode() if wrong != "%%%" else wrong
        r = await http.get(app.url + "/", headers={"Authorization": f"Basic {raw}"})
        assert r.status_code == 401
    r = await http.get(app.url + "/", headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200 and r.text.startswith("<!doctype html>")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]

    headers = {"Authorization": f"Bearer {TOKEN}"}
    root = make_repo(tmp_path / "repo").resolve()
    await http.post(f"{app.url}/api/codebase/index", json={"path": str(root)}, headers=headers)
    # The browser, given the token once, sends it with the page's own API calls.
    browser.get(app.url.replace("http://", f"http://me:{TOKEN}@") + "/")
    wait(browser, lambda d: texts(d, "#status-indexes tr.index"))
    submit(browser, "search-query", "cart total", "search-go")
    wait(browser, lambda d: texts(d, "#search-results li.hit") or texts(d, "#search-state.error"))
    assert texts(browser, "#search-results a.loc")
