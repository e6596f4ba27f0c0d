import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from harness.datasets.base import ImageSet, PairList
from protocols.fer import FER, FERConfig, classification_metrics, validation_split
from protocols import verification
from protocols.verification import Verification, VerificationConfig, best_threshold, pair_features


class FixedFeatures:
    """Features handed to a protocol directly (no method involved)."""

    def __init__(self, **splits):
        self.splits = splits
        self.requested = []

    def get(self, split, flip=False):
        self.requested.append((split, flip))
        return self.splits[split + ("-flip" if flip else "")]


def test_threshold_search_hand_computed():
    t, acc = best_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, True, False, True]))
    assert t == pytest.approx(0.375) and acc == 1.0
    # two thresholds (0.25 and 0.55) both get 4 of 5 right: the smaller one is taken
    t, acc = best_threshold(np.array([0.2, 0.3, 0.5, 0.6, 0.9]), np.array([0, 1, 0, 1, 1], dtype=bool))
    assert t == pytest.approx(0.25) and acc == pytest.approx(0.8)
    # all positives: a threshold below every score
    t, acc = best_threshold(np.array([0.5, 0.7]), np.array([True, True]))
    assert t < 0.5 and acc == 1.0


class PairsOnly:
    """A dataset stub holding just a pair list."""

    def __init__(self, pairs):
        self.pairs = pairs

    def verification(self):
        return None, self.pairs


def test_cosine_verification_folds_hand_computed():
    # three folds of four pairs; each pair gets its own two images with cosine = the score
    folds = [
        ([0.9, 0.8, 0.25, 0.85], [1, 1, 0, 0]),
        ([0.7, 0.6, 0.2, 0.1], [1, 1, 0, 0]),
        ([0.95, 0.4, 0.5, 0.0], [1, 1, 0, 0]),
    ]
    feats, left, right, same, fold = [], [], [], [], []
    for k, (scores, labels) in enumerate(folds):
        for s, y in zip(scores, labels):
            left.append(len(feats)), feats.append([1.0, 0.0])
            right.append(len(feats)), feats.append([s, math.sqrt(1 - s * s)])
            same.append(bool(y)), fold.append(k)
    pairs = PairList(torch.tensor(left), torch.tensor(right), torch.tensor(same), torch.tensor(fold))
    cfg = VerificationConfig.resolve("quick", {"mode": "cosine"})
    m = Verification(cfg).evaluate(PairsOnly(pairs), FixedFeatures(pairs=torch.tensor(feats, dtype=torch.float64)), seed=0)
    # fold 0 tested with t=0.3 (train folds 1,2), fold 1 with t=0.325, fold 2 with t=0.425
    assert m["fold_thresholds"] == pytest.approx([0.3, 0.325, 0.425])
    assert m["fold_accuracies"] == pytest.approx([0.75, 1.0, 0.5])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["accuracy_std"] == pytest.approx(0.25)
    assert m["accuracy_sem"] == pytest.approx(0.25 / math.sqrt(3))


def identity_pairs(per_fold: int = 30) -> tuple[torch.Tensor, PairList]:
    """Features = a one-hot identity direction plus small noise; 10 folds of matched and mismatched pairs."""
    g = torch.Generator().manual_seed(0)
    ids = torch.arange(200) % 20
    f = torch.nn.functional.one_hot(ids, 20).float() * 3 + 0.3 * torch.randn(200, 20, generator=g)
    left, right, same, fold = [], [], [], []
    for k in range(10):
        for s in (True, False):
            for _ in range(per_fold):
                a = int(torch.randint(200, (1,), generator=g))
                pool = ((ids == ids[a]) if s else (ids != ids[a])).nonzero().squeeze(1)
                left.append(a), right.append(int(pool[torch.randint(len(pool), (1,), generator=g)]))
                same.append(s), fold.append(k)
    return f, PairList(torch.tensor(left), torch.tensor(right), torch.tensor(same), torch.tensor(fold))


