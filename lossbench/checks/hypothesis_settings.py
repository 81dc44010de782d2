"""The hypothesis profiles of the property checks: "dev" for quick local feedback, "ci" for
more examples, derandomized so CI is reproducible (HYPOTHESIS_PROFILE=ci), "thorough" for
long and wide inputs (T >= 256, V >= 4096: see strategies.PLANS) and more examples."""

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, print_blob=False, report_multiple_bugs=False,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=40, **_COMMON)
# ci: 75 derandomized examples per property. The registry-driven matrix (every loss x every
# property it claims, ~300 tests) was 30% of the suite's time at 150 with 25 losses.
settings.register_profile("ci", max_examples=75, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=100, **_COMMON)
