"""TRELLIS.2 model structure at the released sizes (built on the meta device: no memory, no time)
and behaviour golden vectors do not cover: the shape encoder + cached-mode texture decoding."""
from __future__ import annotations

import pytest
import torch

from propforge.trellis2 import loading
from propforge.trellis2.tiny import FULL_CONFIGS

#: spec generator.md §1.1 / golden README (parameter counts of the released checkpoints)
RELEASED_PARAMS = {
    "sparse_structure_flow_model": 1_292_179_976,
    "shape_slat_flow_model_512": 1_292_253_728,
    "shape_slat_flow_model_1024": 1_292_253_728,
    "tex_slat_flow_model_512": 1_292_302_880,
    "tex_slat_flow_model_1024": 1_292_302_880,
    "shape_slat_decoder": 474_231_463,
    "tex_slat_decoder": 474_216_006,
    "sparse_structure_decoder": 73_671_201,
}


def meta_model(config: dict) -> torch.nn.Module:
    loading._class_for(config["name"])
    with torch.device("meta"):
        return loading.build_model(config)


@pytest.mark.parametrize("key", list(RELEASED_PARAMS))
def test_released_configs_have_the_released_parameter_counts(key: str) -> None:
    model = meta_model(FULL_CONFIGS[key])
    assert sum(p.numel() for p in model.parameters()) == RELEASED_PARAMS[key]


def test_state_dict_keys_and_precision_map() -> None:
    """Key names/shapes of spec §2.2 and §2.9; only Linear/conv weights inside blocks are bf16/fp16."""
    flow = meta_model(FULL_CONFIGS["shape_slat_flow_model_1024"]).state_dict()
    assert len(flow) == 640                      # 10 top-level + 30 blocks × 21 (spec: 640 tensors)
    assert flow["blocks.29.mlp.mlp.0.weight"].shape == (8192, 1536)
    assert flow["blocks.0.self_attn.q_rms_norm.gamma"].shape == (12, 128)
    assert flow["blocks.0.cross_attn.to_kv.weight"].dtype == torch.bfloat16
    for key in ("blocks.0.modulation", "blocks.0.norm2.weight", "blocks.0.cross_attn.k_rms_norm.gamma",
                "adaLN_modulation.1.weight", "input_layer.weight", "out_layer.weight", "t_embedder.mlp.0.weight"):
        assert flow[key].dtype == torch.float32, key
    dec = meta_model(FULL_CONFIGS["shape_slat_decoder"]).state_dict()
    assert dec["blocks.0.4.conv1.weight"].shape == (4096, 3, 3, 3, 1024)
    assert dec["blocks.0.4.conv1.weight"].dtype == torch.float16
    assert dec["blocks.3.4.to_subdiv.weight"].shape == (8, 128)
    assert dec["blocks.0.0.norm.weight"].dtype == torch.float32
    assert dec["output_layer.weight"].shape == (7, 64) and dec["from_latent.weight"].dtype == torch.float32
    assert "blocks.1.16.conv2.weight" in dec and "blocks.4.0.conv.weight" not in dec
    tex = meta_model(FULL_CONFIGS["tex_slat_decoder"]).state_dict()
    assert not any("to_subdiv" in k for k in tex) and tex["output_layer.weight"].shape == (6, 64)


def test_float32_option_keeps_every_tensor_fp32() -> None:
    loading._class_for("SLatFlowModel")
    with torch.device("meta"):
        m = loading.build_model(FULL_CONFIGS["tex_slat_flow_model_512"], precision="float32")
    assert {p.dtype for p in m.parameters()} == {torch.float32}


def test_flow_json_without_dtype_warns() -> None:
    cfg = {"name": "SLatFlowModel", "args": {k: v for k, v in FULL_CONFIGS["shape_slat_flow_model_512"]["args"].items()
                                             if k != "dtype"}}
    with pytest.warns(UserWarning, match="no 'dtype'"):
        m = meta_model(cfg)
    assert m.config.dtype == "float32"


