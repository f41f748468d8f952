"""The index of a WebDataset shard: where every sample's image lies in the tar, read from the tar headers alone.

A WebDataset shard is a plain tar whose members are grouped into samples by key: `dir/n0153_42.jpg` and
`dir/n0153_42.cls` are the `jpg` and `cls` of the sample `dir/n0153_42` (the key is the member path up to the first
dot of its file name, as webdataset's own reader splits it). Consecutive members with one key form one sample.

Indexing reads each member's 512-byte header and the few bytes of the label member (`cls`: the class index as
text; or the sample's `json` sidecar when a field of it holds the label), and seeks past everything else, so no
image is read or decoded. The index of a shard is saved as JSON under
the index folder, named by the shard's real path, size and mtime, and reused while the shard is unchanged.

A damaged shard does not stop indexing: a truncated tar (a member cut short, a header cut off, or no end-of-archive
marker) marks its last sample as bad with the reason, so that reading it raises a BadItemError naming the shard and
the member and `--skip-bad-images` can skip and count it; a file that is not a tar at all is an error naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.errors import HarnessError

log = logging.getLogger(__name__)

#: Changes whenever the saved index's layout or meaning changes, so that old index files are not read.
INDEX_VERSION = "wds-index-v1"
#: Environment variable naming the index folder; default `~/.cache/harness/wds-index`.
INDEX_DIR_ENV = "HARNESS_WDS_INDEX_DIR"
DEFAULT_INDEX_DIR = Path("~/.cache/harness/wds-index")
#: Image extensions looked for in a sample, in this order, unless `image_key` names one.
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
_KEY_AND_EXTENSION = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


@dataclass
class ShardIndex:
    """The samples of one shard, as columns (an ImageNet-sized split holds a million samples): each sample's key,
    the extension of its image member (None where it has none), that member's data offset and size in the tar,
    its label text (None without a label member), and, for samples that cannot be read, why (by position)."""

    path: Path
    size: int
    keys: list[str]
    images: list[str | None]
    offsets: np.ndarray  # int64
    sizes: np.ndarray  # int64
    labels: list[str | None]
    problems: dict[int, str]
    member_hash: str  # see `_member_hash`
    truncated: str | None = None  # why the shard is damaged, when it is

    def __len__(self) -> int:
        return len(self.keys)

    def member_name(self, position: int) -> str:
        image = self.images[position]
        return f"{self.keys[position]}.{image}" if image else self.keys[position]


@dataclass(frozen=True)
class SampleKeys:
    """Which members of a sample hold what: the image (`image`, default the first of IMAGE_KEYS it has), the label
    (`label`, default `cls`), and, when the label member is JSON (`json`, as timm's `target_key` reads it), the
    field of it that holds the label (`label_field`, dotted for nested objects: `meta.label`)."""

    image: str | None = None
    label: str = "cls"
    label_field: str | None = None


def _member_hash(members: Sequence[tarfile.TarInfo], labels: Sequence[str | None],
                 problems: dict[int, str]) -> str:
    """A hash of the member list (names, sizes), the labels and the damage found: changes when a member is added,
    removed, renamed or resized or a label changes; independent of where the shard lies and of its mtime, so
    copies of the shards on two nodes agree."""
    digest = hashlib.sha256()
    for member in members:
        digest.update(f"{member.name}\t{member.size}\n".encode())
    digest.update(json.dumps([list(labels), sorted(problems.items())]).encode())
    return digest.hexdigest()


def resolve_index_dir(index_dir: str | os.PathLike[str] | None) -> Path:
    if index_dir:
        return Path(index_dir).expanduser()
    return Path(os.environ.get(INDEX_DIR_ENV) or DEFAULT_INDEX_DIR).expanduser()


def split_key(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name as webdataset splits it; None for a name without an extension."""
    match = _KEY_AND_EXTENSION.match(name)
    return (match.group(1), match.group(2)) if match else None


def _index_file(index_dir: Path, path: Path, stat: os.stat_result, keys: SampleKeys) -> Path:
    what = f"{INDEX_VERSION}\t{os.path.realpath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\t{keys.image}\t{keys.label}"
    if keys.label_field is not None:  # (without one, the name stays what it was: saved indexes stay valid)
        what += f"\t{keys.label_field}"
    return index_dir / f"{hashlib.sha256(what.encode()).hexdigest()[:40]}.json"


def load_or_index(path: Path, index_dir: Path, keys: SampleKeys) -> tuple[ShardIndex, bool]:
    """The index of one shard, and whether it came from the saved index (True) or from reading the headers."""
    try:
        stat = path.stat()
    except OSError as error:
        raise HarnessError(f"WebDataset shard {str(path)!r} cannot be read: {error}") from error
    saved = _index_file(index_dir, path, stat, keys)
    try:
        payload = json.loads(saved.read_text())
        return _from_json(path, payload), True
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not indexed yet, or an unreadable index file: read the headers again
    index = index_shard(path, keys)
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        temporary = saved.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(_to_json(index), separators=(",", ":")))
        os.replace(temporary, saved)  # atomic: ranks indexing the same shard at once never see half a file
    except OSError as error:
        log.warning("could not save the index of %s in %s (%s); it is read again next time (set $%s to a "
                    "writable folder)", path, index_dir, error, INDEX_DIR_ENV)
    return index, False


def _to_json(index: ShardIndex) -> dict[str, Any]:
    return {"version": INDEX_VERSION, "size": index.size, "keys": index.keys, "images": index.images,
            "offsets": index.offsets.tolist(), "sizes": index.sizes.tolist(), "labels": index.labels,
            "problems": {str(k): v for k, v in index.problems.items()}, "member_hash": index.member_hash,
            "truncated": index.truncated}


