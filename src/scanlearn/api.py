"""Python API in scikit-learn's manner: ``SCAN(n_clusters=10).fit(data).predict(images)``.

>>> model = SCAN(n_clusters=3, pretext__epochs=20)      # doctest: +SKIP
>>> model.fit("~/Pictures/holiday").labels_              # doctest: +SKIP
>>> model.save("holiday.scan"); SCAN.load("holiday.scan").predict(images)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
import weakref
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from .budget import as_seconds
from .config import Config, from_dict, load_preset, nested, saved_config, to_dict, validate
from .criteria import clusters_used
from .data.arrays import image_batch
from .data.folder import load_folder
from .data.images import ImageSet, TensorImageSet, preload, scan_unreadable
from .engine.run import Run
from .engine.splits import data_spec, decode_size
from .engine.inference import model_probabilities
from .engine.trained import build_clustering_model, head_shape, load_clustering_model
from .engine.progress import messages_to_stderr
from .engine.training import lightning_info_hidden
from .errors import CheckpointError, ClusterCollapseWarning, ConfigError, DataError, UnsafeFileError
from .folder_backbone import choose_backbone, FolderDefaults, read_choice
from .runs.artefacts import save_torch
from .runs.fsutil import load_verified, run_dir_lock
from .runs.rundir import claim_run_dir
from .clustering.answer import chosen_stage, held_kmeans_probabilities, run_probabilities
from .clustering.choice import final_stage, KMEANS
from .clustering.kmeans import answering_kmeans, FeatureKMeans, kmeans_arrays, kmeans_from_arrays
from .engine.guards import load_state_checked
from .engine.mined_features import empty_mining_network, mining_network
from .runner import run_whole

DEFAULT_PRESET = "photos"
MAX_ARRAY_SIDE = 64
ARRAY_FILE = "images.npy"
SAVE_FORMAT = "scanlearn.SCAN/1"
SAVED_KEYS = ("params", "config", "state_dict", "feature_dim", "num_clusters", "labels", "probabilities", "paths")

ImagesLike = str | os.PathLike[str] | np.ndarray | torch.Tensor | torch.utils.data.Dataset


class SCAN(ClusterMixin, BaseEstimator):
    """Group images into ``n_clusters`` classes without labels (pretext -> mine -> SCAN -> self-label).

    A scikit-learn estimator (``get_params``/``set_params``, ``clone``, ``fit_predict``, sklearn's
    ``NotFittedError``) whose samples are images, not rows of features: ``fit`` and ``predict`` take
    a folder path, a torch Dataset, or an image array.

    Image arrays (NumPy or torch) are one of ``(N, H, W)`` (grey), ``(N, H, W, C)`` or ``(N, C, H, W)``
    with C in 1, 3 or 4 (RGBA loses its alpha; grey becomes RGB), either ``uint8`` in [0, 255] or
    floating point in [0, 1] (an alpha channel is composited over white). Each image is resized on
    its shorter side and centre-cropped to a square: for ``fit`` its shorter side capped at 64 px
    (``data__image_size=S`` chooses S), for ``predict`` the side the model was trained at. Pass ``predict`` the images as you passed them to ``fit``: then ``predict(X)`` equals
    ``labels_``. A model fitted on a folder decodes its files itself (crop, resize, colour): predict
    new files by passing their folder, not arrays decoded your own way.

    Parameters
    ----------
    n_clusters : int, default=10
        Number of clusters to find.
    preset : str or None, default=None
        Preset to start from (``scanlearn.config.preset_names()``). None: for a folder, a frozen
        pretrained backbone when its weights are at hand (``model__weights=FILE``, the model
        library's cache, or ``allow_download``), else ``photos`` with a schedule fitted to the
        folder's size; for arrays and datasets, ``photos``.
    run_dir : str or None, default=None
        Where stages, checkpoints and the report go; None uses a temporary folder removed with
        the estimator. An existing run directory resumes its finished stages.
    random_state : int, default=0
        Seed of every random number generator.
    verbose : bool, default=True
        Print stage progress and show progress bars.
    allow_download : bool, default=False
        With ``preset=None`` on a folder: download the pretrained backbone's weights when they are
        not cached (the size is printed first). ``fit`` never asks (unlike ``scanlearn run`` on a
        terminal) and uses no answer remembered by the command line: without it, no download.
    time_budget : str, float or None, default=None
        Fit the schedule to this much time on this machine: a duration (``"20m"``, ``"1h"``) or seconds.
        Measured before training; a stage that runs slow gives up epochs. Raises BudgetError, before any
        training, when the budget cannot buy a minimal run.
    **overrides
        Config values with ``__`` between levels, e.g. ``pretext__epochs=20``, ``model__width=16``.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster of every training image (for a folder: its readable files, sorted by path) under the run's
        chosen clustering: the one ``scanlearn predict``, ``assignments.csv`` and the report show.
    probabilities_ : ndarray of shape (n_samples, n_clusters)
        Cluster probabilities of every training image (soft assignments to the centroids when the label-free check
        chose k-means).
    clustering_ : str or None
        Which clustering ``labels_`` and ``predict`` use: ``kmeans``, ``scan`` or ``selflabel``, kept by ``save`` and
        ``load`` (None when loaded from a file saved before it was kept: the saved network).
    n_clusters_ : int
        Number of distinct clusters actually used by ``labels_``.
    paths_ : list of str or None
        Paths of the training images when fitted on a folder.
    run_dir_ : str
        The run directory used by ``fit``.
    config_ : Config
        The resolved configuration.
    summary_ : list of str
        The run's closing summary, as ``scanlearn run`` prints it: clusters and their sizes, the clustering the run
        answers with and why, how far to trust it, and the paths of the report (and, for a folder, ``assignments.csv``)
        that ``fit`` writes like ``scanlearn run`` does.
    """

    def __init__(
        self,
        n_clusters: int = 10,
        preset: str | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        random_state: int = 0,
        verbose: bool = True,
        allow_download: bool = False,
        time_budget: str | float | None = None,
        **overrides: Any,
    ) -> None:
        self.n_clusters = n_clusters
        self.preset = preset
        self.run_dir = run_dir
        self.random_state = random_state
        self.verbose = verbose
        self.allow_download = allow_download
        self.time_budget = time_budget
        self._overrides = overrides
        self._kmeans: tuple[FeatureKMeans, torch.nn.Module] | None = None  # k-means answer: centroids, mining network

    def __sklearn_tags__(self):
        """scikit-learn's tags: image stacks (N, H, W[, C]) are 3-D and 4-D arrays."""
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments and ``section__key`` config overrides (scikit-learn convention)."""
        return {**super().get_params(deep), **self._overrides}

    def set_params(self, **params: Any) -> SCAN:
        """Set constructor arguments or ``section__key`` config overrides; returns self.

        scikit-learn's own ``set_params`` would read ``pretext__epochs`` as parameter ``epochs`` of a
        nested estimator ``pretext``; here it is a config override.
        """
        named = set(self._get_param_names())
        for key, value in params.items():
            if key in named:
                setattr(self, key, value)
            elif "__" in key:
                self._overrides[key] = value
            else:
                raise ConfigError(
                    f"SCAN has no parameter {key!r}; pass one of {', '.join(sorted(named))} or a config override "
                    "such as pretext__epochs=20"
                )
        return self

    # ------------------------------------------------------------------------------- fitting
    def fit(self, data: ImagesLike, y: Any = None) -> SCAN:
        """Run every stage on ``data`` (a folder path, a torch Dataset or an image array); returns self.

        ``y`` is ignored (present for scikit-learn compatibility).
        """
        if not isinstance(self.n_clusters, int) or self.n_clusters < 2:
            raise ConfigError(f"n_clusters must be an integer >= 2, got {self.n_clusters!r}; pass e.g. n_clusters=10")
        run_dir = self._make_run_dir()
        with run_dir_lock(run_dir), lightning_info_hidden(), messages_to_stderr() if self.verbose else nullcontext():
            defaults = self._folder_defaults(data, run_dir)
            run = Run(self._config(data, run_dir, defaults), run_dir)
            finished = run_whole(run, defaults=defaults, time_budget=as_seconds(self.time_budget))
        run = finished.run
        self.config_ = run.config
        self.run_dir_ = str(run_dir)
        self.summary_ = list(finished.summary)
        self.clustering_ = chosen_stage(run_dir)
        network = final_stage(run_dir) if self.clustering_ == KMEANS else self.clustering_
        self.model_ = load_clustering_model(run, network)
        kmeans = self.clustering_ == KMEANS
        self._kmeans = (answering_kmeans(run), mining_network(run)) if kmeans else None
        images = run.split("train")
        self.paths_ = images.paths
        self.probabilities_ = run_probabilities(run, images)
        self.labels_ = self.probabilities_.argmax(1)
        self.n_clusters_ = clusters_used(self.labels_)
        self._warn_if_collapsed()
        return self

    def _make_run_dir(self) -> Path:
        """The user's run directory, or a temporary one deleted with the estimator."""
        if self.run_dir is not None:
            return claim_run_dir(Path(self.run_dir).expanduser().resolve())
        path = claim_run_dir(tempfile.mkdtemp(prefix="scanlearn-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(path), True)
        return path

    def _folder_defaults(self, data: ImagesLike, run_dir: Path) -> FolderDefaults | None:
        """For a folder without a preset: the backbone choice (the recorded one when resuming) and the user's keys."""
        if self.preset is not None or not isinstance(data, (str, os.PathLike)):
            return None
        choice = read_choice(run_dir) or choose_backbone(self._overrides.get("model__weights"), self.allow_download)
        return FolderDefaults(choice, frozenset(key.replace("__", ".") for key in self._overrides))

    def _config(self, data: ImagesLike, run_dir: Path, defaults: FolderDefaults | None = None) -> Config:
        """Preset, then data-dependent settings, then the user's overrides."""
        config = load_preset(defaults.choice.preset if defaults else self.preset or DEFAULT_PRESET)
        values: dict[str, Any] = {"data.files": None, "num_clusters": self.n_clusters,
                                  "runtime.seed": self.random_state, "runtime.progress": self.verbose}
        if defaults is not None and defaults.choice.pretrained:
            values["model.weights"] = defaults.choice.weights
        user = nested({key.replace("__", "."): value for key, value in self._overrides.items()})
        side = user.get("data", {}).get("image_size")
        if isinstance(data, (str, os.PathLike)):
            values |= {"data.dataset": "folder", "data.root": str(Path(data).expanduser().resolve())}
        else:
            array = _materialise(data, side, self.verbose)
            np.save(run_dir / ARRAY_FILE, array.numpy())
            values |= {"data.dataset": "array", "data.root": str(run_dir / ARRAY_FILE), "data.image_size": int(array.shape[-1])}
        return validate(from_dict(user, from_dict(nested(values), config)))

    def _warn_if_collapsed(self) -> None:
        """ClusterCollapseWarning when fewer distinct clusters than requested are used."""
        if self.n_clusters_ < self.n_clusters:
            warnings.warn(
                f"only {self.n_clusters_} distinct clusters of the {self.n_clusters} requested are used; "
                "lower n_clusters, train longer, or lower scan__entropy_weight for imbalanced data",
                ClusterCollapseWarning, stacklevel=3,
            )

    # ------------------------------------------------------------------------------- predicting
    def predict(self, images: ImagesLike) -> np.ndarray:
        """Cluster of every image (array rows, Dataset items or readable files of a folder)."""
        return self.predict_proba(images).argmax(1)

    def predict_proba(self, images: ImagesLike) -> np.ndarray:
        """Cluster probabilities, shape (n_images, n_clusters)."""
        self._check_fitted()
        return self._probabilities(self._image_set(images))

    def _check_fitted(self) -> None:
        """sklearn's NotFittedError, naming the fix, before ``fit`` (or ``SCAN.load``)."""
        check_is_fitted(self, "model_", msg="this SCAN instance is not fitted yet; call fit(data) first or use SCAN.load(path)")

    def _image_set(self, images: ImagesLike) -> ImageSet:
        """Any accepted input as an ImageSet at the training size."""
        spec = data_spec(self.config_)
        side = decode_size(spec)
        if isinstance(images, (str, os.PathLike)):
            found = load_folder(images, image_size=side, fit=spec.fit)
            bad = scan_unreadable(found, progress=self.verbose)
            if bad:
                warnings.warn(f"skipped {len(bad)} unreadable files, e.g. {bad[0][0]} ({bad[0][1]})", stacklevel=3)
            return preload(found.without(p for p, _ in bad), progress=self.verbose)
        batch = _materialise(images, side, self.verbose)
        return TensorImageSet(batch, np.full(len(batch), -1, dtype=np.int64))

    def _probabilities(self, images: ImageSet) -> np.ndarray:
        """The run's answer for ``images`` while its directory exists, else the saved one: k-means' or the network's."""
        if self.run_dir_ is not None:
            return run_probabilities(Run(self.config_, Path(self.run_dir_)), images)
        if self._kmeans is not None:
            return held_kmeans_probabilities(*self._kmeans, self.config_, images)
        return model_probabilities(self.model_, self.config_, images)

    # ------------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted model, its config, its training labels and the clustering it answers with to one file
        (tensors and plain values only: ``load`` runs no code); a k-means answer keeps its centroids and the network
        its features come from."""
        self._check_fitted()
        state = {
            "format": SAVE_FORMAT, "params": {k: v for k, v in self.get_params().items() if k != "run_dir"},
            "config": to_dict(self.config_), "state_dict": self.model_.state_dict(),
            **head_shape(self.model_.heads),
            "labels": torch.from_numpy(self.labels_), "probabilities": torch.from_numpy(self.probabilities_),
            "paths": self.paths_, "clustering": self.clustering_,
        }
        if self._kmeans is not None:
            kmeans, network = self._kmeans
            state |= {"kmeans": {name: torch.from_numpy(np.asarray(array)) for name, array in kmeans_arrays(kmeans).items()},
                      "mining_state": network.state_dict()}
        save_torch(path, state)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SCAN:
        """A fitted estimator from a file written by ``save``."""
        state = _read_saved(Path(path))
        params = dict(state["params"])
        model = cls(**params)
        model.config_ = saved_config(state["config"])
        model.model_ = build_clustering_model(model.config_, state)
        model.model_.load_state_dict(state["state_dict"])
        model.model_.eval()
        model.labels_, model.probabilities_ = _as_array(state["labels"]), _as_array(state["probabilities"])
        model.paths_ = state["paths"]
        model.clustering_ = state.get("clustering")
        model._kmeans = _held_kmeans(model.config_, state, path) if "kmeans" in state else None
        model.n_clusters_ = clusters_used(model.labels_)
        model.run_dir_ = None
        return model


# ----------------------------------------------------------------------------------- helpers
def _materialise(data: Any, side: int | None, progress: bool) -> torch.Tensor:
    """An array, tensor or Dataset of images as one uint8 RGB (N,3,S,S) tensor.

    ``S`` is ``side`` when given, else the images' shorter side capped at 64.
    """
    if isinstance(data, (np.ndarray, torch.Tensor)):
        if len(data) == 0:
            raise DataError("no images given; pass at least one image")
        native = image_batch(data)
        return image_batch(native, side or min(native.shape[-1], MAX_ARRAY_SIDE))
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        return _dataset_batch(data, side, progress)
    raise DataError(
        f"cannot use {type(data).__name__} as images; pass a folder path, a torch Dataset, or an "
        "array of shape (N,H,W), (N,H,W,C) or (N,C,H,W)"
    )


def _dataset_batch(dataset: torch.utils.data.Dataset, side: int | None, progress: bool) -> torch.Tensor:
    """Every item of ``dataset`` (an image, or a tuple whose first element is one) as (N,3,S,S)."""
    from tqdm.auto import tqdm

    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError("the dataset is empty; pass at least one image")
    images = []
    count = len(dataset)  # type: ignore[arg-type]
    for i in tqdm(range(count), desc="reading dataset", unit="img", disable=not progress):
        item = dataset[i]
        image = _single_image(item[0] if isinstance(item, (tuple, list)) else item)
        side = side or min(min(image.shape[-2:]), MAX_ARRAY_SIDE)
        images.append(image_batch(image[None], side)[0])
    return torch.stack(images)


def _single_image(image: Any) -> torch.Tensor:
    """One PIL image, (C,H,W) tensor or (H,W[,C]) array as a uint8 (C,H,W) tensor."""
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
    if isinstance(image, torch.Tensor):
        return image_batch(image[None] if image.ndim == 3 else image[None, None])[0]
    if isinstance(image, np.ndarray):
        return image_batch(image[None])[0]
    raise DataError(f"dataset items must be PIL images, tensors or arrays, got {type(image).__name__}")


def _read_saved(path: Path) -> dict[str, Any]:
    """The dict written by ``SCAN.save``, with a clear error for anything else."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass a file written by SCAN.save")
    try:
        state = load_verified(path)
    except CheckpointError as exc:
        kind = UnsafeFileError if isinstance(exc, UnsafeFileError) else DataError
        raise kind(f"{exc}; pass a file written by SCAN.save") from None
    if not isinstance(state, dict) or state.get("format") != SAVE_FORMAT:
        raise DataError(f"{path} is not a saved SCAN model; pass a file written by SCAN.save")
    missing = [key for key in SAVED_KEYS if key not in state]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; it is damaged or not written by SCAN.save — save the model again")
    return state


def _held_kmeans(config: Config, state: dict[str, Any], path: Path) -> tuple[FeatureKMeans, torch.nn.Module]:
    """The k-means answer a saved file holds: its centroids and whitening, and the network its features come from."""
    network = empty_mining_network(config)
    load_state_checked(network, state["mining_state"], path)
    return kmeans_from_arrays({name: _as_array(array) for name, array in state["kmeans"].items()}), network.eval()


def _as_array(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """Saved labels or probabilities as NumPy (tensors since the code-free format; arrays in older files)."""
    return values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
