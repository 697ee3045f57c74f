"""Every change this service makes to BentoML's internals, in one place.

Written for and checked against BentoML 1.4.40 (:data:`BENTOML_VERSION`). Each patch reaches into
``bentoml._internal`` or ``_bentoml_sdk``/``_bentoml_impl``, which BentoML may change in any release:
``tests/serving/test_bentoml_patches.py`` fails when another version is installed and checks that each
patched internal is still there with the shape the patch expects. :func:`apply` makes the module-wide
patches (``serving/service.py`` calls it at import, before BentoML builds the service's app);
:func:`bind_endpoints` is the one made on each service instance.

1. :func:`replace_bentoml_timeout`: ``bentoml._internal.server.http.traffic.TimeoutMiddleware`` becomes
   :class:`serving.timeout.RequestTimeout`. BentoML's schedules a timer for every request and never
   cancels it, so every answered request left its timer, a future and a copy of its context alive for
   the whole 60 s timeout (about 100,000 of each at 1,700 requests/s) and the collector's full passes
   over them paused the service 7-30 ms about once a second. ``BaseAppFactory.middlewares`` imports the
   class from that module each time it builds an app, so replacing the module attribute is enough.
2. :func:`bound_metric_paths`: ``bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware``
   becomes a wrapper that shows it ``/{unknown}`` for every path the service does not serve. Its request
   metrics are labelled with the path, so every distinct unknown path made a new series (20,000 random
   404s grew ``/metrics`` to 79 MB). ``_bentoml_impl.server.app`` imports the class from that module each
   time it builds a service's middlewares.
3. :func:`quiet_validation_errors`: a filter on the ``bentoml._internal.server.http_app`` logger, whose
   ``log_exception`` logs "Exception on /decide [POST]" with a traceback for every request that failed
   schema validation; the filter turns those into one warning line (bad input is the caller's error,
   not the server's). Other records pass unchanged.
4. :func:`bind_endpoints`: BentoML's server looks an endpoint up on the service instance for every
   request, and ``_bentoml_sdk.method.APIMethod.__get__`` (a non-data descriptor) builds a new caller
   each time, inspecting the method's signature; an instance attribute holding the caller built once
   wins over the descriptor.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from serving.auth import PROTECTED
from serving.timeout import RequestTimeout

BENTOML_VERSION = "1.4.40"  # the version these patches were written for and checked against
VALIDATION_LOGGER = "bentoml._internal.server.http_app"  # where BentoML logs a handler's exception
UNKNOWN_PATH = "/{unknown}"
KNOWN_PATHS = frozenset({*PROTECTED, "/livez", "/healthz", "/readyz", "/metrics", "/", "/docs.json", "/schema.json"})


def apply() -> None:
    """Make the module-wide patches (1-3 above); calling it again changes nothing."""
    replace_bentoml_timeout()
    bound_metric_paths()
    quiet_validation_errors()


def replace_bentoml_timeout() -> None:
    """Make BentoML build :class:`RequestTimeout` where it builds its own timeout middleware (it looks the
    class up in its module each time it assembles a service's app, with the service's ``traffic.timeout``)."""
    from bentoml._internal.server.http import traffic

    traffic.TimeoutMiddleware = RequestTimeout  # type: ignore[misc]


def bound_metric_paths() -> None:
    """Make BentoML's request metrics label every path the service does not serve ``/{unknown}`` (its app
    factory looks the middleware class up in its module each time it builds a service's app)."""
    from bentoml._internal.server.http import instruments

    original = instruments.RunnerTrafficMetricsMiddleware
    if getattr(original, "nba_bounded", False):
        return

    class BoundedPaths:
        """BentoML's metrics middleware, shown ``/{unknown}`` for an unknown path; the app behind it sees
        the real path."""

        nba_bounded = True

        def __init__(self, app: Any, **kwargs: Any) -> None:
            self.inner = original(_RealPath(app), **kwargs)

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] not in KNOWN_PATHS:
                scope = dict(scope, path=UNKNOWN_PATH, nba_path=scope["path"])
            await self.inner(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = BoundedPaths  # type: ignore[misc]


class _RealPath:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if "nba_path" in scope:
            scope = dict(scope, path=scope["nba_path"])
            del scope["nba_path"]
        await self.app(scope, receive, send)


class QuietValidationErrors(logging.Filter):
    """Turns BentoML's 'Exception on /decide' error-with-traceback for a request that failed schema
    validation into one warning line: bad input is the caller's error, not the server's."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        from pydantic import ValidationError

        if isinstance(exc, ValidationError | json.JSONDecodeError | UnicodeDecodeError):
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "rejected a request to %s [%s]: invalid input"
        return True


def quiet_validation_errors() -> None:
    """Put :class:`QuietValidationErrors` on BentoML's logger of handler exceptions (once)."""
    logger = logging.getLogger(VALIDATION_LOGGER)
    if not any(isinstance(f, QuietValidationErrors) for f in logger.filters):
        logger.addFilter(QuietValidationErrors())


def bind_endpoints(service: object, names: tuple[str, ...]) -> None:
    """Build the callers of ``service``'s endpoints ``names`` once, as instance attributes (BentoML's
    descriptor would build one per request)."""
    for name in names:
        setattr(service, name, getattr(service, name))
