"""The Dagster UI in a real browser: `dagster dev` on a free local port, headless Chromium
(Debian's chromium + chromium-driver, driven by Selenium) sees the asset graph, launches a
materialization of `documents` and the run succeeds. Screenshots go to test-artifacts/."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from curation.pipelines.corpora import CORPORA, DEFAULT_CORPUS
from curation.pipelines.definitions import ASSETS

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CURATION_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
DAGSTER = str(Path(sys.executable).with_name("dagster"))
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1600,1000",
)

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="the browser test needs Debian's chromium and chromium-driver "
    "(apt-get install -y chromium chromium-driver)",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


def _wait(what: str, probe, timeout: float, server: subprocess.Popen, log: Path, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log.read_text()[-4000:]
            pytest.fail(f"dagster dev exited ({server.returncode}) while waiting for {what}:\n{tail}")
        try:
            value = probe()
        except (urllib.error.URLError, ConnectionError, OSError):
            value = None
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{log.read_text()[-4000:]}")


def _session_members(session: int) -> list[int]:
    """Every process still in the session the server was started in."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == session:  # fields after the name: state ppid pgrp session
            members.append(int(entry.name))
    return members


def _stop(server: subprocess.Popen) -> None:
    """Stop dagster dev and everything it started: its process group, then any straggler in its session."""
    group = server.pid  # start_new_session: the server leads its own group and session
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)
        for pid in _session_members(group):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (server.poll() is None or _session_members(group)):
            time.sleep(0.2)
        if server.poll() is not None and not _session_members(group):
            return


@pytest.fixture
def dagster_ui(tmp_path, monkeypatch):
    """`dagster dev` on 127.0.0.1 with a temporary DAGSTER_HOME and storage root; yields its URL."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:  # the bundled corpus as a registered partition
        instance.add_dynamic_partitions(CORPORA, [DEFAULT_CORPUS])
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CURATION_STORAGE_ROOT": str(tmp_path / "store"),
        "CURATION_DEVICE": "cpu",
    }
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dagster-dev.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [DAGSTER, "dev", "-h", "127.0.0.1", "-p", str(port), "-m", "curation.pipelines.definitions"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        query = "{ assetNodes { assetKey { path } } }"
        _wait(
            "the code location",
            lambda: len(_graphql(url, query)["assetNodes"]) >= len(ASSETS),
            240,
            server,
            log,
        )
        yield url, server, log, tmp_path / "store"
    finally:
        _stop(server)
    assert _session_members(server.pid) == []


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _click_button(driver, text: str, timeout: float = 30) -> None:
    """Click the visible button labelled `text`, riding out React re-renders."""
    from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def click(d):
        for button in d.find_elements(By.XPATH, f"//button[normalize-space()='{text}']"):
            if button.is_displayed() and button.is_enabled():
                button.click()
                return True
        return False

    ignored = (StaleElementReferenceException, ElementClickInterceptedException)
    WebDriverWait(driver, timeout, ignored_exceptions=ignored).until(click)


def _dismiss_welcome(driver) -> None:
    from selenium.common.exceptions import TimeoutException

    # A fresh instance greets its first visitor with a newsletter dialog.
    with contextlib.suppress(TimeoutException):
        _click_button(driver, "Skip", timeout=8)


def test_ui_shows_the_graph_and_materializes_documents(dagster_ui, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, server, log, store = dagster_ui
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    names = [a.key.to_user_string() for a in ASSETS]

    # The asset graph: everything upstream of the trained model, raw files included.
    browser.get(f"{url}/assets/trained_model?view=lineage&lineageScope=upstream&lineageDepth=20")
    _dismiss_welcome(browser)
    body = lambda d: d.find_element(By.TAG_NAME, "body").text  # noqa: E731
    WebDriverWait(browser, 60).until(lambda d: all(name in body(d).split("\n") for name in names))
    time.sleep(1)  # let the layout settle for the screenshot
    browser.save_screenshot(str(ARTIFACTS / "dagster-asset-graph.png"))

    # Materialize documents: its partition dialog, all (the one registered) partitions, one run.
    browser.get(f"{url}/assets/documents")
    _dismiss_welcome(browser)
    _click_button(browser, "Materialize…")
    _click_button(browser, "All")
    WebDriverWait(browser, 30).until(lambda d: "1 partition" in body(d))
    _click_button(browser, "Launch 1 run")

    query = "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"

    def finished():
        runs = _graphql(url, query)["runsOrError"]["results"]
        done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        return done[0] if done else None

    run = _wait("the documents run to finish", finished, 300, server, log, every=2)
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags.get("dagster/partition") == DEFAULT_CORPUS
    browser.get(f"{url}/runs/{run['runId']}")
    WebDriverWait(browser, 60).until(lambda d: "RUN_SUCCESS" in body(d) or "RUN_FAILURE" in body(d))
    browser.save_screenshot(str(ARTIFACTS / "dagster-run.png"))
    assert run["status"] == "SUCCESS", log.read_text()[-4000:]
    assert (store / "documents" / DEFAULT_CORPUS / "manifest.json").exists()
