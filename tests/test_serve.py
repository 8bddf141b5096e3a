"""The translation service (nmt.serving.serve) under a real uvicorn on loopback, with a real HTTP client:
order kept, empty lines, every limit a JSON 4xx, concurrent clients each with their own answers,
the server alive after every bad request."""

from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import schemathesis
from conftest import serving
from hypothesis import Phase, settings

from nmt.model.cells import spec
from nmt.serving.serve import Limits, create_app
from nmt.translate import Translator

LIMITS = Limits(
    max_lines=8,
    max_gate_lines=2,
    max_chars=200,
    max_body_bytes=4000,
    max_beam=6,
    max_output_len=50,
    max_output_ratio=2.0,
    max_work=5_000,
    max_decode_s=60.0,
    preempt_after_s=60.0,
    timeout_s=60.0,
    window_ms=20.0,
    batch_tokens=4000,
)
LINES = ["A dog runs in the park.", "", "Two men talk.", "A woman reads a book."]


@pytest.fixture(scope="module")
def service(tiny_run):
    """(base URL, translator): the tiny run served."""
    # fp32: the service batches lines as requests arrive and the tests compare its answers with
    # lines translated in other batches; in bf16 (precision=auto on CPUs that multiply it) a
    # batch's shape may break a near tie of this barely trained model either way.
    translator = Translator.from_run_dir(tiny_run, device="cpu", precision="fp32")
    with serving(create_app({"tiny": translator}, LIMITS)) as url:
        yield url, translator


def test_translations_come_back_in_order(service):
    url, translator = service
    expected = translator.translate(LINES)
    answer = httpx.post(f"{url}/translate", json={"text": LINES}, timeout=60)
    assert answer.status_code == 200 and answer.json() == {"translations": expected}
    assert expected[1] == ""  # an empty line gives an empty line
    one = httpx.post(f"{url}/translate", json={"text": LINES[0]}, timeout=60)
    assert one.json() == {"translations": expected[:1]}
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "decoding_s": None, "queued": 0}
    model = httpx.get(f"{url}/model").json()
    assert (model["src"], model["tgt"]) == ("en", "de") and model["parameters"] > 0
    assert model["limits"]["max_beam"] == LIMITS.max_beam  # the page caps its n-best there
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
        ({"text": ["x"] * 9}, 413, "text: 9 lines; at most 8"),
        ({"text": ["x" * 201]}, 413, "text[0]: 201 characters; at most 200"),
        ({"text": ["x"], "search": {"beam_size": 7}}, 422, "search.beam_size=7: at most 6"),
        ({"text": ["x"], "search": {"beam_sise": 2}}, 422, "search.beam_sise: unknown search opt"),
        ({"text": ["x"], "search": {"beam_size": 0}}, 422, "search.beam_size=0: at least 1"),
        (
            {"text": ["x"], "search": {"max_len_b": 100000}},
            422,
            "search.max_len_b=100000: at most 50",
        ),
        ({"text": ["x"], "search": {"min_len": 10**6}}, 422, "search.min_len=1000000: at most 50"),
        (
            {"text": ["x"], "search": {"max_len_a": 1e9}},
            422,
            "search.max_len_a=1000000000.0: at most 2",
        ),
        ({"text": ["x"], "search": {"no_repeat_ngram": 99}}, 422, "no_repeat_ngram=99: at most 50"),
        ({"text": ["x"], "search": {"alpha": 1e308}}, 422, "search.alpha=1e+308: at most 10"),
        (
            {"text": ["x"], "search": {"alpha": "x"}},
            422,
            'search.alpha="x": input should be a valid',
        ),
        (
            {"text": ["x"], "search": {"coverage_penalty": -1}},
            422,
            "coverage_penalty=-1: at least 0",
        ),
        ({"text": ["x"], "search": {"beam_size": 2, "n_best": 3}}, 422, "search.n_best=3 with"),
        ({"text": ["x"], "search": [2]}, 422, "search=[2]: input should be a valid dictionary"),
        ({"text": ["x"], "n_best": 50}, 422, "n_best=50: at most 6"),
        (
            {
                "text": ["A dog runs in the park. " * 7] * 8,
                "search": {"beam_size": 6, "max_len_a": 2},
            },
            413,
            "decoding steps (beam x output length limit, summed over its lines); at most 5,000",
        ),
        ({"text": [1, 2]}, 422, "text[0]=1: input should be a valid string"),
        ({"text": ["x"], "model": "other"}, 422, "model=\"other\": input should be 'tiny'"),
        ({"lines": ["x"]}, 422, 'text: missing (expected {"text"'),
    ],
)
def test_every_limit_is_a_json_error_and_the_server_stays(service, body, status, says):
    url, _ = service
    answer = httpx.post(f"{url}/translate", json=body, timeout=60)
    assert answer.status_code == status and says in answer.json()["error"], answer.text
    assert "\n" not in answer.json()["error"]
    assert httpx.get(f"{url}/health").status_code == 200


