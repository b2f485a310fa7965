"""hrlaif-ray core: Hybrid RL from AI Feedback (arXiv 2403.08309) without Ray.

Everything in this package imports and runs without a Ray cluster: data schemas and readers, categories,
models, config. The Ray actors live in `actors/` and the launch code in `cluster/`; arrows point inward only.
"""

__version__ = "0.1.0"
