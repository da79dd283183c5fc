"""Image moderation: NudeNet on synthetic images, the policy thresholds, the cap and the off switch."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from klein.errors import ContentModerated, RequestModerated
from klein.safety.nudity import Detection, NudeNetDetector, decode, nms, preprocess
from klein.safety.policy import MAX_TOLERANCE, Moderator, moderator_from_env

SKIN, SHADE, NIPPLE = (224, 172, 140), (190, 130, 100), (170, 95, 85)


def drawn_torso(side: int = 640) -> Image.Image:
    """A crude drawing of a bare female torso (flat skin tones, two breasts, blurred), which NudeNet flags."""
    image = Image.new("RGB", (side, side), (70, 90, 120))
    draw = ImageDraw.Draw(image)
    s = side / 640

    def ellipse(box, fill):
        draw.ellipse([v * s for v in box], fill=fill)

    draw.rectangle([280 * s, 40 * s, 360 * s, 140 * s], fill=SKIN)  # neck
    ellipse([255, -40, 385, 110], SKIN)  # head, cut off at the top
    draw.polygon([(150 * s, 150 * s), (490 * s, 150 * s), (450 * s, side), (190 * s, side)], fill=SKIN)
    ellipse([120, 130, 220, 260], SKIN)  # shoulders
    ellipse([420, 130, 520, 260], SKIN)
    for cx in (245, 395):
        ellipse([cx - 85, 220, cx + 85, 400], SHADE)
        ellipse([cx - 80, 215, cx + 80, 390], SKIN)
        ellipse([cx - 14, 300, cx + 14, 328], NIPPLE)
    ellipse([312, 520, 328, 540], SHADE)  # navel
    return image.filter(ImageFilter.GaussianBlur(6 * s))


def drawn_scene() -> Image.Image:
    image = Image.new("RGB", (800, 600), (135, 206, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 400, 800, 600], fill=(40, 160, 60))
    draw.ellipse([600, 50, 700, 150], fill=(255, 220, 0))
    draw.polygon([(200, 400), (300, 250), (400, 400)], fill=(150, 75, 0))
    draw.rectangle([220, 400, 380, 500], fill=(200, 100, 50))
    return image


def benign_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 512, dtype=np.uint8)
    gradient = np.stack([np.tile(ramp, (512, 1)), np.tile(ramp[:, None], (1, 512)), np.full((512, 512), 128, np.uint8)],
                        axis=-1)
    skin_noise = (np.array(SKIN) + rng.normal(0, 20, (384, 384, 3))).clip(0, 255).astype(np.uint8)
    torso = drawn_torso()
    ImageDraw.Draw(torso).rectangle([140, 200, 500, 640], fill=(40, 60, 160))  # a shirt over it
    return {
        "noise": Image.fromarray(rng.integers(0, 256, (384, 384, 3), dtype=np.uint8)),
        "gradient": Image.fromarray(gradient),
        "skin_noise": Image.fromarray(skin_noise),
        "black": Image.new("RGB", (256, 256)),
        "white": Image.new("RGB", (300, 200), "white"),
        "skin_colour": Image.new("RGB", (256, 256), SKIN),
        "scene": drawn_scene(),
        "dressed_torso": torso.filter(ImageFilter.GaussianBlur(3)),
        "rgba_tall": Image.new("RGBA", (128, 900), (200, 30, 30, 100)),
    }


@pytest.fixture(scope="module")
def detector() -> NudeNetDetector:
    return NudeNetDetector()


@pytest.fixture(scope="module")
def moderator(detector) -> Moderator:
    return Moderator(detector=detector)


class StubDetector:
    """A stub, not a model: returns the detections it was given, to test the thresholds exactly."""

    def __init__(self, *detections: Detection):
        self.detections = list(detections)
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        return self.detections


@pytest.mark.parametrize("name", list(benign_images()))
def test_benign_images_pass_at_every_tolerance(moderator, name):
    image = benign_images()[name]
    for tolerance in range(MAX_TOLERANCE + 1):
        moderator.check_output(image, tolerance)
        moderator.check_reference(image, tolerance, "images[0]")


def test_tiny_model_outputs_pass_at_every_tolerance(engine, moderator):
    from klein.request import GenerationRequest

    for seed, (width, height) in enumerate([(256, 256), (512, 320), (320, 512)]):
        result = engine.generate(GenerationRequest(prompt="a portrait", seed=seed, width=width, height=height))
        for tolerance in range(MAX_TOLERANCE + 1):
            moderator.check_output(result.image, tolerance)


def test_nudenet_flags_the_drawn_torso(detector):
    detections = detector.detect(drawn_torso())
    breasts = [d for d in detections if d.label == "FEMALE_BREAST_EXPOSED"]
    assert len(breasts) == 2 and min(d.score for d in breasts) > 0.7, detections
    assert all(d.group == "nudity" for d in breasts)
    x, y, w, _ = max(breasts, key=lambda d: d.score).box  # boxes are in the original image's pixels
    assert 100 < x < 400 and 150 < y < 300 and 100 < w < 250


@pytest.mark.parametrize("side", [256, 1024])
def test_drawn_torso_is_refused_at_low_tolerance_and_allowed_at_5(moderator, side):
    image = drawn_torso(side)
    for tolerance in (0, 1, 2):
        with pytest.raises(ContentModerated, match=rf"flagged as nudity \(score 0\.\d\d\); tolerance {tolerance} "
                                                   r"blocks nudity at 0\.\d\d or more"):
            moderator.check_output(image, tolerance)
    moderator.check_output(image, 4)
    moderator.check_output(image, 5)


def test_reference_message_names_the_field(moderator):
    with pytest.raises(RequestModerated, match=r"^Request moderated: images\[1\] was flagged as nudity"):
        moderator.check_reference(drawn_torso(), 2, "images[1]")


def test_tolerance_5_logs_what_it_lets_through(moderator, caplog):
    with caplog.at_level(logging.INFO, logger="klein.safety.policy"):
        moderator.check_output(drawn_torso(), 5)
    assert any(r.levelno == logging.WARNING and "FEMALE_BREAST_EXPOSED" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("label", "score", "passes_from"), [
    ("FEMALE_GENITALIA_EXPOSED", 0.5, 3),  # explicit: 0.25, 0.35, 0.45, 0.60, 0.80, never
    ("ANUS_EXPOSED", 0.9, 5),
    ("BUTTOCKS_EXPOSED", 0.5, 2),  # nudity: 0.35, 0.45, 0.60, 0.85, never
    ("FEMALE_BREAST_EXPOSED", 0.6, 3),
    ("FEMALE_BREAST_COVERED", 0.6, 1),  # suggestive: 0.50, 0.70, never
    ("BELLY_EXPOSED", 0.95, 2),
    ("FACE_FEMALE", 0.99, 0),  # faces, feet and male chests are never blocked
    ("FEET_EXPOSED", 0.99, 0),
    ("MALE_BREAST_EXPOSED", 0.99, 0),
])
def test_stub_thresholds_per_group(label, score, passes_from):
    moderator = Moderator(detector=StubDetector(Detection(label, score)))
    image = Image.new("RGB", (64, 64))
    for tolerance in range(MAX_TOLERANCE + 1):
        if tolerance >= passes_from:
            moderator.check_output(image, tolerance)
        else:
            with pytest.raises(ContentModerated):
                moderator.check_output(image, tolerance)


# The image columns of docs/safety.md's policy table, written out: a change to POLICY must change this too.
DOCUMENTED_THRESHOLDS = {  # tolerance: (suggestive, nudity, explicit); None: never blocked
    0: (0.50, 0.35, 0.25), 1: (0.70, 0.45, 0.35), 2: (None, 0.60, 0.45),
    3: (None, 0.85, 0.60), 4: (None, None, 0.80), 5: (None, None, None),
}
GROUP_LABELS = {"suggestive": "FEMALE_BREAST_COVERED", "nudity": "FEMALE_BREAST_EXPOSED",
                "explicit": "FEMALE_GENITALIA_EXPOSED"}


@pytest.mark.parametrize("tolerance", sorted(DOCUMENTED_THRESHOLDS))
def test_every_image_threshold_blocks_at_its_documented_score_and_not_below(tolerance):
    """Catches a threshold moved (e.g. tolerance 3's nudity from 0.85 to 0.61)."""
    image = Image.new("RGB", (64, 64))
    for group, threshold in zip(GROUP_LABELS, DOCUMENTED_THRESHOLDS[tolerance]):
        scores = [0.999] if threshold is None else [threshold - 0.01]
        for score in scores:  # just below the threshold (or anything, when never blocked): passes
            Moderator(detector=StubDetector(Detection(GROUP_LABELS[group], score))).check_output(image, tolerance)
        if threshold is not None:
            with pytest.raises(ContentModerated, match=f"{group}"):
                blocked = Moderator(detector=StubDetector(Detection(GROUP_LABELS[group], threshold)))
                blocked.check_output(image, tolerance)


def test_the_most_severe_group_is_reported():
    stub = StubDetector(Detection("BELLY_EXPOSED", 0.9), Detection("ANUS_EXPOSED", 0.3))
    with pytest.raises(ContentModerated, match=r"as explicit \(score 0\.30\); tolerance 0 blocks explicit at 0\.25"):
        Moderator(detector=stub).check_output(Image.new("RGB", (64, 64)), 0)


def test_cap_clamps_image_tolerance():
    stub = StubDetector(Detection("FEMALE_BREAST_EXPOSED", 0.7))
    capped = Moderator(max_tolerance=2, detector=stub)
    with pytest.raises(ContentModerated, match="tolerance 2 blocks nudity at 0.60"):
        capped.check_output(Image.new("RGB", (64, 64)), 5)


def test_moderator_from_env_reads_cap_and_switch():
    assert moderator_from_env({}).max_tolerance == MAX_TOLERANCE
    assert moderator_from_env({}).image_moderation is True
    assert moderator_from_env({"KLEIN_MAX_SAFETY_TOLERANCE": "3"}).effective_tolerance(5) == 3
    assert moderator_from_env({"KLEIN_IMAGE_MODERATION": "0"}).image_moderation is False
    assert moderator_from_env({"KLEIN_IMAGE_MODERATION": "1"}).image_moderation is True
    for bad in ("6", "-1", "high"):
        with pytest.raises(ValueError, match="KLEIN_MAX_SAFETY_TOLERANCE"):
            moderator_from_env({"KLEIN_MAX_SAFETY_TOLERANCE": bad})


def test_image_moderation_off_skips_the_detector():
    stub = StubDetector(Detection("FEMALE_GENITALIA_EXPOSED", 0.99))
    moderator = Moderator(image_moderation=False, detector=stub)
    moderator.check_output(Image.new("RGB", (64, 64)), 0)
    moderator.check_reference(Image.new("RGB", (64, 64)), 0, "images[0]")
    assert stub.calls == 0
    with pytest.raises(RequestModerated):
        moderator.check_prompt("porn", 0)  # prompts are still checked


def test_preprocess_letterboxes_to_320():
    blob, scale = preprocess(Image.new("RGB", (1000, 500), (255, 0, 0)))
    assert blob.shape == (1, 3, 320, 320) and blob.dtype == np.float32
    assert scale == pytest.approx(0.32)
    assert blob[0, 0, :160, :].min() == pytest.approx(1.0) and blob[0, 0, 160:, :].max() == 0.0
    assert blob[0, 1].max() == 0.0


def test_decode_and_nms_keep_the_best_of_overlapping_boxes():
    output = np.zeros((1, 22, 3), np.float32)
    output[0, :4, 0] = [100, 100, 50, 50]
    output[0, :4, 1] = [102, 101, 50, 50]
    output[0, :4, 2] = [250, 250, 20, 20]
    output[0, 4 + 3, :] = [0.6, 0.9, 0.1]  # FEMALE_BREAST_EXPOSED; the third is under 0.2
    detections = decode(output, 0.5, (640, 640))
    assert [(d.label, round(d.score, 1), d.box) for d in detections] == [
        ("FEMALE_BREAST_EXPOSED", 0.9, (154, 152, 100, 100))]
    boxes = np.array([[0, 0, 10, 10], [20, 20, 10, 10]], np.float32)
    assert nms(boxes, np.array([0.3, 0.9]), 0.25, 0.45) == [1, 0]


def test_matches_nudenets_own_pipeline(detector, tmp_path):
    """Our PIL/numpy pre- and post-processing give what nudenet (cv2) gives, within resampling noise."""
    pytest.importorskip("cv2")
    from nudenet import NudeDetector  # imports cv2: only here, in a test

    path = tmp_path / "torso.png"
    drawn_torso().save(path)
    theirs = sorted((d["class"], d["score"]) for d in NudeDetector().detect(str(path)))
    ours = sorted((d.label, d.score) for d in detector.detect(Image.open(path)))
    assert [label for label, _ in ours] == [label for label, _ in theirs]
    assert all(abs(a[1] - b[1]) < 0.05 for a, b in zip(ours, theirs))


def test_checking_an_image_does_not_import_cv2():
    code = ("import sys; from PIL import Image; from klein.safety.policy import moderator_from_env; "
            "moderator_from_env({}).check_output(Image.new('RGB', (1024, 1024), 'white'), 2); "
            "assert 'cv2' not in sys.modules and 'nudenet' not in sys.modules and 'torch' not in sys.modules; "
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
