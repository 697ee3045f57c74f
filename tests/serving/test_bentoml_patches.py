"""serving.bentoml_patches against the installed BentoML: the version the patches were written for, each
patched internal still where the patch expects it with the shape it expects, and each patch doing its work."""

from __future__ import annotations

import importlib.metadata
import inspect
import logging

import pytest

from serving import bentoml_patches
from serving.timeout import RequestTimeout


def test_the_installed_bentoml_is_the_one_the_patches_were_written_for():
    installed = importlib.metadata.version("bentoml")
    assert installed == bentoml_patches.BENTOML_VERSION, (
        f"BentoML {installed} is installed; serving/bentoml_patches.py was written for and checked against "
        f"{bentoml_patches.BENTOML_VERSION}. Re-check each patch there against the new BentoML's source (the "
        "internals it replaces, how BentoML looks them up), then update BENTOML_VERSION."
    )


def test_bentoml_builds_the_request_timeout_in_place_of_its_own():
    from bentoml._internal.server.base_app import BaseAppFactory
    from bentoml._internal.server.http import traffic

    assert list(inspect.signature(traffic.TimeoutMiddleware).parameters) == ["app", "timeout"]
    assert "from .http.traffic import TimeoutMiddleware" in inspect.getsource(BaseAppFactory.middlewares.fget)

    class App(BaseAppFactory):
        name = "probe"

    bentoml_patches.replace_bentoml_timeout()
    built = [m for m in App(timeout=7.0).middlewares if m.cls is RequestTimeout]
    assert len(built) == 1 and built[0].kwargs == {"timeout": 7.0}


def test_the_metrics_middleware_is_looked_up_where_the_patch_replaces_it():
    from _bentoml_impl.server.app import ServiceAppFactory
    from bentoml._internal.server.http import instruments

    source = inspect.getsource(ServiceAppFactory.middlewares.fget)
    assert "from bentoml._internal.server.http.instruments import" in source
    assert "RunnerTrafficMetricsMiddleware" in source
    metrics = instruments.RunnerTrafficMetricsMiddleware
    if getattr(metrics, "nba_bounded", False):  # patched already in this process: the class it wraps
        metrics = inspect.getclosurevars(metrics.__init__).nonlocals["original"]
    assert {"app", "namespace", "skip_paths"} <= set(inspect.signature(metrics).parameters)
    assert 'scope["path"]' in inspect.getsource(metrics.__call__)  # the label it gives a request


def test_unknown_paths_reach_the_metrics_as_one_label_and_the_app_with_their_own(monkeypatch):
    import asyncio

    from bentoml._internal.server.http import instruments

    seen: dict[str, list[str]] = {"metrics": [], "app": []}

    class Metrics:  # stands for BentoML's middleware: records the path it labels the request with
        def __init__(self, app, **kwargs) -> None:
            self.app, self.kwargs = app, kwargs

        async def __call__(self, scope, receive, send) -> None:
            seen["metrics"].append(scope["path"])
            await self.app(scope, receive, send)

    async def app(scope, receive, send) -> None:
        seen["app"].append(scope["path"])
        assert "nba_path" not in scope

    monkeypatch.setattr(instruments, "RunnerTrafficMetricsMiddleware", Metrics)
    bentoml_patches.bound_metric_paths()
    bounded = instruments.RunnerTrafficMetricsMiddleware
    assert bounded is not Metrics and bounded.nba_bounded
    bentoml_patches.bound_metric_paths()  # once is enough
    assert instruments.RunnerTrafficMetricsMiddleware is bounded
    wrapped = bounded(app, namespace="nba", skip_paths=["/livez"])
    assert wrapped.inner.kwargs == {"namespace": "nba", "skip_paths": ["/livez"]}
    for path in ("/decide", "/wp-admin/x.php", "/feedback"):
        asyncio.run(wrapped({"type": "http", "path": path}, None, None))
    assert seen == {
        "metrics": ["/decide", bentoml_patches.UNKNOWN_PATH, "/feedback"],
        "app": ["/decide", "/wp-admin/x.php", "/feedback"],
    }


def test_a_request_that_failed_validation_is_one_warning_line_other_errors_keep_their_traceback():
    from _bentoml_impl.server import app
    from bentoml._internal.server import http_app
    from pydantic import BaseModel, ValidationError

    assert http_app.logger.name == bentoml_patches.VALIDATION_LOGGER
    assert app.log_exception is http_app.log_exception  # what the new-style service logs a handler's error with
    assert "logger.error(" in inspect.getsource(http_app.log_exception)

    class Body(BaseModel):
        n: int

    try:
        Body(n="x")
    except ValidationError as e:
        invalid = (type(e), e, e.__traceback__)
    failed = (RuntimeError, RuntimeError("the log is down"), None)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(bentoml_patches.VALIDATION_LOGGER)
    logger.addHandler(handler)
    try:
        bentoml_patches.quiet_validation_errors()
        bentoml_patches.quiet_validation_errors()
        assert sum(isinstance(f, bentoml_patches.QuietValidationErrors) for f in logger.filters) == 1
        for exc_info in (invalid, failed):
            logger.error("Exception on %s [%s]", "/decide", "POST", exc_info=exc_info)
    finally:
        logger.removeHandler(handler)
    quiet, loud = records
    assert quiet.levelno == logging.WARNING and quiet.exc_info is None
    assert quiet.getMessage() == "rejected a request to /decide [POST]: invalid input"
    assert loud.levelno == logging.ERROR and loud.exc_info is failed


def test_an_endpoint_bound_on_the_instance_wins_over_bentomls_descriptor():
    import bentoml
    from _bentoml_impl.server.app import ServiceAppFactory
    from _bentoml_sdk.method import APIMethod

    assert hasattr(APIMethod, "__get__") and not hasattr(APIMethod, "__set__")  # an instance attribute wins
    assert "getattr(self._service_instance, name)" in inspect.getsource(ServiceAppFactory.api_endpoint)

    @bentoml.service(name="probe")
    class Probe:
        @bentoml.api
        def echo(self, x: int) -> int:
            return x

    probe = Probe.inner()
    assert probe.echo is not probe.echo  # a new caller per look-up
    bentoml_patches.bind_endpoints(probe, ("echo",))
    assert probe.echo is probe.echo and probe.echo(x=3) == 3 and probe.echo.local(x=4) == 4


@pytest.mark.parametrize("name", ["replace_bentoml_timeout", "bound_metric_paths", "quiet_validation_errors"])
def test_apply_makes_every_module_wide_patch(name, monkeypatch):
    called = []
    monkeypatch.setattr(bentoml_patches, name, lambda: called.append(name))
    bentoml_patches.apply()
    assert called == [name]
