"""Fixes to Gradio 6.31's MCP server, so every workflow is a callable MCP tool that describes itself
truthfully and answers a bad call with a short error naming the argument."""

from __future__ import annotations

import json
import re
from functools import partial
from typing import Any

_INTERNAL_HEADERS: dict[str, str] = {}


def _client_with_headers(client_class: Any, *args: Any, headers: dict | None = None, **kwargs: Any) -> Any:
    return client_class(*args, headers={**(headers or {}), **_INTERNAL_HEADERS}, **kwargs)

# What Gradio's MCP server tells clients a file parameter takes; it turns such strings into uploads.
MCP_FILE_FORMAT = "Gradio File Input - a http or https url to a file"
MCP_MAX_GALLERY_ITEMS = 64
IMAGE_SOURCES = "an http(s) URL (a public address) or a data URI (data:image/png;base64,...)"
# Replaces Gradio's sentence, which sends agents to an upload_file_to_gradio tool this server does not have.
FILE_TOOL_DESCRIPTION = f" Each image is given as {IMAGE_SOURCES}."
IMAGE_ITEM = '{"image": "<http(s) URL or data URI>"}'
LONG_TOKEN = re.compile(r"\S{120,}")


def shorten(text: str, limit: int = 600) -> str:
    """`text` with each very long token (base64, a data URI) cut to its start and its length."""
    text = LONG_TOKEN.sub(lambda m: f"{m.group()[:40]}… ({len(m.group()):,} characters)", text)
    return text if len(text) <= limit else text[:limit] + "…"


def field_name(path: list[Any]) -> str:
    """["images", 0, "image"] -> "images[0].image"."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "arguments"


def describe(value: Any) -> str:
    """A value as an error message may show it: never more than a few dozen characters of it."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else f"a string of {len(value):,} characters ({value[:32]!r}…)"
    return f"{type(value).__name__} {shorten(json.dumps(value, default=str), 120)}"