@pytest.mark.parametrize(
    ("raw", "status", "says"),
    [
        (b'{"text": ["A \\ud800"]}', 422, "text[0]: not Unicode text (a lone surrogate)"),
        (b"[" * 3000, 400, "error parsing the body"),  # nested past Python's recursion limit
        (b'{"text": ["x"], "search": {"alpha": NaN}}', 422, "search.alpha=NaN: input should be a"),
        (b'{"text": ["x"], "search": {"max_len_a": Infinity}}', 422, "max_len_a=Infinity"),
        (b'"A dog."', 422, 'expected a JSON object {"text"'),
        (b"{not json", 400, "not JSON"),
    ],
)
def test_hostile_bodies_are_one_line_answers(service, raw, status, says):
    url, _ = service
    answer = httpx.post(f"{url}/translate", content=raw, timeout=60)
    assert answer.status_code == status and says in answer.json()["error"], answer.text
    assert httpx.post(f"{url}/translate", json={"text": ["A dog."]}, timeout=60).status_code == 200


def test_unknown_routes_and_methods_are_json_too(service):
    url, _ = service
    missing, wrong = httpx.get(f"{url}/nowhere"), httpx.get(f"{url}/translate")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    assert wrong.status_code == 405 and wrong.json() == {"error": "Method Not Allowed"}


def test_a_request_past_its_budget_stops_its_decoding(tiny_run):
    """Every decoding step made to take 50 ms and a request asking for 40 of them under a budget
    of 0.5 s: the client gets a 503, /health says busy meanwhile, the decoding stops within a step
    or two of the refusal, and the next request is served."""
    translator = Translator.from_run_dir(tiny_run, device="cpu", precision="fp32", search="greedy")
    steps: list[float] = []
    step = translator.model.decoder.step

    def slow(*args):
        steps.append(time.monotonic())
        time.sleep(0.05)
        return step(*args)

    translator.model.decoder.step = slow
    app = create_app({"tiny": translator}, dataclasses.replace(LIMITS, timeout_s=0.5))
    hostile = {"text": ["A dog runs."], "search": {"min_len": 40, "max_len_b": 40}}
    with serving(app) as url, ThreadPoolExecutor(1) as pool:
        asked = pool.submit(httpx.post, f"{url}/translate", json=hostile, timeout=60)
        seen = set()
        while not asked.done():
            seen.add(httpx.get(f"{url}/health").json()["status"])
            time.sleep(0.02)
        answer, refused_at = asked.result(), len(steps)
        assert answer.status_code == 503 and "within 0.5 s" in answer.json()["error"]
        assert "busy" in seen
        for _ in range(100):
            if httpx.get(f"{url}/health").json()["status"] == "ok":
                break
            time.sleep(0.05)
        assert len(steps) - refused_at <= 3 < refused_at < 40  # it stopped, well before its end
        short = {"max_len_a": 0, "max_len_b": 3}  # 3 steps of 50 ms: well within the budget
        quick = httpx.post(
            f"{url}/translate", json={"text": ["A dog."], "search": short}, timeout=60
        )
        assert quick.status_code == 200 and len(quick.json()["translations"]) == 1
        # A call that runs far past the budget (a step that never returns) is stuck: a 503 for a
        # supervisor to act on.
        app.state.batcher.decoding_since = time.monotonic() - 100
        stuck = httpx.get(f"{url}/health")
        assert stuck.status_code == 503 and stuck.json()["status"] == "stuck"
        app.state.batcher.decoding_since = None


