"""Settings for the whole suite.

Hypothesis: CI runs on a shared 2-core machine where a draw can stall for a second under the
end-to-end tests' load; what the property tests check is the code's answers, never how fast
inputs are generated, so the timing health check and per-example deadlines are off.

Coroutine tests: an `async def test_*` runs on a fresh event loop of its own, with its fixtures
set up and torn down outside that loop, as the sync fixtures expect.  A test that uses a
`loop_factory` fixture gets its loop from it (to run on uvloop as well); a test that hangs fails
after HANG_GUARD seconds (or what a `hang_guard` fixture returns) rather than holding the suite
until pytest-timeout ends it.
"""

import inspect
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.aio import HANG_GUARD, run

settings.register_profile(
    "pynfsd", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("pynfsd")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an `async def test_*` to completion on its own event loop."""
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    fixtures: dict[str, Any] = pyfuncitem.funcargs
    args = {name: fixtures[name] for name in pyfuncitem._fixtureinfo.argnames}
    guard = fixtures.get("hang_guard", HANG_GUARD)
    result = run(func(**args), guard, fixtures.get("loop_factory"))
    assert result is None, f"a test returns nothing, got {result!r}"
    return True
