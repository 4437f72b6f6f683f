"""LIA-X generator parity against the golden fixtures (kind "liax").

Each fixture holds a source image, motion rows and the reference outputs; weights
come from golden_weights.make_state_dict(manifest, seed, unit_std) and are loaded
through LIAX_KEYS / load_strict, blur kernels included. Outputs are compared by the
parity rule of tests/golden/README.md (``Fixture.check``). Rendering a 512×512 frame
is heavy on CPU, so every fixture renders its rows once (batched) plus one row
alone.
"""

from __future__ import annotations

import pytest
import torch
from conftest import golden_params, load_fixture, on_test_device
from golden_weights import make_state_dict

from talker_core.checkpoint import CheckpointError, load_strict
from talker_core.models.liax import LIAX_KEYS, LiaXConfig, LiaXGenerator, state_dict_from_file
from talker_core.models.liax_ops import upfirdn2d, warp_features


class _Case:
    """One fixture with its model, identity and a cache of rendered frames."""

    def __init__(self, path):
        self.fx = load_fixture(path)
        self.meta, self.tensors = self.fx.meta, self.fx.tensors
        self.tol = self.fx.tol()
        self.cfg = LiaXConfig.from_dict(self.meta["config"])
        self.sd = make_state_dict(self.meta["manifest"], self.meta["seed"], unit_std=self.meta.get("unit_std", False))
        self.model = LiaXGenerator(self.cfg).eval()
        load_strict(self.model, state_dict_from_file(self.sd, path.name), LIAX_KEYS, path.name, "LIA-X")
        self.model = on_test_device(self.model)
        with torch.inference_mode():
            self.z, self.feats = self.model.encode_identity(self.tensors["source"])
        self._batched = None

    def batched_frames(self) -> torch.Tensor:
        if self._batched is None:
            with torch.inference_mode():
                self._batched = self.model.render(self.z, self.feats, self.tensors["motion"])
        return self._batched


@pytest.fixture(scope="module", params=golden_params("liax"))
def case(request):
    return _Case(request.param)


def test_manifest_is_the_module_layout(case):
    manifest = case.meta["manifest"]
    own = {k: tuple(v.shape) for k, v in case.model.state_dict().items()}
    assert own == {k: tuple(v) for k, v in manifest.items()}
    assert LiaXConfig.from_state_dict_shapes(case.sd) == case.cfg


def test_identity_and_motion_code(case):
    case.fx.check("identity_z", case.z)
    with torch.inference_mode():
        alpha = case.model.motion_code(case.z)
    case.fx.check("alpha", alpha)
    pyramid = [tuple(f.shape[1:]) for f in case.feats]
    sizes = [2 ** (3 + i) for i in range(7)]
    assert [s[1:] for s in pyramid] == [(s, s) for s in sizes]


def test_direction(case):
    with torch.inference_mode():
        d = case.model.direction(case.tensors["motion"])
    case.fx.check("direction", d)


def test_frames_batched(case):
    frames = case.batched_frames()
    case.fx.check("frames", frames)


@pytest.mark.slow
def test_single_row_equals_batched_row(case):
    last = case.tensors["motion"].shape[0] - 1
    with torch.inference_mode():
        alone = case.model.render(case.z, case.feats, case.tensors["motion"][last:])
    torch.testing.assert_close(alone, case.batched_frames()[last:], **case.tol)


# --------------------------------------------------------------------------- small units


def _fir_by_definition(x, k, up, down, pad):
    n, c, h, w = x.shape
    grid = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
    grid[:, :, ::up, ::up] = x
    grid = torch.nn.functional.pad(grid, list(pad))
    kh, kw = k.shape
    flipped = torch.flip(k, [0, 1])
    oh, ow = grid.shape[-2] - kh + 1, grid.shape[-1] - kw + 1
    out = torch.zeros(n, c, oh, ow, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += grid[:, :, i : i + oh, j : j + ow] * flipped[i, j]
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize(
    "up,down,pad",
    [(2, 1, (2, 1, 2, 1)), (1, 1, (1, 1, 1, 1)), (1, 2, (2, 2, 2, 2)), (2, 2, (1, 2, 0, 3)), (2, 1, (-1, 0, 3, -2))],
)
def test_upfirdn2d_matches_its_definition(up, down, pad):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    k = torch.randn(4, 4, generator=g, dtype=torch.float64)  # asymmetric on purpose
    torch.testing.assert_close(upfirdn2d(x, k, up, down, pad), _fir_by_definition(x, k, up, down, pad))


def test_shared_features_are_warped_like_copies():
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(1, 5, 9, 9, generator=g)
    grid = torch.rand(3, 9, 9, 2, generator=g) * 2.4 - 1.2
    torch.testing.assert_close(warp_features(feat, grid), warp_features(feat.expand(3, -1, -1, -1), grid))


def test_state_dict_from_file_refuses_other_shapes():
    sd = {"enc.enc_2r.block1.0.weight": torch.zeros(64, 3, 1, 1), "dec.direction.weight": torch.zeros(512, 40)}
    assert state_dict_from_file(sd) == sd
    assert state_dict_from_file({"gen": sd}) == sd
    for bad in ([1, 2], {}, {"state_dict": sd}, {"model.x": torch.zeros(1)}, {"enc.a": torch.zeros(1), "dec.b": 3}):
        with pytest.raises(CheckpointError):
            state_dict_from_file(bad, "bad.pt")


def test_config_invariants():
    assert LiaXConfig().style_width == 1024
    assert LiaXConfig.from_dict(LiaXConfig.tiny().to_dict()) == LiaXConfig.tiny()
    for kwargs in ({"scale": 0}, {"resolution": 256}, {"motion_dim": 2000}, {"scale": 1.5}):
        with pytest.raises(ValueError):
            LiaXConfig(**kwargs)
    with pytest.raises(ValueError):
        LiaXConfig.from_dict({"style_dim": 512, "depth": 3})
