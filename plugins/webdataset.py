"""`wds:<shards>`: WebDataset tar shards, read in place (never unpacked), as timm's `wds/...` datasets are.

    wds:/data/in1k/{train,test}-{000000..000146}.tar      one brace pattern (or glob) for both splits
    wds:/data/in1k                                         every *.tar under the folder
    wds:/data/in1k  train="imagenet-train-{0000..1281}.tar"  test="imagenet-val-{00..49}.tar"   (options)

Which split a shard belongs to is read from its file or folder name: the word `train`, `test` or `val`
(`valid`, `validation`) between non-alphanumerics (`imagenet-train-000012.tar`, `test/000.tar`). The `train` and `test`
options give one pattern per split instead (relative patterns resolve against the folder given). With no test
shards, or test shards whose labels are all -1 (and no `test` option), the `val` shards are the test split, and the
dataset's info says so.

Items: each sample's image member (`image_key`, default the first of jpg, jpeg, png, webp it has), decoded to RGB;
its label is the class number (or the class name) in its `label_key` member (`cls`), or, with `label_field`, in
that field of its JSON sidecar (`json`; dotted for nested objects, as timm's `target_key`). Class names come from
`class_names` (a JSON list, a JSON {index: name} object, or a text file with one name per line), else from
`classes.json`, `class_names.json`, `classes.txt`, `class_names.txt` or `classnames.txt` beside the shards (or above
a split-named folder of shards, as CLIP_benchmark lays out `root/classnames.txt`, `root/test/0.tar`), else they are
the label numbers (0 to the largest), or, where the label members hold names rather than numbers, those names
sorted. A label of -1 marks an unlabelled sample; shards without any label member form an unlabelled dataset.

Every shard is indexed once from its tar headers (`harness.plugins.wds_index`); item ids are the samples' keys
(`__key__`), or `<shard file>/<key>` for every item of a split where keys repeat across shards. A split's
fingerprint hashes each shard's name, size and member list, not its mtime, so copies of the shards on several
nodes have the same cache key.

Reading: an item is one positioned read (`os.pread`) of its image member from a shard file that stays open in the
reading process, so a DataLoader worker or a torchrun rank, which extracts contiguous runs of items in order,
reads each shard front to back, never opening a file per item. `reads_backwards` and `shards_opened` count what a
process did, to check exactly that.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import re
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness import hookimpl
from harness.errors import BadItemError, HarnessError
from harness.plugins.imagefolder import open_rgb
from harness.plugins.wds_index import SampleKeys, ShardIndex, load_or_index, resolve_index_dir
from harness.types import Dataset, DatasetSplit

log = logging.getLogger(__name__)

SPLIT_WORDS = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val"}
#: Looked for beside the shards and, for shards in a split-named folder (`root/test/0.tar`), in the folder above:
#: `classnames.txt` is where CLIP_benchmark's webdataset converter (and its `wds_*` sets on the hub) put them.
CLASS_NAME_FILES = ("classes.json", "class_names.json", "classes.txt", "class_names.txt", "classnames.txt")
_GLOB_CHARACTERS = re.compile(r"[*?\[]")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_NUMBER = re.compile(r"-?[0-9]+")
#: Shard files a reading process keeps open at once: reading moves through shards in order, so a few suffice.
OPEN_SHARDS = 4
#: Threads that index shards not yet indexed (reading headers is waiting on the disk, not computing).
INDEX_THREADS = 8


# -- patterns -------------------------------------------------------------------------------------------------------

def expand_braces(pattern: str) -> list[str]:
    """Every string a brace pattern names, in order: `{a,b}` alternatives and `{000..146}` numeric ranges (zero-padded
    to the width of the first bound, as webdataset's braceexpand writes them), nested or in sequence."""
    depth, start = 0, -1
    for position, character in enumerate(pattern):
        if character == "{":
            if depth == 0:
                start = position
            depth += 1
        elif character == "}" and depth:
            depth -= 1
            if depth == 0:
                head, body, tail = pattern[:start], pattern[start + 1:position], pattern[position + 1:]
                return [head + middle + rest for middle in _alternatives(body) for rest in expand_braces(tail)]
    if depth:
        raise HarnessError(f"shard pattern {pattern!r} has an unclosed '{{'")
    return [pattern]


def _alternatives(body: str) -> list[str]:
    numbers = _RANGE.match(body)
    if numbers:
        first, last = numbers.group(1), numbers.group(2)
        step = 1 if int(last) >= int(first) else -1
        width = len(first.lstrip("-"))
        return [str(n).zfill(width) for n in range(int(first), int(last) + step, step)]
    parts, depth, current = [], 0, ""
    for character in body:
        if character == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"{": 1, "}": -1}.get(character, 0)
        current += character
    parts.append(current)
    return [expanded for part in parts for expanded in expand_braces(part)]


