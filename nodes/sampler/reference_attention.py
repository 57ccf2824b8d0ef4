"""Champ's reference attention (champ_spec.md §5; MagicAnimate's "mutual self-attention",
Xu et al. 2023, reused by Animate Anyone and Champ): the appearance of the reference image
enters the video through the self-attention layers of the denoising UNet.

* **Write.** The 2D reference UNet (SD1.5's UNet with Champ's weights) runs once on the
  reference latent at timestep 0 with the CLIP image token. In each of its 16 transformer blocks
  the hidden state right after ``norm1`` — the input of the block's self-attention — is kept in
  the block's bank ``[B_ref, h*w, C]``.
* **Read.** In the paired transformer block of the 3D denoising UNet, self-attention of every
  frame uses keys/values made of its own post-``norm1`` tokens followed by the bank's tokens
  (the same ``attn1`` weights). The unconditional half of a classifier-free-guidance batch is
  recomputed as plain self-attention, so "unconditional" means no reference features and a
  zero CLIP token (the guidance features stay in both halves).
* **Pairing.** Writer and reader transformer blocks are each listed depth-first in the
  official modules' registration order — down blocks, up blocks, then the mid block — then
  stably sorted by width, widest first, and paired by index. For SD1.5 this pairs every block
  with the block of the same name.

The reference UNet is diffusers' ``UNet2DConditionModel`` built from the same SD1.5 config,
without ``conv_norm_out``/``conv_out`` (Champ's ``reference_unet.pth`` has no such weights: the
reference UNet's output is never used). Writing and reading are diffusers attention processors
on the blocks' ``attn1``, so nothing else in either UNet changes.

Written for Marionette from the spec and a reading of fudan-generative-vision/champ
``models/mutual_self_attention.py`` (commit 02e5533, MIT; adapted there from
magic-research/magic-animate); no code was copied.
"""
from __future__ import annotations

import contextlib

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from .motion_module import attend, sdpa_heads
from .unet3d import UNet3DConfig

# The official code stores the bank in fp16 whatever the models' dtype (``update(..., dtype=
# torch.float16)``); the reader then attends to those rounded values.
OFFICIAL_BANK_DTYPE = torch.float16


def build_reference_unet(config: UNet3DConfig, device=None, dtype=None):
    """Champ's 2D reference UNet: diffusers' ``UNet2DConditionModel`` for the SD1.5 config in
    ``config``, without the output layers (``conv_norm_out``/``conv_act`` are ``None``,
    ``conv_out`` is an identity, so the model returns the last up block's features)."""
    from diffusers import UNet2DConditionModel

    with torch.device(device) if device is not None else contextlib.nullcontext():
        unet = UNet2DConditionModel(**config.reference_unet_kwargs())
    unet.conv_norm_out = None
    unet.conv_act = None
    unet.conv_out = nn.Identity()
    if dtype is not None:
        unet.to(dtype)
    return unet


def transformer_blocks(unet: nn.Module) -> list[tuple[str, BasicTransformerBlock]]:
    """The spatial transformer blocks of a UNet (2D reference or 3D denoising) in the official
    pairing order: depth-first through down blocks, up blocks, then the mid block, then stably
    sorted by width, widest first."""
    found = []
    for part in ("down_blocks", "up_blocks", "mid_block"):
        for name, module in getattr(unet, part).named_modules(prefix=part):
            if isinstance(module, BasicTransformerBlock):
                found.append((name, module))
    return sorted(found, key=lambda item: -item[1].norm1.normalized_shape[0])


class ReferenceWriteProcessor(AttnProcessor2_0):
    """``attn1`` processor of a reference-UNet block: while ``recording``, keeps its input (the
    post-``norm1`` hidden state) in ``bank``; always computes ordinary self-attention."""

    def __init__(self, bank_dtype: torch.dtype | None = OFFICIAL_BANK_DTYPE):
        super().__init__()
        self.bank_dtype = bank_dtype
        self.recording = False
        self.bank: torch.Tensor | None = None

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if self.recording:  # a copy (one, in the bank's dtype): the input may be changed in place later
            self.bank = hidden_states.detach().to(self.bank_dtype or hidden_states.dtype, copy=True)
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)


