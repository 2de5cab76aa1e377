"""Glue to serving and evaluation engines (vllm.py: the vLLM plugin). Nothing here is imported by
the library itself: each module is loaded by its engine's entry point."""
