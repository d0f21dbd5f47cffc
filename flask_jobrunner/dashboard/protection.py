"""What guards the dashboard's pages: a CSRF token, a same-origin check, strict headers.

A form that changes something carries a token kept in the Flask session,
and the browser's ``Origin`` and ``Sec-Fetch-Site`` headers, when it sends
them, must name this site. Every response forbids inline script, framing and
content sniffing.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Response, current_app, request, session
from werkzeug.exceptions import Forbidden

#: The Content-Security-Policy of every dashboard response: only this site's own
#: script, styles, images and connections; no inline script, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: The name of the hidden form field, and of the session key, that hold the token.
CSRF_FIELD = "csrf_token"
_SESSION_KEY = "_jobrunner_csrf"

#: What the dashboard says when the app has no ``SECRET_KEY``.
NO_SECRET_KEY = (
    "Submitting and cancelling are off: the app has no SECRET_KEY, which the dashboard"
    " needs to sign the session that holds its CSRF token. Set app.config['SECRET_KEY']."
)


def can_change() -> bool:
    """Whether forms that change something can be protected: the app has a secret key."""
    return bool(current_app.secret_key)


def csrf_token() -> str:
    """This session's CSRF token, made on first use; empty without a secret key."""
    if not can_change():
        return ""
    token = session.get(_SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = session[_SESSION_KEY] = secrets.token_urlsafe(32)
    return token


def check_post() -> None:
    """Refuse a POST that may come from another site.

    :raises Forbidden: if the app has no secret key, the request comes from
        another origin, or its form lacks this session's token.
    """
    if not can_change():
        raise Forbidden(NO_SECRET_KEY)
    origin = request.headers.get("Origin")
    own = f"{request.scheme}://{request.host}"
    if origin is not None and origin != own:
        raise Forbidden(f"This form was sent from another site ({origin}); it is refused.")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site != "same-origin":
        raise Forbidden("This form was not sent from the dashboard's own pages; it is refused.")
    expected = session.get(_SESSION_KEY)
    given = request.form.get(CSRF_FIELD, "")
    if (
        not isinstance(expected, str)
        or not expected
        or not hmac.compare_digest(given.encode(), expected.encode())
    ):
        raise Forbidden(
            "The form's security token is missing or out of date. Reload the page and try again."
        )


def add_security_headers(response: Response) -> Response:
    """Add the Content-Security-Policy and the headers that go with it to *response*."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