class ReferenceReadProcessor(AttnProcessor2_0):
    """``attn1`` processor of a denoising-UNet block: self-attention whose keys/values are the
    tokens of the frame followed by the paired writer's bank.

    The bank ``[B_ref, L, C]`` is shared by the frames of each sample: the conditional rows
    ``[B_ref*F, HW, C]`` take bank row ``r // F``. With ``uncond_first_half`` the first half of
    the rows is the unconditional batch of classifier-free guidance and gets plain
    self-attention. Without a bank, or when ``enabled`` is False, plain self-attention.

    The keys and values of the bank's tokens are the same for every frame, window and step, so
    they are projected once per bank (and dtype) and kept (``kv_cache``) until the bank changes or
    ``clear_cache()``; the official code projects the bank again, repeated for every frame, in
    every call. q/k/v of both halves of a CFG batch are projected together."""

    def __init__(self, writer: ReferenceWriteProcessor):
        super().__init__()
        self.writer = writer
        self.enabled = False
        self.uncond_first_half = False
        self.kv_cache: tuple | None = None

    def clear_cache(self) -> None:
        self.kv_cache = None

    def _bank_kv(self, attn: Attention, bank: torch.Tensor, dtype: torch.dtype):
        cached = self.kv_cache
        if cached is None or cached[0] is not bank or cached[1] is not attn or cached[2].dtype != dtype:
            ref = bank.to(dtype)
            cached = self.kv_cache = (bank, attn, attn.to_k(ref), attn.to_v(ref))
        return cached[2], cached[3]

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        bank = self.writer.bank
        if attention_mask is not None or encoder_hidden_states is not None:
            raise ValueError("reference attention reads self-attention layers without a mask")
        if not self.enabled or bank is None:
            return attend(attn, hidden_states)
        rows, tokens, channels = hidden_states.shape
        if self.uncond_first_half and rows % 2:
            raise ValueError(f"a classifier-free-guidance batch has an even number of rows; got {rows}")
        split = rows // 2 if self.uncond_first_half else 0
        cond_rows, refs = rows - split, bank.shape[0]
        if cond_rows % refs or bank.shape[-1] != channels:
            raise ValueError(f"the reference bank {list(bank.shape)} does not fit {cond_rows} conditional rows "
                             f"of width {channels}: write the reference with the batch size of the video")
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        k_ref, v_ref = self._bank_kv(attn, bank, hidden_states.dtype)
        per = cond_rows // refs

        def with_bank(own, ref):  # [cond rows, HW + L, C]: each row's tokens, then its sample's bank
            own = own[split:].view(refs, per, tokens, channels)
            ref = ref[:, None].expand(refs, per, *ref.shape[1:])
            return torch.cat([own, ref], dim=2).view(cond_rows, -1, channels)

        out = sdpa_heads(q[split:], with_bank(k, k_ref), with_bank(v, v_ref), attn.heads)
        if split:
            out = torch.cat([sdpa_heads(q[:split], k[:split], v[:split], attn.heads), out])
        return attn.to_out[0](out)


