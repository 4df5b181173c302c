"""Hypothesis profiles. ``mutation`` is the one ``tools/mutation.py`` runs every mutant under:
the same examples for every mutant (derandomized, no example database carried between mutants),
so a mutant's verdict does not depend on the order the mutants ran in, and no deadline, since a
mutant that is merely slower is not a bug the deadline is there to find."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "mutation",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