def test_a_decoding_call_past_max_decode_s_stops_and_the_cheap_go_first(tiny_run):
    """A request within every limit that is still slow on this machine (50 ms a step, 40 steps)
    is stopped at max_decode_s (1 s: ten times the cheap request's two steps, on a busy machine
    too) with a 503 that says so, while a small request sent after it is
    decoded first and answered."""
    translator = Translator.from_run_dir(tiny_run, device="cpu", precision="fp32", search="greedy")
    steps: list[int] = []
    step = translator.model.decoder.step

    def slow(prev, state, memory):
        steps.append(len(prev))
        time.sleep(0.05)
        return step(prev, state, memory)

    translator.model.decoder.step = slow
    limits = dataclasses.replace(LIMITS, max_decode_s=1.0, window_ms=300.0)
    app = create_app({"tiny": translator}, limits)
    costly = {"text": ["A dog runs."] * 3, "search": {"min_len": 40, "max_len_b": 40}}
    cheap = {"text": ["A dog."], "search": {"max_len_a": 0, "max_len_b": 2}}
    with serving(app) as url, ThreadPoolExecutor(2) as pool:
        slow_answer = pool.submit(httpx.post, f"{url}/translate", json=costly, timeout=60)
        time.sleep(0.1)  # within the collector's window: both are gathered together
        quick = httpx.post(f"{url}/translate", json=cheap, timeout=60)
        answer = slow_answer.result()
    assert quick.status_code == 200
    assert (
        answer.status_code == 503 and "needs more than max_decode_s=1.0 s" in answer.json()["error"]
    )
    assert steps[:2] == [1, 1] and set(steps[2:]) == {3}  # the cheap one first, then the costly
    assert len(steps) < 2 + 30  # stopped after about 1 s of 50 ms steps, not at its 40


def test_a_costly_call_gives_way_to_cheaper_requests_waiting_behind_it(tiny_run):
    """preempt_after_s: a costly request decoding (50 ms a step, 40 steps) while a cheap one has
    waited 0.3 s behind it stops with a 503 that says why, and the cheap one is answered; alone,
    the same costly request is decoded to its end."""
    translator = Translator.from_run_dir(tiny_run, device="cpu", precision="fp32", search="greedy")
    steps: list[int] = []
    step = translator.model.decoder.step

    def slow(prev, state, memory):
        steps.append(len(prev))
        time.sleep(0.05)
        return step(prev, state, memory)

    translator.model.decoder.step = slow
    limits = dataclasses.replace(LIMITS, preempt_after_s=0.3)
    app = create_app({"tiny": translator}, limits)
    costly = {"text": ["A dog runs."] * 3, "search": {"min_len": 40, "max_len_b": 40}}
    cheap = {"text": ["A dog."], "search": {"max_len_a": 0, "max_len_b": 2}}
    with serving(app) as url, ThreadPoolExecutor(2) as pool:
        slow_answer = pool.submit(httpx.post, f"{url}/translate", json=costly, timeout=60)
        while not steps:
            time.sleep(0.01)
        quick = httpx.post(f"{url}/translate", json=cheap, timeout=60)
        answer = slow_answer.result()
        assert quick.status_code == 200
        assert answer.status_code == 503, answer.text
        assert "stopped after preempt_after_s=0.3 s to serve cheaper requests" in answer.text
        assert steps.count(3) < 20  # stopped long before its 40 steps
        steps.clear()
        alone = httpx.post(f"{url}/translate", json=costly, timeout=60)
        assert alone.status_code == 200 and steps.count(3) >= 40


def test_n_best_widens_the_beam(service):
    url, translator = service
    assert translator.search.beam_size < LIMITS.max_beam
    answer = httpx.post(f"{url}/translate", json={"text": ["A dog."], "n_best": 6}, timeout=60)
    assert answer.status_code == 200 and len(answer.json()["translations"][0]) == 6


def test_a_body_too_large_or_not_json(service):
    url, _ = service
    big = httpx.post(f"{url}/translate", content=b"x" * 5000, timeout=60)
    assert big.status_code == 413 and "at most 4000" in big.json()["error"]
    # Streamed without a length: counted as it arrives, refused once past the limit.
    chunks = (b"x" * 1000 for _ in range(5))
    streamed = httpx.post(f"{url}/translate", content=chunks, timeout=60)
    assert streamed.status_code == 413 and "at most 4000" in streamed.json()["error"]
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
    assert 'id="models"' in page.text and 'fetch("translate"' in page.text