class ReferenceAttention:
    """Pairs a reference UNet (writer) with a denoising UNet (reader) and swaps in the write/read
    processors on their ``attn1`` layers; ``detach()`` (or leaving the ``with`` block) puts the
    previous processors back. Typical use, once per video::

        with ReferenceAttention(reference_unet, denoising_unet) as ref:
            ref.write(reference_latent, clip_token)        # [1, 4, h, w], [1, 1, 768]
            with ref.reading(uncond_first_half=True):       # CFG batch [uncond, cond]
                for step ...: for window ...: denoising_unet(...)

    Args:
        reference_unet: the 2D reference UNet (``build_reference_unet``).
        denoising_unet: the 3D denoising UNet (``UNet3DConditionModel``).
        bank_dtype: precision the bank is kept in; the official code uses fp16 whatever the
            models' dtype (``OFFICIAL_BANK_DTYPE``); ``None`` keeps the writer's dtype.
    """

    def __init__(self, reference_unet: nn.Module, denoising_unet: nn.Module,
                 bank_dtype: torch.dtype | None = OFFICIAL_BANK_DTYPE):
        self.reference_unet = reference_unet
        self.denoising_unet = denoising_unet
        writers, readers = transformer_blocks(reference_unet), transformer_blocks(denoising_unet)
        widths = lambda blocks: [b.norm1.normalized_shape[0] for _, b in blocks]  # noqa: E731
        if widths(writers) != widths(readers):
            raise ValueError(f"the reference UNet's transformer blocks (widths {widths(writers)}) do not pair with the "
                             f"denoising UNet's (widths {widths(readers)}); both must come from the same SD1.5 config")
        self.pairs = [(w_name, r_name) for (w_name, _), (r_name, _) in zip(writers, readers)]
        self._blocks = [(w, r) for (_, w), (_, r) in zip(writers, readers)]
        self._write = [ReferenceWriteProcessor(bank_dtype) for _ in self._blocks]
        self._read = [ReferenceReadProcessor(p) for p in self._write]
        self._previous: list = []
        self.attached = False
        self.attach()

    def attach(self) -> None:
        """Install the write/read processors (done on construction)."""
        if self.attached:
            return
        self._previous = [(w.attn1.processor, r.attn1.processor) for w, r in self._blocks]
        for (writer, reader), w_proc, r_proc in zip(self._blocks, self._write, self._read):
            writer.attn1.set_processor(w_proc)
            reader.attn1.set_processor(r_proc)
        self.attached = True

    def detach(self) -> None:
        """Put the UNets' previous attention processors back and drop the banks."""
        if self.attached:
            for (writer, reader), (w_prev, r_prev) in zip(self._blocks, self._previous):
                writer.attn1.set_processor(w_prev)
                reader.attn1.set_processor(r_prev)
        self.clear()
        self.attached = False

    def __enter__(self) -> "ReferenceAttention":
        self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    @torch.no_grad()
    def write(self, reference_latents: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        """Run the reference UNet once at timestep 0 and fill every bank.

        Args:
            reference_latents: ``[B_ref, 4, h, w]``, the VAE latent mean × 0.18215 of the
                reference image (the conditional sample only: the unconditional half never reads
                the bank).
            encoder_hidden_states: ``[B_ref, 1, 768]``, its CLIP image token.
        """
        for p in self._write:
            p.recording, p.bank = True, None
        try:
            t = torch.zeros(reference_latents.shape[0], dtype=torch.int64, device=reference_latents.device)
            self.reference_unet(reference_latents, t, encoder_hidden_states=encoder_hidden_states, return_dict=False)
        finally:
            for p in self._write:
                p.recording = False
        empty = [w for (w, _), p in zip(self.pairs, self._write) if p.bank is None]
        if empty:
            raise RuntimeError(f"the reference UNet did not run blocks {empty}")

    @contextlib.contextmanager
    def reading(self, uncond_first_half: bool = True):
        """Within the block, the denoising UNet's self-attention reads the banks.
        ``uncond_first_half``: the batch is ``[uncond, cond]`` (classifier-free guidance) and
        the first half attends without the reference."""
        for p in self._read:
            p.enabled, p.uncond_first_half = True, uncond_first_half
        try:
            yield self
        finally:
            for p in self._read:
                p.enabled = False
                p.clear_cache()

    def clear(self) -> None:
        """Drop the banks (the official pipeline clears them after each video)."""
        for p in self._write:
            p.bank = None
        for p in self._read:
            p.clear_cache()

    @property
    def banks(self) -> dict[str, torch.Tensor | None]:
        """Writer block name → its bank."""
        return {w: p.bank for (w, _), p in zip(self.pairs, self._write)}
