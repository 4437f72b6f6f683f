"""The benchmark's ``reference`` part (bench/reference.py): its plumbing, against a FAKE reference dir.

The authors' repository is not available here (nor are its dependencies), so these tests
write a FAKE checkout: a ``speech_llm.py`` (plus a sibling module) with the import surface
the bench relies on — ``ModelArguments``, ``ProjectorConv1d``, ``SpeechLLM(llm,
whisperx_vae, projector_speech, projector_motion, config, model_args)`` with
``speech_cfm``/``motion_cfm`` callables and ``generate_speech_motion(...)`` keeping their
stop logic, and the imports ``liger_kernel.transformers`` and ``speaker_verification``
that the bench must satisfy. Its heads are toys: what is checked is how the bench
imports, builds, shares weights, drives and times their code, and cleans up — not their
numbers. The real checkout is timed by ``python -m bench --reference-dir ...``
(README, bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bench import reference

ROOT = Path(__file__).resolve().parents[1]

FAKE_SPEECH_LLM = '''
"""FAKE of the authors' speech_llm.py, written by tests/test_bench_reference.py (toy heads)."""
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
from liger_kernel.transformers import AutoLigerKernelForCausalLM  # noqa: F401  (real, or the bench's stand-in)
from speaker_verification import init_model as init_spk

from fake_heads import ToyCFM


@dataclass
class ModelArguments:
    speech_embedding_dim: int = 128
    motion_embedding_dim: int = 40
    patch_size: int = 4
    delay: int = 5
    context_patches: int = 1
    patch_encoder_n_layer: int = 4
    patch_encoder_n_head: int = 8


class ProjectorConv1d(nn.Module):
    def __init__(self, config, encoder_dim, llm_dim):
        super().__init__()
        self.linear1 = nn.Linear(encoder_dim, llm_dim)

    def forward(self, x):
        return self.linear1(x)


