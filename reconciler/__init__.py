"""cohortsync: keep MoEngage custom segments equal to cohorts declared in git."""

__version__ = "0.1.0"
