"""The two models: the weak model we fine-tune (transformers + PEFT) and the strong black-box model
behind an OpenAI-compatible chat API (with its SQLite cache, one retry layer and usage accounting)."""
