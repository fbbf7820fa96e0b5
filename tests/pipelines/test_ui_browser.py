"""The Dagster UI in a real browser: `dagster dev` on a free local port, headless Chromium
(Debian's chromium + chromium-driver, driven by Selenium). One session sees the asset graph
in its groups and the catalog's kinds, launches the ingest of a half-broken file dropped in
the inbox and sees its quarantine table, the warning and the report, and enters a bad budget
that the Launchpad refuses. Screenshots go to test-artifacts/ (docs/ holds copies)."""

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
import orjson
import pytest

from curation.pipelines.corpora import CORPORA
from curation.pipelines.definitions import ASSETS

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CURATION_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
DAGSTER = str(Path(sys.executable).with_name("dagster"))
CORPUS = "broken_corpus"  # the half-broken file's corpus: its name without the extension
BROKEN = [b"{broken", b'{"text": ""}', b'{"body": "no text field"}', b"[1, 2]", b'{"text": 3}', b"{", b"nul"]
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
def dagster_ui(tmp_path, monkeypatch, real_texts):
    """`dagster dev` on 127.0.0.1 with a temporary DAGSTER_HOME and storage root, a half-broken
    file in the inbox (15 lines, 7 unreadable) registered as its corpus; yields its URL."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    inbox = tmp_path / "store" / "inbox"
    inbox.mkdir(parents=True)
    lines = [orjson.dumps({"text": t}) for t in real_texts[:8]] + BROKEN
    (inbox / f"{CORPUS}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with dg.DagsterInstance.get() as instance:  # registered as the inbox sensor would
        instance.add_dynamic_partitions(CORPORA, [CORPUS])
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CURATION_STORAGE_ROOT": str(tmp_path / "store"),
        "CURATION_DEVICE": "cpu",
        "CURATION_AUTOMATION": "off",  # no runs of the later stages in the background
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


def _wait_text(driver, *texts: str, timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        body = d.find_element(By.TAG_NAME, "body").text
        return body if all(t in body for t in texts) else False

    return WebDriverWait(driver, timeout).until(shown)


def _launch_ingest(driver, url: str, server, log: Path) -> dict:
    """Materialize… on documents, all (the one registered) partitions, one run; wait for it."""
    driver.get(f"{url}/assets/documents")
    _dismiss_welcome(driver)
    _click_button(driver, "Materialize…")
    _click_button(driver, "All")
    _wait_text(driver, "1 partition", timeout=30)
    _click_button(driver, "Launch 1 run")
    query = "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"

    def finished():
        runs = _graphql(url, query)["runsOrError"]["results"]
        done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        return done[0] if done else None

    return _wait("the documents run to finish", finished, 300, server, log, every=2)


def _set_launchpad_config(driver, yaml: str) -> None:
    driver.execute_script("document.querySelector('.CodeMirror').CodeMirror.setValue(arguments[0])", yaml)


def test_ui_catalog_quarantine_report_and_launchpad(dagster_ui, browser):
    from selenium.webdriver.common.by import By

    url, server, log, store = dagster_ui
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    names = [a.key.to_user_string() for a in ASSETS]

    # The asset graph: everything upstream of the trained model, in its groups, left to right.
    browser.get(f"{url}/assets/trained_model?view=lineage&lineageScope=upstream&lineageDepth=20")
    _dismiss_welcome(browser)
    groups = ["ingest", "dedup", "quality", "semantic", "selection", "training"]
    lines = _wait_text(browser, *names, *groups).split("\n")
    assert set(names) <= set(lines) and set(groups) <= set(lines)
    time.sleep(1)  # let the layout settle for the screenshot
    browser.save_screenshot(str(ARTIFACTS / "dagster-lineage.png"))

    # The catalog: an asset's kinds, owner and stage tag.
    browser.get(f"{url}/assets/clusters")
    page = _wait_text(browser, "Kinds", "faiss", "Owners", "curation", "stage: semantic")
    assert "Parquet" in page.split("Kinds", 1)[1]

    # The half-broken file: ingested from the Launchpad of documents, the run succeeds and warns.
    run = _launch_ingest(browser, url, server, log)
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags.get("dagster/partition") == CORPUS
    browser.get(f"{url}/runs/{run['runId']}")
    _wait_text(browser, "RUN_SUCCESS", "7 of 15 records quarantined", timeout=90)
    browser.save_screenshot(str(ARTIFACTS / "dagster-run.png"))
    assert run["status"] == "SUCCESS", log.read_text()[-4000:]
    assert (store / "documents" / CORPUS / "_quarantine" / "manifest.json").exists()

    # Its materialization shows the quarantine table, with the path; the check warns.
    browser.get(f"{url}/assets/documents?partition={CORPUS}")
    page = _wait_text(browser, "quarantine_sample", "quarantined_by_reason", "not_an_object")
    for reason in ("malformed_json", "empty_text", "missing_text", "text_not_string"):
        assert reason in page
    assert f"documents/{CORPUS}/_quarantine" in page
    row = browser.find_element(By.XPATH, "//tr[td[normalize-space()='quarantined_by_reason']]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", row)
    time.sleep(1)
    browser.save_screenshot(str(ARTIFACTS / "dagster-quarantine.png"))
    checks = _graphql(
        url,
        '{ assetNodeOrError(assetKey: {path: ["documents"]}) { ... on AssetNode { assetChecksOrError { '
        "... on AssetChecks { checks { name executionForLatestMaterialization { status "
        "evaluation { severity } } } } } } } }",
    )["assetNodeOrError"]["assetChecksOrError"]["checks"]
    rate = next(c["executionForLatestMaterialization"] for c in checks if c["name"] == "quarantine_rate")
    assert rate["status"] == "FAILED" and rate["evaluation"]["severity"] == "WARN"

    # The report: one Markdown page, its tables as tables and its plot inline.
    link = browser.find_elements(By.XPATH, "//a[normalize-space()='[Show Markdown]']")[-1]
    browser.execute_script("arguments[0].click()", link)
    _wait_text(browser, "quarantined records (the first 7 of 7; files in")
    dialog = browser.find_element(By.CSS_SELECTOR, "[role=dialog]")
    headers = [th.text for th in dialog.find_elements(By.TAG_NAME, "th")]
    assert {"reason", "records", "file", "line", "snippet"} <= set(headers)
    assert [img.get_attribute("alt") for img in dialog.find_elements(By.TAG_NAME, "img")] == [
        "documents per source"
    ]
    time.sleep(1)
    dialog.screenshot(str(ARTIFACTS / "dagster-report.png"))

    # The Launchpad of materialize_subset refuses a bad budget before anything runs.
    location = _graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
    name = location["workspaceOrError"]["locationEntries"][0]["name"]
    browser.get(f"{url}/locations/{name}/jobs/materialize_subset/playground")
    _wait_text(browser, "Launch Run")
    _set_launchpad_config(browser, "ops:\n  shards:\n    config:\n      budget: tokens=lots\n")
    _wait_text(browser, "Value for selector type at path root:ops:shards:config:budget must be a dict")
    _set_launchpad_config(
        browser, "ops:\n  shards:\n    config:\n      budget:\n        tokens: {count: lots}\n"
    )
    _wait_text(browser, 'Value "lots"', 'is not valid for expected type "Int"')
    launch = browser.find_element(By.XPATH, "//button[normalize-space()='Launch Run']")
    assert not launch.is_enabled()
    browser.save_screenshot(str(ARTIFACTS / "dagster-launchpad-error.png"))
    assert _graphql(url, "{ runsOrError { ... on Runs { count } } }")["runsOrError"]["count"] == 1
