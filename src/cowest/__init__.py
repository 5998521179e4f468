"""cowest: weak-strong LLM collaboration aligned by collaborative preferences.

A small fine-tunable *weak* model drafts (explanation + initial answer); a black-box *strong* model
behind an OpenAI-compatible API refines the draft. The weak model is aligned with DPO on preference
pairs that say which drafts actually helped the strong model (Jiao et al., ACL 2025).
"""

__version__ = "0.1.0"
