"""Dialogue node: a script of speaker turns + a voice and face per speaker → one conversation."""

from __future__ import annotations

import time

from comfy_api.latest import io

from talker_core.media.output import CRF_DEFAULT, PRESET_DEFAULT
from talker_core.pipeline.dialogue import LAYOUTS

from . import host
from .sockets import CATEGORY, TalkerCodec, TalkerFace, TalkerFaceModel, TalkerModel, TalkerVoice
from .video_file import encoder_inputs

SPEAKERS = ("A", "B", "C", "D")  # fixed sockets: this ComfyUI API has no inputs that grow


class TalkerDialogue(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        speakers = []
        for i, tag in enumerate(SPEAKERS):
            optional = i >= 2
            speakers += [
                TalkerVoice.Input(f"voice_{tag.lower()}", optional=optional, tooltip=f"Speaker {tag}'s voice."),
                TalkerFace.Input(f"face_{tag.lower()}", optional=optional, tooltip=f"Speaker {tag}'s face."),
            ]
        return io.Schema(
            node_id="TalkerDialogue",
            display_name="Dialogue",
            category=f"{CATEGORY}/generate",
            description="A conversation from a script: one turn per line, 'A: words' / 'B: words' (a line without a "
            "tag continues the turn). Each turn is spoken in its speaker's voice (prosody carried over from "
            "their previous turn) while the others listen (their faces animated against silence). Speakers C "
            "and D are optional. The conversation is rendered frame by frame into an MP4 with its one audio track "
            "(memory stays flat however long it is) and returned as a VIDEO, with the audio on its own; for "
            "IMAGE frames, chain Get Video Components.",
            inputs=[
                TalkerModel.Input("model", tooltip="From Talker-T2AV Load Model."),
                TalkerCodec.Input("codec", tooltip="From Talker-T2AV Load Speech Codec."),
                TalkerFaceModel.Input("face_model", tooltip="From Talker-T2AV Load Face Model."),
                io.String.Input(
                    "script",
                    multiline=True,
                    default="A: Hello! Did you see the news today?\nB: I did. It was quite a surprise.",
                    tooltip="One turn per line: a speaker tag (A, B, C, D), a colon, the words.",
                ),
                io.Combo.Input(
                    "layout",
                    options=list(LAYOUTS),
                    default="side_by_side",
                    tooltip="side_by_side: every speaker in view (512 px each); cuts: the active speaker only.",
                ),
                *speakers,
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=2**63 - 1,
                    control_after_generate=True,
                    tooltip="Turn i uses seed + i.",
                ),
                io.Int.Input("steps", default=10, min=1, max=200, tooltip="Euler steps per patch."),
                io.Float.Input("cfg", default=2.0, min=0.0, max=20.0, step=0.1, tooltip="Guidance scale."),
                io.Float.Input("temperature", default=0.3, min=0.0, max=5.0, step=0.05, tooltip="Noise temperature."),
                io.Float.Input(
                    "max_seconds",
                    default=30.0,
                    min=0.16,
                    max=3600.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Length bound of each turn.",
                ),
                io.Float.Input(
                    "carry_seconds",
                    default=2.0,
                    min=0.0,
                    max=10.0,
                    step=0.04,
                    tooltip="Seconds of a speaker's previous turn fed to their next, so voice and pose carry over.",
                ),
                io.Int.Input("chunk", default=8, min=1, max=256, tooltip="Frames rendered per batch."),
                io.String.Input(
                    "filename_prefix",
                    default="video/Talker_dialogue",
                    tooltip="Where in the output folder the MP4 goes.",
                ),
                *encoder_inputs(),
            ],
            outputs=[
                io.Video.Output("video", display_name="video", tooltip="The conversation as an MP4 (VIDEO)."),
                io.Audio.Output("audio", display_name="audio", tooltip="One 24 kHz track of every turn."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, codec, face_model, script, layout, seed, steps, cfg, temperature, max_seconds,
                carry_seconds, chunk, filename_prefix="video/Talker_dialogue", crf=CRF_DEFAULT, preset=PRESET_DEFAULT,
                **speaker_inputs) -> io.NodeOutput:  # fmt: skip
        from talker_core.pipeline import TalkRequest
        from talker_core.pipeline.dialogue import Speaker, dialogue_to_mp4, generate_dialogue, parse_script
        from talker_core.types import SAMPLE_RATE

        from .video_file import _metadata, output_mp4, video_result

        speakers = {}
        for tag in SPEAKERS:
            voice, face = speaker_inputs.get(f"voice_{tag.lower()}"), speaker_inputs.get(f"face_{tag.lower()}")
            if (voice is None) != (face is None):
                raise ValueError(f"speaker {tag}: connect both voice_{tag.lower()} and face_{tag.lower()}, or neither")
            if voice is not None:
                speakers[tag] = Speaker(voice, face)
        turns = parse_script(script, list(speakers))
        speakers = {tag: s for tag, s in speakers.items() if any(t.speaker == tag for t in turns)}
        request = TalkRequest(seed=seed, steps=steps, cfg=cfg, temperature=temperature, max_seconds=max_seconds)
        hooks = host.make_hooks()
        liax = face_model.ready()
        start = time.perf_counter()
        with host.interruptible(), host.collect_warnings() as warnings:
            dialogue = generate_dialogue(
                model.ready(), codec.ready(), turns, speakers, request, carry_seconds=carry_seconds, hooks=hooks
            )
            path, file, subfolder = output_mp4(filename_prefix)
            dialogue_to_mp4(
                liax, dialogue, speakers, path, layout, chunk=chunk, hooks=hooks, crf=crf, preset=preset,
                metadata=_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo),
            )  # fmt: skip
        text = (
            f"wrote {file}: {len(turns)} turn(s), {len(speakers)} speaker(s), {dialogue.seconds:.2f} s ({layout}) "
            f"in {time.perf_counter() - start:.1f} s"
        )
        return video_result(
            path, file, subfolder, text, warnings, more=(host.audio_output(dialogue.audio, SAMPLE_RATE),)
        )
