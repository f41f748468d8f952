"""`imagefolder:<path>`: images on disk, `<path>/<split>/<class>/<file>` (labelled) or `<path>/<file>` (unlabelled).

Labelled layout: `train/` and `test/` are required, `val/` is optional; class names are the folder names of
`train/`. Every other top-level folder that holds class folders (`test-sketch/<class>/...`) is an evaluation
split, scored like `test` (`harness.eval_splits`); one with fewer class folders than train is scored over those
classes only. A folder of images without class folders is an unlabelled dataset with a single `test` split, for
the label-free clustering view. Every common image format is read, greyscale/palette/RGBA converted to RGB.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

from harness import hookimpl
from harness.errors import BadItemError, HarnessError
from harness.types import Dataset, DatasetSplit

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                              ".pbm", ".jfif"})
SPLITS = ("train", "val", "test")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image(p))


def open_rgb(path: Path) -> Any:
    """Decode an image fully (so truncated files fail here, not later) and convert it to RGB."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                # Composite on white: dropping alpha would turn transparent pixels into arbitrary colours.
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return image.convert("RGB")
    except Exception as error:  # noqa: BLE001 - PIL raises many types for bad files
        raise BadItemError(str(path), f"{type(error).__name__}: {error}") from error


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageFileSplit(DatasetSplit):
    """A list of (file, label) pairs under one root."""

    def __init__(self, root: Path, files: list[tuple[Path, int]], content_hash: bool = False) -> None:
        self.root = root
        self.files = files
        self.content_hash = content_hash

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.files[index]
        return open_rgb(path), label

    def item_id(self, index: int) -> str:
        return self.files[index][0].relative_to(self.root).as_posix()

    def fingerprint(self) -> str:
        """Relative path, label and size+mtime of every file (or its bytes, for data shipped in a package, whose
        mtimes change with every install)."""
        digest = hashlib.sha256()
        for path, label in self.files:
            digest.update(f"{path.relative_to(self.root).as_posix()}\t{label}\t".encode())
            if self.content_hash:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            else:
                stat = path.stat()
                digest.update(f"{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()


class ImageFolder(Dataset):
    def __init__(self, root: str | os.PathLike, *, content_hash: bool = False, source: str | None = None,
                 revision: str = "files") -> None:
        self.root = Path(root).expanduser()
        self.content_hash = content_hash
        self.source = source
        self.revision = revision
        self._layout: dict[str, Any] | None = None

    def _scan(self) -> dict[str, Any]:
        """Find the splits and classes once; every problem names the path to fix."""
        if self._layout is not None:
            return self._layout
        root = self.root
        if not root.exists():
            raise HarnessError(f"imagefolder path {str(root)!r} does not exist")
        if not root.is_dir():
            raise HarnessError(f"imagefolder path {str(root)!r} is not a directory")
        present = [s for s in SPLITS if (root / s).is_dir()]
        extra = sorted(p.name for p in root.iterdir()
                       if p.name not in SPLITS and not p.name.startswith(".") and p.is_dir() and _class_folders(p))
        if not present:
            images = list_images(root)
            if images:  # a flat folder of images: unlabelled
                self._layout = {"class_names": [], "splits": {"test": [(p, -1) for p in images]}}
                return self._layout
            raise HarnessError(
                f"imagefolder path {str(root)!r} has neither train/ and test/ folders (<path>/<split>/<class>/<image>)"
                f" nor images directly inside it (an unlabelled set)")
        missing = [s for s in ("train", "test") if s not in present]
        if missing:
            raise HarnessError(f"imagefolder path {str(root)!r} has no {' or '.join(s + '/' for s in missing)} folder;"
                               f" a labelled set needs <path>/train/<class>/ and <path>/test/<class>/")
        class_names = sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_names:
            raise HarnessError(f"{str(root / 'train')!r} has no class folders; put images in train/<class>/")
        splits: dict[str, list[tuple[Path, int]]] = {}
        subsets: dict[str, list[str]] = {}
        for split in present + extra:
            folders = _class_folders(root / split)
            unknown = [p.name for p in folders if p.name not in class_names]
            if unknown:
                raise HarnessError(f"{str(root / split)!r} has class folder(s) {unknown[:5]} that train/ lacks; "
                                   f"every split must use train/'s classes")
            files: list[tuple[Path, int]] = []
            for folder in folders:
                images = list_images(folder)
                if not images:
                    raise HarnessError(f"class folder {str(folder)!r} holds no images (extensions: "
                                       f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
                label = class_names.index(folder.name)
                files += [(p, label) for p in images]
            splits[split] = files
            if split in extra and len(folders) < len(class_names):  # `test/` keeps every class, as it always has
                subsets[split] = [p.name for p in folders]
        self._layout = {"class_names": class_names, "splits": splits, "evaluation": ["test", *extra],
                        "subsets": subsets}
        return self._layout

    def info(self) -> dict[str, Any]:
        layout = self._scan()
        info = {"source": self.source or f"image folder {self.root.resolve()}", "revision": self.revision,
                "class_names": layout["class_names"], "splits": list(layout["splits"]),
                "split_sizes": {k: len(v) for k, v in layout["splits"].items()}}
        if len(layout.get("evaluation", ())) > 1:  # only then: the info of a plain train/test folder is unchanged
            info["evaluation_splits"] = layout["evaluation"]
        if layout.get("subsets"):
            info["split_classes"] = layout["subsets"]
        return info

    def split(self, name: str) -> ImageFileSplit:
        splits = self._scan()["splits"]
        if name not in splits:
            raise HarnessError(f"dataset {self.name!r} has no split {name!r}; it has {', '.join(splits)}")
        return ImageFileSplit(self.root, splits[name], content_hash=self.content_hash)


def imagefolder(argument: str) -> ImageFolder:
    return ImageFolder(argument)


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    register("imagefolder", imagefolder,
             "Images on disk: imagefolder:<path> with <path>/{train,test[,val]}/<class>/*, or a flat folder (unlabelled)",
             prefix=True)
