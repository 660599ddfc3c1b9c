"""One error hierarchy: every error raised below the API is a RagvigilError, mapped by one handler."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ragvigil.api.errors import install_error_handlers
from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.pipeline import DependencyUnavailable, UnstorableTurn
from ragvigil.chat.sessions import SessionNotFound
from ragvigil.errors import RagvigilError
from ragvigil.knowledge.catalog import KnowledgeBaseNotFound
from ragvigil.knowledge.ingest import DocumentNotFound
from ragvigil.providers.base import ProviderError, ProviderRejected, ProviderTimeout, ProviderUnavailable
from tests.conftest import local_client


class DrillRefused(RagvigilError):
    """A kind of error that did not exist when the handlers were written."""

    status = 409
    code = "drill_refused"


class Overloaded(RagvigilError):
    status = 503
    code = "overloaded"
    retry_after = 7
    message_template = "too busy; try again shortly"


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    raised = {
        "refused": DrillRefused("no drills on this instance"),
        "overloaded": Overloaded("queue of 64 full, limit 12"),
        "session": SessionNotFound("s-1"),
        "kb": KnowledgeBaseNotFound("nope"),
        "document": DocumentNotFound("d-1"),
        "unstorable": UnstorableTurn("the database refused this turn's text (DataError)"),
        "dependency": DependencyUnavailable("database and journal both failed: x; y"),
        "provider": ProviderUnavailable("llm: HTTP 502: upstream at http://10.0.0.5 said no"),
    }

    @app.get("/raise/{what}")
    def _raise(what: str) -> None:
        raise raised[what]

    return app


@pytest.fixture
def raising() -> TestClient:
    return TestClient(_app())


def test_a_new_error_class_needs_no_new_handler(raising: TestClient) -> None:
    r = raising.get("/raise/refused")
    assert r.status_code == 409 and r.json() == {"code": "drill_refused", "message": "no drills on this instance"}
    assert "retry-after" not in r.headers
    busy = raising.get("/raise/overloaded")
    assert busy.status_code == 503 and busy.headers["retry-after"] == "7"
    assert busy.json() == {"code": "overloaded", "message": "too busy; try again shortly"}  # no internal detail


@pytest.mark.parametrize(
    ("what", "status", "body", "retry_after"),
    [
        ("session", 404, {"code": "session_not_found", "message": "no chat session with id s-1"}, None),
        ("kb", 404, {"code": "kb_not_found", "message": "no knowledge base named nope"}, None),
        ("document", 404, {"code": "document_not_found", "message": "no document with id d-1"}, None),
        (
            "unstorable",
            422,
            {
                "code": "unstorable_input",
                "message": "the database refused this turn's text (DataError)",
                "field": "message",
            },
            None,
        ),
        (
            "dependency",
            503,
            {"code": "dependency_unavailable", "message": "a required dependency is unavailable; try again shortly"},
            "5",
        ),
        (
            "provider",
            503,
            {"code": "provider_unavailable", "message": "the answer provider failed; try again shortly"},
            "5",
        ),
    ],
)
def test_existing_errors_keep_their_responses(
    raising: TestClient, what: str, status: int, body: dict[str, str], retry_after: str | None
) -> None:
    r = raising.get(f"/raise/{what}")
    assert r.status_code == status and r.json() == body
    assert r.headers.get("retry-after") == retry_after


def test_every_domain_error_is_one_of_the_hierarchy_and_keeps_its_old_bases() -> None:
    for cls in (SessionNotFound, KnowledgeBaseNotFound, DocumentNotFound):
        assert issubclass(cls, RagvigilError) and issubclass(cls, LookupError) and cls.status == 404
    assert issubclass(UnstorableTurn, ValueError) and UnstorableTurn.status == 422
    assert DependencyUnavailable.status == 503 and DependencyUnavailable.retry_after == 5
    for cls in (ProviderError, ProviderTimeout, ProviderUnavailable, ProviderRejected):
        assert issubclass(cls, RagvigilError) and cls.status in (502, 503)
        assert cls.status != 503 or cls.retry_after is not None  # every 503 says when to come back


def test_the_app_maps_the_hierarchy_with_one_handler(sample_runtime: Runtime) -> None:
    app = create_app(runtime=sample_runtime)
    handled = set(app.exception_handlers)
    assert RagvigilError in handled
    assert not handled & {SessionNotFound, KnowledgeBaseNotFound, DocumentNotFound, UnstorableTurn}
    with local_client(app) as c:
        r = c.post("/api/v1/chat", json={"message": "hi", "kb": "no-such-kb"})
        assert r.status_code == 404 and r.json() == {
            "code": "kb_not_found",
            "message": "no knowledge base named no-such-kb",
        }
        r = c.post("/api/v1/chat", json={"message": "hi", "session_id": "never-opened"})
        assert r.status_code == 404 and r.json()["code"] == "session_not_found"
