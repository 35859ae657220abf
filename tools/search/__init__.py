"""The search space: actions, the tree as data, code generation and checks, model templates."""
