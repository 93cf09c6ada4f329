"""Task -> model -> ordered backends, with circuit breaking and fallback."""
