"""How agents decide: builtin (offline, deterministic) and LLM policies, and the LLM plumbing."""
