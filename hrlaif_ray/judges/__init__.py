"""Local judges: the simulated judge (an OpenAI-compatible server whose biases are explicit) and launchers."""
