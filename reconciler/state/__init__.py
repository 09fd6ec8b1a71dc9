"""The state database: what MoEngage has, lacks or might have, per cohort; runs; leases."""
