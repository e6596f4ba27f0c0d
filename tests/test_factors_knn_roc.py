"""Known answers of the kNN, ROC and DCI metrics, and the factors protocol on a world it can read."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from harness.datasets.base import ImageSet, PairList
from protocols.factors import FactorsConfig, Factors, dci, expression_correct, importance_matrix, verification_correct
from protocols.knn import KNN, KNNConfig, knn_predict
from protocols.verification import roc_auc, roc_metrics, roc_points, tar_at_far


# --- kNN ---------------------------------------------------------------------------------------------
def clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    return torch.nn.functional.one_hot(labels, 3).float() * 5 + 0.3 * torch.randn(n, 3, generator=g), labels


def test_knn_on_separated_clusters_is_perfect():
    (x, y), (xt, yt) = clusters(90, 0), clusters(30, 1)
    for k in (1, 20, 200):  # 200 > the 90 training images: capped
        assert torch.equal(knn_predict(x, y, xt, k, 0.07, 3), yt)


def test_knn_votes_are_weighted_by_similarity():
    # two far "class 1" neighbours and one identical "class 0" neighbour: the weight decides
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.05]])
    assert knn_predict(train, labels, test, 3, 0.07, 2).item() == 0  # exp(1/0.07) >> 2 exp(0.05/0.07)
    assert knn_predict(train, labels, test, 3, 100.0, 2).item() == 1  # near-uniform weights: the majority


class Labelled:
    def __init__(self, **splits):
        self.splits = splits

    def fer_split(self, split):
        return self.splits[split]


class Fixed:
    def __init__(self, **splits):
        self.splits, self.method = splits, None

    def get(self, split, flip=False):
        return self.splits[split]


def test_knn_protocol_reports_each_k():
    (x, y), (xt, yt) = clusters(90, 0), clusters(30, 1)
    data = Labelled(train=ImageSet(torch.zeros(90, 3, 2, 2, dtype=torch.uint8), labels=y, class_names=("a", "b", "c")),
                    test=ImageSet(torch.zeros(30, 3, 2, 2, dtype=torch.uint8), labels=yt, class_names=("a", "b", "c")))
    m = KNN(KNNConfig.resolve("quick")).evaluate(data, Fixed(train=x, test=xt), seed=0)
    assert set(m["per_k"]) == {"20", "200"} and m["accuracy"] == 1.0 and m["k"] == 20
    assert "k=20: 100.00" in KNN.cell([{"metrics": m}])


# --- TAR at FAR and ROC -------------------------------------------------------------------------------
def test_tar_at_far_hand_computed():
    # impostors 0.9, 0.5, 0.4, 0.3, 0.2 (5); genuine 0.95, 0.85, 0.6, 0.45
    scores = np.array([0.95, 0.85, 0.6, 0.45, 0.9, 0.5, 0.4, 0.3, 0.2])
    same = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    assert tar_at_far(scores, same, 0.0) == 0.25  # above every impostor: only 0.95
    assert tar_at_far(scores, same, 0.2) == 0.75  # one impostor (0.9) allowed: threshold 0.5
    assert tar_at_far(scores, same, 0.1) == 0.25  # 0.1 x 5 < 1 impostor: as FAR 0
    assert tar_at_far(scores, same, 1.0) == 1.0
    # AUC: the genuine scores beat 5, 4, 4 and 3 of the 5 impostors -> 16 / 20
    assert roc_auc(scores, same) == pytest.approx(0.8)
    assert roc_auc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5  # a tie counts half


def test_roc_points_run_from_zero_to_one_and_metrics_pool_the_folds():
    rng = np.random.default_rng(0)
    same = np.repeat([True, False], 600)
    scores = rng.standard_normal(1200) + same * 1.5
    curve = roc_points(scores, same, max_points=50)
    far, tar = np.array(curve["far"]), np.array(curve["tar"])
    assert far[0] == 0 and tar[0] == 0 and far[-1] == 1 and tar[-1] == 1 and len(far) <= 51
    assert (np.diff(far) >= 0).all() and (np.diff(tar) >= 0).all()
    fold = np.tile(np.arange(10), 120)
    m = roc_metrics(scores, same, fold)
    per_fold = [tar_at_far(scores[fold == k], same[fold == k], 0.1) for k in range(10)]
    assert m["tar_at_far_0.1"] == pytest.approx(np.mean(per_fold))
    assert m["tar_at_far_0.001_pooled"] == tar_at_far(scores, same, 1e-3)
    assert 0.8 < m["auc_pooled"] < 0.9  # two unit normals 1.5 apart: Phi(1.5 / sqrt 2) = 0.856


# --- DCI -------------------------------------------------------------------------------------------------
PEOPLE = np.arange(2000) % 400  # 400 people of 5 images: the cross-validation groups
def factor_table(n: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((n, d)) for k, d in (("expression", 3), ("light", 4), ("pose", 3), ("texture", 5), ("shape", 6))}


def test_dci_of_permuted_factors_is_one_and_of_random_codes_near_zero():
    targets = factor_table()
    rng = np.random.default_rng(1)
    factors = np.concatenate(list(targets.values()), axis=1)
    permuted = factors[:, rng.permutation(factors.shape[1])]
    perfect = dci(*importance_matrix(permuted, targets, PEOPLE))
    assert perfect["disentanglement"] == pytest.approx(1.0, abs=1e-3) and perfect["completeness"] == pytest.approx(1.0, abs=1e-3)
    noise = dci(*importance_matrix(rng.standard_normal((2000, 60)), targets, PEOPLE))
    assert noise["disentanglement"] < 0.1 and noise["completeness"] < 0.15
    mixed = dci(*importance_matrix(factors @ rng.standard_normal((21, 21)), targets, PEOPLE))  # every code mixes every factor
    assert mixed["disentanglement"] < 0.1


def test_dci_hand_computed():
    # two codes, two factors: code 0 serves only factor 0; code 1 serves both equally
    importance = np.array([[2.0, 0.0], [1.0, 1.0]])
    result = dci(importance, np.array([0, 1]))
    # D: code 0 -> 1, code 1 -> 0; weights 2/4 and 2/4
    assert result["disentanglement"] == pytest.approx(0.5)
    # C: factor 0 over codes (2/3, 1/3) -> 1 - H2; factor 1 only on code 1 -> 1; weights 3/4, 1/4
    h = -(2 / 3 * np.log2(2 / 3) + 1 / 3 * np.log2(1 / 3))
    assert result["completeness"] == pytest.approx(0.75 * (1 - h) + 0.25)


def test_dci_weights_codes_and_columns_by_their_importance():
    # code 0 serves only factor 0 with 3 of the 5 units of importance, code 1 both factors equally
    result = dci(np.array([[3.0, 0.0], [1.0, 1.0]]), np.array([0, 1]))
    # D: code 0 -> 1 (weight 3/5), code 1 -> 0 (weight 2/5); an unweighted mean would give 0.5
    assert result["disentanglement"] == pytest.approx(0.6)
    # C: factor 0 over codes (3/4, 1/4), weight 4/5; factor 1 only on code 1 -> 1, weight 1/5
    h = -(3 / 4 * np.log2(3 / 4) + 1 / 4 * np.log2(1 / 4))
    assert result["completeness"] == pytest.approx(0.8 * (1 - h) + 0.2)


# --- the factors protocol on a world whose parts are known -------------------------------------------------
def make_world(n_train: int, n_test: int) -> tuple:
    """Part ``who`` (codes 0-8) is the person's shape and texture, ``how`` (8-11) the expression,
    ``where`` (11-18) the pose and light, ``junk`` (18-23) noise: (world, train, test, pair codes, ids),
    with ``n_train`` training images of 60 people and ``n_test`` test images of 40 others."""
    rng = np.random.default_rng(0)
    people = 60

    def split(first: int, n_people: int, n: int, seed: int):
        r = np.random.default_rng(seed)
        ids = first + r.integers(0, n_people, n)
        person = np.random.default_rng(7).standard_normal((200, 8))[ids]
        expression = r.integers(0, 3, n)
        pose, light = r.standard_normal((n, 3)) * 10, r.standard_normal((n, 8))
        extras = {"shape": torch.tensor(person[:, :4]), "texture": torch.tensor(person[:, 4:]),
                  "pose": torch.tensor(pose), "light": torch.tensor(light), "expression": torch.tensor(expression)}
        how = np.eye(3)[expression] * 3 + 0.3 * r.standard_normal((n, 3))
        where = np.concatenate([pose / 10, light[:, [0, 2, 3, 4]]], axis=1) + 0.1 * r.standard_normal((n, 7))
        codes = np.concatenate([person + 0.05 * r.standard_normal((n, 8)), how, where, r.standard_normal((n, 5))], axis=1)
        images = ImageSet(torch.zeros(n, 3, 2, 2, dtype=torch.uint8), labels=torch.tensor(expression),
                          identities=torch.tensor(ids), class_names=("a", "b", "c"), extras=extras)
        return images, torch.tensor(codes, dtype=torch.float32)

    train, x_train = split(0, people, n_train, 1)
    test, x_test = split(people, 40, n_test, 2)
    ver, x_ver = split(100, 40, 160, 3)
    # verification pairs among the held-out people, 10 folds of 4 + 4
    ids = ver.identities.numpy()
    left, right, same, fold = [], [], [], []
    for k in range(10):
        for want in (True, False):
            found = 0
            for i in rng.permutation(len(ids)):
                j = int(rng.integers(len(ids)))
                if i != j and (ids[i] == ids[j]) == want and found < 4:
                    left.append(i), right.append(j), same.append(want), fold.append(k)
                    found += 1
    pairs = PairList(torch.tensor(left), torch.tensor(right), torch.tensor(same), torch.tensor(fold))

    class World:
        def fer_split(self, split):
            return {"train": train, "test": test}[split]

        def verification(self):
            return ver, pairs

    return World(), x_train, x_test, x_ver, ids


@pytest.fixture(scope="module")
def factors_world():
    return make_world(1200, 400)


def evaluate_parts(world: tuple, parts: dict[str, slice]) -> dict:
    data, x_train, x_test, x_ver = world[:4]
    features = Fixed(train=x_train, test=x_test, pairs=x_ver)
    features.method = types.SimpleNamespace(parts=lambda: parts)
    return Factors(FactorsConfig.resolve("quick")).evaluate(data, features, seed=0)


def test_factors_finds_which_part_carries_which_factor(factors_world):
    """Each factor's best part must be the right one, with a check mark, and junk must carry nothing."""
    ids = factors_world[4]
    m = evaluate_parts(factors_world, {"who": slice(0, 8), "how": slice(8, 11), "where": slice(11, 18), "junk": slice(18, 23)})
    expected = {"identity": "who", "expression": "how", "light": "where", "pose": "where", "texture": "who", "shape": "who"}
    assert {f: c["part"] for f, c in m["checks"].items()} == expected
    assert all(c["check"] for c in m["checks"].values())
    junk = m["parts"]["junk"]
    assert junk["identity"] < 0.65 and junk["expression"] < 0.45 and max(junk[f] for f in ("light", "pose", "texture", "shape")) < 0.05
    assert m["parts"]["who"]["identity_nn"] > 0.9 and m["chance"]["identity"] == 0.5
    # chance of identification: the share of ordered pairs of distinct images that show one person
    # (the held-out people's ids start at 100: ids nobody has must not count)
    n = len(ids)
    assert m["chance"]["identity_nn"] == pytest.approx(((ids[:, None] == ids[None, :]).sum() - n) / (n * (n - 1)))
    assert m["disentanglement"] > 0.5 and m["dci_parts"]["junk"]["disentanglement"] < m["dci_parts"]["how"]["disentanglement"]
    assert m["embedding_size"] == 23


