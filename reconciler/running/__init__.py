"""Doing: sending a plan's batches and settling them in the state, one run over all cohorts."""
