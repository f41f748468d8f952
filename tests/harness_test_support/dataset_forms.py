"""An image folder's images in the other forms datasets come in: WebDataset shards written with `tarfile` (as
webdataset's TarWriter lays them out) and a Hugging Face DatasetDict saved with `save_to_disk`, rows and samples
in imagefolder's order (class folders sorted, files sorted). Used by the tests and by benchmarks/run.py."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(image_folder: Path, out: Path, per_shard: int, splits: tuple[str, ...] = ("train", "test"),
                 label_key: str = "cls", name: str = "{split}-{number:03d}.tar") -> dict[str, list[Path]]:
    """Each split of `image_folder` (<split>/<class>/<file>) as shards of `per_shard` samples, in imagefolder's
    order (class folders sorted, files sorted): sample `<split>/<class>/<stem>` holds `jpg` (the file's bytes,
    unchanged) and `cls` (the class index as text); the class names go beside them in `classes.txt`. Returns the
    shard paths by split."""
    classes = sorted(p.name for p in (image_folder / "train").iterdir() if p.is_dir())
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    written: dict[str, list[Path]] = {}
    for split in splits:
        files = [f for c in classes for f in sorted((image_folder / split / c).glob("*.jpg"))]
        for number, start in enumerate(range(0, len(files), per_shard)):
            path = out / name.format(split=split, number=number)
            with tarfile.open(path, "w") as tar:
                for file in files[start:start + per_shard]:
                    key = f"{split}/{file.parent.name}/{file.stem}"
                    add_member(tar, f"{key}.jpg", file.read_bytes())
                    add_member(tar, f"{key}.{label_key}", str(classes.index(file.parent.name)).encode())
            written.setdefault(split, []).append(path)
    return written


def save_as_hf_dataset(image_folder: Path, out: Path) -> None:
    """`image_folder`'s train and test images as a DatasetDict (`image`: the file's bytes, `label`: a ClassLabel of
    the class folders) written by save_to_disk. Needs the `datasets` package (the `hf` extra)."""
    import datasets

    classes = sorted(p.name for p in (image_folder / "train").iterdir() if p.is_dir())
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
    splits = {}
    for split in ("train", "test"):
        files = [f for c in classes for f in sorted((image_folder / split / c).glob("*.jpg"))]
        splits[split] = datasets.Dataset.from_dict(
            {"image": [{"bytes": f.read_bytes(), "path": None} for f in files],
             "label": [classes.index(f.parent.name) for f in files]}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(out))
