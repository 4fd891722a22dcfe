"""RFC 9457 problem responses: every error leaves the API as application/problem+json,
mapped once here from typed domain errors and request validation, and declared once
here for the OpenAPI of every route (`RESPONSES`)."""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException

from shared.domain.errors import DomainError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    field: str = Field(description="The field at fault, e.g. site.city, query.limit or Idempotency-Key.")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem: the body of every error answer."""

    type: str = Field(description="/problems/<slug>: what went wrong, for a program to branch on.")
    title: str
    status: int
    detail: str
    instance: str = Field(description="The path of the request.")
    errors: list[FieldError] | None = Field(None, description="Each field at fault (422).")


_REF = "#/components/schemas/{model}"
_SCHEMAS = models_json_schema([(Problem, "serialization")], ref_template=_REF)[1]["$defs"]

# Any route may answer a client error (no key, a role without the right, a body too large,
# an invalid request, too many requests, not found, a conflict), always as a problem.
RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "A problem (RFC 9457): `type` names it, `errors` lists the fields at fault.",
        "content": {PROBLEM_JSON: {"schema": {"$ref": _REF.format(model="Problem")}}},
    },
}


def problem(
    request: Request, status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail, "instance": request.url.path}
    return JSONResponse(body | extra, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(location: tuple[Any, ...]) -> str:
    # ("body", "site", "city") → "site.city"; headers and query keep their prefix.
    parts = [str(p) for p in location]
    return ".".join(parts[1:] if parts and parts[0] == "body" and len(parts) > 1 else parts)


async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    errors = [{"field": _field(e["loc"]), "message": e["msg"]} for e in error.errors()]
    fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
    return problem(request, 422, "invalid-request", "Request is not valid", f"invalid: {fields}", errors=errors)


async def on_domain_error(request: Request, error: DomainError) -> JSONResponse:
    field = getattr(error, "field", None)
    extra = {"errors": [{"field": field, "message": str(error)}]} if field else {}
    return problem(request, error.status, error.slug, error.title, str(error), error.headers, **extra)


_HTTP_SLUGS = {400: "malformed-request", 404: "not-found", 405: "method-not-allowed", 413: "body-too-large"}


async def on_http_error(request: Request, error: HTTPException) -> JSONResponse:
    slug = _HTTP_SLUGS.get(error.status_code, f"http-{error.status_code}")
    return problem(request, error.status_code, slug, str(error.detail), str(error.detail), error.headers)


async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(request, 500, "internal-error", "Internal error", "the error was logged; nothing was recorded")


def install(app: FastAPI) -> None:
    """Answer every error with a problem, and put the Problem schema in the app's OpenAPI
    (its routes refer to it: create the app with `responses=RESPONSES`)."""
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            generate().setdefault("components", {}).setdefault("schemas", {}).update(_SCHEMAS)
        return app.openapi_schema  # type: ignore[return-value]  # set by generate()

    app.openapi = openapi  # type: ignore[method-assign]
