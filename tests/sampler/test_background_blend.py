"""Background-aware sampling (nodes/sampler/background.py, ``animate(background=...)``).

Exact checks use stand-in models that make the blend observable:

* a VAE that is invertible on images constant over 8x8 blocks: the latent is the block mean
  of the RGB channels plus a zero fourth channel, decoding repeats each cell over its block;
* a denoising UNet that works on each latent cell on its own and predicts "keep the current
  latent as x0" (the v-prediction whose x0 is the input), so the person's cells never see the
  background's and a run without a plate is the reference for them;
* reference UNet and image encoder without any transformer block (no reference attention).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from marionette.nodes.sampler import background as bg
from marionette.nodes.sampler import pipeline
from marionette.nodes.sampler import node as sampler_node
from marionette.nodes.types import Stitching

SIZE, FRAMES, STEPS = 64, 7, 3
h = w = SIZE // 8


class _Bare(nn.Module):
    """No transformer blocks: ReferenceAttention pairs nothing."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # device/dtype probe
        self.down_blocks, self.up_blocks, self.mid_block = nn.ModuleList(), nn.ModuleList(), nn.Identity()


class BlockVAE(_Bare):
    def encode(self, x):
        mean = F.avg_pool2d(x, 8)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=torch.cat([mean, torch.zeros_like(mean[:, :1])], 1)))

    def decode(self, z):
        return SimpleNamespace(sample=F.interpolate(z[:, :3], scale_factor=8, mode="nearest"))


class KeepX0UNet(_Bare):
    def __init__(self):
        super().__init__()
        self.alphas = pipeline.make_scheduler().alphas_cumprod

    def forward(self, x, t, context, guidance):
        a = float(self.alphas[int(t)])
        eps = x * (1 - a ** 0.5) / (1 - a) ** 0.5
        return a ** 0.5 * eps - (1 - a) ** 0.5 * x  # v whose x0 is x


class ImageEncoder(_Bare):
    def forward(self, pixels):
        return SimpleNamespace(image_embeds=torch.zeros(pixels.shape[0], 8))


class ReferenceUNet(_Bare):
    def forward(self, *args, **kwargs):
        return None


@pytest.fixture(scope="module")
def get():
    return pipeline.module_source({"vae": BlockVAE(), "denoising_unet": KeepX0UNet(), "image_encoder": ImageEncoder(),
                                   "reference_unet": ReferenceUNet()})


