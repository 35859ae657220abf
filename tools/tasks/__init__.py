"""Task kinds: each one object (split, unit naming, leak rule, integrity check, inner split) in a
module of its own, found through ``registry.task_kind(name)``."""
