"""Planning the next experiment (SPEC section 11): which genes to perturb next, and why.

- ``candidates``: the genes a next experiment could perturb (or a user's list, checked);
- ``ensemble``: gene embeddings, a bootstrap ridge ensemble, per-candidate epistemic uncertainty;
- ``pathways``: gene sets (.gmt/.json) mapped onto the task's genes;
- ``rerank``: the shortlist and the selection rules (builtin re-rank, BALD-style, IterPert-style);
- ``plan``: the plan's data model and its Markdown/CSV renderings.
"""
