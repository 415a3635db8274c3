"""Real media files made in memory for the service tests: bad inputs of every kind, built with PyAV
(or byte by byte where a header must lie), and PNG frames for JSON bodies."""

from __future__ import annotations

import base64
import fractions
import io
import struct

import av
import numpy as np

from training.data.video import encode_mp4, encode_png_strip


def png_b64(image: np.ndarray) -> str:
    """uint8 `[H, W, 3]` -> base64 PNG (one image is a strip of one frame)."""
    return base64.b64encode(encode_png_strip(image[None])).decode()


def jpeg_bytes(image: np.ndarray) -> bytes:
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = image.shape[1], image.shape[0], "yuvj444p"
    packets = codec.encode(av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj444p"))
    packets += codec.encode(None)
    return b"".join(bytes(p) for p in packets)


def gif_with_screen(width: int, height: int) -> bytes:
    """A valid one-pixel GIF whose logical screen header claims `width x height`."""
    data = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global colour table: 2 colours
    data += b"\x00\x00\x00\xff\xff\xff"
    data += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)  # one 1x1 image
    data += b"\x02\x02\x44\x01\x00"  # LZW minimum code size 2, one sub-block, terminator
    return data + b"\x3b"


def audio_only_mp4(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """An MP4 (m4a) holding one AAC track and no video."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        samples = 1024
        for i in range(int(seconds * rate / samples) + 1):
            tone = np.sin(np.arange(samples) * 0.05 + i).astype(np.float32)[None]  # [1, samples]
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, i * samples
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def clip(frames: int, size: int = 48, fps: float = 8.0, seed: int = 0) -> np.ndarray:
    """uint8 `[frames, size, size, 3]`: a bright square moving over a smooth gradient."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)
    colour = rng.uniform(40, 160, 3)
    background = (ramp[:, None, None] * ramp[None, :, None] * colour).astype(np.uint8)  # [size, size, 3]
    video = np.repeat(background[None], frames, axis=0)
    for t in range(frames):
        x = (3 * t) % (size - 8)
        video[t, 8:16, x : x + 8] = 255
    return video


def mp4(frames: int, size: int = 48, fps: float = 8.0) -> bytes:
    return encode_mp4(clip(frames, size, fps), fps)


def webm(frames: int, size: int = 48, fps: float = 8.0) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for image in clip(frames, size, fps):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def random_bytes(n: int = 4096, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(n)


def small_video(codec: str, container: str, pix_fmt: str, width: int, height: int, frames: int = 16,
                fps: int = 8) -> bytes:
    """A real clip of any size, codec and pixel format (e.g. 160x120 gray FFV1, a 96x72 GIF)."""
    square = clip(frames, max(width, height), fps)
    out = io.BytesIO()
    with av.open(out, "w", format=container) as box:
        stream = box.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for image in square:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:height, :width]), format="rgb24")
            for packet in stream.encode(frame.reformat(format=pix_fmt)):
                box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    return out.getvalue()