@pytest.fixture(scope="module")
def two_models(tiny_run, tiny_run_b):
    """(base URL, translators): two models served side by side, the first with PyTorch, the
    second under onnxruntime."""
    first = Translator.from_run_dir(tiny_run, device="cpu", precision="fp32", backend="torch")
    second = Translator.from_run_dir(
        tiny_run_b, device="cpu", precision="fp32", backend="onnxruntime", quantize="none"
    )
    models = {"first": first, "second": second}
    with serving(create_app(models, LIMITS)) as url:
        yield url, models


def test_gates_token_by_token(two_models):
    """ "gates": true: each layer's gates of each line's translation, rows as the attention's
    (source pieces on the encoder's side, output pieces on the decoder's), the values the
    translator's own trace gives."""
    url, models = two_models
    translator = models["first"]  # PyTorch (backend=auto may choose onnxruntime)
    body = {"text": [LINES[0], ""], "gates": True, "attention": True}
    answer = httpx.post(f"{url}/translate", json=body, timeout=60).json()
    traced, empty = answer["gates"]
    assert empty is None  # an empty line has no gates
    attention = answer["attention"][0]
    assert traced["cell"] == "gru" and traced["meanings"] == spec("gru").gates
    assert (traced["source"], traced["target"]) == (attention["source"], attention["target"])
    names = [layer["name"] for layer in traced["layers"]]
    assert names == ["encoder layer 1, forward", "encoder layer 1, backward", "decoder layer 1"]
    expected = translator.gates(translator.translate_full(LINES[0])).as_dict()
    for got, want in zip(traced["layers"], expected["layers"], strict=True):
        rows = len(traced["source"] if got["side"] == "encoder" else traced["target"])
        assert list(got["gates"]) == ["update", "reset"]
        for name, gate in got["gates"].items():
            assert len(gate["mean"]) == len(gate["units"]) == rows
            assert gate["mean"] == pytest.approx(want["gates"][name]["mean"], abs=2e-3)
    assert "gates" not in httpx.post(f"{url}/translate", json={"text": LINES[:1]}).json()
    many = httpx.post(f"{url}/translate", json={"text": ["x"] * 3, "gates": True}, timeout=60)
    assert many.status_code == 413 and many.json()["error"].startswith(
        "text: 3 lines with gates; at most 2"
    )


def test_two_models_side_by_side(two_models):
    """A request names its model; each answers with its own translations; GET /models lists
    both and which can show their gates; the onnxruntime one refuses them in one line."""
    url, models = two_models
    listed = httpx.get(f"{url}/models").json()
    assert [m["name"] for m in listed] == ["first", "second"]
    assert [m["backend"] for m in listed] == ["torch", "onnxruntime"]
    assert [m["gates"] for m in listed] == [True, False]
    assert "backend=onnxruntime, whose graphs output no gates" in listed[1]["gates_refusal"]
    assert httpx.get(f"{url}/model").json()["name"] == "first"  # the default
    for name, translator in models.items():
        answer = httpx.post(f"{url}/translate", json={"text": LINES, "model": name}, timeout=60)
        assert answer.json()["translations"] == translator.translate(LINES)
    default = httpx.post(f"{url}/translate", json={"text": LINES}, timeout=60)
    assert default.json()["translations"] == models["first"].translate(LINES)
    refused = httpx.post(
        f"{url}/translate", json={"text": LINES[:1], "model": "second", "gates": True}
    )
    assert refused.status_code == 422 and refused.json()["error"] == listed[1]["gates_refusal"]


@pytest.fixture(scope="module")
def api_schema(service):
    """The OpenAPI document the running service publishes, for schemathesis to generate from."""
    url, _ = service
    return schemathesis.openapi.from_url(f"{url}/openapi.json")


fuzz = schemathesis.pytest.from_fixture("api_schema")


@fuzz.parametrize()
@settings(max_examples=40, deadline=None, phases=[Phase.explicit, Phase.generate])
def test_no_request_the_schema_allows_or_breaks_is_a_server_error(case, service):
    """Requests generated from the service's own OpenAPI document, valid and not, against the real
    server on loopback: never a 5xx other than the declared 503, every answer as the document
    declares it (status, content type, body), and the server answers a plain request after."""
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    case.call_and_validate(
        timeout=60,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
    url, _ = service
    assert httpx.post(f"{url}/translate", json={"text": ["A dog."]}, timeout=60).status_code == 200
