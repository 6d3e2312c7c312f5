"""Settings for the whole suite.

Hypothesis: CI runs on a shared 2-core machine where a draw can stall for a second under the
end-to-end tests' load; what the property tests check is the code's answers, never how fast
inputs are generated, so the timing health check and per-example deadlines are off.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "pynfsd", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("pynfsd")
