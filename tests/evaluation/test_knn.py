import numpy as np
import pytest
import torch

from clsvit_lightning.evaluation.knn import knn_classify, knn_scores, merge_neighbours, weighted_vote


def brute_force_knn(train, train_labels, queries, k, temperature, num_classes):
    """Loop over queries with numpy: normalise, sort similarities, weighted vote."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = np.zeros((len(queries), num_classes))
    for q, query in enumerate(queries):
        similarity = train @ query
        for j in np.argsort(-similarity, kind="stable")[:k]:
            scores[q, train_labels[j]] += np.exp(similarity[j] / temperature)
    return scores


def test_scores_match_a_brute_force_numpy_implementation():
    rng = np.random.default_rng(0)
    train, queries = rng.normal(size=(60, 8)), rng.normal(size=(17, 8))
    labels = rng.integers(0, 5, size=60)
    expected = brute_force_knn(train, labels, queries, k=7, temperature=0.07, num_classes=5)
    got = knn_scores(torch.tensor(train), torch.tensor(labels), torch.tensor(queries), k=7, temperature=0.07,
                     num_classes=5, chunk_size=4)  # fmt: skip
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)


def test_accuracies_on_separable_clusters_and_a_hand_counted_case():
    centers = torch.eye(4) * 10
    train = torch.cat([centers[c] + torch.randn(10, 4) * 0.1 for c in range(4)])
    train_labels = torch.arange(4).repeat_interleave(10)
    queries = torch.cat([centers[c] + torch.randn(5, 4) * 0.1 for c in range(4)])
    query_labels = torch.arange(4).repeat_interleave(5)
    (result,) = knn_classify(train, train_labels, queries, query_labels, ks=(5,))
    assert result.top1 == 100.0 and result.top5 == 100.0 and result.mean_per_class == 100.0
    # Every query of class 3 claims to be class 0: top-1 75 %, mean per class 75 %, top-5 100 %.
    (wrong,) = knn_classify(train, train_labels, queries, torch.where(query_labels == 3, 0, query_labels), ks=(5,))
    assert wrong.top1 == 75.0 and wrong.top5 == 100.0
    assert wrong.mean_per_class == pytest.approx(100 * (1 + 1 + 1) / 3 * 0.5 + 0 if False else 100 * (0.5 + 1 + 1) / 3)


def test_k_larger_than_the_train_set_is_skipped_and_bad_shapes_are_refused():
    train, labels = torch.randn(8, 4), torch.randint(0, 2, (8,))
    assert [r.k for r in knn_classify(train, labels, torch.randn(3, 4), torch.zeros(3, dtype=torch.long),
                                      ks=(2, 20))] == [2]  # fmt: skip
    with pytest.raises(ValueError, match=r"expects \[N, D\] train and \[Q, D\] query features"):
        knn_scores(train, labels, torch.randn(3, 5), k=2)
    with pytest.raises(ValueError, match="k=0 must be between 1 and"):
        knn_scores(train, labels, torch.randn(3, 4), k=0)


def test_merging_per_shard_top_k_lists_gives_the_global_top_k():
    generator = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(50, 8, generator=generator), dim=1)
    labels = torch.randint(0, 5, (50,), generator=generator)
    queries = torch.nn.functional.normalize(torch.randn(7, 8, generator=generator), dim=1)
    k, shards = 10, [range(0, 17), range(17, 30), range(30, 50)]
    per_shard = [(queries @ bank[list(s)].T).topk(k, dim=1) for s in shards]
    similarities = torch.stack([top.values for top in per_shard])  # [S, Q, k]
    shard_labels = torch.stack([labels[list(s)][top.indices] for s, top in zip(shards, per_shard, strict=True)])
    merged_similarities, merged_labels = merge_neighbours(similarities, shard_labels, k)
    direct = (queries @ bank.T).topk(k, dim=1)
    torch.testing.assert_close(merged_similarities, direct.values)
    assert torch.equal(merged_labels, labels[direct.indices])
    # And the vote over the merged list is knn_scores' over the whole bank.
    torch.testing.assert_close(
        weighted_vote(merged_similarities, merged_labels, 5, 0.07),
        knn_scores(bank, labels, queries, k, 0.07, 5),
        rtol=1e-5,
        atol=0,
    )


def test_weighted_vote_sums_each_classs_neighbour_weights():
    similarities = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.2, -0.3]])
    labels = torch.tensor([[2, 0, 2], [1, 1, 1]])
    expected = np.zeros((2, 3))
    for q in range(2):
        for s, y in zip(similarities[q].tolist(), labels[q].tolist(), strict=True):
            expected[q, y] += np.exp(s / 0.07)
    np.testing.assert_allclose(weighted_vote(similarities, labels, 3, 0.07).numpy(), expected, rtol=1e-6)
