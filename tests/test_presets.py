import pytest

from klein import presets

# Both tables of DESIGN.md, with the 2k sizes the rule gives (doubled, longer side capped at 2048, /16).
EXPECTED = {
    "square_1_1": ((1024, 1024), (2048, 2048)),
    "widescreen_16_9": ((1344, 768), (2048, 1168)),
    "social_story_9_16": ((768, 1344), (1168, 2048)),
    "portrait_2_3": ((832, 1216), (1408, 2048)),
    "traditional_3_4": ((960, 1280), (1536, 2048)),
    "vertical_1_2": ((704, 1408), (1024, 2048)),
    "horizontal_2_1": ((1408, 704), (2048, 1024)),
    "social_post_4_5": ((896, 1152), (1600, 2048)),
    "standard_3_2": ((1216, 832), (2048, 1408)),
    "classic_4_3": ((1280, 960), (2048, 1536)),
    "square": ((1024, 1024), (2048, 2048)),
    "landscape": ((1344, 768), (2048, 1168)),
    "portrait": ((768, 1344), (1168, 2048)),
    "photo": ((1248, 832), (2048, 1360)),
    "photo_v": ((832, 1248), (1360, 2048)),
    "standard": ((1184, 896), (2048, 1552)),
    "standard_v": ((896, 1184), (1552, 2048)),
    "wide": ((1568, 672), (2048, 880)),
}


def test_every_preset_of_both_tables_is_known():
    assert set(presets.ASPECT_PRESETS) == set(EXPECTED)
    assert len(presets.ASPECT_PRESETS_V1) == 10 and len(presets.ASPECT_PRESETS_V2) == 8


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_1k_is_the_base_size(name):
    assert presets.size_for_preset(name, "1k") == EXPECTED[name][0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_2k_doubles_caps_at_2048_and_aligns_to_16(name):
    width, height = presets.size_for_preset(name, "2k")
    assert (width, height) == EXPECTED[name][1]
    assert max(width, height) <= 2048 and width % 16 == 0 and height % 16 == 0
    base_w, base_h = EXPECTED[name][0]
    assert abs(width / height - base_w / base_h) < 0.02  # aspect kept within rounding


def test_2k_that_fits_is_just_doubled():
    assert presets.scale_to_resolution(512, 768, "2k") == (1024, 1536)


def test_unknown_resolution_is_refused():
    with pytest.raises(ValueError, match="resolution"):
        presets.scale_to_resolution(1024, 1024, "4k")


@pytest.mark.parametrize(
    "reference, resolution, expected",
    [
        ((800, 600), "1k", (1184, 880)),
        ((800, 600), "2k", (2048, 1536)),
        ((300, 300), "1k", (1024, 1024)),
        ((2048, 256), "1k", (2048, 256)),
    ],
)
def test_match_input_keeps_the_reference_aspect(reference, resolution, expected):
    assert presets.size_matching(reference, resolution) == expected


def test_random_seeds_are_in_range_and_vary():
    seeds = {presets.random_seed() for _ in range(20)}
    assert len(seeds) > 1 and all(0 <= s <= presets.SEED_MAX for s in seeds)
