"""reczero-kit: teach an LLM to reason before it recommends (RecZero / RecOne with GRPO)."""

__version__ = "0.1.0"
