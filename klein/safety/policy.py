"""Prompt and image moderation for a safety tolerance 0 (strictest) .. 5 (most permissive) (pure: no torch).

Prompts are matched against the reviewed term list (terms.py: categories sexual, violence, hate,
self_harm with severities 1..3, plus a minors list); images go through a nudity detector
(nudity.py). POLICY says, per tolerance, the highest prompt severity allowed in each category and
the detector score at which each image group is blocked. A sexual term together with a minors term
is refused at every tolerance. Everything runs offline, in well under a millisecond per prompt and
a few tens of milliseconds per image. docs/safety.md explains the policy to users.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from ..config import safety_settings
from ..errors import ContentModerated, RequestModerated
from ..presets import MAX_SAFETY_TOLERANCE as MAX_TOLERANCE
from .nudity import GROUP_ORDER, Detection, Detector, NudeNetDetector
from .terms import Match, TermList, load_terms

log = logging.getLogger(__name__)

CATEGORIES = ("sexual", "violence", "hate", "self_harm")


@dataclass(frozen=True)
class Level:
    """What one tolerance allows: max prompt severity per category (0 = none), image block score per group."""

    prompt: Mapping[str, int]
    image: Mapping[str, float | None]  # None: never blocked


def _level(prompt: tuple[int, int, int, int], image: tuple[float | None, ...]) -> Level:
    return Level(dict(zip(CATEGORIES, prompt)), dict(zip(("suggestive", "nudity", "explicit"), image)))


#               sexual violence hate self_harm   suggestive nudity explicit
POLICY: dict[int, Level] = {
    0: _level((0, 0, 0, 0), (0.50, 0.35, 0.25)),
    1: _level((1, 1, 0, 0), (0.70, 0.45, 0.35)),
    2: _level((1, 2, 1, 1), (None, 0.60, 0.45)),
    3: _level((2, 2, 1, 1), (None, 0.85, 0.60)),
    4: _level((3, 3, 2, 2), (None, None, 0.80)),
    5: _level((3, 3, 3, 3), (None, None, None)),
}
# Detections at or above this score are logged when a tolerance lets them through.
LOG_LET_THROUGH_SCORE = 0.5


# --- the moderator ---------------------------------------------------------------------------------


class Moderator:
    """Checks prompts, reference images and generated images against POLICY for a tolerance.

    Args:
        max_tolerance: the deployment's cap; a request above it is clamped down to it (not refused).
        image_moderation: False turns the image checks off (prompts are always checked).
        detector: the nudity detector; NudeNet 320n by default, loaded on first use.
        terms: the compiled term list; data/safety_terms.json by default.
    """

    def __init__(self, max_tolerance: int = MAX_TOLERANCE, image_moderation: bool = True,
                 detector: Detector | None = None, terms: TermList | None = None,
                 policy: Mapping[int, Level] = POLICY):
        if max_tolerance not in policy:
            raise ValueError(f"max safety tolerance must be 0..{MAX_TOLERANCE}, got {max_tolerance!r}")
        if not image_moderation:
            log.warning("image moderation is off (KLEIN_IMAGE_MODERATION=0): generated images are not checked")
        self.max_tolerance = max_tolerance
        self.image_moderation = image_moderation
        self.detector = detector if detector is not None else NudeNetDetector()
        self.terms = terms if terms is not None else load_terms()
        self.policy = policy

    def effective_tolerance(self, requested: int) -> int:
        """The tolerance actually applied: the request's (validated by GenerationRequest), clamped to the
        deployment's cap. The check_* methods clamp too, so a caller cannot go past the cap."""
        return min(requested, self.max_tolerance)

    def check_prompt(self, prompt: str, tolerance: int) -> None:
        """Raise RequestModerated when the prompt has a term above what the tolerance allows."""
        tolerance = self.effective_tolerance(tolerance)
        matches, near_minors = self.terms.scan(prompt)
        sexual = [m for m in near_minors if m.category == "sexual"]
        if sexual:
            self._check_minors(prompt, sexual[0], near_minors)
        allowed = self.policy[tolerance].prompt
        scored = [m for m in matches if m.category in allowed]
        refused = [m for m in scored if m.severity > allowed[m.category]]
        if refused:
            worst = refused[0]  # matches come most severe first
            log.info("prompt refused: category=%s severity=%d term=%r tolerance=%d",
                     worst.category, worst.severity, worst.term, tolerance)
            limit = allowed[worst.category]
            allows = f"allows up to {limit}" if limit else f"allows no {worst.category} terms"
            raise RequestModerated(f"the prompt matched category {worst.category} at severity {worst.severity}; "
                                   f"tolerance {tolerance} {allows}")
        for m in scored:
            log.log(_let_through_level(tolerance), "prompt let through: category=%s severity=%d term=%r "
                    "tolerance=%d", m.category, m.severity, m.term, tolerance)

    def check_reference(self, image: Image.Image, tolerance: int, field: str) -> None:
        """Raise RequestModerated (naming `field`, e.g. "images[1]") when a reference image is flagged."""
        flagged = self._flagged(image, tolerance, f"reference {field}")
        if flagged:
            raise RequestModerated(f"{field} was flagged as {flagged}")

    def check_output(self, image: Image.Image, tolerance: int) -> None:
        """Raise ContentModerated when the generated image is flagged."""
        flagged = self._flagged(image, tolerance, "output")
        if flagged:
            raise ContentModerated(f"the generated image was flagged as {flagged}")

    def _check_minors(self, prompt: str, sexual: Match, matches: list[Match]) -> None:
        minors = [m for m in matches if m.category == "minors"]
        if minors or self.terms.mentions_minor_age(prompt):
            term = minors[0].term if minors else "an age under 18"
            log.warning("prompt refused: sexual term %r with minors term %r (every tolerance)", sexual.term, term)
            raise RequestModerated("the prompt combines sexual content with a reference to minors; "
                                   "this is refused at every tolerance")

    def _flagged(self, image: Image.Image, tolerance: int, what: str) -> str | None:
        """The reason the image is blocked at this tolerance ("nudity (score 0.81); ..."), or None."""
        tolerance = self.effective_tolerance(tolerance)
        if not self.image_moderation:
            return None
        thresholds = self.policy[tolerance].image
        detections = [d for d in self.detector.detect(image) if d.group in thresholds]
        blocked = [d for d in detections if _blocks(d, thresholds)]
        if blocked:
            worst = min(blocked, key=lambda d: (GROUP_ORDER.index(d.group), -d.score))
            log.info("%s refused: %s %s score=%.2f tolerance=%d", what, worst.group, worst.label, worst.score,
                     tolerance)
            return (f"{worst.group} (score {worst.score:.2f}); tolerance {tolerance} blocks {worst.group} "
                    f"at {thresholds[worst.group]:.2f} or more")
        for d in detections:
            if d.score >= LOG_LET_THROUGH_SCORE:
                log.log(_let_through_level(tolerance), "%s let through: %s %s score=%.2f tolerance=%d", what,
                        d.group, d.label, d.score, tolerance)
        return None


def _blocks(detection: Detection, thresholds: Mapping[str, float | None]) -> bool:
    threshold = thresholds[detection.group]
    return threshold is not None and detection.score >= threshold


def _let_through_level(tolerance: int) -> int:
    return logging.WARNING if tolerance == MAX_TOLERANCE else logging.INFO


def moderator_from_env(environ: Mapping[str, str] | None = None) -> Moderator:
    """A Moderator set up from KLEIN_MAX_SAFETY_TOLERANCE and KLEIN_IMAGE_MODERATION (config.safety_settings)."""
    values = safety_settings(os.environ if environ is None else environ)
    return Moderator(max_tolerance=values["max_safety_tolerance"], image_moderation=values["image_moderation"])
