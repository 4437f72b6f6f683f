"""The backbone call works with transformers that take ``past_key_values`` (4.x) and ``cache`` (5.x, 5.40+)."""

from __future__ import annotations

import functools
import inspect
import logging
import warnings

import pytest
import torch
from torch import nn

from talker_core.models.talker import TalkerConfig, TalkerModel, cache_kwargs


class _Old(nn.Module):
    def forward(self, inputs_embeds=None, past_key_values=None, use_cache=None):
        return "old"


def _renamed(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "past_key_values" in kwargs:
            raise AssertionError("the deprecated keyword was used")
        return fn(*args, **kwargs)

    return wrapper


class _New(nn.Module):
    @_renamed
    def forward(self, inputs_embeds=None, cache=None, use_cache=None):
        return "new"


class _Neither(nn.Module):
    def forward(self, inputs_embeds=None):
        return None


def test_cache_keyword_follows_the_signature():
    cache = object()
    assert cache_kwargs(_Old(), cache) == {"past_key_values": cache}
    assert cache_kwargs(_New(), cache) == {"cache": cache}
    assert _New()(inputs_embeds=None, **cache_kwargs(_New(), cache)) == "new"
    with pytest.raises(TypeError, match="neither `cache` nor `past_key_values`"):
        cache_kwargs(_Neither(), cache)


def test_installed_transformers_gets_its_own_keyword_and_no_deprecation_warning():
    import transformers

    torch.manual_seed(0)
    model = TalkerModel(TalkerConfig.tiny()).eval()
    params = inspect.signature(type(model.llm.model).forward).parameters
    want = "cache" if "cache" in params else "past_key_values"
    assert list(cache_kwargs(model.llm.model, None)) == [want]

    records: list = []
    handler = logging.Handler()
    handler.emit = records.append
    hf = logging.getLogger("transformers")
    hf.addHandler(handler)
    try:
        cache = model.new_cache()
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            h1 = model.run_backbone(torch.randn(1, 3, 64), cache)
            h2 = model.run_backbone(torch.randn(1, 1, 64), cache)
    finally:
        hf.removeHandler(handler)
    records += [w.message for w in caught]
    assert h1.shape == h2.shape == (1, 64) and torch.isfinite(h2).all()
    assert cache.get_seq_length() == 4, "the cache was not extended in place"
    texts = [r.getMessage() if isinstance(r, logging.LogRecord) else str(r) for r in records]
    deprecations = [t for t in texts if "deprecat" in t.lower()]
    assert not deprecations, (transformers.__version__, deprecations)
