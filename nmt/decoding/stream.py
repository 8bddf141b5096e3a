"""The line stream of ``nmt-translate``: one output line per input line, in order, each answered
as soon as it is read; a file output appears whole, under its name, only when every line is
translated. Invalid UTF-8 is reported with its line (or stops the stream, ``strict``).
"""

from __future__ import annotations

import logging
import os
import select
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from nmt.core.errors import UserError
from nmt.decoding.translator import Translation, Translator

log = logging.getLogger(__name__)


class InputError(UserError):
    """An input line that cannot be translated (invalid UTF-8 with ``strict``), or a file that
    cannot be read."""


def read_chunks(stream: BinaryIO, max_lines: int) -> Iterator[list[bytes]]:
    """Lines (without newline) in chunks: as many as are already readable, up to max_lines.

    A line typed on a terminal is yielded at once; a large file streams in bounded chunks.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None:  # no descriptor to poll: plain chunks
        chunk = []
        for line in stream:
            chunk.append(line.removesuffix(b"\n"))
            if len(chunk) >= max_lines:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    pending, lines = b"", []
    while True:
        if lines and (len(lines) >= max_lines or not select.select([fd], [], [], 0)[0]):
            yield lines[:max_lines]
            lines = lines[max_lines:]
            continue
        data = os.read(fd, 1 << 16)
        if not data:
            if pending:
                lines.append(pending)
            while lines:
                yield lines[:max_lines]
                lines = lines[max_lines:]
            return
        pending += data
        *complete, pending = pending.split(b"\n")
        lines.extend(complete)


def _decode_lines(chunk: list[bytes], name: str, first: int, strict: bool) -> list[str]:
    """UTF-8 text of each line; an invalid line is an error (strict) or an empty line."""
    texts = []
    for line_no, raw in enumerate(chunk, start=first):
        try:
            texts.append(raw.removesuffix(b"\r").decode("utf-8"))
        except UnicodeDecodeError as e:
            message = f"{name}:{line_no}: invalid UTF-8 at byte {e.start} of the line"
            if strict:
                raise InputError(message) from None
            print(f"warning: {message}; writing an empty line", file=sys.stderr)
            texts.append("")
    return texts


def translate_stream(
    translator: Translator,
    source: BinaryIO,
    sink: TextIO,
    *,
    name: str,
    strict: bool,
    buffer_lines: int,
    each: Callable[[int, str, Translation], object] | None = None,
) -> int:
    """Translate source to sink, exactly one line per input line (n-best: ``n_best`` lines of
    ``text<TAB>score``), flushed per chunk; returns the number of lines. ``each``: told every
    line's number (from 1), its text and its :class:`Translation`."""
    n_best, done = translator.search.n_best, 0
    for chunk in read_chunks(source, buffer_lines):
        texts = _decode_lines(chunk, name, done + 1, strict)
        for offset, result in enumerate(translator.translate_full(texts)):
            if each is not None:
                each(done + offset + 1, texts[offset], result)
            if result.truncated:
                print(
                    f"warning: {name}:{done + offset + 1}: longer than "
                    f"{translator.max_src_len} pieces; translated its beginning only",
                    file=sys.stderr,
                )
            if n_best == 1:
                sink.write(result.texts[0] + "\n")
            else:
                for text, hyp in zip(result.texts, result.hyps, strict=True):
                    sink.write(f"{text}\t{hyp.score:.4f}\n")
        done += len(chunk)
        sink.flush()
    return done


def check_output(output: str | None) -> None:
    """Refuse an output file that cannot be written, before any model loads or line decodes."""
    if output is None:
        return
    path = Path(output)
    if path.is_dir():
        raise InputError(f"output={output} is a directory; name a file")
    if not path.parent.is_dir():
        raise InputError(
            f"output={output}: the directory {path.parent} does not exist; create it or choose "
            "another output"
        )


def translate_file(
    translator: Translator,
    input: str | None,
    output: str | None,
    *,
    strict: bool,
    buffer_lines: int,
    each: Callable[[int, str, Translation], object] | None = None,
) -> int:
    """Translate a file (or stdin) to a file (or stdout). A file output appears whole, under its
    name, only when every line is translated. ``each``: as :func:`translate_stream`'s."""
    check_output(output)
    name = input or "<stdin>"
    try:
        source = open(input, "rb") if input else sys.stdin.buffer  # noqa: SIM115
    except OSError as e:
        raise InputError(f"{input}: cannot read ({e.strerror})") from None
    tmp = Path(output).with_name(Path(output).name + ".part") if output else None
    try:
        if tmp is None:
            return translate_stream(
                translator,
                source,
                sys.stdout,
                name=name,
                strict=strict,
                buffer_lines=buffer_lines,
                each=each,
            )
        try:
            with open(tmp, "w", encoding="utf-8", newline="\n") as sink:
                lines = translate_stream(
                    translator,
                    source,
                    sink,
                    name=name,
                    strict=strict,
                    buffer_lines=buffer_lines,
                    each=each,
                )
            os.replace(tmp, output)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("wrote %d lines to %s", lines, output)
        return lines
    finally:
        if input:
            source.close()
