"""The protocols editors already speak, served by the same Gateway as our own API.

One module per protocol (openai, ollama, tabby), each with its own request models and ONE
error mapping (its route class), plus `shared` for what they have in common: which model
names a client may use, how to read a body, and when a prompt is already a FIM prompt.
"""
