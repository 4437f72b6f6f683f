"""The pack's socket types, created once (ComfyUI matches links by these names).

| socket | payload (``talker_core``) |
|---|---|
| TALKER_MODEL | :class:`nodes.host.ManagedModel` around a ``TalkerBundle`` (backbone, heads, tokenizer) |
| TALKER_CODEC | :class:`~nodes.host.ManagedModel` around the WhisperX-VAE |
| TALKER_FACE_MODEL | :class:`~nodes.host.ManagedModel` around LIA-X |
| TALKER_SPEAKER_ENCODER | :class:`~nodes.host.ManagedModel` around WavLM + ECAPA-TDNN |
| TALKER_VOICE | :class:`talker_core.types.SpeakerReference` |
| TALKER_SPEECH | :class:`talker_core.types.SpeechLatents` (25 Hz × 32) |
| TALKER_FACE | :class:`talker_core.types.Identity` |
| TALKER_MOTION | :class:`talker_core.types.MotionCodes` (25 Hz × 40, normalised) |
"""

from __future__ import annotations

from comfy_api.latest import io

TalkerModel = io.Custom("TALKER_MODEL")
TalkerCodec = io.Custom("TALKER_CODEC")
TalkerFaceModel = io.Custom("TALKER_FACE_MODEL")
TalkerSpeakerEncoder = io.Custom("TALKER_SPEAKER_ENCODER")
TalkerVoice = io.Custom("TALKER_VOICE")
TalkerSpeech = io.Custom("TALKER_SPEECH")
TalkerFace = io.Custom("TALKER_FACE")
TalkerMotion = io.Custom("TALKER_MOTION")

CATEGORY = "Talker-T2AV"
