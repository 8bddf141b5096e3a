"""A translation service: ``nmt-serve model=model.nmt`` (or ``run_dir=runs/X``), a FastAPI
application under uvicorn, on localhost by default; ``compare=[...]`` serves more models beside it.

``POST /translate`` takes ``{"text": [...], "search": {...}, "n_best": N, "attention": bool,
"gates": bool, "model": NAME}`` and answers ``{"translations": [...]}`` in the order of ``text``
(with ``n_best``, a list of ``{"text", "score"}`` per line; with ``"attention": true``, each line's
attention weights; with ``"gates": true``, each recurrent layer's gates token by token,
``nmt.decoding.gates``); its request and answer are declared models, so the OpenAPI document at
``/openapi.json`` (and the page at ``/docs``) gives every field and bound. ``GET /health`` tells an
idle decoder from a busy or a stuck one; ``GET /model`` the (first) model's manifest and the
service's limits, ``GET /models`` every model's; ``GET /`` a page to try them, side by side. Requests that arrive together share batches: a collector waits ``window_ms`` for more
lines, up to ``batch_tokens`` source pieces, and the model decodes them as one call, so many small
requests cost about what one large one does.

Nothing a client sends stops or wedges the server: every per-request search option is bounded (the
output's length relative to the input and absolute, ``min_len`` within it, the floats finite), and
every refusal is a JSON answer ``{"error": "one line"}`` naming what the client wrote (4xx). A
request past its time budget gets a 503 and its decoding stops at the next step, so the decoder
is free for the next request within about one step's time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Annotated, Literal

# The [serve] extra; nmt-serve checks that it is there before importing this module.
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from starlette.exceptions import HTTPException

from nmt.core.errors import one_line
from nmt.core.search_options import MAX_ALPHA, SearchError, SearchOptions
from nmt.decoding.search import Cancelled
from nmt.decoding.translator import Translator
from nmt.model.seq2seq import Seq2Seq

log = logging.getLogger(__name__)
# The page at /: plain HTML and JavaScript, nothing to build (a package file beside this module).
PAGE = (resources.files("nmt.serving") / "page.html").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Limits:
    """What one request may ask (conf/serve.yaml holds the values)."""

    max_lines: int
    max_gate_lines: int  # lines of a request that asks for the gates
    max_chars: int
    max_body_bytes: int
    max_beam: int
    max_output_len: int  # the largest search.max_len_b, min_len and no_repeat_ngram
    max_output_ratio: float  # the largest search.max_len_a
    max_work: int  # the most decoding steps of one request: beam x output limit, over its lines
    max_decode_s: float  # the longest one decoding call may run (503 past it)
    preempt_after_s: float  # a call this old stops for cheaper requests waiting this long
    timeout_s: float
    window_ms: float
    batch_tokens: int


class Refused(Exception):
    """A request the service will not take: its HTTP status and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class _Job:
    texts: list[str]
    search: SearchOptions
    pieces: int
    work: int  # request_work: what it may cost the decoder
    gates: bool  # trace each line's gates once decoded
    done: asyncio.Future = field(repr=False)


