"""What a media file holds (streams, durations, rates) without decoding it."""

from __future__ import annotations

from talker_core.media._common import PathLike, _existing_file, _open_container

# --------------------------------------------------------------------------- probing


def probe_media(path: PathLike) -> dict:
    """Describe a media file from its headers (nothing is decoded).

    Returns:
        ``{"path", "format", "duration", "streams": [...]}`` where duration is the
        container's in seconds (or None) and each stream is a dict with ``index``,
        ``type`` ("audio", "video", …), ``codec``, ``duration`` (seconds or None),
        ``frames`` (count from the header, 0 when unknown), and for video ``fps``,
        ``width``, ``height``, ``pix_fmt``; for audio ``sample_rate``, ``channels``,
        ``layout``.
    """
    p = _existing_file(path, "media file")
    with _open_container(p, "media file") as container:
        info = {
            "path": str(p),
            "format": container.format.name,
            "duration": container.duration / 1_000_000 if container.duration is not None else None,
            "streams": [],
        }
        for s in container.streams:
            cc = s.codec_context
            d = {
                "index": s.index,
                "type": s.type,
                "codec": cc.name if cc is not None else None,
                "duration": float(s.duration * s.time_base) if (s.duration is not None and s.time_base) else None,
                "frames": int(s.frames or 0),
            }
            if s.type == "video":
                rate = s.average_rate or s.guessed_rate
                d.update(fps=float(rate) if rate else None, width=cc.width, height=cc.height, pix_fmt=cc.pix_fmt)
            elif s.type == "audio":
                d.update(sample_rate=cc.sample_rate, channels=cc.channels, layout=cc.layout.name)
            info["streams"].append(d)
    return info
