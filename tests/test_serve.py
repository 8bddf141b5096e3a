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
    translator = Translator.from_run_dir(tiny_run, device="cpu")
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
