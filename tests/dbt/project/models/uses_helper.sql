select uid from {{ ref('helper') }}
