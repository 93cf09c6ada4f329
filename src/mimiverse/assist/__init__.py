"""Chat grounded in the indexed code: ask, explain, debug (and their prompts)."""