def _from_json(path: Path, payload: dict[str, Any]) -> ShardIndex:
    if payload["version"] != INDEX_VERSION:
        raise ValueError("another index version")
    # Interned: a split of a million samples holds a few distinct extensions and labels, not a million copies.
    return ShardIndex(path, payload["size"], payload["keys"], [_intern(e) for e in payload["images"]],
                      np.asarray(payload["offsets"], dtype=np.int64), np.asarray(payload["sizes"], dtype=np.int64),
                      [_intern(label) for label in payload["labels"]],
                      {int(k): v for k, v in payload["problems"].items()}, payload["member_hash"],
                      payload["truncated"])


def _intern(text: str | None) -> str | None:
    return None if text is None else sys.intern(text)


def index_shard(path: Path, keys: SampleKeys) -> ShardIndex:
    """Read the headers of one shard (and its label members) into its index."""
    size = path.stat().st_size
    members: list[tarfile.TarInfo] = []
    label_texts: dict[str, str] = {}
    damage: str | None = None
    with open(path, "rb") as file:
        try:
            tar = tarfile.open(fileobj=file, mode="r:")
        except tarfile.TarError as error:
            raise HarnessError(f"WebDataset shard {str(path)!r} is not an uncompressed tar archive ({error}); "
                               f"compressed shards (.tar.gz) cannot be read item by item: decompress them, or "
                               f"leave the file out of the pattern") from error
        try:
            while (member := tar.next()) is not None:
                if not member.isfile():
                    continue
                members.append(member)
                parts = split_key(member.name)
                if parts and parts[1].lower() == keys.label.lower() and member.offset_data + member.size <= size:
                    label_texts[member.name] = tar.extractfile(member).read().decode("utf-8", "replace").strip()
        except (tarfile.TarError, EOFError) as error:
            damage = f"the tar ends inside a member or header ({error})"
        if damage is None:
            file.seek(tar.offset)  # where the next header would start: the end-of-archive marker, zeros
            tail = file.read(1024)
            if not tail or tail.strip(b"\0"):
                damage = "the tar has no end-of-archive marker after its last member"
    cut = [m for m in members if m.offset_data + m.size > size]
    if cut:
        damage = f"member {cut[0].name!r} needs bytes up to {cut[0].offset_data + cut[0].size}, the file has {size}"
    names, images, offsets, sizes, labels, problems = _samples(members, label_texts, keys, size)
    if damage is not None:
        reason = f"shard {path} is truncated: {damage}"
        if not names:  # nothing whole in it: one unreadable item stands for the shard, so that it is counted
            names, images, offsets, sizes, labels = [f"{path.name}/__truncated__"], [None], [0], [0], [None]
        problems[len(names) - 1] = reason  # the last sample may have lost members; every other one is whole
        log.warning("%s; its last sample is marked unreadable", reason)
    return ShardIndex(path, size, names, images, np.asarray(offsets, dtype=np.int64),
                      np.asarray(sizes, dtype=np.int64), labels, problems, _member_hash(members, labels, problems),
                      damage)


def _samples(members: Sequence[tarfile.TarInfo], label_texts: dict[str, str], sample_keys: SampleKeys,
             size: int) -> tuple[list, list, list, list, list, dict[int, str]]:
    """Group consecutive members by key into samples and choose each one's image member: the columns keys,
    images (extensions), offsets, sizes, labels and problems of `ShardIndex`."""
    groups: list[tuple[str, dict[str, tarfile.TarInfo]]] = []
    for member in members:
        parts = split_key(member.name)
        if parts is None:  # webdataset's reader skips members without an extension too
            continue
        key, extension = parts
        if not groups or groups[-1][0] != key:
            groups.append((key, {}))
        groups[-1][1][extension] = member
    keys, images, offsets, sizes, labels, problems = [], [], [], [], [], {}
    wanted = (sample_keys.image.lower(),) if sample_keys.image else IMAGE_KEYS
    for key, by_extension in groups:
        position = len(keys)
        lowered = {e.lower(): e for e in by_extension}
        found = next((lowered[e] for e in wanted if e in lowered), None)
        image = by_extension[found] if found else None
        label_member = by_extension.get(lowered.get(sample_keys.label.lower(), ""))
        if image is None:
            problems[position] = (f"sample {key!r} has no {' or '.join(wanted)} member (it has "
                                   f"{', '.join(sorted(by_extension)) or 'none'}); set image_key to the member "
                                   f"holding the image")
        elif image.offset_data + image.size > size:
            problems[position] = f"member {image.name!r} is cut short"
        keys.append(key)
        images.append(_intern(found))
        offsets.append(image.offset_data if image else 0)
        sizes.append(image.size if image else 0)
        label = label_texts.get(label_member.name) if label_member is not None else None
        if label is not None and sample_keys.label_field is not None:
            label, problem = json_field(label, sample_keys.label_field)
            if problem is not None:
                problems.setdefault(position, f"member {label_member.name!r} {problem}")
        labels.append(_intern(label))
    return keys, images, offsets, sizes, labels, problems


def json_field(text: str, field: str) -> tuple[str | None, str | None]:
    """(the label text, None) that `field` (dotted for nested objects) of the JSON `text` holds, as the label
    members' text is (a class number, or a class name); else (None, what is wrong)."""
    try:
        value: Any = json.loads(text.lstrip("\ufeff"))  # a byte-order mark, as some Windows tools write
    except ValueError:
        return None, "is not JSON"
    parts = [field] if isinstance(value, dict) and field in value else field.split(".")  # a key with a dot first
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            return None, f"has no field {field!r}"
        value = value[part]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None, f"holds {json.dumps(value)[:40]} in field {field!r}, not a class number or name"
    return str(value).strip(), None
