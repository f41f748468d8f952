"""`hfds:<hub id or local path>`: an image-classification dataset in Hugging Face `datasets` form.

Three sources, told apart by what the argument names:

- a folder written by `DatasetDict.save_to_disk` (it holds `dataset_dict.json`): its splits are the dataset's;
  a folder written by `Dataset.save_to_disk` (`state.json`, no `dataset_dict.json`) is one split, used as `test`
  (label-free and test-only evaluators run on it; save a DatasetDict with train and test for kNN and the probe);
- a folder holding parquet files, read as `datasets` reads a local copy of a hub repository (which converts them
  once into its cache, `HF_DATASETS_CACHE`): the dataset card's `configs` (README.md) say which files are which
  configuration's splits, else the split names come from the file names as the hub lays them out
  (`train-*.parquet`, `data/test-00000-of-00001.parquet`, ...). Parquet written from a Dataset keeps its `Image`
  and `ClassLabel` features;
- anything else that is not a path (`owner/name`) is a hub id, loaded with `datasets.load_dataset(id, config,
  revision=...)`, so the HF cache, `HF_HUB_OFFLINE` and a pinned `revision` behave as they do for `datasets`.

Options (a suite's `[[datasets]] options = {...}`): `config` (hub ids and parquet folders), `revision` (hub only),
`train_split` and `test_split` (default `train` and `test`; without a `test` split and without `test_split`,
`validation`, else `valid` or `val`, is the test split and `info()` says so under `split_source` and `note`),
`image_column` and `label_column` (default: the one `datasets.Image` column and the one `datasets.ClassLabel`
column; class names are the ClassLabel's names; a `label_column` given by name may hold integers or strings instead,
whose distinct values, sorted, are the classes; with no Image column, a struct of `bytes` and `path` (an Image
column written to parquet by another tool) is the image column, and `image_column` may also name a column of encoded
image bytes). A `test` split without a single label (the hub's ImageNet-1k: every label -1) is passed over for that
split when the option test_split is not given, and `note` says so. A `test_split` equal to the train split it would
be paired with (a set published as one `train` split) leaves the dataset without train: test-only evaluators
(clustering) run on it.

Items are `(PIL image in RGB, label)` read one row at a time from the memory-mapped arrow table (the image column
is cast to `Image(decode=False)` and decoded here, by imagefolder's `open_rgb`); ids are `<source split>/<row>`,
e.g. `validation/17`. `info()["revision"]`: the hub commit the revision resolved to, or `files` for a local
folder; a split's fingerprint hashes its own files' names, sizes and mtimes (as imagefolder fingerprints files;
hub: the commit) with the columns used, so a changed test split leaves train's cache key as it was.

`datasets` is the optional extra `hf` (`pip install "encoder-harness[hf]"`), imported only when a dataset is read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness import hookimpl
from harness.errors import BadItemError, HarnessError
from harness.plugins.imagefolder import open_rgb
from harness.types import Dataset, DatasetSplit

INSTALL_HINT = 'pip install "encoder-harness[hf]"'
#: The splits used as test (the first one present) when the dataset has no `test` split, or one without labels,
#: and the `test_split` option is not given: the hub's usual name, and the short ones some sets use (tiny-imagenet).
FALLBACK_TEST_SPLITS = ("validation", "valid", "val")
#: Seconds the hub may take to say which commit a revision is, so that a network that drops packets fails.
HUB_TIMEOUT_S = 30.0
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
#: A local folder's revision: one word, as imagefolder's. The revision is part of every split's cache key, and each
#: split's fingerprint already hashes its own files, so a rewritten test split does not re-key an unchanged train.
LOCAL_REVISION = "files"
_TRUE = {"1", "ON", "YES", "TRUE"}


def import_datasets(name: str) -> Any:
    """The `datasets` module, or the error that names the extra to install."""
    try:
        import datasets
    except ImportError as error:
        raise HarnessError(f"dataset {name!r} needs the Hugging Face `datasets` package, which is not installed "
                           f"({type(error).__name__}: {error}); install it with {INSTALL_HINT}") from error
    return datasets


def hub_offline(datasets: Any) -> bool:
    """Whether `datasets` and `huggingface_hub` are told not to use the network (read at their import, so the
    environment is asked too)."""
    from_env = any(os.environ.get(var, "").upper() in _TRUE for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return from_env or bool(getattr(datasets.config, "HF_HUB_OFFLINE", False)) or bool(
        getattr(datasets.config, "HF_DATASETS_OFFLINE", False))


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split()) or type(error).__name__}"


def files_digest(root: Path, files: list[Path]) -> str:
    """sha256 of the files' paths relative to `root`, sizes and mtimes: stat only, nothing is read."""
    digest = hashlib.sha256()
    for path in sorted(files):
        stat = path.stat()
        relative = os.path.relpath(path, root).replace(os.sep, "/")
        digest.update(f"{relative}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def describe_columns(features: Any) -> str:
    """`image (Image), label (ClassLabel: 10 names), file (Value string)`: what an ambiguity error lists."""
    parts = []
    for column, feature in features.items():
        kind = type(feature).__name__
        if kind == "ClassLabel":
            kind += f": {feature.num_classes} names"
        elif kind == "Value":
            kind += f" {feature.dtype}"
        elif isinstance(feature, dict):
            kind = f"struct {', '.join(feature)}"
        parts.append(f"{column} ({kind})")
    return ", ".join(parts) or "none"


def image_storage(datasets: Any, feature: Any) -> bool:
    """Whether a column holds images that `datasets.Image` can be cast from: an Image feature, its storage written
    to parquet by another tool (a struct of `bytes` and `path`, without datasets' feature metadata), or encoded
    image bytes (a binary Value). A column of file paths is not taken: the files would be outside the
    fingerprint."""
    if isinstance(feature, datasets.Image):
        return True
    if isinstance(feature, dict):
        return "bytes" in feature and set(feature) <= {"bytes", "path"}
    return isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary")


@dataclass
class Loaded:
    """What was read of the source: its splits (arrow-backed, memory-mapped), their files and provenance."""

    splits: dict[str, Any]  # source split name -> datasets.Dataset
    files: dict[str, tuple[Path, list[Path]]]  # source split -> (root, data files); empty for the hub
    source: str
    revision: str
    extra: dict[str, Any] = field(default_factory=dict)


class HFDataset(Dataset):
    """One `hfds:` dataset: loaded (not decoded) on the first `info()` or `split()`."""

    def __init__(self, argument: str, *, config: str | None = None, train_split: str | None = None,
                 test_split: str | None = None, image_column: str | None = None, label_column: str | None = None,
                 revision: str | None = None) -> None:
        self.argument = argument
        self.name = f"hfds:{argument}"
        self.options = {"config": config, "train_split": train_split, "test_split": test_split,
                        "image_column": image_column, "label_column": label_column, "revision": revision}
        for option, value in self.options.items():
            if value is not None and not isinstance(value, str):
                raise HarnessError(f"dataset {self.name!r}: option {option}={value!r} must be a string")
        path = Path(argument).expanduser()
        self.local = path.exists() or _looks_like_path(argument)
        self.root = path if self.local else None
        self._state: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HFDataset({self.argument!r})"

    # -- Dataset interface --------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return dict(self._resolve()["info"])

    def split(self, name: str) -> HFSplit:
        state = self._resolve()
        if name not in state["chosen"]:
            raise HarnessError(f"dataset {self.name!r} has no split {name!r}; it has {', '.join(state['chosen'])}")
        source_split = state["chosen"][name]
        loaded: Loaded = state["loaded"]
        if loaded.files:
            root, files = loaded.files[source_split]
            content = files_digest(root, files)
        else:
            content = loaded.revision  # the hub commit pins the data
        return HFSplit(self.name, source_split, loaded.splits[source_split], state["image"], state["label"],
                       content, state["label_values"])

    # -- loading ------------------------------------------------------------------------------------------------

    def _resolve(self) -> dict[str, Any]:
        with self._lock:
            if self._state is None:
                datasets = import_datasets(self.name)
                loaded = self._load_local(datasets) if self.local else self._load_hub(datasets)
                self._state = self._choose(datasets, loaded)
            return self._state

    def _load_local(self, datasets: Any) -> Loaded:
        root = self.root
        if self.options["revision"] is not None:
            raise HarnessError(f"dataset {self.name!r}: option 'revision' applies to hub ids only; {str(root)!r} is "
                               f"a local folder")
        if not root.exists():
            raise HarnessError(f"dataset {self.name!r}: the path {str(root)!r} does not exist (a hub id is written "
                               f"owner/name)")
        if not root.is_dir():
            raise HarnessError(f"dataset {self.name!r}: {str(root)!r} is not a folder; give the folder that "
                               f"save_to_disk wrote, or the folder holding the parquet files")
        absolute = root.resolve()
        if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
            try:
                saved = datasets.load_from_disk(str(absolute))
            except Exception as error:  # noqa: BLE001 - a damaged folder, in whatever way datasets notices it
                raise HarnessError(f"dataset {self.name!r}: {str(root)!r} could not be read by "
                                   f"datasets.load_from_disk ({_one_line(error)})") from error
            if isinstance(saved, datasets.DatasetDict):
                splits = dict(saved)
                extra = {}
            else:  # one saved Dataset: one split, evaluated as test
                splits = {"test": saved}
                extra = {"note": "a single saved Dataset (not a DatasetDict): its rows are the test split"}
            if self.options["config"] is not None:
                raise HarnessError(f"dataset {self.name!r}: option 'config' names one configuration of a hub "
                                   f"repository (or of a local copy of one); {str(root)!r} was written by "
                                   f"save_to_disk and has none")
            files = {name: (absolute, _saved_files(split)) for name, split in splits.items()}
            return Loaded(splits, files, f"datasets save_to_disk folder {absolute}",
                          LOCAL_REVISION, extra)
        if not any(root.rglob("*.parquet")):
            raise HarnessError(f"dataset {self.name!r}: {str(root)!r} is neither a folder written by save_to_disk "
                               f"(dataset_dict.json or state.json) nor a folder of parquet files")
        # The folder as `datasets` reads a local copy of a hub repository: the dataset card's `configs` (README.md)
        # say which files are which configuration's splits; without a card, the split names come from the file
        # names. (The parquet builder given the folder as data_dir would merge every configuration's files.)
        config = self.options["config"]
        try:
            builder = datasets.load_dataset_builder(str(absolute), config)
            builder.download_and_prepare()
            splits = dict(builder.as_dataset())
        except ValueError as error:
            raise (self._config_failure(error) or self._local_failure(root, error)) from error
        except FileNotFoundError as error:  # datasets resolves every configuration's files named by the card
            if not (root / "README.md").is_file():
                raise self._local_failure(root, error) from error
            raise HarnessError(f"dataset {self.name!r}: the dataset card {str(root / 'README.md')!r} names data "
                               f"files, for its configurations, that are not in the folder ({_one_line(error)}). "
                               f"A partial download (--include) leaves them out: download every configuration's "
                               f"files, or move README.md out of the folder to read the parquet files there by "
                               f"their names") from error
        except Exception as error:  # noqa: BLE001
            raise self._local_failure(root, error) from error
        files = {name: (absolute, [Path(f) for f in builder.config.data_files[name]]) for name in splits}
        where = f"parquet files in {absolute}" + (f" (config {config})" if config else "")
        return Loaded(splits, files, where, LOCAL_REVISION, {"config": config} if config else {})

    def _config_failure(self, error: ValueError) -> HarnessError | None:
        """datasets' "Config name is missing ... pick one among the available configs", or an unknown config,
        said as the option to set; None for any other ValueError."""
        if "config" not in str(error).lower():
            return None
        given = self.options["config"]
        fix = (f"change or drop the option config={given!r}" if given is not None else "set the option config")
        return HarnessError(f"dataset {self.name!r}: {_one_line(error)}; {fix} (on the command line: "
                            f"--dataset-option config=NAME; in a suite: options = {{ config = \"NAME\" }})")

    def _local_failure(self, root: Path, error: BaseException) -> HarnessError:
        return HarnessError(f"dataset {self.name!r}: the parquet files in {str(root)!r} could not be read by "
                            f"datasets ({_one_line(error)})")

    def _load_hub(self, datasets: Any) -> Loaded:
        hub_id, config, revision = self.argument, self.options["config"], self.options["revision"]
        offline = hub_offline(datasets)
        commit = revision if revision is not None and _COMMIT.match(revision) else None
        if commit is None and not offline:
            commit = self._hub_commit(hub_id, revision)
        try:
            loaded = datasets.load_dataset(hub_id, config, revision=commit or revision)
        except ValueError as error:
            raise (self._config_failure(error) or self._hub_failure(error, offline)) from error
        except Exception as error:  # noqa: BLE001 - offline, not found, network: one message each
            raise self._hub_failure(error, offline) from error
        if not isinstance(loaded, datasets.DatasetDict):
            loaded = datasets.DatasetDict({"test": loaded})
        splits = dict(loaded)
        if commit is None:
            commit = _cached_commit(splits, hub_id, revision)
        where = f"Hugging Face dataset {hub_id}" + (f" (config {config})" if config else "")
        return Loaded(splits, {}, where, commit, {"hub_id": hub_id, "config": config,
                                                   "requested_revision": revision or "main"})

    def _hub_commit(self, hub_id: str, revision: str | None) -> str | None:
        """The commit `revision` resolves to now; None when the hub cannot say (load_dataset then reports)."""
        try:
            from huggingface_hub import HfApi

            return HfApi().dataset_info(hub_id, revision=revision, timeout=HUB_TIMEOUT_S).sha
        except Exception:  # noqa: BLE001 - not found, private, unreachable: load_dataset's error says which
            return None

    def _hub_failure(self, error: BaseException, offline: bool) -> HarnessError:
        hub_id = self.argument
        pinned = f" at revision {self.options['revision']}" if self.options["revision"] else ""
        local = (f"To use a local copy, download it on a machine that is online (`huggingface-cli download "
                 f"--repo-type dataset {hub_id} --local-dir DIR`, or save_to_disk) and name the folder: "
                 f"hfds:/path/to/DIR")
        if offline:
            return HarnessError(f"dataset {self.name!r}: the Hugging Face dataset {hub_id!r}{pinned} is not in the "
                                f"HF cache and this machine is offline (HF_HUB_OFFLINE is set), so it cannot be "
                                f"downloaded ({_one_line(error)}). Unset HF_HUB_OFFLINE to download it. {local}")
        return HarnessError(f"dataset {self.name!r}: datasets.load_dataset({hub_id!r}) failed{pinned} "
                            f"({_one_line(error)}); check the id and your network. {local}")

    # -- splits and columns -------------------------------------------------------------------------------------

    def _choose(self, datasets: Any, loaded: Loaded) -> dict[str, Any]:
        """Which source split is train and which is test, the image and label columns, and the info."""
        available = list(loaded.splits)
        chosen: dict[str, str] = {}

        def fallback_split() -> str | None:  # the first of FALLBACK_TEST_SPLITS there, other than the train split
            return next((n for n in FALLBACK_TEST_SPLITS if n in loaded.splits and n != chosen.get("train")), None)

        notes = [loaded.extra["note"]] if "note" in loaded.extra else []
        for harness_split, option in (("train", "train_split"), ("test", "test_split")):
            wanted = self.options[option]
            if wanted is not None:
                if wanted not in loaded.splits:
                    raise HarnessError(f"dataset {self.name!r} has no split {wanted!r} (option {option}); it has "
                                       f"{', '.join(available)}")
                chosen[harness_split] = wanted
            elif harness_split in loaded.splits:
                chosen[harness_split] = harness_split
            elif harness_split == "test" and fallback_split() is not None:
                chosen["test"] = fallback_split()
                notes.append(f"no test split: {chosen['test']} is used as test")
        if "test" not in chosen:
            raise HarnessError(f"dataset {self.name!r} has no test split (nor {', '.join(FALLBACK_TEST_SPLITS)}); "
                               f"it has {', '.join(available)}: set the option test_split to one of them")
        if chosen.get("train") == chosen["test"]:  # e.g. test_split="train" for a set published as one split
            if self.options["train_split"] is not None:
                raise HarnessError(f"dataset {self.name!r}: train_split and test_split both name split "
                                   f"{chosen['test']!r}; a probe scored on its own train items means nothing")
            del chosen["train"]
            notes.append(f"split {chosen['test']!r} is the test split; there is no train split")
        first = loaded.splits[chosen.get("train", chosen["test"])]
        image = self._column(datasets, first.features, "image_column", datasets.Image, "image")
        label = self._column(datasets, first.features, "label_column", datasets.ClassLabel, "class label")
        plain_labels = not isinstance(first.features[label], datasets.ClassLabel)
        fallback = fallback_split()
        if (self.options["test_split"] is None and chosen["test"] == "test" and fallback is not None
                and has_labels(loaded.splits[fallback], label) and not has_labels(loaded.splits["test"], label)):
            chosen["test"] = fallback  # a held-out test split published without its labels
            notes.append(f"split 'test' has no labels (column {label!r}): {fallback} is used as test")
        class_names = (plain_label_names(loaded.splits, chosen, label) if plain_labels
                       else list(first.features[label].names))
        if plain_labels:
            notes.append(f"column {label!r} is not a ClassLabel: the classes are its {len(class_names)} distinct "
                         f"values, sorted")
        label_kind = type(first.features[label])
        for harness_split, source_split in chosen.items():
            features = loaded.splits[source_split].features
            for column, kind in ((image, datasets.Image), (label, label_kind)):
                fits = (image_storage(datasets, features.get(column)) if kind is datasets.Image
                        else isinstance(features.get(column), kind))
                if not fits:
                    raise HarnessError(f"dataset {self.name!r}: split {source_split!r} has no {kind.__name__} column "
                                       f"{column!r}; its columns: {describe_columns(features)}")
            if not plain_labels and list(features[label].names) != class_names:
                raise HarnessError(f"dataset {self.name!r}: the ClassLabel names of split {source_split!r} differ "
                                   f"from those of split {chosen.get('train', chosen['test'])!r}; every split must "
                                   f"use one list of class names")
        # The record keeps `source` and `revision` of the info: a substitute test split is said in `source` too.
        source = loaded.source + (f"; test split: {chosen['test']}" if chosen["test"] != "test" else "")
        info = {"source": source, "revision": loaded.revision, "class_names": [str(n) for n in class_names],
                "splits": list(chosen), "split_sizes": {h: loaded.splits[s].num_rows for h, s in chosen.items()},
                "split_source": dict(chosen), "image_column": image, "label_column": label,
                "datasets_version": datasets.__version__,
                **{k: v for k, v in loaded.extra.items() if k != "note"}}
        if notes:
            info["note"] = "; ".join(notes)
        return {"loaded": loaded, "chosen": chosen, "image": image, "label": label, "info": info,
                "label_values": {value: i for i, value in enumerate(class_names)} if plain_labels else None}

    def _column(self, datasets: Any, features: Any, option: str, kind: type, what: str) -> str:
        named = self.options[option]
        if named is not None:
            if named not in features:
                raise HarnessError(f"dataset {self.name!r} has no column {named!r} (option {option}); its columns: "
                                   f"{describe_columns(features)}")
            plain_label = kind is datasets.ClassLabel and isinstance(features[named], datasets.Value) and (
                features[named].dtype.startswith(("int", "uint")) or features[named].dtype in ("string", "large_string"))
            stored_image = kind is datasets.Image and image_storage(datasets, features[named])
            if not isinstance(features[named], kind) and not plain_label and not stored_image:
                also = {datasets.ClassLabel: " or an integer or string Value",
                        datasets.Image: " or image bytes (a binary Value, or a struct of bytes and path)"}[kind]
                raise HarnessError(f"dataset {self.name!r}: column {named!r} (option {option}) is "
                                   f"{type(features[named]).__name__}, not datasets.{kind.__name__}{also}; its "
                                   f"columns: {describe_columns(features)}")
            return named
        candidates = [column for column, feature in features.items() if isinstance(feature, kind)]
        if not candidates and kind is datasets.Image:  # parquet written without datasets' features: Image's storage
            candidates = [column for column, feature in features.items()
                          if isinstance(feature, dict) and image_storage(datasets, feature)]
        if len(candidates) == 1:
            return candidates[0]
        problem = f"has no {kind.__name__} ({what}) column" if not candidates else (
            f"has {len(candidates)} {kind.__name__} columns ({', '.join(candidates)})")
        raise HarnessError(f"dataset {self.name!r} {problem}; set the option {option}. Its columns: "
                           f"{describe_columns(features)}")


class HFSplit(DatasetSplit):
    """One split: the arrow table stays memory-mapped (a pickle to a DataLoader worker carries its file paths, not
    its rows); each `__getitem__` reads and decodes one row."""

    def __init__(self, dataset_name: str, split: str, table: Any, image_column: str, label_column: str,
                 content: str, label_values: dict[Any, int] | None = None) -> None:
        from datasets import Image

        self.dataset_name = dataset_name
        self.split = split
        self.image_column = image_column
        self.label_column = label_column
        self.content = content
        self.label_values = label_values  # a plain (not ClassLabel) label column: value -> class index
        # decode=False: rows come as {"bytes", "path"}, decoded by open_rgb like every other dataset's images.
        self.rows = table.select_columns([image_column, label_column]).cast_column(image_column, Image(decode=False))

    def __len__(self) -> int:
        return self.rows.num_rows

    def _check(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.dataset_name}/{self.split} ({len(self)} items)")
        return index

    def __getitem__(self, index: int) -> tuple[Any, int]:
        index = self._check(index)
        row = self.rows[index]
        value, label = row[self.image_column], row[self.label_column]
        where = f"{self.dataset_name} split {self.split!r} row {index} (id {self.item_id(index)})"
        if not value or (value.get("bytes") is None and not value.get("path")):
            raise BadItemError(where, f"column {self.image_column!r} holds no image")
        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else Path(value["path"])
        try:
            image = open_rgb(source)
        except BadItemError as error:  # open_rgb names a path; a row is named by dataset, split, row and id
            raise BadItemError(where, error.reason) from error
        if label is None:
            return image, -1
        return image, int(label) if self.label_values is None else self.label_values[label]

    def item_id(self, index: int) -> str:
        return f"{self.split}/{self._check(index)}"

    def fingerprint(self) -> str:
        payload = {"split": self.split, "rows": len(self), "image_column": self.image_column,
                   "label_column": self.label_column, "content": self.content}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def __repr__(self) -> str:
        return f"HFSplit({self.dataset_name!r}, {self.split!r}, {len(self)} rows)"


def has_labels(split: Any, column: str) -> bool:
    """Whether any row of `split` has a label in `column`: a value other than None (and than -1, datasets' missing
    ClassLabel), read from the arrow column alone. A split without the column has none."""
    return column in split.features and any(value is not None and value != -1 for value in split.unique(column))


def plain_label_names(splits: dict[str, Any], chosen: dict[str, str], column: str) -> list[Any]:
    """The classes of an integer or string label column: its distinct values over the chosen splits (missing values
    are unlabelled items), sorted, read from the arrow column alone (no image is touched)."""
    values = {value for source in set(chosen.values()) for value in splits[source].unique(column) if value is not None}
    return sorted(values)


def _looks_like_path(argument: str) -> bool:
    """A hub id is `name` or `owner/name`; anything else with a path's shape is a local path that is missing."""
    return (argument.startswith(("/", ".", "~")) or argument.count("/") > 1 or "\\" in argument
            or argument.endswith(".parquet"))


def _saved_files(split: Any) -> list[Path]:
    """The arrow files of a split loaded from disk and the metadata beside them."""
    arrow = [Path(entry["filename"]) for entry in split.cache_files]
    folders = {path.parent for path in arrow}
    return arrow + [folder / name for folder in folders for name in ("state.json", "dataset_info.json")
                    if (folder / name).is_file()]


def _cached_commit(splits: dict[str, Any], hub_id: str, revision: str | None) -> str:
    """The commit of a copy loaded offline from the cache: `datasets` (2.16 and newer) keeps a hub dataset's arrow
    files under `<cache>/<owner>___<name>/<config>/<version>/<commit>/`; else the hub cache's ref for the revision."""
    for split in splits.values():
        for entry in split.cache_files:
            folder = Path(entry["filename"]).parent.name
            if _COMMIT.match(folder):
                return folder
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        ref = Path(HF_HUB_CACHE) / f"datasets--{hub_id.replace('/', '--')}" / "refs" / (revision or "main")
        commit = ref.read_text().strip()
        if _COMMIT.match(commit):
            return commit
    except (ImportError, OSError):
        pass
    arrow = [Path(e["filename"]) for s in splits.values() for e in s.cache_files]
    return f"unresolved {revision or 'main'}; cached files:{files_digest(Path('/'), arrow)[:16]}"


def hfds(argument: str, *, config: str | None = None, train_split: str | None = None, test_split: str | None = None,
         image_column: str | None = None, label_column: str | None = None, revision: str | None = None) -> HFDataset:
    """hfds:<hub id or local path>; every option None means its documented default (see the module doc)."""
    return HFDataset(argument, config=config, train_split=train_split, test_split=test_split,
                     image_column=image_column, label_column=label_column, revision=revision)


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    register("hfds", hfds,
             "Hugging Face datasets: hfds:<hub id or folder> (save_to_disk or parquet); needs the extra "
             f"`{INSTALL_HINT}`", prefix=True)