def shard_paths(pattern: str, base: Path | None = None) -> list[Path]:
    """The shard files a pattern names: a folder (every *.tar under it), a brace pattern (each file must exist) or
    a glob (at least one match), relative patterns resolved against `base`."""
    paths: list[Path] = []
    missing: list[str] = []
    for expanded in expand_braces(os.path.expanduser(pattern)):
        if base is not None and not os.path.isabs(expanded):
            expanded = str(base / expanded)
        if _GLOB_CHARACTERS.search(expanded):
            paths += sorted(Path(p) for p in glob.glob(expanded, recursive=True) if os.path.isfile(p))
        elif os.path.isdir(expanded):
            paths += sorted(p for p in Path(expanded).rglob("*.tar") if p.is_file())
        elif os.path.isfile(expanded):
            paths.append(Path(expanded))
        else:
            missing.append(expanded)
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise HarnessError(f"WebDataset shard pattern {pattern!r} names {len(missing)} file(s) that do not exist: "
                           f"{shown}; check the brace ranges")
    if not paths:
        raise HarnessError(f"WebDataset shard pattern {pattern!r} matches no shard file (.tar)")
    return list(dict.fromkeys(paths))  # in order, each once


def split_of(path: Path) -> str | None:
    """The split a shard's file name (else its folder's name) names: train, test or val."""
    return split_named(path.stem) or split_named(path.parent.name)


def split_named(text: str) -> str | None:
    """The one split that `text` names as a word (`imagenet-train-0001`, `test`), else None."""
    found = {SPLIT_WORDS[w] for w in re.split(r"[^A-Za-z0-9]+", text.lower()) if w in SPLIT_WORDS}
    return found.pop() if len(found) == 1 else None


# -- the dataset ----------------------------------------------------------------------------------------------------