class Batcher:
    """Gathers the lines of concurrent requests into shared batches, one decoding call at a
    time on a worker thread (the model is not shared between threads). A call stops between two
    steps once every request it decodes for has given up (its time budget ran out)."""

    def __init__(self, translator: Translator, limits: Limits):
        self.translator, self.limits = translator, limits
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nmt-decode")
        self.task: asyncio.Task | None = None
        self.decoding_since: float | None = None  # time.monotonic() of the call under way
        # Jobs queued and not yet gathered: when each came and what it may cost, read by the
        # decoding thread to give way to cheaper ones (under the lock: two threads).
        self.pending: dict[int, tuple[float, int]] = {}
        self.lock = threading.Lock()
        self.stopped_for = ""  # why the last call stopped early: deadline, preempted, gave up

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.worker.shutdown(wait=False, cancel_futures=True)

    async def submit(
        self, texts: list[str], search: SearchOptions, pieces: int, work: int, gates: bool
    ) -> list:
        job = _Job(texts, search, pieces, work, gates, asyncio.get_running_loop().create_future())
        with self.lock:
            self.pending[id(job)] = (time.monotonic(), work)
        await self.queue.put(job)
        return await job.done

    def _taken(self, job: _Job) -> _Job:
        with self.lock:
            self.pending.pop(id(job), None)
        return job

    async def _gather(self) -> list[_Job]:
        """The next job and those that arrive within the window, up to batch_tokens pieces."""
        loop = asyncio.get_running_loop()
        jobs = [self._taken(await self.queue.get())]
        deadline = loop.time() + self.limits.window_ms / 1000
        pieces = jobs[0].pieces
        while pieces < self.limits.batch_tokens:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                job = await asyncio.wait_for(self.queue.get(), left)
            except TimeoutError:
                break
            jobs.append(self._taken(job))
            pieces += job.pieces
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            # One decoding call per search setting among the gathered jobs, the cheapest first:
            # a costly request waits for the small ones that came with it, not they for it.
            groups: dict[SearchOptions, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.search, []).append(job)
            for search, group in sorted(groups.items(), key=lambda g: sum(j.work for j in g[1])):
                live = [job for job in group if not job.done.done()]
                if not live:
                    continue
                texts = [text for job in live for text in job.texts]
                try:
                    results = await loop.run_in_executor(
                        self.worker, self._decode, texts, search, live
                    )
                except Cancelled:
                    waiting = [job for job in live if not job.done.done()]
                    for job in waiting:
                        job.done.set_exception(self._refusal(sum(j.work for j in live)))
                    log.warning("stopped decoding %d lines: %s", len(texts), self.stopped_for)
                    continue
                except Exception as e:  # noqa: BLE001 - one bad batch answers its requests
                    for job in live:
                        if not job.done.done():
                            job.done.set_exception(e)
                    continue
                start = 0
                for job in live:
                    if not job.done.done():
                        job.done.set_result(results[start : start + len(job.texts)])
                    start += len(job.texts)

    def _decode(self, texts: list[str], search: SearchOptions, jobs: list[_Job]) -> list:
        """On the worker thread: decode, asking between steps whether anyone still waits (a
        future cancelled by the event loop reads as done here; reading it is thread-safe)."""
        began = self.decoding_since = time.monotonic()
        deadline = began + self.limits.max_decode_s
        patience = self.limits.preempt_after_s
        # Only a call of costlier requests than a waiting one gives way to it: requests of one
        # size do not stop each other.
        cheapest = min(job.work for job in jobs)

        def stop() -> bool:
            now = time.monotonic()
            if all(job.done.done() for job in jobs):
                self.stopped_for = "every request gave up"
            elif now > deadline:
                self.stopped_for = "max_decode_s"
            elif now - began > patience and self._cheaper_waiting(cheapest, now - patience):
                self.stopped_for = "preempted"
            else:
                return False
            return True

        try:
            results = self.translator.translate_full(texts, search=search, stop=stop)
            start = 0
            for job in jobs:  # the gates of the lines that asked, on this thread too
                if job.gates:
                    for result in results[start : start + len(job.texts)]:
                        result.gates = self.translator.gates(result)
                start += len(job.texts)
            return results
        finally:
            self.decoding_since = None

    def _cheaper_waiting(self, work: int, before: float) -> bool:
        """Whether a job that may cost less than ``work`` (the cheapest request of the call under
        way) has waited since before ``before``."""
        with self.lock:
            return any(since < before and w < work for since, w in self.pending.values())

    def _refusal(self, work: int) -> Refused:
        """The 503 of requests whose decoding was stopped before its end."""
        if self.stopped_for == "preempted":
            return Refused(
                503,
                f"stopped after preempt_after_s={self.limits.preempt_after_s} s to serve cheaper "
                f"requests waiting behind it (it may take {work:,} decoding steps); send fewer "
                "lines or ask for less, or try again when the service is idle",
            )
        return Refused(
            503,
            f"needs more than max_decode_s={self.limits.max_decode_s} s of decoding; send fewer "
            "lines, or ask for a smaller beam_size, max_len_a or max_len_b",
        )


