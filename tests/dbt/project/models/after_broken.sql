select uid from {{ ref('broken') }}
