"""The Gradio app: page, Gradio API and MCP over the engine (the only wing that imports gradio)."""
