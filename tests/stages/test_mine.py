"""Mine stage: whitening fitted on the train split, neighbours of both splits."""

import numpy as np
import torch

from scanlearn.config import resolve
from scanlearn.data.images import TensorImageSet
from scanlearn.engine.run import Run


def test_whitened_mining_fits_on_the_train_split_and_applies_that_fit_to_the_test_split(tmp_path, monkeypatch):
    import scanlearn.stages.mine as mine_stage
    from scanlearn.mining import fit_whitening, mine_neighbors

    rng = np.random.default_rng(0)
    scales = np.concatenate([np.geomspace(20, 0.2, 4), np.geomspace(5, 0.5, 8)])
    features = {"train": rng.normal(size=(300, 12)) * scales + 1.0, "test": rng.normal(size=(60, 12)) * scales + 1.0}
    splits = {name: TensorImageSet(torch.zeros(len(f), 1, 4, 4, dtype=torch.uint8), np.zeros(len(f), int))
              for name, f in features.items()}
    monkeypatch.setattr(Run, "split", lambda run, split: splits[split])
    by_size = {len(f): f for f in features.values()}
    monkeypatch.setattr(mine_stage, "mining_source", lambda run: (lambda images: by_size[len(images)], [4, 8]))
    config = resolve("fashion-mnist", None, ["mine.whiten=true", "mine.k=5", "mine.val_k=3", "runtime.progress=false"])
    mine_stage.run_mine(Run(config, tmp_path))
    whitening = fit_whitening(features["train"], [4, 8])
    saved_train = np.load(tmp_path / "mine" / "neighbors_train.npy")
    saved_test = np.load(tmp_path / "mine" / "neighbors_test.npy")
    np.testing.assert_array_equal(saved_train, mine_neighbors(whitening(features["train"]), 5))
    np.testing.assert_array_equal(saved_test, mine_neighbors(whitening(features["test"]), 3))
    assert not np.array_equal(saved_train, mine_neighbors(features["train"], 5))


def test_the_train_features_mine_searched_are_saved_and_reused_without_embedding_again(tmp_path, monkeypatch):
    """The k-means check reads mine/features_train.npy: the same features, not a second embedding of the split."""
    import scanlearn.engine.mined_features as mined
    import scanlearn.stages.mine as mine_stage

    rng = np.random.default_rng(1)
    features = {"train": rng.normal(size=(120, 6)).astype(np.float32), "test": rng.normal(size=(30, 6)).astype(np.float32)}
    splits = {name: TensorImageSet(torch.zeros(len(f), 1, 4, 4, dtype=torch.uint8), np.zeros(len(f), int))
              for name, f in features.items()}
    by_size = {len(f): f for f in features.values()}
    monkeypatch.setattr(Run, "split", lambda run, split: splits[split])
    monkeypatch.setattr(mine_stage, "mining_source", lambda run: (lambda images: by_size[len(images)], None))
    config = resolve("fashion-mnist", None, ["mine.whiten=true", "mine.k=5", "mine.val_k=3", "runtime.progress=false"])
    mine_stage.run_mine(Run(config, tmp_path))

    def no_second_embedding(images):
        raise AssertionError("the train split was embedded again")

    monkeypatch.setattr(mined, "mining_source", lambda run, shard=True: (no_second_embedding, None))
    saved, widths = mined.train_mining_features(Run(config, tmp_path))
    np.testing.assert_array_equal(saved, features["train"])  # before whitening, as mined
    assert widths is None