class WebDataset(Dataset):
    def __init__(self, argument: str, *, train: str | None = None, test: str | None = None,
                 image_key: str | None = None, label_key: str = "cls", label_field: str | None = None,
                 class_names: str | None = None, index_dir: str | None = None) -> None:
        self.argument = argument
        self.patterns = {"train": train, "test": test}
        if label_field is not None and (not isinstance(label_field, str) or not label_field.strip()):
            raise HarnessError(f"dataset wds:{argument}: option label_field={label_field!r} must name a field of the "
                               f"samples' JSON member, e.g. label_field=label")
        # With label_field, the label's member is the JSON sidecar `json` unless label_key names another one.
        member = "json" if label_field is not None and label_key == "cls" else label_key
        self.keys = SampleKeys(image_key, member, label_field)
        self.class_names_file = class_names
        self.index_dir = resolve_index_dir(index_dir)
        self._layout: dict[str, Any] | None = None
        self.shards_indexed = 0  # shards this process indexed from their headers (not from the saved index)
        self._splits: dict[str, WebDatasetSplit] = {}  # one per name: its reader keeps shards open

    # The layout: shards by split, their indices, class names ---------------------------------------------------

    def _shards_by_split(self) -> tuple[dict[str, list[Path]], str | None]:
        """{split: shard paths}, and a note when `val` stands in for the missing `test`."""
        argument = os.path.expanduser(self.argument)
        by_split: dict[str, list[Path]] = {}
        if any(self.patterns.values()):
            base = Path(argument) if os.path.isdir(argument) else None
            missing = [s for s, p in self.patterns.items() if not p]
            if missing:
                raise HarnessError(f"dataset wds:{self.argument}: give both the train and the test option "
                                   f"(missing: {', '.join(missing)}), or neither and name the splits in the "
                                   f"shards' file names")
            for split, pattern in self.patterns.items():
                by_split[split] = shard_paths(pattern, base)
        else:
            unnamed = []
            for path in shard_paths(argument):
                split = split_of(path)
                if split is None:
                    unnamed.append(path)
                else:
                    by_split.setdefault(split, []).append(path)
            if unnamed:
                raise HarnessError(f"dataset wds:{self.argument}: shard {str(unnamed[0])!r} (and "
                                   f"{len(unnamed) - 1} more) names no split: put train, test or val in its file "
                                   f"or folder name, or give the train and test options (one pattern each)")
        note = None
        if "test" not in by_split and "val" in by_split:
            by_split["test"] = by_split.pop("val")
            note = "no test shards: the val shards are the test split"
        if "train" not in by_split or "test" not in by_split:
            raise HarnessError(f"dataset wds:{self.argument} has shards for {', '.join(sorted(by_split))} only; "
                               f"it needs train and test (or val) shards")
        shared = set(by_split["train"]) & set(by_split["test"])
        if shared:
            raise HarnessError(f"dataset wds:{self.argument}: shard {str(sorted(shared)[0])!r} is in both train "
                               f"and test")
        return {s: by_split[s] for s in ("train", "val", "test") if s in by_split}, note

    def _index(self, paths: list[Path]) -> list[ShardIndex]:
        results: list[tuple[ShardIndex, bool]]
        with ThreadPoolExecutor(min(INDEX_THREADS, len(paths))) as pool:
            results = list(pool.map(lambda p: load_or_index(p, self.index_dir, self.keys), paths))
        read = sum(not saved for _, saved in results)
        self.shards_indexed += read
        if read:
            log.info("indexed %d WebDataset shard(s) of wds:%s from their tar headers (%d from the saved index)",
                     read, self.argument, len(paths) - read)
        return [index for index, _ in results]

    def _scan(self) -> dict[str, Any]:
        if self._layout is not None:
            return self._layout
        by_split, note = self._shards_by_split()
        indices = {split: self._index(paths) for split, paths in by_split.items()}
        labelled = any(label is not None for shards in indices.values() for shard in shards for label in shard.labels)
        if self.keys.label_field is not None and not labelled:
            raise self._no_label_field(indices)
        if ("val" in indices and not self.patterns["test"] and not has_labels(indices["test"])
                and has_labels(indices["val"])):  # a held-out test set published without its labels
            indices["test"] = indices.pop("val")
            note = "the test shards have no labels: the val shards are the test split"
        names = self._class_names(by_split, indices) if labelled else []
        root = Path(os.path.commonpath([str(p.parent) for paths in by_split.values() for p in paths]))
        self._layout = {"indices": indices, "class_names": names, "note": note, "labelled": labelled, "root": root}
        return self._layout

    def _no_label_field(self, indices: dict[str, list[ShardIndex]]) -> HarnessError:
        """No sample has a label in the field that label_field names: a mistyped field, most likely."""
        first = next((problem for shards in indices.values() for shard in shards
                      for problem in shard.problems.values() if "field" in problem or "JSON" in problem), None)
        seen = f" (the first sample's: {first})" if first else f" (no sample has a {self.keys.label!r} member)"
        return HarnessError(f"dataset wds:{self.argument}: no sample has a label in field "
                            f"{self.keys.label_field!r} of its {self.keys.label!r} member{seen}; check the option "
                            f"label_field")

    def _class_names(self, by_split: dict[str, list[Path]], indices: dict[str, list[ShardIndex]]) -> list[str]:
        """From the class-names file, else the label numbers 0..max, else (labels that are words) the words sorted."""
        path = Path(os.path.expanduser(self.class_names_file)) if self.class_names_file else None
        if path is None:
            shard_folders = [p.parent for paths in by_split.values() for p in paths]
            folders = dict.fromkeys([Path(os.path.expanduser(self.argument))] + shard_folders +
                                    [f.parent for f in shard_folders if split_named(f.name)])
            path = next((f / n for f in folders if f.is_dir() for n in CLASS_NAME_FILES if (f / n).is_file()), None)
        if path is not None:
            self.class_names_source = str(path)
            return read_class_names(path)
        # An empty label member is no class: its sample stays an unreadable item, as any label that fits nothing.
        # -1 is no class either: it marks an unlabelled sample (as timm's reader and the harness's labels do).
        texts = {label for shards in indices.values() for shard in shards for label in set(shard.labels)
                 if label and not _unlabelled(label)}
        numbers = {int(text) for text in texts if _is_number(text)}
        if not texts:  # every label is -1: labelled shards, but no class among them
            self.class_names_source = "none: every label is -1 (unlabelled)"
            return []
        if numbers:
            others = sorted(text for text in texts if not _is_number(text))
            if others:  # a few damaged members, or names mixed in: their samples are bad items, each named
                log.warning("wds:%s: %d distinct %r text(s) are not class numbers (%s); their samples are "
                            "unreadable items unless class names are given", self.argument, len(others),
                            self.keys.label, ", ".join(repr(t[:40]) for t in others[:3]))
            self.class_names_source = "the label numbers (no class-names file beside the shards)"
            return [str(n) for n in range(max(numbers) + 1)]
        self.class_names_source = "the distinct label texts, sorted (no class-names file beside the shards)"
        return sorted(texts)

    # The Dataset contract ----------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        layout = self._scan()
        indices = layout["indices"]
        # The record keeps `source` and `revision` of the info: a stand-in test split is said in `source` too. The
        # revision is one word: it is part of every split's cache key, and each split's fingerprint hashes its own
        # shards, so new test shards must not re-key (and re-extract) an unchanged train split.
        source = f"WebDataset shards wds:{self.argument}" + (f"; {layout['note']}" if layout["note"] else "")
        info = {"source": source, "revision": "shards",
                "class_names": layout["class_names"], "splits": list(indices),
                "split_sizes": {s: sum(len(i) for i in shards) for s, shards in indices.items()},
                "shards": {s: len(shards) for s, shards in indices.items()}}
        if layout["labelled"]:
            info["class_names_source"] = self.class_names_source
        if layout["note"]:
            info["note"] = layout["note"]
        return info

    def split(self, name: str) -> "WebDatasetSplit":
        layout = self._scan()
        if name not in layout["indices"]:
            raise HarnessError(f"dataset {self.name!r} has no split {name!r}; it has {', '.join(layout['indices'])}")
        if name not in self._splits:
            self._splits[name] = WebDatasetSplit(name, layout["indices"][name], layout["class_names"],
                                                 layout["labelled"], layout["root"], self.keys.label)
        return self._splits[name]