@pytest.mark.parametrize("mode", ["pair-linear", "cosine"])
def test_verification_modes_separate_identities(mode):
    f, pairs = identity_pairs()
    cfg = VerificationConfig.resolve("quick", {"mode": mode})
    m = Verification(cfg).evaluate(PairsOnly(pairs), FixedFeatures(pairs=f), seed=0)
    assert len(m["fold_accuracies"]) == 10
    assert m["accuracy"] > 0.9
    assert ("fold_thresholds" in m) == (mode == "cosine")


def test_pair_features_hand_computed():
    f = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    pairs = PairList(torch.tensor([0]), torch.tensor([1]), torch.tensor([True]), torch.tensor([0]))
    assert pair_features(f, pairs, legacy=False).tolist() == [[2.0, 6.0, 4.0, 2.0, 3.0, -8.0]]  # [|a-b|, |a+b|, a*b]
    assert pair_features(f, pairs, legacy=True).tolist() == [[2.0, 6.0, 4.0, 2.0, 3.0, 8.0]]  # the released |a*b|


def test_legacy_mode_is_the_released_loop(monkeypatch):
    """300 Adam updates at lr 1e-4, each on one random minibatch of 128 pairs, raw |a*b| features."""
    f, pairs = identity_pairs(per_fold=20)  # 400 pairs: 360 training pairs per fold
    optimizers, inputs, batches = [], [], []

    class CountingAdam(torch.optim.Adam):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)
            self.steps = 0
            optimizers.append(self)

        def step(self, closure=None):
            self.steps += 1
            return super().step(closure)

    real_train, real_forward = verification.train_pair_linear, torch.nn.Linear.forward
    monkeypatch.setattr(torch.optim, "Adam", CountingAdam)
    monkeypatch.setattr(verification, "train_pair_linear", lambda x, *a: inputs.append(x) or real_train(x, *a))
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: batches.append(len(x)) or real_forward(self, x))
    cfg = VerificationConfig.resolve("quick", {"mode": "pair-linear-legacy"})
    m = Verification(cfg).evaluate(PairsOnly(pairs), FixedFeatures(pairs=f), seed=0)
    assert [o.steps for o in optimizers] == [300] * 10
    assert all(group["lr"] == 1e-4 and group["weight_decay"] == 0 for o in optimizers for group in o.param_groups)
    assert batches.count(128) == 3000 and batches.count(40) == 10, "one minibatch of 128 per update, then the 40 test pairs"
    raw = pair_features(f, pairs, legacy=True)
    for k, x in enumerate(inputs):
        assert torch.equal(x, raw[pairs.fold != k]), "legacy trains on raw (unstandardised) features"
    assert 0.5 < m["accuracy"] < 1.0  # the short loop underfits, as the released numbers did


def test_pair_linear_standardises_with_training_fold_statistics_only(monkeypatch):
    f, pairs = identity_pairs(per_fold=20)
    f[pairs.left[pairs.fold == 0]] *= 50  # fold 0's images are far off: its statistics would show
    recorded = []
    real_train = verification.train_pair_linear

    def spy(x, *args):
        model, seen = real_train(x, *args), []
        model.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
        recorded.append((x, seen))
        return model

    monkeypatch.setattr(verification, "train_pair_linear", spy)
    Verification(VerificationConfig.resolve("quick", {"epochs": "2"})).evaluate(PairsOnly(pairs), FixedFeatures(pairs=f), seed=0)
    raw = pair_features(f, pairs, legacy=False)
    for k, (x_train, (x_test,)) in enumerate(recorded):
        train, test = raw[pairs.fold != k], raw[pairs.fold == k]
        mean, std = train.mean(0), train.std(0) + 1e-6
        assert torch.allclose(x_train, (train - mean) / std)
        assert torch.allclose(x_test, (test - mean) / std), f"fold {k} is scaled by the training folds' statistics"