class Refusal(BaseModel):
    """Every answer other than 200: what was refused, on one line."""

    error: str


class Hypothesis(BaseModel):
    text: str
    score: float


class Attention(BaseModel):
    """The best hypothesis's attention: a row of weights per target piece (and </s>), a column per
    source piece (and </s>)."""

    source: list[str]
    target: list[str]
    weights: list[list[float]]


class Gate(BaseModel):
    """One gate of one layer: its mean over units at each token, and each unit at each token."""

    mean: list[float]
    units: list[list[float]]


class GateLayer(BaseModel):
    """A recurrent layer's gates by name: a row per source piece (and </s>) on the encoder's side,
    per output piece (and </s>) on the decoder's."""

    name: str
    side: Literal["encoder", "decoder"]
    gates: dict[str, Gate]


class Gates(BaseModel):
    """The best hypothesis's gates, layer by layer (none for a cell without gates), and what
    each gate means."""

    cell: str
    meanings: dict[str, str]
    source: list[str]
    target: list[str]
    layers: list[GateLayer]


class Translations(BaseModel):
    """One entry per line of ``text``, in order: the best translation, or with ``n_best`` a list
    of hypotheses; ``attention`` and ``gates`` when asked (null for a line with none)."""

    translations: list[str] | list[list[Hypothesis]]
    attention: list[Attention | None] | None = None
    gates: list[Gates | None] | None = None


class Health(BaseModel):
    """ok: idle; busy: decoding (for decoding_s); stuck: one decoding call has run past the time
    budget (answered 503, for a supervisor to restart the service)."""

    status: Literal["ok", "busy", "stuck"]
    decoding_s: float | None = None
    queued: int = 0


def request_model(
    limits: Limits, search: SearchOptions, names: tuple[str, ...] = ("model",)
) -> type[BaseModel]:
    """The body of ``POST /translate`` with this service's bounds (they are in its OpenAPI
    document): every search option that a request may change, each within what one request may
    cost; ``search`` holds the service's defaults, shown as each option's default; ``names`` the
    models a request may choose, the first its default."""
    length = {"ge": 0, "le": limits.max_output_len}
    bounds = {
        "beam_size": (int, {"ge": 1, "le": limits.max_beam}),
        "alpha": (float, {"ge": 0, "le": MAX_ALPHA, "allow_inf_nan": False}),
        "max_len_a": (float, {"ge": 0, "le": limits.max_output_ratio, "allow_inf_nan": False}),
        "max_len_b": (int, length),
        "min_len": (int, length),
        "n_best": (int, {"ge": 1, "le": limits.max_beam}),
        "coverage_penalty": (float, {"ge": 0, "le": 100, "allow_inf_nan": False}),
        "no_repeat_ngram": (int, length),
    }
    assert set(bounds) == set(search.as_dict()), "a search option without a bound"
    options = {
        name: (kind | None, Field(None, description=f"default {search.as_dict()[name]}", **b))
        for name, (kind, b) in bounds.items()
    }
    SearchRequest = create_model(  # noqa: N806 - a class
        "SearchRequest", __config__=ConfigDict(extra="forbid"), **options
    )
    Lines = Annotated[  # noqa: N806
        list[Annotated[str, Field(max_length=limits.max_chars)]],
        Field(max_length=limits.max_lines),
    ]

    class TranslateRequest(BaseModel):
        """Lines to translate (one string is one line), with this request's search settings."""

        model_config = ConfigDict(extra="forbid")
        text: Lines
        search: SearchRequest | None = None  # type: ignore[valid-type]
        n_best: int | None = Field(
            None, ge=1, le=limits.max_beam, description="hypotheses per line, with their scores"
        )
        attention: bool = False
        gates: bool = Field(
            False,
            description="each recurrent layer's gates token by token, for at most "
            f"{limits.max_gate_lines} lines",
        )
        model: Literal[names] | None = Field(  # type: ignore[valid-type]
            None, description=f"which model translates (GET /models); default {names[0]}"
        )

        @field_validator("text", mode="before")
        @classmethod
        def _one_line(cls, value):
            return [value] if isinstance(value, str) else value

    return TranslateRequest


