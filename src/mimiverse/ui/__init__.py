"""The page at `/`: plain HTML and JavaScript served as package data (no build step)."""
