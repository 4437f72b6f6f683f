"""The downloader's plan, checks and resume behaviour, with the hub replaced by a local fake."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from talker_core.weights.download import SOURCES, DownloadError, HubClient, download_models


class FakeHub(HubClient):
    """Serves files from a dict {repo: {path: bytes}}; can corrupt one file once."""

    def __init__(self, repos, corrupt=None):
        self.repos = repos
        self.corrupt = set(corrupt or ())
        self.fetched = []

    def list_files(self, repo_id):
        return [
            (p, len(b), hashlib.sha256(b).hexdigest() if len(b) > 8 else None) for p, b in self.repos[repo_id].items()
        ]

    def fetch(self, repo_id, path, cache_dir: Path) -> Path:
        self.fetched.append((repo_id, path))
        data = self.repos[repo_id][path]
        if (repo_id, path) in self.corrupt:
            self.corrupt.discard((repo_id, path))
            data = data[:-1] + bytes([data[-1] ^ 1])
        out = cache_dir / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        return out


def release_like():
    return {
        "HKUSTAudio/Talker-T2AV": {
            "talker-t2av/model.safetensors": b"weights-weights-weights",
            "talker-t2av/tokenizer.json": b"{}",
            "whisperx-vae/model.ckpt": b"codec-codec-codec",
            "README.md": b"readme",
        },
        "YaohuiW/LIA-X": {"lia-x.pt": b"liax-liax-liax", "other.bin": b"x"},
        "yfyeung/wavlm-large-speaker-verification": {"wavlm-large.pt": b"wavlm-wavlm-wavlm"},
    }


def test_layout_and_skip_existing(tmp_path):
    hub = FakeHub(release_like())
    seen = []
    paths = download_models(tmp_path, client=hub, progress=lambda d, t, n: seen.append((d, t)), demo=False)
    rel = sorted(str(p.relative_to(tmp_path)) for p in paths)
    assert rel == [
        "lia-x.pt",
        "talker-t2av/model.safetensors",
        "talker-t2av/tokenizer.json",
        "wavlm_large_finetune.pth",
        "whisperx-vae/model.ckpt",
    ]
    assert (tmp_path / "wavlm_large_finetune.pth").read_bytes() == b"wavlm-wavlm-wavlm"
    assert seen[-1] == (5, 5)
    assert not (tmp_path / ".download").exists()
    hub.fetched.clear()
    download_models(tmp_path, client=hub, demo=False)
    assert hub.fetched == [], "verified files must not be fetched again"


def test_corrupted_download_is_refused_and_not_placed(tmp_path):
    hub = FakeHub(release_like(), corrupt={("YaohuiW/LIA-X", "lia-x.pt")})
    with pytest.raises(DownloadError, match="SHA-256"):
        download_models(tmp_path, kinds=["liax"], client=hub)
    assert not (tmp_path / "lia-x.pt").exists()
    download_models(tmp_path, kinds=["liax"], client=hub)  # the retry succeeds
    assert (tmp_path / "lia-x.pt").read_bytes() == b"liax-liax-liax"


def test_damaged_local_file_is_replaced(tmp_path):
    hub = FakeHub(release_like())
    (tmp_path / "lia-x.pt").write_bytes(b"truncated")
    download_models(tmp_path, kinds=["liax"], client=hub)
    assert (tmp_path / "lia-x.pt").read_bytes() == b"liax-liax-liax"


def test_unknown_kind_and_missing_remote(tmp_path):
    with pytest.raises(ValueError, match="unknown model kind"):
        download_models(tmp_path, kinds=["nope"], client=FakeHub(release_like()))
    repos = release_like()
    del repos["YaohuiW/LIA-X"]["lia-x.pt"]
    with pytest.raises(DownloadError, match="lia-x.pt"):
        download_models(tmp_path, kinds=["liax"], client=FakeHub(repos))


def test_every_source_has_a_kind_the_loaders_know():
    assert {s.kind for s in SOURCES} == {"talker", "whisperx_vae", "liax", "speaker"}