def request_search(translator: Translator, asked: BaseModel) -> SearchOptions:
    """The request's search: the service's, with the options it names changed (an ``n_best``
    wider than the beam widens the beam, unless the request names ``beam_size`` too)."""
    changes = {} if asked.search is None else asked.search.model_dump(exclude_unset=True)
    if asked.n_best is not None:
        changes["n_best"] = asked.n_best
        if "beam_size" not in changes:
            changes["beam_size"] = max(translator.search.beam_size, asked.n_best)
    try:
        return translator.search.replace(**changes)
    except SearchError as e:
        raise Refused(422, one_line(e)) from None


def request_work(translator: Translator, ids: list[list[int]], search: SearchOptions) -> int:
    """What a request may cost the decoder, in hypothesis-steps: for each line that will be
    decoded, the beam times its output's length limit (the source as the translator truncates it,
    with its end). A bound, not a forecast: outputs that end sooner cost less."""
    lengths = [min(len(x), translator.max_src_len) + 1 for x in ids if x]
    return sum(search.beam_size * search.output_limit(n) for n in lengths)


def _name(loc: tuple) -> str:
    """A pydantic error's location as the client wrote it: search.max_len_b, text[3]."""
    name = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def _short(value: object) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def refusal_of(errors: list[dict]) -> tuple[int, str]:
    """A request's validation errors as (status, one line) naming each setting as the client wrote
    it: 400 for a body that is not JSON, 413 for too many lines or characters, else 422."""
    status, said = 422, []
    for e in errors[:3]:
        kind, name, ctx, given = (
            e["type"],
            _name(tuple(e["loc"])),
            e.get("ctx") or {},
            e.get("input"),
        )
        if kind == "json_invalid":
            return 400, f"not JSON ({ctx.get('error', e['msg'])})"
        if kind in ("too_long", "string_too_long") and name.startswith("text"):
            status = 413
            what = "lines" if kind == "too_long" else "characters"
            said.append(f"{name}: {len(given)} {what}; at most {ctx['max_length']}")
        elif kind == "less_than_equal":
            said.append(f"{name}={_short(given)}: at most {ctx['le']}")
        elif kind == "greater_than_equal":
            said.append(f"{name}={_short(given)}: at least {ctx['ge']}")
        elif kind == "string_unicode":  # a lone surrogate (\ud800 in JSON): no tokenizer takes it
            said.append(f"{name}: not Unicode text (a lone surrogate)")
        elif kind == "extra_forbidden":
            where = "search option" if name.startswith("search.") else "field"
            said.append(f"{name}: unknown {where}")
        elif kind == "missing":
            said.append(f'{name}: missing (expected {{"text": ["a sentence", ...]}})')
        elif kind in ("model_type", "model_attributes_type") and not name:
            said.append('expected a JSON object {"text": ["a sentence", ...]}')
        else:
            message = e["msg"].removeprefix("Value error, ")
            said.append(f"{name or 'body'}={_short(given)}: {message[:1].lower()}{message[1:]}")
    return status, "; ".join(said)