@pytest.mark.parametrize(
    "parts, marked",
    [
        ({"junk": slice(18, 23)}, set()),  # no rival part: only being above chance can earn a mark
        ({"who": slice(0, 8), "twin": slice(0, 8), "how": slice(8, 11)}, {"expression"}),  # identity tied: no mark
    ],
    ids=["noise-alone", "tied-parts"],
)
def test_factors_withholds_marks_below_chance_or_without_separation(factors_world, parts, marked):
    m = evaluate_parts(factors_world, parts)
    assert {f for f, c in m["checks"].items() if c["check"]} == marked


def test_expression_probe_is_scored_on_held_out_images():
    """Codes that only tell images apart -- random and wider than there are training images --
    let the probe memorise its training images (checked here) but know nothing of expression: the
    reported accuracy must be the held-out images' (chance), with no check mark. Train and test
    have one size, so that scoring the training images instead would run through and be seen."""
    world, *_ = make_world(300, 300)
    g = torch.Generator().manual_seed(0)
    memo = {split: torch.randn(n, 600, generator=g) for split, n in (("train", 300), ("test", 300), ("pairs", 160))}
    train = world.fer_split("train")
    own = expression_correct(memo["train"], train.labels, memo["train"], train.labels, 3, FactorsConfig.resolve("quick").probe_epochs, 0)
    assert own.mean() > 0.8, "the codes let the probe memorise its training images"
    m = evaluate_parts((world, memo["train"], memo["test"], memo["pairs"]), {"memo": slice(0, 600)})
    # chance 1/3, binomial sd 0.027 on 300 images: 0.1 is 3.7 sd, memorised images score 0.8 or more
    assert abs(m["parts"]["memo"]["expression"] - 1 / 3) < 0.1
    assert not m["checks"]["expression"]["check"]


