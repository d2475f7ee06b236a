"""The run's answer: which clustering a run produced, and the cluster probabilities of any images under it.

The label-free check (``choice``) picks one of k-means on the mined features, SCAN and self-labelling;
``predict``, the report and ``assignments.csv``, the API's ``labels_`` / ``predict`` and ``select``'s
run candidates all go through ``answer_output``, so they give the same clustering by construction, each
from one pass over its images (``engine.inference.ImagePass``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from ..config import Config
from ..data.images import ImageSet
from ..engine.embedding import embed
from ..engine.inference import ImagePass, Output, stage_output
from ..engine.mined_features import mining_function, with_descriptors
from ..engine.run import Run
from ..engine.splits import data_spec
from ..engine.trained import eval_transform
from .choice import chosen_clustering, final_stage, KMEANS
from .kmeans import answering_kmeans, FeatureKMeans


def chosen_stage(run_dir: str | Path) -> str:
    """The clustering the run answers with: the label-free check's choice (kmeans, scan or selflabel), or the final
    stage when no stage was scored."""
    return chosen_clustering(run_dir, final_stage(run_dir))


def answer_output(one: ImagePass) -> Output:
    """Cluster probabilities (N, C) of ``one``'s images under the run's chosen clustering: soft assignments of their
    mined features to the k-means centroids when the check chose k-means, else the chosen stage's model."""
    chosen = chosen_stage(one.run.directory)
    if chosen != KMEANS:
        return stage_output(one, chosen)
    raw = one.mined()
    kmeans = answering_kmeans(one.run)
    return lambda: kmeans.probabilities(raw())


def run_probabilities(run: Run, images: ImageSet) -> np.ndarray:
    """Cluster probabilities (N, C) of ``images`` under the run's chosen clustering (``answer_output``)."""
    one = ImagePass(run, images)
    probabilities = answer_output(one)
    one.embed()
    return probabilities()


def probabilities_and_mined(run: Run, images: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    """``run_probabilities`` of ``images`` and the features neighbours are mined on (before whitening), from one pass
    over the images: what ``predict`` answers and checks new images' distance to the training images with."""
    one = ImagePass(run, images)
    mined = one.mined()
    probabilities = answer_output(one)
    one.embed()
    return probabilities(), mined()


def held_kmeans_probabilities(kmeans: FeatureKMeans, network: nn.Module, config: Config, images: ImageSet) -> np.ndarray:
    """The k-means answer for ``images`` without the run directory (a loaded ``SCAN`` file): their mined features from
    the mining network held in memory (``engine.mined_features.mining_network``), softly assigned as ``answer_output``
    assigns them."""
    learned = embed(mining_function(network, config), images, config, eval_transform(data_spec(config)))
    return kmeans.probabilities(with_descriptors(config, images, learned))
