{{ config(alias='vip_spenders', materialized='view') }}
select user_id from (values ('b1'), ('b2')) as t(user_id)
