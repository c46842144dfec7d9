"""Model loaders: GGUF and Hugging Face folders to a ModelConfig, weights and tokenizer."""
