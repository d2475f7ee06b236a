"""Dataset loaders read tiny files written here in each real on-disk format."""

from __future__ import annotations

import gzip
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import scanlearn.data
from scanlearn.data import datasets as ds
from scanlearn.data import arrays, catalog, decode, fashion_mnist, folder
from scanlearn.data import images as image_sets
from scanlearn.errors import ConfigError, DataError

SUBSET_FILE = Path(scanlearn.data.__file__).parent / "imagenet_subsets" / "imagenet_50.txt"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the caller's data root or downloads into the real home."""
    monkeypatch.delenv("SCANLEARN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    """The error message, asserted to be a single line."""
    message = str(error.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- registry / API


def test_registry_lists_all_datasets_with_info() -> None:
    expected = {"fashion-mnist", "cifar10", "cifar20", "stl10", "folder", "array"}
    expected |= {"imagenet", "imagenet50", "imagenet100", "imagenet200"}
    assert set(ds.list_datasets()) == expected
    info = ds.dataset_info("cifar20")
    assert (info.num_classes, info.channels, info.image_size) == (20, 3, 32)
    assert info.mean == (0.5071, 0.4867, 0.4408)
    assert ds.dataset_info("stl10").std == (0.229, 0.224, 0.225)
    assert ds.dataset_info("imagenet100").num_classes == 100
    assert ds.dataset_info("fashion-mnist").mean == (0.2860,)


def test_unknown_dataset_and_split_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cifar10"):
        ds.load_dataset("mnist-ish", "train")
    with pytest.raises(ConfigError, match="pretext, train, test"):
        ds.load_dataset("folder", "val", root=tmp_path)


def test_tensor_image_set_items_subset_and_labels() -> None:
    images = torch.arange(5 * 1 * 4 * 4, dtype=torch.int64).reshape(5, 1, 4, 4).to(torch.uint8)
    data = image_sets.TensorImageSet(images, [3, 1, -1, 0, 2], classes=list("abcd"))
    image, target, index = data[1]
    assert image.dtype == torch.uint8 and image.shape == (1, 4, 4)
    assert torch.equal(image, images[1]) and (target, index) == (1, 1)
    assert data[-1][2] == 4
    assert not data.has_labels and data.paths is None
    part = data.subset(np.array([4, 0]))
    assert part.targets.tolist() == [2, 3] and part.classes == list("abcd")
    assert torch.equal(part[0][0], images[4]) and part.has_labels
    with pytest.raises(IndexError):
        data[5]
    with pytest.raises(DataError):
        image_sets.TensorImageSet(images.float(), [0] * 5)
    with pytest.raises(DataError):
        image_sets.TensorImageSet(images, [0] * 4)


# ----------------------------------------------------------------------------- Fashion-MNIST


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """Write a uint8 IDX file: magic 0x08<ndim>, big-endian dims, raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if compress else payload)


