"""The translation service (nmt.serve) under a real uvicorn on loopback, with a real HTTP client:
order kept, empty lines, every limit a JSON 4xx, concurrent clients each with their own answers,
the server alive after every bad request."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from conftest import multi30k_lines

from nmt.serve import Limits, create_app, describe
from nmt.translate import Translator

LIMITS = Limits(
    max_lines=8,
    max_chars=200,
    max_body_bytes=4000,
    max_beam=6,
    timeout_s=60.0,
    window_ms=20.0,
    batch_tokens=4000,
)
LINES = ["A dog runs in the park.", "", "Two men talk.", "A woman reads a book."]


@pytest.fixture(scope="module")
def service(tiny_run):
    """(base URL, translator): a uvicorn server on a free loopback port, in a thread."""
    # fp32: the service batches lines as requests arrive and the tests compare its answers with
    # lines translated in other batches; in bf16 (precision=auto on CPUs that multiply it) a
    # batch's shape may break a near tie of this barely trained model either way.
    translator = Translator.from_run_dir(tiny_run, device="cpu", precision="fp32")
    app = create_app(translator, LIMITS, describe(translator))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", translator
    server.should_exit = True
    thread.join(timeout=10)


def test_translations_come_back_in_order(service):
    url, translator = service
    expected = translator.translate(LINES)
    answer = httpx.post(f"{url}/translate", json={"text": LINES}, timeout=60)
    assert answer.status_code == 200 and answer.json() == {"translations": expected}
    assert expected[1] == ""  # an empty line gives an empty line
    one = httpx.post(f"{url}/translate", json={"text": LINES[0]}, timeout=60)
    assert one.json() == {"translations": expected[:1]}
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    model = httpx.get(f"{url}/model").json()
    assert (model["src"], model["tgt"]) == ("en", "de") and model["parameters"] > 0
    assert (model["backend"], model["quantize"]) == translator.backend  # as auto chose them


def test_n_best_with_scores(service):
    url, _ = service
    answer = httpx.post(f"{url}/translate", json={"text": LINES[:1], "n_best": 3}, timeout=60)
    (hyps,) = answer.json()["translations"]
    assert len(hyps) == 3 and [h["score"] for h in hyps] == sorted(
        (h["score"] for h in hyps), reverse=True
    )


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"text": ["x"] * 9}, 413, "9 lines; at most 8"),
        ({"text": ["x" * 201]}, 413, "text[0]: 201 characters; at most 200"),
        ({"text": ["x"], "search": {"beam_size": 7}}, 422, "beam_size=7: at most 6"),
        ({"text": ["x"], "search": {"beam_sise": 2}}, 422, "unknown search options"),
        ({"text": [1, 2]}, 422, "expected a string or a list of strings"),
        ({"lines": ["x"]}, 422, 'expected {"text"'),
    ],
)
def test_every_limit_is_a_json_error_and_the_server_stays(service, body, status, says):
    url, _ = service
    answer = httpx.post(f"{url}/translate", json=body, timeout=60)
    assert answer.status_code == status and says in answer.json()["error"]
    assert httpx.get(f"{url}/health").status_code == 200


def test_a_body_too_large_or_not_json(service):
    url, _ = service
    big = httpx.post(f"{url}/translate", content=b"x" * 5000, timeout=60)
    assert big.status_code == 413 and "at most 4000" in big.json()["error"]
    garbage = httpx.post(f"{url}/translate", content=b"{not json", timeout=60)
    assert garbage.status_code == 400 and garbage.json()["error"].startswith("not JSON")
    assert httpx.get(f"{url}/health").status_code == 200


def test_concurrent_clients_each_get_their_own_answers(service):
    url, translator = service
    requests = [[LINES[i % 4], LINES[(i + 1) % 4]] for i in range(12)]
    expected = [translator.translate(r) for r in requests]

    def ask(texts):
        return httpx.post(f"{url}/translate", json={"text": texts}, timeout=60).json()

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(ask, requests))
    assert [a["translations"] for a in answers] == expected
    assert json.dumps(answers)  # plain JSON all the way


def test_attention_comes_with_its_pieces_and_the_page_is_served(service):
    url, translator = service
    answer = httpx.post(f"{url}/translate", json={"text": LINES, "attention": True}, timeout=60)
    full = translator.translate_full(LINES)
    first, empty = answer.json()["attention"][0], answer.json()["attention"][1]
    assert empty is None  # an empty line has no attention
    hyp = full[0].hyps[0]
    assert first["target"] == translator.target_pieces(hyp)
    assert len(first["weights"]) == len(hyp.tokens) + 1 == len(first["target"])
    assert len(first["source"]) == len(first["weights"][0]) == len(full[0].src_pieces) + 1
    assert all(abs(sum(row) - 1) < 1e-3 for row in first["weights"])
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="attention"' in page.text and 'fetch("translate"' in page.text


def test_the_page_translates_in_a_real_browser(service):
    """Chromium (the system's package, headless, driven by Selenium): the page loads, a sentence
    typed in comes back translated, and its heatmap has one row per output token."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, translator = service
    sentence = multi30k_lines("test_2016_flickr", "en", 1)[0]
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        driver.get(f"{url}/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: "en→de" in d.find_element(By.ID, "model").text)
        box = driver.find_element(By.ID, "text")
        box.clear()
        box.send_keys(sentence)
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#out li"))
        (item,) = driver.find_elements(By.CSS_SELECTOR, "#out li")
        (expected,) = translator.translate_full([sentence])
        assert item.text == " ".join(expected.texts[0].split())  # as HTML shows white space
        rows = driver.find_elements(By.CSS_SELECTOR, "#attention table.heatmap tbody tr")
        assert len(rows) == len(expected.hyps[0].tokens) + 1  # every output token and </s>
        heads = [r.find_element(By.TAG_NAME, "th").get_attribute("textContent") for r in rows]
        assert heads == translator.target_pieces(expected.hyps[0])  # the pieces it decoded
        source = driver.find_elements(By.CSS_SELECTOR, "#attention table.heatmap thead th")
        assert len(source) == len(expected.src_pieces) + 2  # a corner, the pieces, </s>
    finally:
        driver.quit()