def attention_of(translator: Translator, result) -> dict | None:
    """The best hypothesis's attention: source pieces (and </s>), target pieces (and </s>), and
    the weights, a row per target piece; None without attention or output."""
    hyp = result.hyps[0] if result.hyps else None
    if hyp is None or hyp.attn is None:
        return None
    weights = hyp.attn.float()
    return {
        "source": (result.src_pieces + ["</s>"])[: weights.shape[1]],
        "target": translator.target_pieces(hyp),
        "weights": [[round(w, 4) for w in row] for row in weights.tolist()],
    }


def describe(translator: Translator) -> dict:
    """What GET /model answers: a file's manifest, or the same facts of a run directory; and
    how this server decodes (backend and quantization, as backend=auto chose them)."""
    backend = {"backend": translator.backend[0], "quantize": translator.backend[1]}
    if translator.manifest is not None:
        drop = ("sha256", "graphs")
        return {**{k: v for k, v in translator.manifest.items() if k not in drop}, **backend}
    from nmt import __version__

    model = translator.model
    shape = {}
    if isinstance(model, Seq2Seq):  # a run directory's model: its cell and attention, as a file's
        shape = {"cell": model.encoder.rnn.cell, "attention": model.decoder.attention.kind}
    return {
        "nmt": __version__,
        "src": translator.src_lang,
        "tgt": translator.tgt_lang,
        **shape,
        "parameters": translator.parameters,
        "models": translator.sources,
        "search": translator.search.as_dict(),
        **backend,
    }


