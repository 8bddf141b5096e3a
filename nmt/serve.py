"""A translation service: ``nmt-serve model=model.nmt`` (or ``run_dir=runs/X``), a FastAPI
application under uvicorn, on localhost by default.

``POST /translate`` takes ``{"text": [...], "search": {...}, "n_best": N}`` and answers
``{"translations": [...]}`` in the order of ``text`` (with ``n_best``, a list of
``{"text", "score"}`` per line; with ``"attention": true``, each line's attention weights);
``GET /health``; ``GET /model`` (the model's manifest); ``GET /`` a page to try the model. Requests
that arrive together share batches: a collector waits ``window_ms`` for more lines, up to
``batch_tokens`` source pieces, and the model decodes them as one call, so many small requests
cost about what one large one does. Every limit is a 4xx answer in JSON (lines per request,
characters per line, body size, beam size); a request past its time budget gets a 503; nothing a
client sends stops the server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources

# The [serve] extra; nmt-serve checks that it is there before importing this module.
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from nmt.search import SearchOptions
from nmt.translate import Translator

log = logging.getLogger(__name__)
# The page at /: plain HTML and JavaScript, nothing to build (a package file beside this module).
PAGE = (resources.files("nmt") / "page.html").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Limits:
    """What one request may ask (conf/serve.yaml holds the values)."""

    max_lines: int
    max_chars: int
    max_body_bytes: int
    max_beam: int
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
    done: asyncio.Future = field(repr=False)


class Batcher:
    """Gathers the lines of concurrent requests into shared batches, one decoding call at a
    time on a worker thread (the model is not shared between threads)."""

    def __init__(self, translator: Translator, limits: Limits):
        self.translator, self.limits = translator, limits
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nmt-decode")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.worker.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: list[str], search: SearchOptions) -> list:
        pieces = sum(len(ids) for ids in self.translator.tokenizer.encode_src(texts))
        job = _Job(texts, search, pieces, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
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
                jobs.append(job)
                pieces += job.pieces
            # One decoding call per search setting among the gathered jobs.
            groups: dict[SearchOptions, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.search, []).append(job)
            for search, group in groups.items():
                live = [job for job in group if not job.done.cancelled()]
                if not live:
                    continue
                texts = [text for job in live for text in job.texts]
                try:
                    results = await loop.run_in_executor(self.worker, self._decode, texts, search)
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

    def _decode(self, texts: list[str], search: SearchOptions) -> list:
        translator = self.translator
        kept, translator.search = translator.search, search
        try:
            return translator.translate_full(texts)
        finally:
            translator.search = kept


def request_search(translator: Translator, body: dict, limits: Limits) -> SearchOptions:
    """The request's search: the service's, with the keys it names changed and checked."""
    asked = body.get("search") or {}
    if not isinstance(asked, dict):
        raise Refused(422, "search: expected an object of search settings")
    if "n_best" in body:
        asked = {**asked, "n_best": body["n_best"]}
    try:
        search = translator.search.replace(**asked)
    except (TypeError, ValueError) as e:
        raise Refused(422, f"search: {e}") from None
    if search.beam_size > limits.max_beam:
        raise Refused(422, f"search.beam_size={search.beam_size}: at most {limits.max_beam}")
    return search


def request_lines(body: object, limits: Limits) -> list[str]:
    if not isinstance(body, dict) or "text" not in body:
        raise Refused(422, 'expected {"text": ["a sentence", ...]}')
    text = body["text"]
    if isinstance(text, str):
        text = [text]
    if not isinstance(text, list) or not all(isinstance(t, str) for t in text):
        raise Refused(422, "text: expected a string or a list of strings")
    if len(text) > limits.max_lines:
        raise Refused(413, f"text: {len(text)} lines; at most {limits.max_lines} per request")
    for i, line in enumerate(text):
        if len(line) > limits.max_chars:
            raise Refused(413, f"text[{i}]: {len(line)} characters; at most {limits.max_chars}")
    return text


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

    return {
        "nmt": __version__,
        "src": translator.src_lang,
        "tgt": translator.tgt_lang,
        "parameters": translator.parameters,
        "models": translator.sources,
        "search": translator.search.as_dict(),
        **backend,
    }


def create_app(translator: Translator, limits: Limits, manifest: dict):
    """The FastAPI application (its OpenAPI page at /docs comes from FastAPI)."""
    batcher = Batcher(translator, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="nmt", version=str(manifest.get("nmt", "")), lifespan=lifespan)

    @app.exception_handler(Refused)
    async def refused(request: Request, e: Refused) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    async def model() -> dict:
        return manifest

    @app.post("/translate")
    async def translate(request: Request) -> dict:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise Refused(413, f"body of {declared} bytes; at most {limits.max_body_bytes}")
        raw = await request.body()
        if len(raw) > limits.max_body_bytes:
            raise Refused(413, f"body of {len(raw)} bytes; at most {limits.max_body_bytes}")
        try:
            import json

            body = json.loads(raw)
        except ValueError as e:
            raise Refused(400, f"not JSON ({e})") from None
        lines = request_lines(body, limits)
        search = request_search(translator, body, limits)
        began = time.perf_counter()
        try:
            results = await asyncio.wait_for(batcher.submit(lines, search), limits.timeout_s)
        except TimeoutError:
            raise Refused(503, f"not translated within {limits.timeout_s} s; try again") from None
        log.info("%d lines in %.3f s", len(lines), time.perf_counter() - began)
        if "n_best" in body:
            answer: dict = {
                "translations": [
                    [{"text": t, "score": h.score} for t, h in zip(r.texts, r.hyps, strict=True)]
                    for r in results
                ]
            }
        else:
            answer = {"translations": [r.texts[0] if r.texts else "" for r in results]}
        if body.get("attention") is True:
            answer["attention"] = [attention_of(translator, r) for r in results]
        return answer

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    return app
