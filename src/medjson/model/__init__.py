"""Models: loading from a hub id, folder or GGUF file, batched and constrained generation, lineage of
trained weights, and the one answering path every stage and command uses."""
