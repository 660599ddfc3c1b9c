"""Bounded PDF text extraction: a hostile PDF is refused with a reason within a few seconds.

Why bounds here: a 1 MB PDF can inflate one stream to 1 GiB, and twenty pages can share one
huge content stream that pypdf parses again for every page (minutes of CPU). pypdf's own
limits (inflated bytes per stream, tokens parsed per content stream) are tightened for the
duration of one extraction; pages, characters and wall-clock time are bounded here, the clock
checked between pages and between the operators of a page.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


class PdfRejected(ValueError):
    """The PDF cannot be read within its limits; the message says which limit or what is broken."""


@dataclass(frozen=True)
class PdfLimits:
    max_pages: int = 500
    max_stream_bytes: int = 8_000_000
    max_stream_tokens: int = 100_000
    max_chars: int = 1_000_000
    time_budget_s: float = 3.0
    budget_setting: str = "ingest.pdf_time_budget_s"  # named in the refusal: the setting to raise


class _OutOfTime(Exception):
    pass


def _pypdf_overrides(limits: PdfLimits) -> dict[str, int]:
    """pypdf's configuration fields that bound inflating and parsing one stream."""
    n = limits.max_stream_bytes
    return {
        "zlib_maximum_output_length": n,
        "lzw_maximum_output_length": n,
        "run_length_maximum_output_length": n,
        "brotli_maximum_output_length": n,
        "array_based_stream_maximum_output_length": n,
        "stream_parsing_work_maximum_count": limits.max_stream_tokens,
    }


def _over_limit(exc: Exception, limits: PdfLimits) -> str:
    return (
        f"over a safety limit ({exc}); a stream may inflate to {limits.max_stream_bytes} bytes "
        f"(ingest.pdf_max_stream_bytes) and hold {limits.max_stream_tokens} tokens (ingest.pdf_max_stream_tokens)"
    )


def extract_pdf_text(raw: bytes, limits: PdfLimits) -> tuple[str, list[str]]:
    """The text of every page (pages separated by a blank line) and warnings. Raises PdfRejected.

    A page over a stream limit (a detailed chart can hold more operators than the rest of the
    file) is skipped with a warning; when no page is left the PDF is refused.
    """
    from pypdf import PdfReader, apply_configuration
    from pypdf.errors import LimitReachedError

    deadline = time.monotonic() + limits.time_budget_s

    def check_clock(*_: object) -> None:
        if time.monotonic() > deadline:
            raise _OutOfTime

    page_no, pages = 0, 0
    parts: list[str] = []
    skipped: list[tuple[int, str]] = []
    try:
        with apply_configuration(**_pypdf_overrides(limits)):
            reader = PdfReader(io.BytesIO(raw))
            pages = len(reader.pages)
            if pages > limits.max_pages:
                raise PdfRejected(
                    f"PDF has {pages} pages; at most {limits.max_pages} are accepted (ingest.pdf_max_pages)"
                )
            total = 0
            for page_no, page in enumerate(reader.pages, 1):
                check_clock()
                try:
                    text = page.extract_text(visitor_operand_before=check_clock) or ""
                except LimitReachedError as exc:
                    skipped.append((page_no, _over_limit(exc, limits)))
                    continue
                total += len(text)
                if total > limits.max_chars:
                    raise PdfRejected(
                        f"PDF text exceeds {limits.max_chars} characters by page {page_no} (ingest.max_text_chars)"
                    )
                parts.append(text)
    except PdfRejected:
        raise
    except _OutOfTime:
        raise PdfRejected(
            f"PDF text extraction ran out of its {limits.time_budget_s:g} s budget on page {page_no} of {pages} "
            f"({limits.budget_setting})"
        ) from None
    except LimitReachedError as exc:
        raise PdfRejected(f"PDF is {_over_limit(exc, limits)}") from None
    except Exception as exc:  # pypdf raises many kinds on malformed files; each is this file's problem only
        log.info("pdf_unreadable", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        raise PdfRejected(f"unreadable PDF: {type(exc).__name__}: {exc}") from None
    if skipped and len(skipped) == pages:
        raise PdfRejected(f"every page of the PDF is {skipped[0][1]}")
    warnings = [f"PDF page {n} skipped: {reason}" for n, reason in skipped[:5]]
    if len(skipped) > 5:
        warnings.append(f"{len(skipped) - 5} more PDF pages skipped for the same kind of reason")
    return "\n\n".join(parts), warnings