def test_encoder_then_cached_decoder_recreates_the_voxels() -> None:
    """Texturing path: shape encoder (4 space-to-channel levels) -> texture decoder without guides
    re-creates exactly the encoded voxels in the same order (spec ovoxel-and-export.md §2.5, §6.6)."""
    from propforge.sparse import SparseTensor
    from propforge.trellis2.sc_vae import FlexiDualGridVaeEncoder, SparseUnetVaeDecoder, VaeConfig

    torch.manual_seed(0)
    enc = FlexiDualGridVaeEncoder(VaeConfig.from_args(dict(
        model_channels=[8, 16, 16, 16, 16], latent_channels=32, num_blocks=[0, 1, 1, 1, 1]))).eval()
    dec = SparseUnetVaeDecoder(VaeConfig.from_args(dict(
        model_channels=[16, 16, 16, 16, 8], latent_channels=32, num_blocks=[1, 1, 1, 1, 0], out_channels=6,
        pred_subdiv=False))).eval()
    g = torch.stack(torch.meshgrid(*[torch.arange(48)] * 3, indexing="ij"), -1).reshape(-1, 3)
    r = ((g.float() - 23.5) ** 2).sum(-1).sqrt()
    shell = g[(r > 15) & (r < 16.5)]
    coords = torch.cat([torch.zeros(len(shell), 1, dtype=torch.int32), shell.int()], 1)
    with torch.no_grad():
        z = enc(SparseTensor(torch.rand(len(shell), 6), coords))
        assert z.feats.shape[1] == 32 and int(z.coords[:, 1:].max()) < 3
        out, subs = dec(z.replace(torch.randn_like(z.feats)))
    assert subs == [] and out.feats.shape == (len(shell), 6)
    assert torch.equal(out.coords, coords)


# -------------------------------------------------------------------------------------- samplers

def _counting_model(calls: list):
    def model(x, t, cond):
        calls.append((float(t[0]), cond))
        return x * 0.1 + cond.mean()
    return model


def test_guidance_strength_zero_uses_only_the_negative_condition() -> None:
    from propforge.trellis2.samplers import FlowEulerGuidanceIntervalSampler

    calls: list = []
    pos, neg = torch.ones(1, 4, 2), torch.zeros(1, 4, 2)
    FlowEulerGuidanceIntervalSampler().sample(_counting_model(calls), torch.randn(1, 8), pos, neg_cond=neg,
                                              steps=4, guidance_strength=0.0, guidance_interval=(0.0, 1.0))
    assert len(calls) == 4 and all(c is neg for _, c in calls)
    assert [t for t, _ in calls] == [1000.0, 750.0, 500.0, 250.0]


def test_cfg_sampler_guides_every_step_and_rejects_unknown_params() -> None:
    from propforge.errors import InputError
    from propforge.trellis2.samplers import make_sampler

    calls: list = []
    s = make_sampler("FlowEulerCfgSampler", {"sigma_min": 1e-5})
    s.sample(_counting_model(calls), torch.randn(1, 8), torch.ones(1, 4, 2), neg_cond=torch.zeros(1, 4, 2),
             steps=3, guidance_strength=3.0, guidance_interval=(0.9, 1.0))
    assert len(calls) == 6                               # the interval is ignored by the plain CFG sampler
    with pytest.raises(InputError, match="unknown sampler parameter"):
        s.sample(_counting_model([]), torch.randn(1, 8), torch.ones(1, 4, 2), steps=2, guidance_scale=3.0)
    with pytest.raises(InputError, match="unknown sampler 'DDIM'"):
        make_sampler("DDIM", {})


def test_sparse_rescale_std_is_per_sample_population_std() -> None:
    from propforge.trellis2.samplers import _std_sparse

    x = torch.randn(10, 3, dtype=torch.float64)
    batch = torch.tensor([0] * 4 + [1] * 6)
    got = _std_sparse(x, batch, 2)
    assert got.shape == (10, 1)
    for b, sl in ((0, slice(0, 4)), (1, slice(4, 10))):
        ref = x[sl].flatten().std(unbiased=False)
        assert torch.allclose(got[sl], ref.expand(sl.stop - sl.start, 1))


def test_preprocess_keeps_the_alpha_of_greyscale_cutouts() -> None:
    import numpy as np
    from PIL import Image

    from propforge.trellis2.conditioning import preprocess_image

    a = np.zeros((40, 60, 2), np.uint8)
    a[10:30, 20:44] = (180, 255)
    la = Image.fromarray(a, "LA")
    out = np.asarray(preprocess_image(la, lambda im: pytest.fail("alpha is usable: no background removal")))
    assert out.shape == (22, 22, 3) and out.max() == 180
