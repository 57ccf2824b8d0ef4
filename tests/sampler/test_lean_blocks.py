"""The sampler's lean forward paths give diffusers' numbers: the chunked GEGLU feed-forward and
the guidance encoder's frames-per-pass bound (bench/sampler.py measures what they save)."""
import torch
from diffusers.models.attention import FeedForward

from marionette.nodes.sampler import motion_module
from marionette.nodes.sampler.guidance_encoder import GuidanceEncoder, GuidanceEncoderConfig


def test_chunked_feed_forward_equals_diffusers(monkeypatch):
    torch.manual_seed(0)
    ff = FeedForward(16, mult=4, activation_fn="geglu").eval()
    x = torch.randn(3, 37, 16)
    with torch.no_grad():
        want = ff(x)
        got = motion_module.feed_forward(ff, x)
        # force many uneven chunks: 5 rows per chunk over 111 rows
        monkeypatch.setattr(motion_module, "FEED_FORWARD_CHUNK_BYTES", 5 * 2 * 64 * x.element_size())
        chunked = motion_module.feed_forward(ff, x)
    assert got.shape == want.shape == chunked.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(chunked, got, rtol=0, atol=1e-6)


def test_guidance_encoder_frames_per_pass_does_not_change_features():
    torch.manual_seed(0)
    config = GuidanceEncoderConfig(guidance_embedding_channels=8, guidance_input_channels=3,
                                   block_out_channels=(8, 32, 32, 32), attention_num_heads=2)
    encoder = GuidanceEncoder(config).eval()
    for p in encoder.parameters():  # the output conv is zero-initialised: make every layer count
        torch.nn.init.normal_(p, std=0.2)
    x = torch.rand(1, 3, 5, 64, 48)
    outs = []
    with torch.no_grad():
        for n in (1, 2, 5):
            encoder.frames_per_pass = n
            outs.append(encoder(x))
    assert outs[0].shape == (1, 8, 5, 8, 6)
    assert outs[0].abs().max() > 0
    scale = outs[0].abs().max()
    for out in outs[1:]:  # float32 rounding only (convolution kernels differ with the batch size)
        assert (out - outs[0]).abs().max() <= 1e-5 * scale
