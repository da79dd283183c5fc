"""Several images per request (num_images 1..4) in the REST API: running a request through the engine, choosing
how /v1/generate answers from its Accept header, and building the answers that carry several images.

How /v1/generate answers (ACCEPT_RULES, also on the route's OpenAPI page): the media ranges of Accept are read
in the order given (q-values are not weighed, but a range with q=0 is refused, so skipped) and the first one
the route can answer wins:
    image/png, image/jpeg, image/webp   the image itself, with one image (with several, skipped)
    application/json, application/*, */*   JSON: one image's GenerateResponse, or several images' BatchResponse
    multipart/mixed, multipart/*   multipart/mixed, one part per image (with one image too)
With none of them: JSON for one image (an absent Accept included); for several, JSON when Accept is absent or
empty, else a 406 naming num_images and Accept.
"""

from __future__ import annotations

import base64
import secrets
from urllib.parse import quote

from fastapi import HTTPException

from ..generation.result import GenerationBatch, GenerationResult
from ..output.encode import EXTENSIONS
from ..presets import MAX_NUM_IMAGES, batch_seed
from ..request import GenerationRequest
from .schemas import BatchImage, BatchResponse

JSON, MULTIPART = "json", "multipart"
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
JSON_RANGES = ("application/json", "application/*", "*/*")
MULTIPART_RANGES = ("multipart/mixed", "multipart/*")
ACCEPT_RULES = """\
How the answer is chosen: the media types of `Accept` are read in the order given (q-values are not weighed;
one with q=0 is skipped) and the first this route can answer wins. `image/png`, `image/jpeg` or `image/webp`:
the image itself (one image only; with `num_images` over 1 these are skipped). `application/json`,
`application/*` or `*/*`: JSON, as GenerateResponse for one image and as BatchResponse (`images`, `seeds`,
`moderated_seeds`) for more. `multipart/mixed` or `multipart/*`: a multipart/mixed body, one part per image,
each with its own `Content-Type` and `X-Klein-Seed`. With none of these: JSON for one image; for more, JSON if
`Accept` is absent or empty and a 406 otherwise (for example `Accept: image/png` with `num_images` 3). An image
type chosen by Accept is the output format when `output_format` is left out, and a 406 when it names another."""


def run(engine, request: GenerationRequest, **kwargs) -> GenerationBatch:
    """The request's images: engine.generate for one (the call REST has always made, so one image is served as
    before) and engine.generate_batch for more."""
    if request.num_images == 1:
        return GenerationBatch([engine.generate(request, **kwargs)])
    return engine.generate_batch(request, **kwargs)


def first_seed(batch: GenerationBatch) -> int:
    """The batch's seed, image 0's, whether or not moderation kept that image: image i used seed + i."""
    seeds = set(batch.seeds) | set(batch.moderated)
    return next(s for s in seeds if {batch_seed(s, i) for i in range(len(seeds))} == seeds)


def negotiate(accept: str | None, num_images: int) -> str:
    """What /v1/generate answers with, by the module's rules: JSON, MULTIPART or an image format (png, jpeg,
    webp); a 406 when several images are asked for and Accept allows neither JSON nor multipart/mixed."""
    several = 1 < num_images <= MAX_NUM_IMAGES  # a count out of range is GenerationRequest's 422, not a 406
    for media in _media_ranges(accept):
        if media in IMAGE_TYPES and not several:
            return IMAGE_TYPES[media]
        if media in JSON_RANGES:
            return JSON
        if media in MULTIPART_RANGES:
            return MULTIPART
    if several and accept and accept.strip():
        raise HTTPException(406, f"num_images is {num_images}: several images come as application/json or "
                                 f"multipart/mixed, and Accept: {accept[:200]} allows neither (image/* answers "
                                 "only num_images 1)")
    return JSON


def _media_ranges(accept: str | None) -> list[str]:
    """Accept's media ranges in order, lower-cased, without those of q=0 (refused)."""
    ranges = []
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = next((p.partition("=")[2].strip() for p in params if p.lower().startswith("q=")), "1")
        if media and not _is_zero(quality):
            ranges.append(media.lower())
    return ranges


def _is_zero(quality: str) -> bool:
    try:
        return float(quality) == 0
    except ValueError:
        return False


def headers(batch: GenerationBatch) -> dict[str, str]:
    """The X-Klein-* headers of an answer with the images themselves (an image, or multipart/mixed) and of a
    batch's JSON: the seed, the images' seeds, the seeds left out by moderation, the workflow, any rewrite."""
    result = batch.results[0]
    fields = {"X-Klein-Seed": str(first_seed(batch)), "X-Klein-Seeds": ",".join(map(str, batch.seeds)),
              "X-Klein-Workflow": result.workflow.value}
    if batch.moderated:
        fields["X-Klein-Moderated-Seeds"] = ",".join(map(str, batch.moderated))
    if result.enhanced_prompt is not None:  # a header carries Latin-1 text only: percent-encoded UTF-8
        fields["X-Klein-Enhanced-Prompt"] = quote(result.enhanced_prompt, safe="")
    return fields


def batch_json(batch: GenerationBatch) -> dict:
    """Several images' JSON answer (BatchResponse): each image in base64 with its seed, and what they share."""
    result = batch.results[0]
    images = [BatchImage(data=base64.b64encode(r.data).decode(), content_type=r.mime_type, seed=r.seed,
                         width=r.width, height=r.height) for r in batch.results]
    return BatchResponse(
        images=images, seed=first_seed(batch), seeds=batch.seeds, moderated_seeds=batch.moderated,
        width=result.width, height=result.height, model=result.model, workflow=result.workflow.value,
        output_format=result.output_format, timings_ms=result.timings_ms, loras=result.loras or None,
        enhanced_prompt=result.enhanced_prompt).model_dump(exclude_none=True)


def multipart(results: list[GenerationResult]) -> tuple[bytes, str]:
    """A multipart/mixed body (RFC 2046), one part per image with its Content-Type and X-Klein-Seed; and its
    Content-Type, with the boundary."""
    boundary = _boundary(results)
    parts = []
    for result in results:
        name = f"klein-{result.seed}.{EXTENSIONS[result.output_format]}"
        head = (f"--{boundary}\r\nContent-Type: {result.mime_type}\r\nContent-Length: {len(result.data)}\r\n"
                f'Content-Disposition: inline; filename="{name}"\r\nX-Klein-Seed: {result.seed}\r\n\r\n')
        parts.append(head.encode() + result.data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/mixed; boundary={boundary}"


def _boundary(results: list[GenerationResult]) -> str:
    while True:  # 128 random bits: found in an image's bytes about never, but checked all the same
        boundary = "klein-" + secrets.token_hex(16)
        if not any(boundary.encode() in r.data for r in results):
            return boundary

