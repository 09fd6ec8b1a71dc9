-- `dbt run --vars '{more: true}'` adds u4: a rebuild that changes the cohort
select uid from (values ('u1'), ('u2'), ('u3')) as t(uid)
{% if var('more', false) %} union all select 'u4' {% endif %}
