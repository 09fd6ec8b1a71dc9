{{ config(materialized='ephemeral') }}
select 'e1' as uid
