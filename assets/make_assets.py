"""Draws the example reference images shipped in assets/ (deterministic; run to rebuild them).

    python assets/make_assets.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent


def mountains() -> Image.Image:
    image = Image.new("RGB", (768, 512))
    draw = ImageDraw.Draw(image)
    for y in range(320):  # evening sky gradient
        t = y / 320
        draw.line([(0, y), (768, y)], fill=(int(70 + 180 * t), int(90 + 90 * t), int(170 - 40 * t)))
    draw.ellipse([520, 140, 600, 220], fill=(255, 214, 120))
    draw.polygon([(0, 420), (170, 190), (330, 420)], fill=(70, 80, 110))
    draw.polygon([(200, 420), (420, 150), (650, 420)], fill=(85, 95, 125))
    draw.polygon([(380, 180), (420, 150), (455, 185), (430, 175), (405, 190)], fill=(240, 240, 250))
    draw.polygon([(500, 420), (660, 240), (768, 360), (768, 420)], fill=(60, 70, 95))
    draw.rectangle([0, 400, 768, 512], fill=(60, 110, 70))
    draw.polygon([(0, 512), (300, 430), (768, 470), (768, 512)], fill=(50, 95, 60))
    return image


def armchair() -> Image.Image:
    image = Image.new("RGB", (512, 512), (236, 230, 220))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 380, 512, 512], fill=(176, 140, 100))
    draw.rounded_rectangle([130, 140, 380, 330], radius=30, fill=(180, 40, 50))  # back
    draw.rounded_rectangle([110, 280, 400, 370], radius=20, fill=(200, 55, 60))  # seat
    draw.rounded_rectangle([90, 230, 150, 370], radius=20, fill=(165, 35, 45))  # arms
    draw.rounded_rectangle([360, 230, 420, 370], radius=20, fill=(165, 35, 45))
    for x in (120, 380):
        draw.rectangle([x, 370, x + 14, 420], fill=(80, 50, 30))
    return image


def mug() -> Image.Image:
    image = Image.new("RGB", (512, 512), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    draw.ellipse([90, 380, 420, 440], fill=(215, 215, 210))  # shadow
    draw.rectangle([150, 170, 340, 410], fill=(40, 110, 180))
    draw.ellipse([150, 150, 340, 190], fill=(30, 90, 150))
    draw.ellipse([165, 157, 325, 183], fill=(90, 55, 35))  # coffee
    draw.ellipse([150, 390, 340, 430], fill=(40, 110, 180))
    draw.arc([300, 220, 400, 340], start=-90, end=90, fill=(40, 110, 180), width=22)
    return image


def robot() -> Image.Image:
    image = Image.new("RGB", (512, 640), (200, 225, 235))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([176, 110, 336, 250], radius=24, fill=(190, 195, 200))  # head
    draw.ellipse([210, 160, 245, 195], fill=(40, 200, 230))
    draw.ellipse([267, 160, 302, 195], fill=(40, 200, 230))
    draw.line([(256, 110), (256, 70)], fill=(120, 120, 130), width=6)
    draw.ellipse([244, 56, 268, 80], fill=(230, 80, 60))
    draw.rounded_rectangle([150, 270, 362, 480], radius=30, fill=(170, 175, 185))  # body
    draw.rectangle([200, 320, 312, 400], fill=(90, 100, 120))
    draw.rounded_rectangle([100, 280, 140, 450], radius=18, fill=(160, 165, 175))  # arms
    draw.rounded_rectangle([372, 280, 412, 450], radius=18, fill=(160, 165, 175))
    draw.rounded_rectangle([180, 490, 235, 600], radius=14, fill=(150, 155, 165))  # legs
    draw.rounded_rectangle([277, 490, 332, 600], radius=14, fill=(150, 155, 165))
    return image


def mountains_mask() -> Image.Image:
    """An inpainting mask for mountains.jpg (its size): white over the sky left of the sun repaints it."""
    image = Image.new("L", (768, 512), 0)
    ImageDraw.Draw(image).ellipse([120, 30, 420, 170], fill=255)
    return image


def main() -> None:
    mountains().save(HERE / "mountains.jpg", quality=90)
    mountains_mask().save(HERE / "mountains_mask.png")
    armchair().save(HERE / "armchair.png")
    mug().save(HERE / "mug.png")
    robot().save(HERE / "robot.png")


if __name__ == "__main__":
    main()