def test_identity_threshold_of_each_fold_comes_from_the_other_folds():
    """Fold 0 scores same 0.9 / different 0.5, fold 1 same 0.3 / different 0.1: a threshold from
    the other fold gets each fold half right (0.5); one chosen on both folds would score 0.75."""
    angles = np.arccos([0.9, 0.5, 0.3, 0.1])
    f = torch.tensor([[1.0, 0.0]] + [[np.cos(a), np.sin(a)] for a in angles])
    pairs = PairList(torch.zeros(4, dtype=torch.long), torch.arange(1, 5), torch.tensor([True, False, True, False]), torch.tensor([0, 0, 1, 1]))
    # each fold: its same pair right, its different pair wrong (both right, or 3 of 4, with all folds' threshold)
    assert verification_correct(f, pairs).tolist() == [True, False, False, True]


def test_grouped_ridge_picks_its_strength_by_people():
    """A target that is a per-person constant plus noise the codes cannot know: leave-one-out
    would find the person's other images and fit them; cross-validation over people must not, so
    the held-out-people R^2 of the codes that only identify people stays near zero."""
    from protocols.factors import GroupedRidge, residual_shares, standardise

    rng = np.random.default_rng(0)
    people = np.repeat(np.arange(200), 5)
    codes = np.eye(200)[people] + 0.1 * rng.standard_normal((1000, 200))  # who it is, nothing more
    target = rng.standard_normal((200, 1))[people]  # a trait the codes do not describe
    test_people = np.repeat(np.arange(200, 260), 5)
    test_codes = np.zeros((300, 200)) + 0.1 * rng.standard_normal((300, 200))
    design, held_out = standardise(codes, test_codes)
    assert abs(1 - residual_shares(GroupedRidge(design, people), target, held_out, rng.standard_normal((60, 1))[test_people - 200]).mean()) < 0.05
    # and where the codes do describe the target, it is found
    signal = codes[:, :1] * 2 + 0.05 * rng.standard_normal((1000, 1))
    coef, intercept = GroupedRidge(design, people).fit(standardise(signal)[0])
    assert np.argmax(np.abs(coef[:, 0])) == 0
