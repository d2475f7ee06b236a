"""The development folders of issue 44, built offline from Debian packages: Fashion-MNIST PNGs and icon themes.

Each folder is ``ROOT/<name>/<category>/<file>.png`` with its labels beside it in ``ROOT/<name>.labels.csv``
(path below the folder, category): the category is the icon theme's context (``actions``, ``apps``, ...) or the
Fashion-MNIST class, used only to score; scanlearn is pointed at ``ROOT/<name>`` and never reads the labels file.
Files with the same bytes count once: a file repeated within a category keeps one copy, a file found in two
categories of a folder is dropped (its label is ambiguous). Where a folder caps its categories, a seeded draw
(seed 0) keeps at most that many of each; the suite mixes balanced and imbalanced folders, 28 to 128 px.
``ROOT/manifest.json`` records every folder's source packages and versions, sizes and largest class share.

Sources are kept to these packages so that folders of other kinds (games, clip-art, digits, photos) stay unseen
for checking the result. Install them first (as root):

    apt-get install -y dataset-fashion-mnist oxygen-icon-theme faenza-icon-theme elementary-xfce-icon-theme \\
        gnome-colors-common gnome-icon-theme tango-icon-theme moka-icon-theme
    .venv/bin/python benchmarks/build_folders.py                      # writes data/folders/
    .venv/bin/python benchmarks/build_folders.py --only oxygen-128   # one folder
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from scanlearn.data.fashion_mnist import read_idx

ICONS = Path("/usr/share/icons")
FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle_boot")
CONTEXTS = ("actions", "apps", "devices", "mimetypes", "places")


@dataclass(frozen=True)
class Theme:
    """PNG icons of one theme at one size: ``ICONS/<directory>/<template with {context}>/*.png``."""

    package: str
    directory: str
    template: str
    renames: tuple[tuple[str, str], ...] = ()  # (context, this theme's folder for it), e.g. elementary's "mimes"

    def files(self, context: str) -> list[Path]:
        """The theme's PNG files of ``context`` (sorted; broken links left out)."""
        folder = ICONS / self.directory / self.template.format(context=dict(self.renames).get(context, context))
        return sorted(p for p in folder.glob("*.png") if p.is_file())


@dataclass(frozen=True)
class IconFolder:
    """A development folder of icons: its categories drawn from one or more themes, each capped at ``cap``."""

    name: str
    themes: tuple[Theme, ...]
    categories: tuple[str, ...] = CONTEXTS
    cap: int | None = None


@dataclass(frozen=True)
class FashionFolder:
    """A development folder of Fashion-MNIST test images: the first ``count`` images of each class, in file order."""

    name: str
    counts: tuple[tuple[int, int], ...]  # (class index, how many)


def geometric_counts(classes: tuple[int, ...], largest: int, ratio: float) -> tuple[tuple[int, int], ...]:
    """Class sizes falling geometrically from ``largest`` to ``largest / ratio`` in the order of ``classes``."""
    ranks = np.arange(len(classes))
    sizes = np.round(largest * ratio ** (-ranks / (len(classes) - 1))).astype(int)
    return tuple((c, int(n)) for c, n in zip(classes, sizes))


OXYGEN_128 = Theme("oxygen-icon-theme", "oxygen", "base/128x128/{context}")
OXYGEN_48 = Theme("oxygen-icon-theme", "oxygen", "base/48x48/{context}")
FAENZA_96 = Theme("faenza-icon-theme", "Faenza", "{context}/96")
FAENZA_48 = Theme("faenza-icon-theme", "Faenza", "{context}/48")
ELEMENTARY_128 = Theme("elementary-xfce-icon-theme", "elementary-xfce", "{context}/128", (("mimetypes", "mimes"),))
ELEMENTARY_48 = Theme("elementary-xfce-icon-theme", "elementary-xfce", "{context}/48", (("mimetypes", "mimes"),))
GNOME_COLORS_32 = Theme("gnome-colors-common", "gnome-colors-common", "32x32/{context}")
GNOME_48 = Theme("gnome-icon-theme", "gnome", "48x48/{context}")
TANGO_32 = Theme("tango-icon-theme", "Tango", "32x32/{context}")
MOKA_96 = Theme("moka-icon-theme", "Moka", "96x96/{context}")
MOKA_48 = Theme("moka-icon-theme", "Moka", "48x48/{context}")

SUITE: tuple[IconFolder | FashionFolder, ...] = (
    FashionFolder("fashion-5", tuple((c, 120) for c in (0, 1, 5, 7, 8))),
    FashionFolder("fashion-10-imbalanced", geometric_counts((6, 3, 9, 0, 4, 7, 2, 8, 5, 1), 400, 10.0)),
    IconFolder("oxygen-128", (OXYGEN_128,)),
    IconFolder("oxygen-48", (OXYGEN_48,), CONTEXTS + ("status",)),
    IconFolder("faenza-96", (FAENZA_96,)),
    IconFolder("faenza-48-balanced", (FAENZA_48,), CONTEXTS + ("status",), cap=34),
    IconFolder("elementary-xfce-128", (ELEMENTARY_128,)),
    IconFolder("gnome-colors-32", (GNOME_COLORS_32,), ("actions", "apps", "mimetypes", "status")),
    IconFolder("tango-32-balanced", (TANGO_32,), ("actions", "apps", "devices", "mimetypes", "status"), cap=20),
    IconFolder("moka-96", (MOKA_96,), ("apps", "web", "places", "categories", "devices"), cap=400),
    IconFolder("mixed-48-balanced", (OXYGEN_48, FAENZA_48, ELEMENTARY_48, GNOME_48, MOKA_48), cap=150),
)


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def icon_files(spec: IconFolder) -> tuple[dict[str, list[Path]], dict[str, int]]:
    """Each category's files after removing repeated bytes (and capping), and how many were removed and why."""
    found: dict[str, dict[str, Path]] = {c: {} for c in spec.categories}
    repeated = 0
    for category in spec.categories:
        for theme in spec.themes:
            for path in theme.files(category):
                before = len(found[category])
                found[category].setdefault(digest(path), path)
                repeated += len(found[category]) == before
    owners: dict[str, int] = {}
    for files in found.values():
        for key in files:
            owners[key] = owners.get(key, 0) + 1
    shared = {key for key, n in owners.items() if n > 1}
    rng = np.random.default_rng(0)
    chosen = {}
    for category, files in found.items():
        kept = [path for key, path in files.items() if key not in shared]
        if spec.cap is not None and len(kept) > spec.cap:
            kept = [kept[i] for i in sorted(rng.choice(len(kept), spec.cap, replace=False))]
        chosen[category] = kept
    return chosen, {"repeated_within_category": repeated, "in_several_categories": len(shared)}


def unique_name(path: Path, theme_count: int) -> str:
    """The file name inside its category: the icon's name, prefixed by its theme when several themes are mixed."""
    return f"{path.relative_to(ICONS).parts[0]}-{path.name}" if theme_count > 1 else path.name


def write_icons(spec: IconFolder, out: Path) -> tuple[list[tuple[str, str]], dict]:
    """Copy the folder's icons into ``out``; returns (relative path, category) rows and what was removed."""
    chosen, removed = icon_files(spec)
    rows = []
    for category, paths in chosen.items():
        (out / category).mkdir(parents=True, exist_ok=True)
        for path in paths:
            relative = f"{category}/{unique_name(path, len(spec.themes))}"
            shutil.copyfile(path, out / relative)
            rows.append((relative, category))
    return rows, removed


def write_fashion(spec: FashionFolder, out: Path, source: Path) -> tuple[list[tuple[str, str]], dict]:
    """Write the first test images of each chosen class as PNG files; returns (relative path, category) rows."""
    images = read_idx(source / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz")
    rows = []
    for c, count in spec.counts:
        category = FASHION_CLASSES[c]
        (out / category).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(labels == c)[:count]:
            relative = f"{category}/{i:05d}.png"
            Image.fromarray(images[i]).save(out / relative)
            rows.append((relative, category))
    return rows, {"repeated_within_category": 0, "in_several_categories": 0}


def package_version(package: str) -> str | None:
    """The installed Debian version of ``package`` (None when it is not installed)."""
    done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def image_side(path: Path) -> int:
    """The longer side of an image, from its header."""
    with Image.open(path) as image:
        return max(image.size)


def describe(spec: IconFolder | FashionFolder, rows: list[tuple[str, str]], removed: dict, out: Path) -> dict:
    """The manifest entry of one written folder."""
    categories = sorted({c for _, c in rows})
    sizes = {c: sum(1 for _, r in rows if r == c) for c in categories}
    fashion = isinstance(spec, FashionFolder)
    packages = ["dataset-fashion-mnist"] if fashion else sorted({t.package for t in spec.themes})
    sides = sorted({image_side(out / relative) for relative, _ in rows})
    return {
        "images": len(rows), "clusters": len(categories), "class_sizes": sizes,
        "largest_share": round(max(sizes.values()) / len(rows), 4),
        "balance": round(min(sizes.values()) / max(sizes.values()), 4),
        "image_sides": sides, "cap": getattr(spec, "cap", None), "removed_duplicates": removed,
        "packages": {p: package_version(p) for p in packages},
    }


def build(spec: IconFolder | FashionFolder, root: Path, fashion: Path) -> dict:
    """Write one folder and its labels file (replacing an earlier build); returns its manifest entry."""
    out = root / spec.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rows, removed = write_fashion(spec, out, fashion) if isinstance(spec, FashionFolder) else write_icons(spec, out)
    with open(root / f"{spec.name}.labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "category"])
        writer.writerows(rows)
    return describe(spec, rows, removed, out)


def missing_sources(suite: list[IconFolder | FashionFolder], fashion: Path) -> list[str]:
    """What the chosen folders need and this machine lacks, each with its fix."""
    missing = []
    if any(isinstance(s, FashionFolder) for s in suite) and not (fashion / "t10k-images-idx3-ubyte.gz").is_file():
        missing.append(f"no Fashion-MNIST files in {fashion}: apt-get install dataset-fashion-mnist, "
                       "or pass --fashion-mnist DIR")
    packages = sorted({t.package for s in suite if isinstance(s, IconFolder) for t in s.themes})
    missing += [f"{p} is not installed: apt-get install {p}" for p in packages if package_version(p) is None]
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/folders"),
                        help="where the folders go (default data/folders)")
    parser.add_argument("--fashion-mnist", type=Path, default=FASHION,
                        help=f"Fashion-MNIST IDX files (default {FASHION})")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in SUITE], help="build only these folders")
    args = parser.parse_args()
    suite = [s for s in SUITE if args.only is None or s.name in args.only]
    missing = missing_sources(suite, args.fashion_mnist)
    if missing:
        parser.error("; ".join(missing))
    args.root.mkdir(parents=True, exist_ok=True)
    manifest_path = args.root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for spec in suite:
        manifest[spec.name] = build(spec, args.root, args.fashion_mnist)
        entry = manifest[spec.name]
        print(f"{spec.name}: {entry['images']} images, {entry['clusters']} categories, "
              f"largest {entry['largest_share']:.0%}, {'/'.join(map(str, entry['image_sides']))} px", file=sys.stderr)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(manifest_path)


if __name__ == "__main__":
    main()
