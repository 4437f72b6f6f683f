"""The networks of Talker-T2AV, one file per component, under their published parameter names.

``talker`` (Qwen3 backbone, projectors, patch encoders, DiT heads, stop head), ``blocks``,
``patch_encoder``, ``dit_head``, ``whisperx_vae`` (+ ``audio_frontend``), ``liax`` (+ ``liax_ops``),
``wavlm``, ``ecapa``, ``speaker_encoder``. Nothing here knows about sampling or speed-ups.
"""