def _write_fashion(folder: Path, compress: bool, seed: int = 0) -> dict[str, tuple]:
    """Four tiny IDX files; returns the arrays written per part."""
    rng = np.random.default_rng(seed)
    written = {}
    suffix = ".gz" if compress else ""
    for part, n in (("train", 6), ("t10k", 3)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", images, compress)
        _write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", labels, compress)
        written[part] = (images, labels)
    return written


def test_fashion_mnist_from_env_subfolder_gz(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    written = _write_fashion(tmp_path / "fashion-mnist", compress=True)
    monkeypatch.setenv("SCANLEARN_DATA", str(tmp_path))
    train = ds.load_dataset("fashion-mnist", "train")
    test = ds.load_dataset("fashion-mnist", "test")
    pretext = ds.load_dataset("fashion-mnist", "pretext")
    images, labels = written["train"]
    assert len(train) == len(pretext) == 6 and len(test) == 3
    assert (train.channels, train.image_size) == (1, 28)
    assert torch.equal(train[2][0], torch.from_numpy(images[2])[None])
    assert train.targets.dtype == np.int64 and train.targets.tolist() == labels.tolist()
    assert test.targets.tolist() == written["t10k"][1].tolist()
    assert train.classes[0] == "T-shirt/top" and len(train.classes) == 10


def test_fashion_mnist_torchvision_raw_layout_uncompressed(tmp_path: Path) -> None:
    written = _write_fashion(tmp_path / "FashionMNIST" / "raw", compress=False, seed=1)
    test = ds.load_dataset("fashion-mnist", "test", root=tmp_path)
    assert torch.equal(test[1][0][0], torch.from_numpy(written["t10k"][0][1]))


def test_fashion_mnist_missing_gives_one_line_how_to(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SCANLEARN_SYSTEM_DATA", str(tmp_path / "absent"))
    with pytest.raises(DataError) as error:
        ds.load_dataset("fashion-mnist", "train", root=tmp_path)
    message = _one_line(error)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-root" in message and "--set data.download=true" in message


def test_fashion_mnist_rejects_bad_header_and_wrong_size(tmp_path: Path) -> None:
    _write_fashion(tmp_path, compress=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x09\x03abc"))
    with pytest.raises(DataError, match="bad magic"):
        ds.load_dataset("fashion-mnist", "test", root=tmp_path)
    with pytest.raises(ConfigError, match="28"):
        ds.load_dataset("fashion-mnist", "train", root=tmp_path, image_size=32)


def test_fashion_mnist_found_in_the_system_data_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With no root, the loader looks in ``$SCANLEARN_SYSTEM_DATA/fashion-mnist`` (Debian's package layout)."""
    written = _write_fashion(tmp_path / "system" / "fashion-mnist", compress=True, seed=3)
    monkeypatch.setenv("SCANLEARN_SYSTEM_DATA", str(tmp_path / "system"))
    train = ds.load_dataset("fashion-mnist", "train")
    assert torch.equal(train[0][0][0], torch.from_numpy(written["train"][0][0]))


# ----------------------------------------------------------------------------- CIFAR


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def _cifar_rows(n: int, marker: int) -> np.ndarray:
    """``n`` flattened CIFAR images (R plane, G plane, B plane, row-major) with one bright pixel."""
    rows = np.zeros((n, 3072), dtype=np.uint8)
    rows[:, marker] = 255
    rows[:, -1] = np.arange(n)
    return rows


def test_cifar10_reads_python_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    names = [n.encode() for n in "plane car bird cat deer dog frog horse ship truck".split()]
    for i in range(1, 6):
        _pickle(folder / f"data_batch_{i}", {b"data": _cifar_rows(2, 1), b"labels": [i, i + 1]})
    _pickle(folder / "test_batch", {b"data": _cifar_rows(3, 1024 + 2 * 32 + 5), b"labels": [7, 8, 9]})
    _pickle(folder / "batches.meta", {b"label_names": names})
    train = ds.load_dataset("cifar10", "train", root=tmp_path)
    test = ds.load_dataset("cifar10", "test", root=tmp_path)
    assert len(train) == 10 and len(ds.load_dataset("cifar10", "pretext", root=tmp_path)) == 10
    assert train.targets.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert train.classes[:2] == ["plane", "car"] and train.image_size == 32
    image, target, _ = train[0]
    assert image.shape == (3, 32, 32) and image[0, 0, 1] == 255 and int(image.sum()) == 255
    image, target, index = test[2]
    assert (target, index) == (9, 2) and image[1, 2, 5] == 255 and image[2, 31, 31] == 2


def test_cifar10_missing_names_layout_and_download(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        ds.load_dataset("cifar10", "test", root=tmp_path)
    message = _one_line(error)
    assert "cifar-10-batches-py" in message and "--set data.download=true" in message


def test_cifar10_failed_download_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torchvision.datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Name or service not known\nmore detail")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError) as error:
        ds.load_dataset("cifar10", "train", root=tmp_path, download=True)
    assert "downloading" in _one_line(error)


class _Exploit:
    def __reduce__(self) -> tuple:
        return (print, ("pickle executed code",))


def test_cifar_pickles_cannot_run_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _pickle(folder / "test_batch", {b"data": _Exploit(), b"labels": [0]})
    _pickle(folder / "batches.meta", {b"label_names": [b"a"]})
    with pytest.raises(DataError, match="refusing"):
        ds.load_dataset("cifar10", "test", root=tmp_path)
    assert "executed" not in capsys.readouterr().out


def test_cifar20_uses_coarse_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    coarse = [f"super_{i}".encode() for i in range(20)]
    fine = [f"fine_{i}".encode() for i in range(100)]
    for split, n in (("train", 4), ("test", 2)):
        batch = {
            b"data": _cifar_rows(n, 7),
            b"fine_labels": [99 - k for k in range(n)],
            b"coarse_labels": [19 - k for k in range(n)],
            b"filenames": [b"x.png"] * n,
        }
        _pickle(folder / split, batch)
    _pickle(folder / "meta", {b"fine_label_names": fine, b"coarse_label_names": coarse})
    train = ds.load_dataset("cifar20", "train", root=tmp_path)
    test = ds.load_dataset("cifar20", "test", root=tmp_path)
    assert train.targets.tolist() == [19, 18, 17, 16] and test.targets.tolist() == [19, 18]
    assert train.classes == [f"super_{i}" for i in range(20)]
    assert train[3][0][0, 0, 7] == 255


# ----------------------------------------------------------------------------- STL-10


def _stl_bytes(n: int, row: int, col: int) -> bytes:
    """``n`` STL images in file order (channel, then column-major 96x96) with G[row, col] = 255."""
    raw = np.zeros((n, 3, 96 * 96), dtype=np.uint8)
    raw[:, 1, col * 96 + row] = 255
    return raw.tobytes()


def test_stl10_binary_splits_and_orientation(tmp_path: Path) -> None:
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "train_X.bin").write_bytes(_stl_bytes(3, row=2, col=5))
    (folder / "train_y.bin").write_bytes(bytes([1, 10, 4]))
    (folder / "test_X.bin").write_bytes(_stl_bytes(2, row=0, col=95))
    (folder / "test_y.bin").write_bytes(bytes([2, 3]))
    (folder / "unlabeled_X.bin").write_bytes(_stl_bytes(4, row=50, col=1))
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    train = ds.load_dataset("stl10", "train", root=tmp_path)
    pretext = ds.load_dataset("stl10", "pretext", root=tmp_path)
    test = ds.load_dataset("stl10", "test", root=tmp_path)
    assert train.targets.tolist() == [0, 9, 3] and train.has_labels
    assert pretext.targets.tolist() == [0, 9, 3, -1, -1, -1, -1] and not pretext.has_labels
    assert test.targets.tolist() == [1, 2] and test.classes[1] == "class1"
    image = train[0][0]
    assert image.shape == (3, 96, 96) and image.is_contiguous()
    assert image[1, 2, 5] == 255 and image[1, 5, 2] == 0 and int(image.sum()) == 255
    assert pretext[5][0][1, 50, 1] == 255 and test[1][0][1, 0, 95] == 255
    assert pretext.subset([6, 0]).targets.tolist() == [-1, 0]


def test_stl10_missing_and_damaged(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        ds.load_dataset("stl10", "pretext", root=tmp_path)
    assert "stl10_binary" in _one_line(error) and "unlabeled_X.bin" in str(error.value)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "test_X.bin").write_bytes(b"\x00" * 100)
    (folder / "test_y.bin").write_bytes(b"\x01")
    with pytest.raises(DataError, match="damaged"):
        ds.load_dataset("stl10", "test", root=tmp_path)


# ----------------------------------------------------------------------------- ImageNet


def _listed_wnids() -> list[tuple[str, str]]:
    """Three (wnid, name) pairs taken from the packaged ImageNet-50 list."""
    lines = [line.split(" ", 1) for line in SUBSET_FILE.read_text().splitlines() if line.strip()]
    return [(w, n.strip()) for w, n in (lines[30], lines[3], lines[12])]


def _solid(size: tuple[int, int], color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", size, color)


def _imagenet_tree(root: Path) -> list[tuple[str, str]]:
    """train/ with two JPEGs and val/ with one JPEG per wnid, each wnid its own colour."""
    chosen = _listed_wnids()
    for k, (wnid, _) in enumerate(chosen):
        color = (80 * k, 255 - 80 * k, 40)
        for j, size in enumerate([(40, 30), (24, 50)]):
            (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
            _solid(size, color).save(root / "train" / wnid / f"{wnid}_{j}.JPEG", quality=95)
        (root / "val" / wnid).mkdir(parents=True, exist_ok=True)
        _solid((33, 33), color).save(root / "val" / wnid / f"val_{k}.JPEG", quality=95)
    return chosen


def test_imagenet50_subset_from_folders(tmp_path: Path) -> None:
    chosen = _imagenet_tree(tmp_path)
    (tmp_path / "train" / "n00000001").mkdir()
    with pytest.warns(UserWarning, match="47 of 50"):
        train = ds.load_dataset("imagenet50", "train", root=tmp_path, image_size=16)
    ordered = sorted(chosen)
    assert train.classes == [name for _, name in ordered]
    assert train.targets.tolist() == [0, 0, 1, 1, 2, 2] and len(train.paths) == 6
    assert all(Path(p).parent.name == ordered[t][0] for p, t in zip(train.paths, train.targets))
    image, target, _ = train[3]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = ds.load_dataset("imagenet50", "test", root=tmp_path)
    assert test.image_size == 224 and test.targets.tolist() == [0, 1, 2]
    assert test[0][0].shape == (3, 224, 224)


def test_full_imagenet_uses_all_train_wnids(tmp_path: Path) -> None:
    chosen = _imagenet_tree(tmp_path)
    data = ds.load_dataset("imagenet", "test", root=tmp_path, image_size=8)
    assert data.classes == sorted(w for w, _ in chosen) and len(data) == 3


def test_imagenet_without_listed_wnids_or_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _solid((8, 8), (0, 0, 0)).save(_mkdir(tmp_path / "train" / "n99999999") / "a.JPEG")
    with pytest.raises(DataError, match="imagenet_100"):
        ds.load_dataset("imagenet100", "train", root=tmp_path)
    monkeypatch.setenv("SCANLEARN_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as error:
        ds.load_dataset("imagenet200", "train")
    assert "train/<wnid>" in _one_line(error)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------- user folders


def _mixed_folder(root: Path) -> dict[str, Path]:
    """Nested folder of images in many modes and formats, plus two broken files and noise."""
    files = {
        "gray": _mkdir(root / "a") / "gray.png",
        "rgba": _mkdir(root / "a" / "deep") / "alpha.png",
        "palette": _mkdir(root / "c") / "palette.PNG",
        "cmyk": root / "c" / "cmyk.jpg",
        "wide16": root / "c" / "wide16.png",
        "webp": _mkdir(root / "d") / "e.webp",
        "tiff": root / "d" / "f.tiff",
        "tif": root / "d" / "g.TIF",
        "bmp": root / "top.bmp",
        "truncated": _mkdir(root / "bad") / "cut.jpg",
        "text": root / "bad" / "not_an_image.png",
    }
    Image.new("L", (30, 20), 77).save(files["gray"])
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    rgba.paste((10, 200, 30, 255), (0, 0, 20, 10))
    rgba.save(files["rgba"])
    Image.new("RGB", (17, 23), (255, 0, 0)).convert("P").save(files["palette"])
    Image.new("CMYK", (25, 25), (0, 0, 0, 0)).save(files["cmyk"], quality=95)
    Image.fromarray(np.full((12, 18), 40000, dtype=np.uint16)).save(files["wide16"])
    _solid((21, 21), (0, 0, 255)).save(files["webp"], lossless=True)
    _solid((19, 40), (0, 255, 0)).save(files["tiff"])
    Image.new("1", (16, 16), 1).save(files["tif"])
    _solid((64, 16), (9, 9, 9)).save(files["bmp"])
    _solid((64, 64), (120, 30, 60)).save(files["truncated"], quality=90)
    raw = files["truncated"].read_bytes()
    files["truncated"].write_bytes(raw[: len(raw) // 2])
    files["text"].write_text("this is not a PNG\n")
    (root / "notes.txt").write_text("ignored")
    Image.new("L", (4, 4)).save(root / "a" / ".hidden.png")
    _mkdir(root / "empty_dir")
    return files


def test_folder_scans_recursively_and_finds_unreadable(tmp_path: Path) -> None:
    files = _mixed_folder(tmp_path)
    data = ds.load_dataset("folder", "train", root=tmp_path, image_size=12).fitted("crop")  # uniform squares
    assert data.paths == sorted(str(p) for p in files.values())
    assert data.targets.tolist() == [-1] * len(files) and data.classes is None
    bad = image_sets.scan_unreadable(data)
    assert sorted(p for p, _ in bad) == sorted([str(files["truncated"]), str(files["text"])])
    assert all(reason for _, reason in bad)
    with pytest.raises(DataError, match="cut.jpg"):
        data[data.paths.index(str(files["truncated"]))]
    good = data.without(p for p, _ in bad)
    assert len(good) == len(files) - 2 and image_sets.scan_unreadable(good) == []
    pixels = {Path(p).stem: good[i][0] for i, p in enumerate(good.paths)}
    assert all(img.shape == (3, 12, 12) and img.dtype == torch.uint8 for img in pixels.values())
    assert (pixels["gray"] == 77).all() and (pixels["wide16"] == 156).all()
    assert (pixels["palette"][0] == 255).all() and (pixels["palette"][1:] == 0).all()
    assert (pixels["cmyk"] > 245).all() and (pixels["g"] == 255).all()
    assert pixels["alpha"][:, -1].tolist() == [[255] * 12] * 3
    assert pixels["alpha"][:, 0].tolist() == [[10] * 12, [200] * 12, [30] * 12]
    assert (pixels["e"][2] == 255).all() and (pixels["f"][1] == 255).all()


def test_folder_labels_from_first_level_folders(tmp_path: Path) -> None:
    _mixed_folder(tmp_path)
    with pytest.warns(UserWarning, match="1 images directly"):
        data = folder.load_folder(tmp_path, image_size=8, labels_from_folders=True)
    assert data.classes == ["a", "bad", "c", "d"]
    by_name = {Path(p).name: int(t) for p, t in zip(data.paths, data.targets)}
    assert by_name["alpha.png"] == 0 and by_name["cut.jpg"] == 1 and by_name["g.TIF"] == 3
    assert by_name["top.bmp"] == -1
    part = data.subset([0, 5])
    assert part.paths == [data.paths[0], data.paths[5]] and part.classes == data.classes
    assert part.targets.tolist() == [data.targets[0], data.targets[5]]


def test_folder_missing_empty_or_unset_root(tmp_path: Path) -> None:
    for root in (tmp_path / "missing", _mkdir(tmp_path / "empty")):
        with pytest.raises(DataError) as error:
            ds.load_dataset("folder", "pretext", root=root)
        _one_line(error)
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match="no images"):
        folder.load_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="--data-root"):
        ds.load_dataset("folder", "test")


def test_file_image_set_resizes_shorter_side_then_center_crops(tmp_path: Path) -> None:
    bands = np.zeros((40, 120, 3), dtype=np.uint8)
    bands[:, :40, 0] = 255
    bands[:, 40:80, 1] = 255
    bands[:, 80:, 2] = 255
    Image.fromarray(bands).save(tmp_path / "wide.png")
    Image.fromarray(bands.transpose(1, 0, 2).copy()).save(tmp_path / "tall.png")
    exact = image_sets.FileImageSet([tmp_path / "wide.png", tmp_path / "tall.png"], [0, 1], 40)
    green = torch.tensor([0, 255, 0], dtype=torch.uint8)[:, None, None].expand(3, 40, 40)
    assert torch.equal(exact[0][0], green) and torch.equal(exact[1][0], green)
    small = image_sets.FileImageSet([tmp_path / "wide.png"], [0], 20)[0][0]
    assert small.shape == (3, 20, 20)
    assert (small[1, :, 3:17] == 255).all() and (small[0, :, 3:17] == 0).all()


def two_tone(width: int, height: int) -> Image.Image:
    """Red image whose first tenth along its longer side is blue (an edge a centre crop cuts off)."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[...] = (255, 0, 0)
    if width >= height:
        array[:, : width // 10] = (0, 0, 255)
    else:
        array[: height // 10] = (0, 0, 255)
    return Image.fromarray(array)


@pytest.mark.parametrize("width, height", [(200, 100), (100, 200)])
def test_pad_keeps_the_whole_wide_or_tall_image_on_a_neutral_square(tmp_path, width, height):
    two_tone(width, height).save(tmp_path / "img.png")
    image = folder.load_folder(tmp_path, image_size=64, fit="pad")[0][0].permute(1, 2, 0).numpy().astype(int)
    wide = width > height
    content = image[16:48, :] if wide else image[:, 16:48]
    border = np.concatenate([image[:16], image[48:]]) if wide else np.concatenate([image[:, :16], image[:, 48:]], axis=1)
    assert decode.PAD_COLOUR == tuple(round(255 * m) for m in catalog.IMAGENET_MEAN)  # neutral once normalised
    assert (np.abs(border - np.array(decode.PAD_COLOUR)) <= 1).all()  # the padding, above and below (or beside)
    edge = content[:, :5] if wide else content[:5]
    assert (edge[..., 2] > 200).all() and (edge[..., 0] < 50).all()  # the blue edge is kept
    middle = content[2:-2, 20:] if wide else content[20:, 2:-2]
    assert (middle[..., 0] > 200).all() and (middle[..., 2] < 50).all()


@pytest.mark.parametrize("width, height", [(200, 100), (100, 200)])
def test_crop_cuts_the_edges_of_wide_or_tall_images(tmp_path, width, height):
    two_tone(width, height).save(tmp_path / "img.png")
    image = folder.load_folder(tmp_path, image_size=64, fit="crop")[0][0].permute(1, 2, 0).numpy().astype(int)
    assert (image[..., 0] > 200).all() and (image[..., 2] < 50).all()  # all red: the blue tenth is cut off


def ramp(width: int, height: int) -> np.ndarray:
    """An RGB image (H, W, 3) whose red grows with x and green with y: a crop shifted by one pixel shows."""
    step = 250 // max(width, height)
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * step, y * step, np.full_like(x, 128)], -1).astype(np.uint8)


@pytest.mark.parametrize("width, height, size", [(33, 47, 32), (100, 37, 28), (43, 47, 32), (36, 33, 32), (35, 32, 32),
                                                 (32, 29, 28)])
def test_pil_and_tensor_paths_resize_and_crop_alike(width, height, size):
    (new_w, new_h), (left, top, right, bottom) = decode.center_crop_geometry(width, height, size)
    assert min(new_w, new_h) == size and (right - left, bottom - top) == (size, size)
    assert 0 <= left and right <= new_w and 0 <= top and bottom <= new_h
    image = ramp(width, height)
    pil = np.asarray(decode.resize_center_crop(Image.fromarray(image), size)).astype(int)
    tensor = arrays.image_batch(image[None], size)[0].permute(1, 2, 0).numpy().astype(int)
    assert pil.shape == tensor.shape == (size, size, 3)
    assert np.abs(pil - tensor).max() <= 1, "the same box (a shifted one differs by 7 levels), resampled alike"


def test_fit_defaults_to_pad_for_folders_and_crop_for_the_paper_datasets():
    from scanlearn.config import load_preset
    from scanlearn.engine.splits import fit_mode

    assert fit_mode(load_preset("photos")) == "pad"
    for name in ("fashion-mnist", "cifar10", "stl10", "imagenet50"):
        assert fit_mode(load_preset(name)) == "crop", name
