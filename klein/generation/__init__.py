"""Generation: pipeline loading, the tiny model, the engine, the prompt cache and the ZeroGPU job (torch lives here)."""
