"""``POST /api/v1/analyze``: what a chat turn would understand of a text, without a chat turn.

For integrators (route a message before sending it) and for evaluation: the same safety, emotion
and intent a turn gets, from the same query embedding, and nothing stored, counted as a turn or
answered. A safety check that fails is a 503 here (there is no turn to fail closed).
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from ragvigil.api.deps import get_runtime, require
from ragvigil.api.errors import ApiError
from ragvigil.api.schemas import AnalyzeRequest, AnalyzeResponse
from ragvigil.app import Runtime
from ragvigil.errors import DependencyUnavailable
from ragvigil.knowledge.embeddings import EmbedderBusy, EmbedderUnavailable
from ragvigil.knowledge.tokenize import is_cjk
from ragvigil.ops.access import Role

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["analysis"], dependencies=[Depends(require(Role.viewer))])

EMBED_WAIT_S = 5.0  # the longest wait for a free embedding engine; past it the checkers run on the text alone


def analyze_text(rt: Runtime, text: str) -> AnalyzeResponse:
    """The analysis of ``text`` as the chat pipeline's ``understand`` stage makes it."""
    language = "zh" if is_cjk(text) else "en"
    vector = None
    if rt.understanding.configured:
        try:
            vector = rt.embedder.embed_query(text[: rt.settings.retrieval.max_query_chars], EMBED_WAIT_S)
        except (EmbedderBusy, EmbedderUnavailable) as exc:
            log.info("analyze_without_vector", extra={"error": str(exc)[:200]})
    start = time.perf_counter()
    try:
        analysis = rt.understanding.analyze(text, vector, language)
    except Exception as exc:
        log.error("safety_check_failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300], "route": "analyze"})
        raise DependencyUnavailable(f"the safety check failed ({type(exc).__name__})") from exc
    analysis.ms.setdefault("total", round((time.perf_counter() - start) * 1000, 3))
    return AnalyzeResponse.model_validate(
        {"analysis": analysis.to_dict(), "language": language, "embedded": vector is not None, "ms": analysis.ms}
    )


@router.post("/analyze", response_model=AnalyzeResponse)
async def analyze(body: AnalyzeRequest, rt: Runtime = Depends(get_runtime)) -> AnalyzeResponse:
    """Safety ``{category, severity}``, emotion ``{label, polarity, score}`` and intent ``{name, confidence}``
    of ``text`` (a part is null when its checker is not configured). Nothing is stored."""
    limit = rt.settings.max_message_chars
    if len(body.text) > limit:
        raise ApiError(422, "validation_error", f"text is longer than {limit} characters", "text")
    return await run_in_threadpool(analyze_text, rt, body.text.strip())
