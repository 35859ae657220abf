"""The data stage: audit, mapping spec, restricted expressions, apply, unify, splits, task data."""
