"""retroformer: Retrospective LLM agents with policy-gradient optimisation, as a nightly pipeline."""
__version__ = "0.1.0"
