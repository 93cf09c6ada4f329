"""Fill-in-the-middle: prompt templates per model family, prompt trimming, and the
post-processing that turns a raw model answer into the text an editor should insert."""
