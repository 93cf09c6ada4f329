"""Repository indexing and hybrid (lexical + vector) code search."""
