"""WebDataset shards written with `tarfile` from an image folder, as webdataset's TarWriter lays them out."""

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
