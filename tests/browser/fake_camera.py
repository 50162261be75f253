"""A fake camera for Chromium: a Y4M (YUV4MPEG2) video of a still image, for
`--use-file-for-fake-video-capture=FILE.y4m`.

Format: one header line `YUV4MPEG2 W<w> H<h> F<num>:<den> Ip A1:1 C420jpeg`, then per frame the line
`FRAME` and the planes of 4:2:0 YCbCr: Y at full size (w*h bytes), then Cb and Cr at half width and half
height. A black-on-white code needs only luma: Cb = Cr = 128 (no colour).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

WIDTH, HEIGHT = 640, 480


def still_y4m(image: Image.Image, path: Path, frames: int = 10, fps: int = 10) -> Path:
    """Write `image`, scaled onto a white 640x480 frame with a quiet zone, as a Y4M file of `frames` frames."""
    gray = image.convert("L")
    side = HEIGHT - 40
    gray = gray.resize((side, side), Image.Resampling.NEAREST)
    canvas = Image.new("L", (WIDTH, HEIGHT), 255)
    canvas.paste(gray, ((WIDTH - side) // 2, (HEIGHT - side) // 2))
    luma = canvas.tobytes()  # mode L: one byte per pixel, row by row, as the Y plane wants
    chroma = bytes([128]) * ((WIDTH // 2) * (HEIGHT // 2))
    frame = b"FRAME\n" + luma + chroma + chroma
    with path.open("wb") as fh:
        fh.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            fh.write(frame)
    return path
