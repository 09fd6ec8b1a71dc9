"""The long-lived `cohortsync run`: watch, time, listen, and reconcile one cohort set at a time."""
