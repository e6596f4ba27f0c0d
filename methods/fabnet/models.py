"""FAb-Net and TCAE as trainable modules: the official networks plus their frame-pair objectives.

Both learn from two frames of one video: the *source* frame is warped by a predicted flow field
into the *target* frame, and the flow is decoded from the two frames' embeddings, so the
embedding must say how the face moves (FAb-Net: Koepke, Wiles, Zisserman, BMVC 2018, Sec. 3;
TCAE: Li, Zeng, Shan, Chen, CVPR 2019, Sec. 3). ``per_sample_losses`` returns each loss term
per sample, unweighted; the curriculum (``methods.fabnet.curriculum``) keeps a window of the
sorted values of each term and the weights in ``WEIGHTS`` sum them.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from methods.fabnet.networks import SeparateEncoder, fabnet_encoder, flow_decoder, identity_grid, warp


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean absolute error (the official ``L1Loss(reduce=False)`` averaged per sample)."""
    return (a - b).abs().flatten(1).mean(1)


def squared(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error (TCAE's ``criterion_l2``)."""
    return (a - b).square().flatten(1).mean(1)


class FlowNet(nn.Module):
    """What the method needs of either network."""

    #: loss term -> weight in the total (official values)
    WEIGHTS: ClassVar[dict[str, float]] = {}
    #: names of ``embed``'s parts, in feature order
    PARTS: ClassVar[tuple[str, ...]] = ()

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The flattened embeddings of images in [0, 1] (the official input), by part name."""
        raise NotImplementedError

    def per_sample_losses(self, target: torch.Tensor, source: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each loss term per sample (B,), for target and source frames in [0, 1]."""
        raise NotImplementedError


class FabNet(FlowNet):
    """``FrontaliseModelMasks_wider`` of FAb-Net: ``encoder``, the flow ``decoder`` and the
    blending ``mask`` decoder, both reading [source, target] embeddings.

    The official training script blends several warped sources by exp(mask) weights; with the
    one source of the released model (``num_views=2``) that weight is exp(m) / exp(m) = 1 and the
    mask decoder gets no gradient, so it is kept (files load strictly) but not run.
    """

    WEIGHTS = {"reconstruction": 1.0}
    PARTS = ("all",)

    def __init__(self, input_size: int, width: int, embedding: int) -> None:
        super().__init__()
        self.encoder = fabnet_encoder(input_size, width, embedding)
        self.decoder = flow_decoder(input_size, width, 2 * embedding, 2)
        self.mask = flow_decoder(input_size, width, 2 * embedding, 1)

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"all": self.encoder(x).flatten(1)}

    def per_sample_losses(self, target: torch.Tensor, source: torch.Tensor) -> dict[str, torch.Tensor]:
        # one encoder pass per frame, in the official order (BatchNorm sees each batch alone)
        t, s = self.encoder(target), self.encoder(source)
        output, _ = warp(source, self.decoder(torch.cat((s, t), 1)))
        return {"reconstruction": l1(output, target)}


class TCAE(FlowNet):
    """TCAE's ``FrontaliseModelMasks_wider``: the two-branch ``encoder`` and a ``pose_decoder``
    and ``expression_decoder`` that each give a flow (2 channels) and an attention map (1).

    The twin cycle (``self_supervised_train_TCAE.py``): the source is warped by the pose flow
    and by the AU flow separately and by their attention-weighted blend; the blend must
    reconstruct the target (weight 10); each warped image's embeddings must match those it
    should keep (pose-warped: the target's pose, the source's AUs; AU-warped: the source's
    pose, the target's AUs; blend: the target's both), squared error; each single-flow image
    warped back by the flow decoded from (its embedding, the source's) must give the source
    (L1); and the AU flow is kept small (0.1 x mean |displacement|).
    """

    WEIGHTS = {
        "reconstruction": 10.0,
        "pose_img_pose": 1.0, "pose_img_au": 1.0, "au_img_pose": 1.0, "au_img_au": 1.0, "out_img_pose": 1.0, "out_img_au": 1.0,
        "au_cycle": 1.0, "pose_cycle": 1.0, "au_flow": 0.1,
    }
    PARTS = ("au", "pose")

    def __init__(self, input_size: int, width: int, embedding: int) -> None:
        super().__init__()
        self.encoder = SeparateEncoder(input_size, width, embedding)
        self.pose_decoder = flow_decoder(input_size, width, 2 * embedding, 3)
        self.expression_decoder = flow_decoder(input_size, width, 2 * embedding, 3)

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pose, au = self.encoder(x)
        return {"au": au.flatten(1), "pose": pose.flatten(1)}

    def per_sample_losses(self, target: torch.Tensor, source: torch.Tensor) -> dict[str, torch.Tensor]:
        target_pose, target_au = self.encoder(target)
        source_pose, source_au = self.encoder(source)
        terms: dict[str, torch.Tensor] = {}
        flows, attention = [], []
        for kind, decoder, source_code, target_code in (
            ("pose", self.pose_decoder, source_pose, target_pose),
            ("au", self.expression_decoder, source_au, target_au),
        ):
            out = decoder(torch.cat((source_code, target_code), 1))
            flows.append(out[:, :2])
            attention.append(out[:, 2:])
            image, grid = warp(source, out[:, :2])
            pose, au = self.encoder(image)
            # each single-flow image keeps the factor it did not move
            terms[f"{kind}_img_pose"] = squared(pose, target_pose if kind == "pose" else source_pose)
            terms[f"{kind}_img_au"] = squared(au, source_au if kind == "pose" else target_au)
            back = decoder(torch.cat((pose if kind == "pose" else au, source_code), 1))[:, :2]
            terms[f"{kind}_cycle"] = l1(warp(image.detach(), back)[0], source)
            if kind == "au":
                # the displacement after clamping, as the official penalty measures it
                terms["au_flow"] = (grid - identity_grid(grid.shape[1], grid)).abs().flatten(1).mean(1)
        weights = torch.stack(attention, -1).exp()
        blended = (torch.stack(flows, -1) * weights).sum(-1) / weights.sum(-1)
        output, _ = warp(source, blended)
        pose, au = self.encoder(output)
        terms["out_img_pose"] = squared(pose, target_pose)
        terms["out_img_au"] = squared(au, target_au)
        terms["reconstruction"] = l1(output, target)
        return terms
