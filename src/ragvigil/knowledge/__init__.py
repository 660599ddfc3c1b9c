"""Knowledge: loading, chunking, tokenizing, embedding, indexing and hybrid retrieval."""
