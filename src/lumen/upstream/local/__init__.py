"""In-process backends: the deterministic echo model, llama.cpp and MiniLM embeddings."""
