"""One exception hierarchy for everything Lumen refuses or fails at.

    LumenError                      any error with an OpenAI envelope (status, type, code, param)
    ├── InvalidRequest              400 invalid_request_error (bad JSON, wrong types, bad values)
    ├── AuthenticationFailed        401 invalid_api_key
    │   └── LoginRequired           401 login_required (a portal page without a session)
    ├── PermissionDenied            403
    │   ├── LoginFailed             403 login_failed (the portal refused a login)
    │   └── CsrfFailed              403 csrf_failed (a portal request without its CSRF token)
    ├── NotFound                    404 (unknown route)
    │   └── ModelNotFound           404 model_not_found
    ├── RequestTimeout              408 the client stalled while sending its body
    ├── PayloadTooLarge             413
    ├── RateLimited                 429 rate_limit_exceeded
    ├── NoBackendAvailable          503 (no endpoint of the model can serve now)
    └── UpstreamError               502 a backend failed
        ├── UpstreamConnectError    502 the connection broke (retryable)
        │   └── UpstreamUnreachable 502 no connection at all: refused, unknown host, connect timeout
        ├── UpstreamTimeout         504 first-token, between-chunk or request timeout (retryable)
        ├── UpstreamStatusError     the backend answered with an error status (5xx retryable)
        └── UpstreamProtocolError   502 the backend's answer was not valid OpenAI wire format
            ├── UpstreamUnexpectedContent  a 200 that is not JSON / SSE (retryable: not serving)
            └── UpstreamTooLarge    an answer (or one stream event) over the size cap

An `UpstreamError`'s `message` is what callers see: it never names an address or quotes a
backend's error page. Its `detail` is the full story, for logs and the admin pages only.

The mapping to HTTP responses lives in one place, `lumen.api.errors`.
"""

from __future__ import annotations

from typing import Any


class LumenError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(LumenError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class AuthenticationFailed(LumenError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(LumenError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class LoginRequired(AuthenticationFailed):
    """A portal page or a session-authenticated call without a live session."""

    code = "login_required"


class LoginFailed(PermissionDenied):
    """The portal refused a login (wrong password, unverified email, provider error); the
    message says what to do."""

    code = "login_failed"


class CsrfFailed(PermissionDenied):
    """A state-changing portal request without the CSRF token of its session."""

    code = "csrf_failed"


class NotFound(LumenError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist", param="model")


class MethodNotAllowed(LumenError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(LumenError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(LumenError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(LumenError):
    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"


class NoBackendAvailable(LumenError):
    status = 503
    type = "server_error"
    code = "model_unavailable"


class UpstreamError(LumenError):
    """A backend failed. `retryable` errors before the first byte fail over to another endpoint.

    `message` goes to the caller and names no host, URL or address; `detail` (the message when
    not given) says which endpoint failed and how, for logs and the admin pages.
    """

    status = 502
    type = "server_error"
    code = "upstream_error"
    retryable = False
    unreachable = False
    """True when no connection to the backend could be made at all: the request never reached it."""

    def __init__(
        self,
        message: str,
        *,
        detail: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, headers=headers)
        self.detail = detail or message


class UpstreamConnectError(UpstreamError):
    code = "upstream_connection_error"
    retryable = True


class UpstreamUnreachable(UpstreamConnectError):
    """Connection refused, no route, an unknown host, a TLS failure or a connect timeout: the
    backend is not there. When every endpoint of a model is unreachable the model is unavailable."""

    unreachable = True


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    retryable = True


class UpstreamProtocolError(UpstreamError):
    code = "upstream_protocol_error"


class UpstreamUnexpectedContent(UpstreamProtocolError):
    """A success status with a body that is not JSON (or a stream that is not SSE): an HTML page
    from a proxy or a web server in the backend's place. The endpoint is not serving, so this
    fails over and marks it down like a 5xx."""

    retryable = True


class UpstreamTooLarge(UpstreamProtocolError):
    """An answer, or one event of a stream, larger than Lumen accepts (`routing.max_response_bytes`,
    `routing.max_event_bytes`). Another endpoint would most likely answer the same, so it is not
    retried."""


class EngineUnavailable(UpstreamError):
    status = 503
    code = "model_unavailable"


class UpstreamStatusError(UpstreamError):
    """The backend answered with a non-2xx status.

    4xx answers are the caller's fault (context too long, bad parameter): they reach the client
    with the backend's status and a short, cleaned summary of its message. 5xx answers become 502
    and may fail over.
    """

    def __init__(
        self,
        upstream_status: int,
        message: str,
        *,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, detail=detail)
        self.upstream_status = upstream_status
        self.retryable = upstream_status >= 500 or upstream_status == 429
        if 400 <= upstream_status < 500 and upstream_status != 429:
            self.status = 400 if upstream_status == 422 else upstream_status
            self.type = error_type or "invalid_request_error"
        else:
            self.status = 502
            self.type = "server_error"
            self.code = code or "upstream_error"


class ModelNotAllowed(PermissionDenied):
    """403: the caller can see the model but policy (or the key's model list) refuses it."""

    code = "model_not_allowed"

    def __init__(self, model: str, *, detail: str | None = None) -> None:
        default = f"You are not allowed to use the model '{model}'. Ask your Lumen administrator for access."
        super().__init__(detail or default, param="model")


class AcknowledgementRequired(PermissionDenied):
    """403: the model needs its notice acknowledged once (by the user, or a project manager)."""

    code = "acknowledgement_required"

    def __init__(self, model: str, *, acknowledge_url: str) -> None:
        super().__init__(
            f"The model '{model}' requires acknowledging its notice once before use. "
            f"Read and acknowledge it at {acknowledge_url}",
            param="model",
        )
        self.model = model
        self.acknowledge_url = acknowledge_url


class InsufficientQuota(RateLimited):
    """429 insufficient_quota: the coin pool cannot pay for the request (or is blocked).

    Retrying at once cannot help, so ``x-should-retry: false`` tells the OpenAI SDKs not to; the
    message says when enough coins will have arrived.
    """

    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"x-should-retry": "false", **(headers or {})})
