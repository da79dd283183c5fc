"""Two fixes to Gradio 6.31's MCP server, so every workflow is callable as an MCP tool."""

from __future__ import annotations

from functools import partial
from typing import Any

_INTERNAL_HEADERS: dict[str, str] = {}


def _client_with_headers(client_class: Any, *args: Any, headers: dict | None = None, **kwargs: Any) -> Any:
    return client_class(*args, headers={**(headers or {}), **_INTERNAL_HEADERS}, **kwargs)

# What Gradio's MCP server tells clients a file parameter takes; it turns such strings into uploads.
MCP_FILE_FORMAT = "Gradio File Input - a http or https url to a file"
MCP_MAX_GALLERY_ITEMS = 64


def mcp_gallery_schema(schema: dict[str, Any], file_positions: list[list[Any]]) -> tuple[dict, list[list[Any]]]:
    """An MCP tool's input schema with each Gallery parameter as a plain list of {"image": url}.

    Gradio 6.31 nests a Gallery's `$defs` inside its property while the `$ref`s point at the root,
    so MCP clients' schema validation fails, and the file positions it records are schema paths
    that never match a value. Each item here is {"image": an http(s) URL or a data URI}, the shape
    gradio_client sends, with one file position per item.
    """
    properties = dict(schema.get("properties", {}))
    for name, prop in properties.items():
        if "GalleryImage" not in prop.get("$defs", {}):
            continue
        image = {"type": "string", "format": MCP_FILE_FORMAT,
                 "description": "the image: an http(s) URL or a data URI (data:image/png;base64,...)"}
        properties[name] = {"type": "array", "description": prop.get("description", ""),
                            "items": {"type": "object", "properties": {"image": image}, "required": ["image"]}}
        file_positions = [p for p in file_positions if p[:1] != [name]]
        file_positions += [[name, index, "image"] for index in range(MCP_MAX_GALLERY_ITEMS)]
    return {**schema, "properties": properties}, file_positions


def fix_gradio_mcp_server(internal_key: str | None = None) -> None:
    """Two fixes to Gradio 6.31's MCP server, applied once:

    - a client that sends no progress token got one text repr of a multi-output result
      (_execute_tool_without_progress returns [result]); it gets each output, the image as image content;
    - a Gallery parameter's schema had dangling $refs, so multi_reference_image could not be called
      (mcp_gallery_schema);
    and, with API keys set, its loopback client (it calls the Gradio API over HTTP) carries the
    process's internal key (`internal_key`), since Gradio gives it no way to log in.
    """
    import gradio.mcp
    from anyio.to_thread import run_sync
    from gradio.mcp import GradioMCPServer

    global _INTERNAL_HEADERS
    _INTERNAL_HEADERS = {"Authorization": f"Bearer {internal_key}"} if internal_key else {}
    if getattr(GradioMCPServer, "_klein_fixed", False):
        return
    input_schema = GradioMCPServer.get_input_schema
    create_client = GradioMCPServer._get_or_create_client

    def get_or_create_client(self):
        if self._client_instance is not None or not _INTERNAL_HEADERS:
            return create_client(self)
        client_class = gradio.mcp.Client
        gradio.mcp.Client = partial(_client_with_headers, client_class)
        try:
            return create_client(self)
        finally:
            gradio.mcp.Client = client_class

    async def execute_without_progress(self, job: Any) -> list[Any]:
        result = await run_sync(job.result)
        return list(result) if isinstance(result, tuple) else [result]

    def get_input_schema(self, tool_name: str, parameters: dict[str, str] | None = None):
        return mcp_gallery_schema(*input_schema(self, tool_name, parameters))

    GradioMCPServer._execute_tool_without_progress = execute_without_progress
    GradioMCPServer.get_input_schema = get_input_schema
    GradioMCPServer._get_or_create_client = get_or_create_client
    GradioMCPServer._klein_fixed = True
