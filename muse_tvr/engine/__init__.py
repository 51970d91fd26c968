"""The reference MUSE engine: config, CLIP encoders, tokenizer, pyramid, Mamba blocks, model, weights."""
