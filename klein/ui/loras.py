"""A tab's LoRA picker: up to MAX_LORAS rows, each a file of the LoRA folder (--lora-dir) or a hub id
typed in, and a scale. The browser composes the rows into the endpoint's `loras` parameter,
[{"path", "scale"}], as Generate is clicked (COMPOSE_JS), so API and MCP callers send the same list."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import presets
from .inputs import parameter_slider

NO_LORA = ("none", "")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name: a repository on the hub
SUFFIX = ".safetensors"
# The rows' values, (file, hub id or path, scale) per row, as the endpoint's list: a typed path wins over the file.
COMPOSE_JS = """(values) => {
  const loras = [];
  for (let i = 0; i + 2 < values.length; i += 3) {
    const path = String(values[i + 1] || '').trim() || values[i] || '';
    if (path) loras.push({path: path, scale: Number(values[i + 2])});
  }
  return loras;
}"""


@dataclass
class LoraPicker:
    """The rows of one tab's picker and the hidden list they compose into (the endpoint's input)."""

    files: list[gr.Dropdown]
    paths: list[gr.Textbox]
    scales: list[gr.Slider]
    value: gr.JSON

    def rows(self) -> list[gr.components.Component]:
        """(file, path, scale) per row, flat: what COMPOSE_JS reads."""
        return [c for row in zip(self.files, self.paths, self.scales) for c in row]

    def restore_updates(self, loras: Any, available: list[str]) -> tuple[dict, list[str]]:
        """The rows filled from recorded LoRAs (history or image metadata), the rest emptied; and the
        recorded paths that this server cannot offer (neither in its LoRA folder nor a hub id)."""
        rows, missing = lora_rows(loras, available)
        updates: dict = {}
        for index, (file, path, scale) in enumerate(rows):
            updates.update({self.files[index]: file, self.paths[index]: path, self.scales[index]: scale})
        return updates, missing


def lora_choices(engine: Any) -> list[str]:
    """The adapters of the engine's LoRA folder, by the name a request gives (none when it has no library)."""
    library = getattr(engine, "loras", None)
    if library is None:
        from ..generation.loras import LoraLibrary

        library = LoraLibrary(engine.settings.lora_dir)
    return [info.name for info in library.available()]


def lora_rows(loras: Any, available: list[str]) -> tuple[list[tuple[str, str, float]], list[str]]:
    """(file, typed path, scale) for each picker row from recorded LoRAs: a file of the LoRA folder in the
    menu, a hub id in the text box; others are left out and returned as missing. Pure."""
    rows, missing = [], []
    for lora in loras if isinstance(loras, list) else []:
        path, scale = (lora.get("path"), lora.get("scale", 1.0)) if isinstance(lora, dict) else (None, None)
        if not isinstance(path, str) or not isinstance(scale, (int, float)) or len(rows) == presets.MAX_LORAS:
            continue
        scale = min(presets.LORA_SCALE.maximum, max(presets.LORA_SCALE.minimum, float(scale)))
        file = next((name for name in (path, path + SUFFIX) if name in available), None)
        if file:
            rows.append((file, "", scale))
        elif HUB_ID.fullmatch(path) and not path.endswith(SUFFIX):  # a file name is a local one
            rows.append(("", path, scale))
        else:
            missing.append(path)
    rows += [("", "", float(presets.LORA_SCALE.default))] * (presets.MAX_LORAS - len(rows))
    return rows, missing


def lora_picker(workflow: str, available: list[str]) -> LoraPicker:
    """The "LoRA" accordion of a tab."""
    files, paths, scales = [], [], []
    with gr.Accordion("LoRA", open=False, elem_id=f"{workflow}-loras"):
        gr.Markdown(f"Up to {presets.MAX_LORAS} adapters: a file of this server's LoRA folder (`--lora-dir`), or "
                    "a Hugging Face hub id (`owner/name`) typed in. Scale 1 applies one as trained, 0 turns it off.",
                    elem_classes=["lora-note"])
        for index in range(presets.MAX_LORAS):
            with gr.Row(equal_height=True):
                files.append(gr.Dropdown([NO_LORA, *available], value="", label=f"LoRA {index + 1}", min_width=160,
                                         elem_id=f"{workflow}-lora-{index}-file", scale=2))
                paths.append(gr.Textbox(label="or a hub id / path", placeholder="owner/name", max_lines=1,
                                        min_width=140, elem_id=f"{workflow}-lora-{index}-path", scale=2))
                scales.append(parameter_slider("lora_scale", value=float(presets.LORA_SCALE.default), step=0.05,
                                               label="Scale", min_width=140, elem_id=f"{workflow}-lora-{index}-scale",
                                               scale=2))
    value = gr.JSON(label="LoRAs", visible=False)
    return LoraPicker(files, paths, scales, value)


def refresh_choices(pickers: list[LoraPicker], engine: Any) -> tuple[Any, list[gr.Dropdown]]:
    """(the page-load function that re-lists the LoRA folder, the menus it updates): adapters added after
    start-up appear on the next page load."""
    menus = [menu for picker in pickers for menu in picker.files]

    def list_loras() -> list:
        """Offer the adapters now in the LoRA folder."""
        choices = [NO_LORA, *lora_choices(engine)]
        return [gr.Dropdown(choices=choices) for _ in menus]

    return list_loras, menus