def _is_number(text: str) -> bool:
    """A class number as a label member holds it: ASCII digits, perhaps after a minus sign."""
    return _NUMBER.fullmatch(text) is not None


def has_labels(shards: list[ShardIndex]) -> bool:
    """Whether any sample of `shards` has a label other than -1 (unlabelled)."""
    return any(label and not _unlabelled(label) for shard in shards for label in set(shard.labels))


def _unlabelled(text: str) -> bool:
    """The label text that marks a sample without a label: -1."""
    return _is_number(text) and int(text) == -1


def read_class_names(path: Path) -> list[str]:
    """Class names from a JSON list, a JSON {index: name} object, or a text file with one name per line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise HarnessError(f"class-names file {str(path)!r} cannot be read: {error}") from error
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
    except ValueError as error:
        raise HarnessError(f"class-names file {str(path)!r} is not valid JSON: {error}") from error
    if isinstance(data, list) and all(isinstance(n, str) for n in data):
        return data
    if isinstance(data, dict) and all(k.isdigit() for k in data):  # JSON object keys are strings
        by_number = {int(k): str(v) for k, v in data.items()}
        if sorted(by_number) == list(range(len(by_number))):
            return [by_number[n] for n in range(len(by_number))]
    raise HarnessError(f"class-names file {str(path)!r} holds neither a list of names nor an object "
                       f"{{\"0\": name, \"1\": name, ...}} with every index from 0")


class WebDatasetSplit(DatasetSplit):
    """The samples of one split's shards, in shard order; each read is one `pread` of an open shard."""

    def __init__(self, name: str, shards: list[ShardIndex], class_names: list[str], labelled: bool, root: Path,
                 label_key: str) -> None:
        self.name = name
        self.shards = shards
        self.class_names = class_names
        self.class_numbers: dict[str, int] = {}
        for number, name in enumerate(class_names):  # a name listed twice (ImageNet's "crane") is its first number
            self.class_numbers.setdefault(name, number)
        self.labelled = labelled
        self.root = root
        self.label_key = label_key
        # Whether -1 (an unlabelled sample) occurs: part of the fingerprint, found once (the labels never change).
        self.has_unlabelled = any(label and _unlabelled(label) for shard in shards for label in set(shard.labels))
        # Item i is sample i - starts[s] of shard s, where starts[s] <= i < starts[s + 1].
        self.starts = np.cumsum([0] + [len(shard) for shard in shards])
        keys = [key for shard in shards for key in shard.keys]
        self.prefixed = len(set(keys)) < len(keys)
        if self.prefixed:
            log.warning("keys repeat across the %s shards of %s; item ids there are <shard file>/<key>", name, root)
        self._reset_reader()

    def _reset_reader(self) -> None:
        self._pid = os.getpid()
        self._open: OrderedDict[int, int] = OrderedDict()  # shard -> file descriptor, most recent last
        self._last_offset: dict[int, int] = {}
        self.shards_opened = 0
        self.reads_backwards = 0

    def __getstate__(self) -> dict[str, Any]:
        # File descriptors mean nothing in another process: a DataLoader worker opens its own.
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        state["_pid"] = -1
        return state

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for descriptor in self._open.values():
                os.close(descriptor)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, index: int) -> tuple[int, int]:
        """(shard, position in the shard) of item `index`."""
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range: split {self.name!r} has {len(self)} items")
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return shard, index - int(self.starts[shard])

    def _descriptor(self, shard: int) -> int:
        if self._pid != os.getpid():  # forked (a DataLoader worker): the parent's descriptors are not ours to use
            self._reset_reader()
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard]
        path = self.shards[shard].path
        try:
            descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as error:
            raise HarnessError(f"WebDataset shard {str(path)!r} cannot be opened: {error}") from error
        self._open[shard] = descriptor
        self.shards_opened += 1
        while len(self._open) > OPEN_SHARDS:
            os.close(self._open.popitem(last=False)[1])
        return descriptor

    def _read(self, shard: int, offset: int, size: int) -> bytes:
        descriptor = self._descriptor(shard)
        if offset < self._last_offset.get(shard, 0):
            self.reads_backwards += 1
        self._last_offset[shard] = offset + size
        if hasattr(os, "pread"):
            return os.pread(descriptor, size, offset)
        os.lseek(descriptor, offset, os.SEEK_SET)  # Windows: no pread; each process has its own descriptor
        return os.read(descriptor, size)

    def _label(self, text: str | None, where: str) -> int:
        if not self.labelled:
            return -1
        if text is None:
            raise BadItemError(where, f"the sample has no {self.label_key!r} member (its label)")
        if _unlabelled(text):
            return -1
        if _is_number(text):
            label = int(text)
        elif text in self.class_numbers:  # some writers store the class name itself
            label = self.class_numbers[text]
        else:
            raise BadItemError(where, f"label {text[:40]!r} is neither a class number nor a class name")
        if not 0 <= label < len(self.class_names):
            raise BadItemError(where, f"label {label} is outside 0..{len(self.class_names) - 1} "
                                      f"({len(self.class_names)} class names)")
        return label

    def __getitem__(self, index: int) -> tuple[Any, int]:
        shard_number, position = self._locate(index)
        shard = self.shards[shard_number]
        where = f"{shard.path} member {shard.member_name(position)}"
        if position in shard.problems:
            raise BadItemError(where, shard.problems[position])
        label = self._label(shard.labels[position], where)
        size = int(shard.sizes[position])
        data = self._read(shard_number, int(shard.offsets[position]), size)
        if len(data) != size:
            raise BadItemError(where, f"read {len(data)} of {size} bytes: the shard changed or was cut short after "
                                      f"it was indexed")
        try:
            return open_rgb(io.BytesIO(data)), label
        except BadItemError as error:
            raise BadItemError(where, error.reason) from error

    def item_id(self, index: int) -> str:
        shard_number, position = self._locate(index)
        shard = self.shards[shard_number]
        return f"{shard.path.name}/{shard.keys[position]}" if self.prefixed else shard.keys[position]

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for shard in self.shards:
            name = shard.path.relative_to(self.root).as_posix() if shard.path.is_relative_to(self.root) else \
                shard.path.name
            digest.update(f"{name}\t{shard.size}\t{shard.member_hash}\n".encode())
        digest.update(json.dumps(self.class_names).encode())
        if self.has_unlabelled:
            # Since -1 reads as an unlabelled item, not an unreadable one: entries made before must not be reused.
            digest.update(b"\nlabel -1: unlabelled")
        return digest.hexdigest()


def wds(argument: str, *, train: str | None = None, test: str | None = None, image_key: str | None = None,
        label_key: str = "cls", label_field: str | None = None, class_names: str | None = None) -> WebDataset:
    # Where the index is kept ($HARNESS_WDS_INDEX_DIR) is not an option: options name what is measured (they
    # become part of the dataset's column name), and the index folder changes nothing measured.
    return WebDataset(argument, train=train, test=test, image_key=image_key, label_key=label_key,
                      label_field=label_field, class_names=class_names)


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    register("wds", wds, "WebDataset tar shards read in place: wds:<folder, brace pattern or glob> with train/test "
                         "in the shard names (or the train= and test= options)", prefix=True)
