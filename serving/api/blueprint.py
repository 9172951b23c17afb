"""flask-smorest's Blueprint as maas uses it: strict JSON, the contract's paging, error docs."""

from __future__ import annotations

import http
from collections.abc import Callable
from typing import Any, TypeVar

import flask_smorest

from serving.api.jsonbody import StrictJSONParser

F = TypeVar("F", bound=Callable[..., Any])
# Statuses the WSGI server itself may answer to any request, before the app sees it.
SERVER_ERRORS = (400, 414, 431)


# The OpenAPI security of a blueprint's operations (the `bearer` scheme, serving.api.app), so that
# /docs' "Authorize" makes "Try it out" send the token: required (admin), or optional (the reads
# and predictions, which need it only when MAAS_API_TOKEN is set).
Security = list[dict[str, list[str]]]
BEARER: Security = [{"bearer": []}]
OPTIONAL_BEARER: Security = [{}, {"bearer": []}]


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = StrictJSONParser()
    DEFAULT_PAGINATION_PARAMETERS = {"page": 1, "page_size": 50, "max_page_size": 1000}  # noqa: RUF012 - overrides flask-smorest's own
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING = {  # noqa: RUF012
        **flask_smorest.Blueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING,
        "multipart": "multipart/form-data",
        "json_or_csv": "application/json",  # text/csv is documented beside it (routes/predict.py)
    }

    def __init__(self, *args: Any, security: Security | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.security = security
        self._prepare_doc_cbks.append(self._prepare_security_doc)

    def _prepare_security_doc(self, doc: dict[str, Any], doc_info: dict[str, Any], **_: Any) -> dict[str, Any]:
        if self.security is not None:
            doc["security"] = self.security
        return doc

    def errors(self, *codes: int) -> Callable[[F], F]:
        """Document the error statuses an operation can answer (all in the contract's shape).

        Every operation can also get gunicorn's own 400 (a request it cannot parse), 414 (a
        request line over 4094 bytes) and 431 (a header over 8190 bytes), answered in the
        same shape (serving.cli).
        """

        def decorator(func: F) -> F:
            for code in sorted({*codes, *SERVER_ERRORS}):
                func = self.alt_response(code, response=http.HTTPStatus(code).name)(func)
            return func

        return decorator