def argument_problem(arguments: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """The first way `arguments` break the tool's input schema, as "field: what is expected, got what", or None."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(arguments),
                    key=lambda e: [(0, part) if isinstance(part, int) else (1, part) for part in e.absolute_path])
    if not errors:
        return None
    error = errors[0]  # the first argument at fault, and within it the first item
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = re.match(r"'([^']+)'", error.message)
        return f"{field_name(path + [missing.group(1) if missing else '?'])}: is missing"
    if error.validator == "type":
        expected = error.schema
        if "image" in expected.get("properties", {}):
            want = IMAGE_ITEM
        elif "image" in expected.get("items", {}).get("properties", {}):
            want = f"a list of {IMAGE_ITEM}"
        else:
            want = f"of type {expected.get('type')}"
        return f"{field_name(path)}: must be {want}, got {describe(error.instance)}"
    return f"{field_name(path)}: {shorten(error.message, 300)}"


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
        image = {"type": "string", "format": MCP_FILE_FORMAT, "description": f"the image: {IMAGE_SOURCES}"}
        properties[name] = {"type": "array", "description": prop.get("description", ""),
                            "items": {"type": "object", "properties": {"image": image}, "required": ["image"]}}
        file_positions = [p for p in file_positions if p[:1] != [name]]
        file_positions += [[name, index, "image"] for index in range(MCP_MAX_GALLERY_ITEMS)]
    return {**schema, "properties": properties}, file_positions


LORA_ITEM = {"type": "object", "required": ["path"], "additionalProperties": False, "properties": {
    "path": {"type": "string", "description": "a .safetensors file or folder in the server's LoRA folder, or a hub id"},
    "scale": {"type": "number", "description": "-1..4; 1 as trained, 0 off"},
    "weight_name": {"type": "string", "description": "which .safetensors file of a hub repository or folder"}}}


def mcp_loras_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An MCP tool's input schema with `loras` as the list of {path, scale} it is (Gradio's JSON input
    says only "any valid json", with an empty type)."""
    properties = dict(schema.get("properties", {}))
    if "loras" in properties:
        described = properties["loras"].get("description", "")
        properties["loras"] = {"type": "array", "items": LORA_ITEM, "description": described}
    return {**schema, "properties": properties}


def file_argument_problem(arguments: Any, file_positions: list[list[Any]]) -> str | None:
    """A file argument that is neither a URL nor a data URI, named (Gradio's own error echoes the whole value)."""
    for path in file_positions:
        value = arguments
        for part in path:
            ok = isinstance(value, dict) and part in value or isinstance(value, list) and isinstance(part, int) \
                and part < len(value)
            value = value[part] if ok else None
        if isinstance(value, str) and not value.startswith(("data:", "http://", "https://")):
            return f"{field_name(path)}: must be {IMAGE_SOURCES}, got {describe(value)}"
    return None


def mcp_outputs(data: list[Any], is_file: Any) -> list[Any]:
    """A tool's outputs as MCP content items: a gallery output (every image of a batch) in place of the
    single image output (its first image), so each image comes once, in order; a dict output (the
    generation info) as JSON text rather than a Python repr. `is_file` tells a file output."""
    galleries = [item for item in data if isinstance(item, list) and item
                 and all(isinstance(entry, dict) and is_file(entry.get("image")) for entry in item)]
    images = [entry["image"] for gallery in galleries for entry in gallery]
    rest = [item for item in data if not any(item is gallery for gallery in galleries)
            and not (images and is_file(item))]
    return images + [json.dumps(item) if isinstance(item, dict) and not is_file(item) else item for item in rest]


def _guard_call_tool(server: Any) -> None:
    """Check a call's arguments before Gradio sees them, and keep every error short."""
    from mcp import types

    handle = server.request_handlers[types.CallToolRequest]

    async def call_tool(request: types.CallToolRequest) -> types.ServerResult:
        tool = await server._get_cached_tool_definition(request.params.name)
        problem = tool and argument_problem(request.params.arguments or {}, tool.inputSchema)
        result = server._make_error_result(problem) if problem else await handle(request)
        if getattr(result.root, "isError", False):
            result.root.content = [types.TextContent(type="text", text=shorten(c.text))
                                   for c in result.root.content if c.type == "text"]
        return result

    server.request_handlers[types.CallToolRequest] = call_tool


def fix_gradio_mcp_server(internal_key: str | None = None) -> None:
    """Fixes to Gradio 6.31's MCP server, applied once:

    - a client that sends no progress token got one text repr of a multi-output result
      (_execute_tool_without_progress returns [result]); it gets each output, the images as image content
      (every image of the batch once, from the gallery output: mcp_outputs), and a dict output (the
      generation info) as JSON text rather than a Python repr;
    - a Gallery parameter's schema had dangling $refs, so multi_reference_image could not be called
      (mcp_gallery_schema); `loras` said "any valid json" (mcp_loras_schema);
    - file tools told agents to use an upload_file_to_gradio tool that does not exist;
    - a malformed argument got an error echoing the whole value (kilobytes of base64) without its name;
    and, with API keys set, its loopback client (it calls the Gradio API over HTTP) carries the
    process's internal key (`internal_key`), since Gradio gives it no way to log in.
    """
    import gradio.mcp
    from anyio.to_thread import run_sync
    from gradio.mcp import GradioMCPServer
    from gradio_client.utils import is_file_obj_with_meta

    global _INTERNAL_HEADERS
    _INTERNAL_HEADERS = {"Authorization": f"Bearer {internal_key}"} if internal_key else {}
    if getattr(GradioMCPServer, "_klein_fixed", False):
        return
    input_schema = GradioMCPServer.get_input_schema
    create_client = GradioMCPServer._get_or_create_client
    create_server = GradioMCPServer.create_mcp_server
    postprocess = GradioMCPServer.postprocess_output_data
    to_filedata = GradioMCPServer.convert_strings_to_filedata

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
        schema, file_positions = mcp_gallery_schema(*input_schema(self, tool_name, parameters))
        return mcp_loras_schema(schema), file_positions

    def create_mcp_server(self):
        server = create_server(self)
        _guard_call_tool(server)
        return server

    def postprocess_output_data(self, data: Any, root_url: str):
        return postprocess(self, mcp_outputs(list(data), is_file_obj_with_meta), root_url)

    def convert_strings_to_filedata(self, value: Any, file_positions: list[list[Any]]) -> Any:
        problem = file_argument_problem(value, file_positions)
        if problem:
            raise ValueError(problem)
        return to_filedata(self, value, file_positions)

    GradioMCPServer._execute_tool_without_progress = execute_without_progress
    GradioMCPServer.get_input_schema = get_input_schema
    GradioMCPServer._get_or_create_client = get_or_create_client
    GradioMCPServer.create_mcp_server = create_mcp_server
    GradioMCPServer.postprocess_output_data = postprocess_output_data
    GradioMCPServer.convert_strings_to_filedata = convert_strings_to_filedata
    GradioMCPServer._file_data_tool_description = property(lambda self: FILE_TOOL_DESCRIPTION)
    GradioMCPServer._klein_fixed = True
