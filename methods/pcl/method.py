"""The registered method ``pcl``: PCL trained from scratch with its three-step objective, or the
authors' weights loaded from a file (``--set pcl.checkpoint=PATH``).

Features (what the authors' linear evaluation reads, ``ExpPose.linear_forward``): the trunk,
``layer3_1``'s flattened map, 2048-d at 64 px (LatentFace's Table 5 size), for ``fer``, ``knn``
and ``verification``. The ``parts`` view adds the face (``layer3_2_exp``) and pose
(``layer3_2_pose``) branches, each as wide as the trunk: LatentFace ticks identity,
expression and pose for PCL.

Input: images in [0, 1] (the authors' ``ToTensor``, no mean/std) at ``input_size``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F

from harness.artifacts import Artifact
from harness.config import at_least, between, dotted, existing_file, positive, power_of_two
from harness.errors import BenchError
from harness.method import MethodContext, model_seed, part_slices, to_input
from harness.registry import register_method
from methods.pcl import checkpoint
from methods.pcl.networks import PCLModel
from methods.pcl.objective import ContrastiveViews, face_contrastive, orthogonality, pose_contrastive
from methods.selfsup import SelfSupervisedBaseline, SelfSupervisedConfig, warmup_cosine

PARTS = ("trunk", "face", "pose")


@dataclasses.dataclass(frozen=True)
class PCLConfig(SelfSupervisedConfig):
    """PCL settings; defaults are the ``quick`` preset (32 px, quarter width, seconds on 2 CPU cores).

    Attributes:
        input_size: image side in pixels, for training and features (authors: 64 to train, and
            the features LatentFace counts; their RAF-DB probe reads 100 px).
        width: channel multiplier of every network (1 = the authors').
        proj_dim: output size of the projection heads (authors: 512).
        epochs, batch_size, train_images: schedule over the pretraining images (``train_images``:
            the first this many, 0 = all).
        lr, weight_decay: Adam with L2 weight decay (the authors' ``torch.optim.Adam``, not
            AdamW); the rate follows a per-epoch cosine to zero (``warmup_epochs`` 0).
        temperature: InfoNCE temperature of both contrastive steps.
        neg_alpha: Beta(alpha, alpha) weights that mix the negatives pairwise.
        noise: sd of the Gaussian noise on the reconstruction step's inputs (images in [0, 1]).
        crop_ratio: side of the face step's two crops, as a share of the image side.
        pose_batch: faces per pose step (the first of each batch).
        pose_negatives: augmented mirror views per face in the pose step.
        dwa_temperature: dynamic weight averaging of the two contrastive losses from the third
            epoch on (0: off, both weights 1).
        checkpoint: the authors' training or linear-evaluation file, or this project's model.pt,
            to load instead of training (``methods/pcl/checkpoint.py``); empty: train.
    """

    input_size: int = 32
    width: float = 0.25
    proj_dim: int = 128
    epochs: int = 2
    batch_size: int = 32
    train_images: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-3
    temperature: float = 0.07
    neg_alpha: float = 1.6
    noise: float = 0.4
    crop_ratio: float = 0.4
    pose_batch: int = 4
    pose_negatives: int = 8
    dwa_temperature: float = 2.0
    checkpoint: str = ""

    PRESETS = {
        "smoke": {"input_size": 16, "width": 0.125, "proj_dim": 16, "epochs": 1, "batch_size": 8, "train_images": 16,
                  "pose_batch": 2, "pose_negatives": 3},
        # The authors' configs/remote_PCL_vox.yaml unless noted.
        "paper": {
            "input_size": 64,  # img_size: 64 ("train 64")
            "width": 1.0,  # Models/networks.py channel counts
            "proj_dim": 512,  # exp_fc / pose_fc: Linear(2048, 512)
            # epochs: 6000, each one random frame per training speaker (4 batches of 256 on
            # VoxCeleb1): 24,000 iterations, 6.1 M images; over the harness's VoxCeleb frames
            # (1,147 speakers, 16 frames per clip, about 330 k) that is 18 passes
            "epochs": 18,
            "batch_size": 256,  # batch_size: 256
            "train_images": 0,
            "lr": 1e-4,  # lr: 1.0e-4 (Adam, CosineAnnealingLR with T_max = epochs)
            "weight_decay": 1e-3,  # wd: 1.0e-3
            "temperature": 0.07,  # T: 0.07
            "neg_alpha": 1.6,  # neg_alpha: 1.6
            "noise": 0.4,  # exppose.forward: randn * 4e-1
            "crop_ratio": 0.4,  # DistanceCrop(ratio=0.4)
            "pose_batch": 10,  # main.py: the pose loader's batch_size=10
            "pose_negatives": 100,  # posecondb: 100 mirrored views
            "dwa_temperature": 2.0,  # use_dwa: True, dwa_T: 2.0
        },
    }
    RULES = {
        # the decoder doubles a 1x1 map up to the input side; the encoder halves it 4 times
        "input_size": power_of_two(16), "width": positive, "proj_dim": at_least(1), "temperature": positive, "neg_alpha": positive, "noise": at_least(0), "crop_ratio": between(0, 0.5, low_open=True),
        "pose_batch": at_least(2), "pose_negatives": at_least(1), "dwa_temperature": at_least(0),
        "checkpoint": existing_file("give the path of the authors' checkpoint (or leave it empty to train)"),
    }

    def check(self, section: str) -> None:
        super().check(section)
        p = dotted(section)
        if self.pose_batch > self.batch_size:
            raise BenchError(
                f"{p}pose_batch={self.pose_batch}: exceeds {p}batch_size ({self.batch_size}), and the pose step takes "
                f"the first faces of each batch; set {p}pose_batch lower or {p}batch_size higher"
            )


def dwa_weights(costs: torch.Tensor, epoch: int, temperature: float) -> tuple[float, float]:
    """Dynamic weight averaging (Liu et al. 2019) of the face and pose losses, as the authors'
    ``main.py``: from the third epoch, each weight follows how much its loss fell over the two
    previous epochs, ``2 softmax(r / T)`` with ``r = L(e-1) / L(e-2)``; 1 before."""
    if temperature == 0 or epoch < 2:
        return 1.0, 1.0
    ratio = (costs[epoch - 1] / costs[epoch - 2]).double()
    w = 2 * torch.softmax(ratio / temperature, dim=0)
    return float(w[0]), float(w[1])


def training_steps(net: PCLModel, cfg: PCLConfig, batches_per_epoch: int, device: torch.device) -> Callable:
    """The ``fit`` step: yields the three losses of one PCL iteration, one optimiser step each."""
    views = ContrastiveViews(cfg.input_size, cfg.crop_ratio)

    def step(batch: torch.Tensor) -> Iterator[dict[str, torch.Tensor]]:
        x = (to_input(batch, cfg.input_size, device) + 1) / 2  # the authors' ToTensor range
        epoch = int(net.steps) // batches_per_epoch
        w_face, w_pose = dwa_weights(net.costs, epoch, cfg.dwa_temperature)

        # 1. reconstruction across the image and its mirror, and face/pose orthogonality
        mirror = x.flip(-1)
        _, face_x, pose_x = net(x + cfg.noise * torch.randn_like(x))
        _, face_m, pose_m = net(mirror + cfg.noise * torch.randn_like(x))
        recon = (
            F.l1_loss(net.reconstruct(face_m, pose_x), x) + F.l1_loss(net.reconstruct(face_x, pose_m), mirror)
            + F.l1_loss(net.reconstruct(face_x, pose_x), x) + F.l1_loss(net.reconstruct(face_m, pose_m), mirror)
        )
        ortho = orthogonality(face_x, pose_x) + orthogonality(face_m, pose_m)
        yield {"loss": recon + ortho, "reconstruction": recon, "orthogonality": ortho}

        # 2. face contrastive: two crops from different quadrants, mixed negatives
        first, second = views.quadrant_crops(batch.float() / 255)
        crops = torch.cat([views(first), views(second)])
        face = face_contrastive(net.exp_fc(net(crops)[1]), cfg.temperature, cfg.neg_alpha)
        yield {"loss": w_face * face, "face_nce": face}

        # 3. pose contrastive: two views of a face against views of its mirror image
        faces = x[: cfg.pose_batch]
        positives = torch.cat([views(faces), views(faces)])
        negatives = views(faces.flip(-1).repeat(cfg.pose_negatives, 1, 1, 1))  # view-major, as drawn
        pose = pose_contrastive(net.pose_fc(net(positives)[2]), net.pose_fc(net(negatives)[2]), cfg.temperature, cfg.neg_alpha)
        yield {"loss": w_pose * pose, "pose_nce": pose}

        net.costs[epoch] += torch.tensor([float(face.detach()), float(pose.detach())], dtype=torch.float64)
        net.steps += 1

    return step


@register_method("pcl")
class PCL(SelfSupervisedBaseline):
    """PCL: features from the FaceCycle-style encoder's trunk; parts trunk, face and pose."""

    Config = PCLConfig
    cfg: PCLConfig
    net: PCLModel

    def __init__(self, cfg: PCLConfig, variant: str, ctx: MethodContext) -> None:
        super().__init__(cfg, variant, ctx)
        if cfg.checkpoint:  # a file that cannot serve fails now, as one line
            self._record = checkpoint.record(cfg.checkpoint, "pcl.checkpoint")

    def build_net(self) -> PCLModel:
        return PCLModel(self.cfg.input_size, self.cfg.width, self.cfg.proj_dim, self.cfg.epochs)

    # --- training -------------------------------------------------------------------------
    def artifacts(self) -> list[Artifact]:
        return [] if self.cfg.checkpoint else super().artifacts()

    def training_setup(self) -> tuple[PCLModel, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, Callable]:
        cfg, device = self.cfg, self.ctx.device
        torch.manual_seed(model_seed(self.ctx, self.name))  # weights, then the steps' random draws
        net = self.build_net().to(device)
        # one Adam over every parameter, as the authors'; each step updates what its loss reaches
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay)
        images = len(self.ctx.load_pretrain().images)
        images = min(images, cfg.train_images) if cfg.train_images else images
        step = training_steps(net, cfg, max(1, images // cfg.batch_size), device)
        return net, optimizer, warmup_cosine(optimizer, cfg.epochs, cfg.warmup_epochs), step

    # --- features -------------------------------------------------------------------------
    def weights_file(self) -> Optional[dict]:
        return self._record if self.cfg.checkpoint else None

    def load(self) -> None:
        if not self.cfg.checkpoint:
            return super().load()
        net = self.build_net()
        checkpoint.load_pcl_weights(net, self.cfg.checkpoint, "pcl.checkpoint")
        self.net = net.to(self.ctx.device).eval()

    @torch.no_grad()
    def encode(self, x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
        trunk, face, pose = self.net((x + 1) / 2)
        return torch.cat([trunk, face, pose], dim=1) if view == "parts" else trunk

    def feature_view(self, view: str) -> str:
        return "parts" if view == "parts" else ""  # fer, knn and verification all read the trunk

    def parts(self) -> dict[str, slice]:
        return part_slices({name: self.feature_dim for name in PARTS})

    def info(self) -> dict:
        source = {"weights": self.weights_file()} if self.cfg.checkpoint else {"training": "from scratch (three steps per iteration)"}
        return {**source, "feature_dim": self.feature_dim, "features": "encoder trunk (layer3_1), flattened", "parts": list(PARTS)}
