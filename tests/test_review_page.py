"""``tiqu review`` in a real browser (Debian's Chromium via Selenium) against real Redis.

The browser and its driver are the system's (/usr/bin/chromium, /usr/bin/chromedriver);
Selenium Manager runs offline, so nothing is downloaded. The test also writes the
screenshots in docs/img/review-*.png.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from core.errors import ConfigError
from core.names import CORRECTIONS_KEY, REVIEW_KEY, REVIEW_TEXT_PREFIX, result_key
from core.settings import Settings
from tests.conftest import ROOT
from tiqu.review import make_app, review_auth
from workers.batching import flag_for_review

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
IMG = ROOT / "docs" / "img"
TEXT = ("您好，我叫王小明，住在北京市朝阳区建国路88号3单元，邮箱 wxm@example.com。"
        "上周寄的快递一直没到，请问怎么办？")
OTHERS = [
    ("t-2", "我是李娜，电话不方便，请回邮件 lina@example.org。发票开错了能重开吗？", 0.55),
    ("t-3", "地址：上海市浦东新区世纪大道100号。我想退订会员，怎么操作？", 0.71),
]


def _span(text: str, value: str) -> list[int]:
    start = text.index(value)
    return [start, start + len(value)]


def _envelope(text: str, result: dict[str, Any], confidence: dict[str, float],
              version: str) -> dict[str, Any]:
    spans = {k: (_span(text, v) if v else None) for k, v in result.items()}
    review = [k for k, c in confidence.items() if c < 0.9]
    return {"id": None, "status": "ok", "result": result, "spans": spans,
            "confidence": confidence, "calibrated": True, "review": review,
            "adapter_version": version}


def seed(client: redis.Redis) -> dict[str, Any]:
    """Three flagged complaints, written as the worker writes them; returns the first."""
    envs = {"t-1": (TEXT, _envelope(TEXT, {
        "name": "王小", "address": "北京市朝阳区建国路88号3单元", "email": "wxm@example.com",
        "question": "请问怎么办？"}, {"name": 0.31, "address": 0.93, "email": 0.99,
                                 "question": 0.62}, "v7"))}
    for task_id, text, low in OTHERS:
        name = "李娜" if "李娜" in text else None
        address = "上海市浦东新区世纪大道100号" if "上海" in text else None
        email = "lina@example.org" if "lina" in text else None
        question = text[text.index("。") + 1:]
        envs[task_id] = (text, _envelope(text, {
            "name": name, "address": address, "email": email, "question": question},
            {"name": low, "address": 0.95, "email": 0.97, "question": 0.96}, "v6"))
    for task_id, (_, env) in envs.items():
        env["id"] = "complaint-" + task_id
        meta = {"status": "SUCCESS", "result": env, "traceback": None, "children": [],
                "date_done": None, "task_id": task_id}
        client.set(result_key(task_id), json.dumps(meta), ex=3600)
    flag_for_review(client, [(t, env) for t, (_, env) in envs.items()], ttl_s=3600,
                    texts={t: text for t, (text, _) in envs.items()})
    return envs["t-1"][1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def served(redis_db: redis.Redis, redis_url: str) -> Iterator[tuple[str, Any]]:
    """``(base_url, serve)``: ``serve(auth)`` starts the app with uvicorn in a thread."""
    import uvicorn

    servers: list[tuple[Any, threading.Thread]] = []
    port = _free_port()

    def serve(auth: str | None = None) -> None:
        app = make_app(redis_db, Settings(redis_url=redis_url), auth)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "review app did not start in 30 s"
            time.sleep(0.05)
        servers.append((server, thread))

    yield f"http://127.0.0.1:{port}", serve
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_off_loopback_needs_auth_and_auth_is_enforced(
    redis_db: redis.Redis, served: tuple[str, Any],
) -> None:
    args = argparse.Namespace(address="0.0.0.0", basic_auth=None)
    with pytest.raises(ConfigError, match="not loopback and basic auth is not set"):
        review_auth(args, Settings())
    with pytest.raises(ConfigError, match="must be user:password"):
        review_auth(argparse.Namespace(address="0.0.0.0", basic_auth="nopass"), Settings())
    assert review_auth(argparse.Namespace(address="127.0.0.1", basic_auth=None),
                       Settings()) is None
    seed(redis_db)
    base, serve = served
    serve("op:s3cret")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(base + "/api/items", timeout=10)
    assert info.value.code == 401
    good = {"Authorization": "Basic " + base64.b64encode(b"op:s3cret").decode()}
    with urllib.request.urlopen(urllib.request.Request(base + "/api/items", headers=good),
                                timeout=10) as response:
        listed = json.loads(response.read())
    assert [i["task_id"] for i in listed["items"]] == ["t-1", "t-2", "t-3"]  # least sure first
    assert listed["counts"]["adapters"] == {"v7": 1, "v6": 2}
    assert listed["counts"]["fields"]["name"] == 3
    # A form post (no JSON content type) from another site cannot act.
    assert _post(base + "/api/items/t-1/skip", b"{}",
                 {**good, "Content-Type": "application/x-www-form-urlencoded"}) == 415
    assert redis_db.zcard(REVIEW_KEY) == 3
    # A gold value not in the text, or a span that does not cut it out: refused, kept listed.
    json_auth = {**good, "Content-Type": "application/json"}
    gold = {**listed["items"][0]["result"], "name": "李四"}
    assert _post(base + "/api/items/t-1/accept", json.dumps({"gold": gold}).encode(),
                 json_auth) == 422
    gold = {**listed["items"][0]["result"], "name": "王小明"}
    body = {"gold": gold, "spans": {"name": [0, 3]}}
    assert _post(base + "/api/items/t-1/accept", json.dumps(body).encode(), json_auth) == 422
    assert not redis_db.exists(CORRECTIONS_KEY) and redis_db.zcard(REVIEW_KEY) == 3
    assert _post(base + "/api/items/t-3/skip", b"{}", json_auth) == 200
    assert redis_db.zrange(REVIEW_KEY, 0, -1) == [b"t-1", b"t-2"]
    assert not redis_db.exists(CORRECTIONS_KEY) and not redis_db.exists(REVIEW_TEXT_PREFIX + "t-3")


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,800", "--lang=en"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


#: Selects code points [start, end) of #text, across the page's highlight runs.
SELECT = """
const [start, end] = arguments, box = document.getElementById("text");
const walker = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
const range = document.createRange();
let pos = 0, node;
while ((node = walker.nextNode())) {
  const cps = Array.from(node.data), stop = pos + cps.length;
  if (start >= pos && start < stop) range.setStart(node, cps.slice(0, start - pos).join("").length);
  if (end > pos && end <= stop) range.setEnd(node, cps.slice(0, end - pos).join("").length);
  pos = stop;
}
const sel = window.getSelection();
sel.removeAllRanges();
sel.addRange(range);
return sel.toString();
"""


def test_set_a_field_from_a_selection_in_a_real_browser(
    redis_db: redis.Redis, served: tuple[str, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A missing browser fails the test: `make test` installs it (deploy/ensure-browser.sh).
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), \
        "needs Debian's chromium and chromium-driver: run deploy/ensure-browser.sh"
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not download
    env = seed(redis_db)
    base, serve = served
    serve()
    driver = _browser()
    try:
        driver.get(base + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_element(By.ID, "text").text.strip() != "")
        assert driver.find_element(By.ID, "text").text == TEXT
        assert "corrections stored: 0" in driver.find_element(By.ID, "progress").text
        marked = driver.find_elements(By.CSS_SELECTOR, "#text .f.name")
        assert [m.text for m in marked] == ["王小"]  # the model's name span, highlighted
        IMG.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(IMG / "review-list.png"))

        start, end = _span(TEXT, "王小明")
        assert driver.execute_script(SELECT, start, end) == "王小明"
        driver.save_screenshot(str(IMG / "review-selection.png"))
        ActionChains(driver).send_keys("1").send_keys("s").perform()
        wait.until(lambda d: [m.text for m in d.find_elements(By.CSS_SELECTOR,
                                                               "#text .f.name")] == ["王小明"])
        driver.save_screenshot(str(IMG / "review-edited.png"))
        ActionChains(driver).send_keys("a").perform()
        wait.until(lambda d: "corrections stored: 1" in d.find_element(By.ID, "progress").text)
        driver.save_screenshot(str(IMG / "review-saved.png"))
    finally:
        driver.quit()

    entries = redis_db.xrange(CORRECTIONS_KEY)
    assert len(entries) == 1
    fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    gold, spans = json.loads(fields["gold"]), json.loads(fields["spans"])
    assert gold == {**env["result"], "name": "王小明"}
    assert spans["name"] == [start, end] and TEXT[start:end] == "王小明"
    assert spans["address"] == env["spans"]["address"]
    assert (fields["id"], fields["text"], fields["source"], fields["adapter_version"]) == (
        "complaint-t-1", TEXT, "page", "v7")
    assert redis_db.zrange(REVIEW_KEY, 0, -1) == [b"t-2", b"t-3"]  # reviewed: off the list
    assert not redis_db.exists(REVIEW_TEXT_PREFIX + "t-1")


def test_the_retrain_button_queues_one_retrain_and_shows_its_progress_and_gate(
    redis_db: redis.Redis, redis_url: str, served: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery import Celery
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SE_OFFLINE", "true")
    seed(redis_db)
    base, serve = served
    serve()
    driver = _browser()
    state = lambda d: d.find_element(By.ID, "retrain-state").text  # noqa: E731
    try:
        driver.get(base + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_element(By.ID, "text").text.strip() != "")
        driver.find_element(By.ID, "retrain").click()
        wait.until(lambda d: "pending" in state(d))
        assert not driver.find_element(By.ID, "retrain").is_enabled()  # one at a time
        queued = [json.loads(m) for m in redis_db.lrange("train", 0, -1)]
        assert len(queued) == 1 and queued[0]["headers"]["task"] == "tiqu.train"
        task_id = queued[0]["headers"]["id"]
        body = base64.b64decode(queued[0]["body"])  # kombu's body_encoding: base64
        request = json.loads(body)[0][0]  # celery protocol 2: [args, kwargs, embed]
        assert (request["from_adapter"], request["corrections"], request["promote_if_better"]) \
            == ("active", True, True)
        assert _post(base + "/api/retrain", b"{}", {"Content-Type": "application/json"}) == 409
        assert redis_db.llen("train") == 1

        # what the train worker stores as it runs, and at the end
        backend = Celery(broker=redis_url, backend=redis_url).backend
        backend.store_result(task_id, {"phase": "train", "step": 40, "total": 100,
                                       "loss": 0.1234}, "PROGRESS")
        wait.until(lambda d: "train 40/100, loss 0.1234" in state(d))
        gate = {"parent": {"gate": 0.41, "synthetic": 0.9}, "new": {"gate": 0.77,
                                                                   "synthetic": 0.9},
                "passed": True, "reason": "..."}
        backend.store_result(task_id, {"version": "v8", "gate": gate, "promotion": {
            "version": "v8", "passed": True, "promoted": True, "reason": "..."}}, "SUCCESS")
        wait.until(lambda d: "v8, gate 0.410 → 0.770 (passed), promoted" in state(d))
        assert driver.find_element(By.ID, "retrain").is_enabled()
        driver.save_screenshot(str(IMG / "review-retrain.png"))
    finally:
        driver.quit()