def _blocky(seed, frames, size=SIZE, block=8):
    g = torch.Generator().manual_seed(seed)
    cells = torch.rand(frames, 3, size // block, size // block, generator=g)
    return F.interpolate(cells, scale_factor=block, mode="nearest").permute(0, 2, 3, 1).contiguous()


def _mask(frames=FRAMES, size=SIZE):
    """A person box on whole latent cells, moving one cell right per frame."""
    m = torch.zeros(frames, size, size)
    for f in range(frames):
        m[f, 16:48, 8 + 8 * (f % 3):32 + 8 * (f % 3)] = 1
    return m


def _run(get, guide=None, stitching=None, size=SIZE):
    features = torch.zeros(1, 4, FRAMES, h, w)
    return pipeline.animate(get, torch.full((SIZE, SIZE, 3), 0.5), features, SIZE, SIZE, steps=STEPS, seed=3,
                            resize_to_reference=False, background=guide, stitching=stitching)


def _cells(mask):
    """``[F, H, W]`` pixel mask on whole cells -> ``[1, 1, F, h, w]`` bool."""
    return (F.max_pool2d(mask[:, None], 8) > 0).permute(1, 0, 2, 3)[None]


@pytest.mark.parametrize("stitching", [None, Stitching(mode="chain", clip_frames=4, overlap=1)],
                         ids=["aggregate", "chain"])
def test_full_blend_keeps_the_plate_outside_and_the_person_untouched(get, stitching):
    plate, mask = _blocky(1, FRAMES), _mask()
    base = _run(get, stitching=stitching)
    out = _run(get, bg.BackgroundGuide(plate, mask, fraction=1.0, dilate=0, feather=0), stitching=stitching)
    person = _cells(mask).expand_as(out.latents)
    plate_latents = F.avg_pool2d(plate.permute(0, 3, 1, 2) * 2 - 1, 8).transpose(0, 1)[None] * pipeline.LATENT_SCALE
    assert torch.equal(out.latents[person], base.latents[person])
    torch.testing.assert_close(out.latents[:, :3][~person[:, :3]], plate_latents[~person[:, :3]], rtol=0, atol=1e-6)
    pix = mask[..., None].expand_as(out.frames) > 0
    torch.testing.assert_close(out.frames[~pix], plate[~pix], rtol=0, atol=1e-5)
    assert torch.equal(out.frames[pix], base.frames[pix])


def test_no_steps_no_change_and_validity_mask(get):
    plate, mask = _blocky(2, FRAMES), _mask()
    base = _run(get)
    assert torch.equal(_run(get, bg.BackgroundGuide(plate, mask, fraction=0.0)).latents, base.latents)
    valid = torch.ones(1, SIZE, SIZE)
    valid[:, :, :24] = 0  # the plate's left 3 cells are a guess
    valid[:, 0, 40] = 0  # one unknown pixel makes its cell unknown
    out = _run(get, bg.BackgroundGuide(plate, mask, valid=valid, fraction=1.0, dilate=0, feather=0))
    free = (_cells(mask) | _cells(1 - valid).expand(-1, -1, FRAMES, -1, -1)).expand_as(out.latents)
    assert torch.equal(out.latents[free], base.latents[free])
    assert not torch.allclose(out.latents[~free], base.latents[~free])


def test_dilate_and_feather_grow_outwards_only():
    guide = bg.BackgroundGuide(torch.zeros(1, SIZE, SIZE, 3), _mask(1), dilate=1, feather=1)
    keep = bg.keep_mask(guide, [0], SIZE, SIZE)[0, 0, 0]
    person = _cells(_mask(1))[0, 0, 0]
    grown = F.max_pool2d(person[None, None].float(), 3, 1, 1)[0, 0] > 0
    assert (keep[grown] == 1).all()  # the person and one cell around it are never blended
    ring = (F.max_pool2d(grown[None, None].float(), 3, 1, 1)[0, 0] > 0) & ~grown
    assert ((keep[ring] > 0) & (keep[ring] < 1)).all()  # then a soft edge
    assert (keep[~(ring | grown)] == 0).all()
    hard = bg.keep_mask(bg.BackgroundGuide(guide.plate, _mask(1), dilate=0, feather=0), [0], SIZE, SIZE)
    assert torch.equal(hard[0, 0, 0] > 0, person)


def test_plate_and_mask_at_another_size_are_resized(get):
    plate = _blocky(3, FRAMES, size=2 * SIZE, block=16)
    mask = F.interpolate(_mask()[:, None], scale_factor=2, mode="nearest")[:, 0]
    guide = bg.BackgroundGuide(plate, mask, fraction=1.0, dilate=0, feather=0)
    out = _run(get, guide)
    person = _cells(_mask()).expand_as(out.latents)
    plate_latents, keep = pipeline.encode_plate(get, guide, range(FRAMES), SIZE, SIZE)
    assert torch.equal(keep > 0, _cells(_mask()))
    assert torch.equal(out.latents[person], _run(get).latents[person])
    torch.testing.assert_close(out.latents[~person], plate_latents[~person], rtol=0, atol=1e-6)
    # the resized plate: each 16-px block becomes an 8-px cell (antialiasing only softens the cells' rims)
    pixels = bg.plate_pixels(guide, range(FRAMES), SIZE, SIZE)
    inner = (torch.arange(SIZE) % 8 > 0) & (torch.arange(SIZE) % 8 < 7)
    want = plate.permute(0, 3, 1, 2)[:, :, ::2, ::2] * 2 - 1
    torch.testing.assert_close(pixels[:, :, inner][..., inner], want[:, :, inner][..., inner], rtol=0, atol=1e-6)


def test_one_plate_frame_for_the_whole_video(get):
    plate, mask = _blocky(4, 1), _mask()
    out = _run(get, bg.BackgroundGuide(plate, mask[:1], fraction=1.0, dilate=0, feather=0))
    pix = (mask[:1, ..., None] > 0).expand(FRAMES, -1, -1, 3)
    torch.testing.assert_close(out.frames[~pix], plate.expand(FRAMES, -1, -1, -1)[~pix], rtol=0, atol=1e-5)


def test_mismatches_are_explained(get):
    plate, mask = _blocky(5, FRAMES), _mask()
    cases = [
        (bg.BackgroundGuide(plate[:5], mask), "background plate has 5 frames but the video has 7"),
        (bg.BackgroundGuide(plate, mask[:4]), "person_mask has 4 frames but the video has 7"),
        (bg.BackgroundGuide(plate, mask, valid=mask[:2]), "plate_valid has 2 frames"),
        (bg.BackgroundGuide(plate[0], mask), r"IMAGE batch \[frames, H, W, 3\]"),
        (bg.BackgroundGuide(plate, mask[..., None]), r"person_mask must be a MASK \[frames, H, W\]"),
        (bg.BackgroundGuide(plate, None), "needs the person's mask"),
        (bg.BackgroundGuide(plate, mask, fraction=1.5), "between 0 and 1"),
    ]
    for guide, message in cases:
        with pytest.raises(ValueError, match=message):
            _run(get, guide)


# ----------------------------------------------------------------------------- the node (tiny release)

def _video(seed, frames, size):
    return torch.rand(frames, size, size, 3, generator=torch.Generator().manual_seed(seed))


def test_node_takes_a_plate_of_another_size_and_explains_mismatches(models_dir):
    torch.set_num_threads(1)
    champ = sampler_node.MarionetteLoadChamp.execute(".", "fp32")[0]
    guidance = sampler_node.MarionetteEncodeGuidance.execute(champ, 128, 128, depth=_video(1, 3, 128))[0]
    animate = sampler_node.MarionetteAnimate.execute
    mask = torch.zeros(3, 96, 96)
    mask[:, 20:70, 30:60] = 1
    frames, latent = animate(_video(9, 1, 128), champ, guidance, 0, 0, 1, 3.5, 0, background_plate=_video(2, 3, 96),
                             person_mask=mask, background_steps=1.0,
                             stitching=Stitching(mode="chain", clip_frames=2, overlap=1))
    assert frames.shape == (3, 128, 128, 3) and latent["samples"].shape == (3, 4, 16, 16)
    with pytest.raises(ValueError, match="only used with a background_plate"):
        animate(_video(9, 1, 128), champ, guidance, 0, 0, 1, 3.5, 0, person_mask=mask)
    with pytest.raises(ValueError, match="needs the person_mask"):
        animate(_video(9, 1, 128), champ, guidance, 0, 0, 1, 3.5, 0, background_plate=_video(2, 3, 96))
    with pytest.raises(ValueError, match="has 2 frames but the video has 3"):
        animate(_video(9, 1, 128), champ, guidance, 0, 0, 1, 3.5, 0, background_plate=_video(2, 2, 96),
                person_mask=mask)
