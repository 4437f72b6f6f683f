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

# Words users search for (newer cores match them in the node search; older ones ignore them).
_TALKING = ["talking head", "talking face", "avatar", "lip sync"]
SEARCH_ALIASES: dict[str, list[str]] = {
    "TalkerSampler": [*_TALKING, "tts", "text to speech", "voice clone", "dubbing", "talker"],
    "TalkerLoadModel": ["talker", "talking head", "tts", "lip sync"],
    "TalkerLoadCodec": ["whisperx vae", "speech codec", "audio vae"],
    "TalkerLoadFaceModel": ["lia-x", "liax", "face animation", "talking head"],
    "TalkerLoadSpeakerEncoder": ["wavlm", "ecapa", "speaker embedding", "voice clone"],
    "TalkerEncodeVoice": ["voice clone", "reference voice", "speaker embedding", "tts"],
    "TalkerEncodeSpeech": ["lip sync", "audio driven", "audio to video"],
    "TalkerEncodeFace": ["avatar", "portrait", "talking head", "reference face"],
    "TalkerEncodeMotion": ["dubbing", "head motion", "motion capture", "video to audio"],
    "TalkerDecodeSpeech": ["tts", "speech audio", "vae decode audio"],
    "TalkerRenderVideo": [*_TALKING, "render frames"],
    "TalkerRenderVideoFile": [*_TALKING, "render video", "long video", "mp4"],
    "TalkerSaveSpeechLatents": ["save speech", "keep voice"],
    "TalkerSaveMotionLatents": ["save motion", "keep motion", "dubbing"],
    "TalkerLoadSpeechLatents": ["load speech", "lip sync"],
    "TalkerLoadMotionLatents": ["load motion", "dubbing"],
}
