"""Stage 1: text to token ids (corpus, tokenizer, token shards)."""
