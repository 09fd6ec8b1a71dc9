"""Cohort specs: loading, validating and the rules MoEngage puts on names."""