class RequestBody:
    """ASGI middleware: a request body larger than ``limit`` bytes is refused (413) before the
    application reads it (a declared Content-Length over the limit before a byte is read), and a
    body is read as JSON whatever its Content-Type says (``curl -d`` sends a form's)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send, int(declared))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(scope, receive, send, size)
            if not message.get("more_body"):
                break
        body, given = b"".join(chunks), False
        if body:
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}

        async def replay():
            nonlocal given
            if given:
                return await receive()
            given = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send, size: int) -> None:
        answer = JSONResponse(
            {"error": f"body of {size} bytes or more; at most {self.limit}"}, status_code=413
        )
        await answer(scope, receive, send)


@dataclass
class Served:
    """One model of the service: its name (what a request's ``model`` names), its translator and
    decoding thread, and what ``GET /models`` says of it."""

    name: str
    translator: Translator
    batcher: Batcher
    about: dict


def served_models(models: dict[str, Translator], limits: Limits) -> dict[str, Served]:
    """Each model of the service with its decoding thread and what ``GET /models`` says of it."""
    if not models:
        raise ValueError("no model to serve")
    return {
        name: Served(
            name,
            translator,
            Batcher(translator, limits),
            {
                "name": name,
                **describe(translator),
                "gates": translator.gates_refusal() is None,
                "gates_refusal": translator.gates_refusal(),
                "limits": asdict(limits),
            },
        )
        for name, translator in models.items()
    }


def add_error_handlers(app: FastAPI) -> None:
    """Every answer other than 200 as ``{"error": "one line"}``: refusals, invalid bodies,
    unknown routes and methods, and the service's own failures (500, logged whole)."""

    @app.exception_handler(Refused)
    async def refused(request: Request, e: Refused) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        status, message = refusal_of(list(e.errors()))
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        message = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
        return JSONResponse({"error": message}, status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, e: Exception) -> JSONResponse:
        # A bug of the service's, not the client's: logged whole, answered in one line.
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {one_line(e)[:200]}"}, status_code=500)


def checked(
    translator: Translator, asked, limits: Limits
) -> tuple[SearchOptions, list[list[int]], int]:
    """A request's search, its lines' pieces and what it may cost, or the refusal of a request
    the service will not take (gates it cannot show or too many lines of them, too much work)."""
    if asked.gates:
        refusal = translator.gates_refusal()
        if refusal is not None:
            raise Refused(422, refusal)
        if len(asked.text) > limits.max_gate_lines:
            raise Refused(
                413,
                f"text: {len(asked.text)} lines with gates; at most {limits.max_gate_lines} "
                "(the gates of a line are thousands of numbers)",
            )
    search = request_search(translator, asked)
    ids = translator.tokenizer.encode_src(asked.text)
    work = request_work(translator, ids, search)
    if work > limits.max_work:
        raise Refused(
            413,
            f"this request may take {work:,} decoding steps (beam x output length limit, "
            f"summed over its lines); at most {limits.max_work:,}: send fewer lines, or ask "
            "for a smaller beam_size, max_len_a or max_len_b",
        )
    return search, ids, work


def answer_of(translator: Translator, asked, results: list) -> Translations:
    """The answer to a request from its lines' :class:`Translation` results."""
    if asked.n_best is not None:
        translations: list = [
            [Hypothesis(text=t, score=h.score) for t, h in zip(r.texts, r.hyps, strict=True)]
            for r in results
        ]
    else:
        translations = [r.texts[0] if r.texts else "" for r in results]
    attention = [attention_of(translator, r) for r in results] if asked.attention else None
    gates = None
    if asked.gates:
        gates = [None if r.gates is None else r.gates.as_dict() for r in results]
    return Translations(translations=translations, attention=attention, gates=gates)


def create_app(models: dict[str, Translator], limits: Limits):
    """The FastAPI application of one or more models by name, the first the default (its
    OpenAPI page at /docs comes from FastAPI). Each model decodes on its own thread."""
    served = served_models(models, limits)
    first = next(iter(served.values()))
    # One request body for all: a request's search options are checked against the first
    # model's search (the service's settings are one config).
    TranslateRequest = request_model(  # noqa: N806 - a class
        limits, first.translator.search, tuple(served)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for one in served.values():
            one.batcher.start()
        yield
        for one in served.values():
            await one.batcher.stop()

    app = FastAPI(title="nmt", version=str(first.about.get("nmt", "")), lifespan=lifespan)
    app.add_middleware(RequestBody, limit=limits.max_body_bytes)
    app.state.batcher = first.batcher
    app.state.served = served
    add_error_handlers(app)

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> JSONResponse:
        batchers = [one.batcher for one in served.values()]
        queued = sum(b.queue.qsize() for b in batchers)
        busy = [b.decoding_since for b in batchers if b.decoding_since is not None]
        if not busy:
            return JSONResponse(Health(status="ok", queued=queued).model_dump())
        took = round(time.monotonic() - min(busy), 3)
        # A call past its budget should have stopped within a step: one that has not is stuck.
        stuck = took > 2 * min(limits.timeout_s, limits.max_decode_s) + 5
        answer = Health(status="stuck" if stuck else "busy", decoding_s=took, queued=queued)
        return JSONResponse(answer.model_dump(), status_code=503 if stuck else 200)

    @app.get("/model")
    async def model() -> dict:
        return first.about

    @app.get("/models")
    async def every_model() -> list[dict]:
        return [one.about for one in served.values()]

    async def translate(asked) -> Translations:
        one = served[asked.model or first.name]
        search, ids, work = checked(one.translator, asked, limits)
        pieces = sum(len(x) for x in ids)
        began = time.perf_counter()
        try:
            job = one.batcher.submit(asked.text, search, pieces, work, gates=asked.gates)
            results = await asyncio.wait_for(job, limits.timeout_s)
        except TimeoutError:
            raise Refused(503, f"not translated within {limits.timeout_s} s; try again") from None
        log.info("%d lines in %.3f s", len(asked.text), time.perf_counter() - began)
        return answer_of(one.translator, asked, results)

    # The body's model is made here, with this service's bounds: named on the handler itself
    # (annotations are strings in this module, which FastAPI would look up among its globals).
    translate.__annotations__["asked"] = TranslateRequest
    app.post(
        "/translate",
        response_model=Translations,
        response_model_exclude_none=True,
        responses={code: {"model": Refusal} for code in (400, 413, 422, 503)},
    )(translate)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    return app