def test_flip_concat_appends_the_mirror_images_features():
    f, pairs = identity_pairs()
    mirrored = torch.randn(f.shape, generator=torch.Generator().manual_seed(1))  # stands in for the mirror images' features
    cfg = VerificationConfig.resolve("quick", {"mode": "cosine", "flip_concat": "true"})
    features = FixedFeatures(pairs=f, **{"pairs-flip": mirrored})
    m = Verification(cfg).evaluate(PairsOnly(pairs), features, seed=0)
    assert ("pairs", True) in features.requested and m["feature_dim"] == 40
    by_hand = Verification(VerificationConfig.resolve("quick", {"mode": "cosine"})).evaluate(
        PairsOnly(pairs), FixedFeatures(pairs=torch.cat([f, mirrored], dim=1)), seed=0
    )
    assert m["fold_thresholds"] == by_hand["fold_thresholds"] and m["fold_accuracies"] == by_hand["fold_accuracies"]
    plain = Verification(VerificationConfig.resolve("quick", {"mode": "cosine"})).evaluate(PairsOnly(pairs), FixedFeatures(pairs=f), seed=0)
    assert plain["fold_thresholds"] != m["fold_thresholds"], "the mirror features change the scores"


def test_macro_f1_matches_scikit_learn():
    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    pred[:200] = true[:200]
    names = tuple("abcdefg")
    m = classification_metrics(true, pred, names)
    assert m["macro_f1"] == pytest.approx(f1_score(true, pred, average="macro"))
    assert list(m["per_class_f1"].values()) == pytest.approx(f1_score(true, pred, average=None).tolist())
    assert np.array(m["confusion"]).sum() == 500 and np.trace(m["confusion"]) == (true == pred).sum()


class LabelledOnly:
    def __init__(self, train, test):
        self.sets = {"train": train, "test": test}

    def fer_split(self, split):
        return self.sets[split]


def fer_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    x = torch.nn.functional.one_hot(labels, 3).float() * 2 + 0.5 * torch.randn(n, 3, generator=g)
    images = torch.zeros(n, 3, 2, 2, dtype=torch.uint8)
    return ImageSet(images, labels=labels, class_names=("a", "b", "c")), x


@pytest.mark.parametrize("overrides", [{}, {"select": "val"}, {"flip_aug": "true"}])
def test_fer_probe_learns_separable_classes(overrides):
    (train, xtr), (test, xte) = fer_data(300, 0), fer_data(90, 1)
    feats = FixedFeatures(train=xtr, test=xte, **{"train-flip": xtr})
    # small batches, more epochs: enough Adam steps at the paper lr (1e-3) for 300 samples
    m = FER(FERConfig.resolve("quick", {**overrides, "batch_size": "16", "epochs": "60"})).evaluate(LabelledOnly(train, test), feats, seed=0)
    assert m["accuracy"] > 0.9 and m["macro_f1"] > 0.9
    assert m["n_test"] == 90
    assert m["n_train"] == (270 if overrides.get("select") == "val" else 300)
    assert ("test", True) not in feats.requested  # test features are never augmented or selected on


def test_validation_split_is_stratified_and_seeded():
    labels = torch.arange(100) % 4
    mask = validation_split(labels, 0.2, seed=1)
    assert mask.sum() == 20 and all(int(mask[labels == c].sum()) == 5 for c in range(4))
    assert torch.equal(mask, validation_split(labels, 0.2, seed=1))
    assert not torch.equal(mask, validation_split(labels, 0.2, seed=2))


def test_protocols_reading_the_same_features_share_the_cache(tmp_path):
    """A method whose features do not depend on the view is encoded once for fer, knn and
    factors; LatentFace's views differ and depth reads something else."""
    from harness.features import FeatureSource
    from harness.session import Session, Settings

    session = Session(Settings(preset="smoke", cache_dir=str(tmp_path)))
    data = session.dataset("synthetic")

    def key(method: str, protocol: str, split: str = "train") -> dict:
        return FeatureSource(session.method(method, "default" if method != "latentface" else "rdm-both", 0), data,
                             session.protocol(protocol), tmp_path).key(split)

    assert key("pixels", "fer") == key("pixels", "knn") == key("pixels", "factors")
    assert key("pixels", "verification", "pairs") == key("pixels", "factors", "pairs")
    assert key("unsup3d", "fer") == key("unsup3d", "knn") != key("unsup3d", "factors")
    assert key("unsup3d", "depth") not in (key("unsup3d", "fer"), key("unsup3d", "factors"))
    assert key("latentface", "fer", "pairs") != key("latentface", "verification", "pairs")