class StopPredictor(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.actn = nn.SiLU()
        self.head = nn.Linear(dim, 1, bias=False)

    def forward(self, x):
        return self.head(self.actn(self.proj(x))).squeeze(-1)


class SpeechLLM(nn.Module):
    def __init__(self, llm, whisperx_vae, projector_speech, projector_motion, config, model_args):
        super().__init__()
        self.llm = llm
        self.pretrained_speech_encoder = whisperx_vae
        self.spk = init_spk("wavlm_large", "/nowhere/wavlm_large_finetune.pth")
        self.projector_speech = projector_speech
        self.projector_motion = projector_motion
        self.model_args = model_args
        self.patch_size = model_args.patch_size
        dim = llm.config.hidden_size
        self.head_stop = StopPredictor(dim)
        self.task_embedding = nn.Embedding(2, dim)
        self.speech_cfm = ToyCFM(dim, model_args.speech_embedding_dim)
        self.motion_cfm = ToyCFM(dim, model_args.motion_embedding_dim)

    @torch.no_grad()
    def generate_speech_motion(self, input_ids, feat, mel_len, audio, audio16k, speech_span, first_motion,
                               tokenizer=None, prefix_seconds=3.0, fps=25, cfm_steps=10, cfm_temperature=1.0,
                               cfm_cfg=1.5, use_stop=False, stop_threshold=0.5, min_gen_patches=7, stop_k=3,
                               amp_bf16=True, return_latents=False):
        with open(os.environ["FAKE_REFERENCE_LOG"], "a") as f:
            f.write(json.dumps({"prefix_seconds": prefix_seconds, "cfm_steps": cfm_steps,
                                "cfm_temperature": cfm_temperature, "cfm_cfg": cfm_cfg, "use_stop": use_stop,
                                "stop_threshold": stop_threshold, "min_gen_patches": min_gen_patches,
                                "stop_k": stop_k, "mel_len": int(mel_len[0])}) + "\\n")
        ps = self.patch_size
        spk = self.spk(audio16k[:, 0, :])
        self.pretrained_speech_encoder.encode(audio[:, :, :960], feat, return_layout="btc")
        s0 = int(speech_span[0, 0])
        emb = self.llm.get_input_embeddings()(input_ids)[:, :s0]
        emb = torch.cat([self.task_embedding.weight[1:2].unsqueeze(0), emb], dim=1)
        out = self.llm(inputs_embeds=emb, use_cache=True, output_hidden_states=True)
        past, h = out.past_key_values, out.hidden_states[-1][:, -1, :]
        speech, motion, streak = [], [], 0
        for step in range(math.ceil(int(mel_len[0]) / ps) + 15):
            if use_stop and step >= min_gen_patches:
                p = torch.sigmoid(self.head_stop(h.float().unsqueeze(1)))[0, 0].item()
                if p >= stop_threshold:
                    streak += 1
                    if streak >= stop_k:
                        break
                else:
                    streak = 0
            kw = dict(n_timesteps=cfm_steps, patch_size=ps, temperature=cfm_temperature, cfg_value=cfm_cfg,
                      sway_sampling_coef=1.0, use_cfg_zero_star=True)
            s = self.speech_cfm(mu=h.float(), cond=None, global_cond=spk, **kw)
            m = self.motion_cfm(mu=h.float(), cond=None, global_cond=first_motion.reshape(1, -1), **kw)
            speech.append(s.transpose(1, 2))
            motion.append(m.transpose(1, 2))
            tok = (self.projector_speech(s.transpose(1, 2)).mean(1, keepdim=True)
                   + self.projector_motion(m.transpose(1, 2)).mean(1, keepdim=True))
            out = self.llm(inputs_embeds=tok, past_key_values=past, use_cache=True, output_hidden_states=True)
            past, h = out.past_key_values, out.hidden_states[-1][:, -1, :]
        wav = self.pretrained_speech_encoder.decode(torch.cat(speech, dim=1), latent_layout="btc")
        return wav[:, :, :0], wav, wav, torch.cat(motion, dim=1)
'''

FAKE_HEADS = '''
"""FAKE sibling module of the fake speech_llm.py (checks that the bench unloads the reference dir's modules)."""
import torch
import torch.nn as nn


class ToyCFM(nn.Module):
    def __init__(self, mu_dim, channels):
        super().__init__()
        self.channels = channels
        self.out = nn.Linear(mu_dim, channels)

    @torch.inference_mode()
    def forward(self, mu, n_timesteps, patch_size, cond, global_cond, temperature=1.0, cfg_value=1.0,
                sway_sampling_coef=1.0, use_cfg_zero_star=True):
        x = torch.randn((mu.shape[0], self.channels, patch_size)) * temperature
        for _ in range(n_timesteps):
            x = x - 0.1 * (x + self.out(mu).unsqueeze(-1))
        return x
'''


@pytest.fixture()
def fake_dir(tmp_path, monkeypatch):
    d = tmp_path / "Talker-T2AV-fake"
    d.mkdir()
    (d / "speech_llm.py").write_text(textwrap.dedent(FAKE_SPEECH_LLM))
    (d / "fake_heads.py").write_text(textwrap.dedent(FAKE_HEADS))
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_REFERENCE_LOG", str(log))
    monkeypatch.delenv(reference.ENV_VAR, raising=False)
    return d, log


def _args(**kw) -> argparse.Namespace:
    base = dict(reference_dir=None, reference_rounds=2, patches=2, warmup=1, prompt_tokens=8, seed=0)
    base.update(kw)
    return argparse.Namespace(**base)


def test_reference_part_times_the_named_checkout_against_ours(fake_dir):
    d, log = fake_dir
    before_path = list(sys.path)
    with torch.random.fork_rng():
        res = reference.bench_reference("debug", torch.device("cpu"), torch.float32, _args(reference_dir=str(d)))

    assert res["reference_dir"] == str(d)
    for name in ("ours", "theirs", "baseline"):
        rounds = res[name + "_all_ms"]
        assert len(rounds) == 2 and all(len(r) == 2 for r in rounds), (name, rounds)
        assert all(x > 0 for r in rounds for x in r)
        assert res[name + "_ms_per_patch"] > 0
    for key in ("ours_over_theirs", "baseline_over_theirs", "ours_over_baseline"):
        r = res[key]
        assert 0 < r["paired_median"] < float("inf") and len(r["per_round"]) == 2
        assert r["paired_median"] == pytest.approx(sorted(r["per_round"])[0] / 2 + sorted(r["per_round"])[1] / 2, 1e-2)
    # their generation was driven with the authors' recipe, for exactly `patches` patches, no prefix
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 3  # one warm-up + two rounds
    for c in calls:
        assert (c["cfm_steps"], c["cfm_temperature"], c["cfm_cfg"], c["prefix_seconds"]) == (10, 0.3, 2.0, 0.0)
        assert c["use_stop"] and c["stop_threshold"] == 0.0 and c["stop_k"] == 1
    assert [c["min_gen_patches"] for c in calls] == [1, 2, 2]
    # weights: the backbone is ours (one module), named tensors of ours are shared, the fake's toys are its own
    w = res["weights"]
    assert w["backbone_shared"] and w["tensors_from_ours"] > 0
    assert (
        "speech_cfm.out.weight" in w["their_own_init"] and "projector_speech.linear1.weight" not in w["their_own_init"]
    )
    notes = " ".join(res["stand_ins"])
    assert "speaker encoder: bench stand-in" in notes and "codec: bench stand-in" in notes
    if not reference._liger_importable():
        assert "liger_kernel: not importable here; a bench stand-in" in notes
    # the toy heads differ from ours: the check is reported, not hidden
    assert res["their_heads_vs_baseline_first_patch_max_abs_diff"] > 0
    # nothing of the reference dir (nor a stand-in) stays imported
    assert sys.path == before_path
    for name in ("speech_llm", "fake_heads", "speaker_verification"):
        assert name not in sys.modules, name
    assert not getattr(sys.modules.get("liger_kernel.transformers"), reference._STAND_IN_MARK, False)
    rows = reference.table_rows("debug", {"reference": res})
    assert any("ours/theirs" in r[1] for r in rows) and any(r[1] == "reference stand-in" for r in rows)


def test_their_model_holds_our_tensors(fake_dir):
    from bench.bench import _talker

    d, _ = fake_dir
    model = _talker("debug", torch.device("cpu"), torch.float32, 0)
    with reference.reference_modules(str(d)) as (mod, _notes):
        theirs, built = reference.build_theirs(mod, model, torch.randn(model.config.speaker_dim), torch.device("cpu"))
        assert theirs.llm is model.llm
        for name in ("projector_speech.linear1.weight", "head_stop.proj.weight", "task_embedding.weight"):
            assert theirs.get_parameter(name).data_ptr() == model.get_parameter(name).data_ptr(), name
        assert theirs.spk(torch.zeros(1, 16)).shape == (1, model.config.speaker_dim)
        assert set(built["weights"]["their_own_init"]) == {
            f"{h}_cfm.out.{p}" for h in ("speech", "motion") for p in ("weight", "bias")
        }
    assert "speech_llm" not in sys.modules


def test_reference_part_skipped_without_a_dir(monkeypatch):
    monkeypatch.delenv(reference.ENV_VAR, raising=False)
    res = reference.bench_reference("release", torch.device("cpu"), torch.float32, _args())
    assert res == {"skipped": reference.SKIPPED}
    assert "TALKER_REFERENCE_DIR" in res["skipped"] and "--reference-dir" in res["skipped"]
    assert reference.table_rows("release", {"reference": res}) == [
        ("release", "reference (authors' code)", reference.SKIPPED)
    ]


def _bench(tmp_path, *argv, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != reference.ENV_VAR}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "bench", "--sizes", "debug", "--reference-sizes", "debug", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_reference_part_without_dir_says_so(tmp_path):
    out = tmp_path / "r.json"
    p = _bench(tmp_path, "--parts", "reference", "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert "skipped: no checkout of the authors' repository named" in p.stdout
    assert json.loads(out.read_text())["sizes"]["debug"]["reference"] == {"skipped": reference.SKIPPED}


def test_cli_rejects_a_dir_that_is_not_their_checkout(tmp_path):
    p = _bench(tmp_path, "--parts", "heads", env_extra={reference.ENV_VAR: str(tmp_path)})
    assert p.returncode != 0
    assert "has no speech_llm.py" in p.stderr and str(tmp_path) in p.stderr


def test_missing_dependency_of_their_code_names_the_requirements_file(tmp_path):
    d = tmp_path / "Talker-T2AV-fake"
    d.mkdir()
    (d / "speech_llm.py").write_text('"""FAKE: imports a package that is not installed."""\nimport no_such_pkg_h9\n')
    before = list(sys.path)
    hint = r"needs no_such_pkg_h9.*bench/requirements-reference.txt"
    with pytest.raises(RuntimeError, match=hint), reference.reference_modules(str(d)):
        pass
    assert sys.path == before and "speech_llm" not in sys.modules and "speaker_verification" not in sys.modules
