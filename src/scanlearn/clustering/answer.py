"""The run's answer: which clustering a run produced, and the cluster probabilities of any images under it.

The label-free check (``choice``) picks one of k-means on the mined features, SCAN and self-labelling;
``predict``, the report and ``assignments.csv``, the API's ``labels_`` / ``predict`` and ``select``'s
run candidates all call ``run_probabilities``, so they give the same clustering by construction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import Config
from ..data.images import ImageSet
from ..engine.inference import predict_probabilities
from .choice import chosen_clustering, final_stage, KMEANS
from .kmeans import kmeans_probabilities


def chosen_stage(run_dir: str | Path) -> str:
    """The clustering the run answers with: the label-free check's choice (kmeans, scan or selflabel), or the final
    stage when no stage was scored."""
    return chosen_clustering(run_dir, final_stage(run_dir))


def run_probabilities(config: Config, run_dir: str | Path, images: ImageSet) -> np.ndarray:
    """Cluster probabilities (N, C) of ``images`` under the run's chosen clustering: soft assignments to the k-means
    centroids when the check chose k-means, else the chosen stage's model."""
    chosen = chosen_stage(run_dir)
    if chosen == KMEANS:
        return kmeans_probabilities(config, run_dir, images)
    return predict_probabilities(config, run_dir, chosen, images)
