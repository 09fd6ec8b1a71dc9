-- fails on purpose: run_results.json then holds an `error` and a `skipped` model
select uid from cohortsync_dbt_no_such_table
