"""Orchestrators' side of trigger-and-wait: an Airflow operator and sensor, a Dagster resource, op and asset.

Each module imports its orchestrator (the `airflow` or `dagster` extra) and the trigger client
(daemon/triggering.py), which needs only `requests`: they run where the orchestrator runs, not
where the daemon does.
"""
