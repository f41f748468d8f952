"""Built-in plugin: well-known image datasets, read by the classes of `torchvision.datasets`.

Why through torchvision rather than our own readers: its on-disk layouts are the ones researchers already have
on their disks (and its MD5 checks are the ones they already trust), so a local copy made for any torchvision
project works here unchanged.

- Construction is cheap: nothing is imported, read or downloaded until the first `split()` (or an `info()` that
  needs class names only the files hold).
- Data root: the `data_root` option (the CLI's `--data-root DIR`), else `$HARNESS_DATA_ROOT`, else
  `~/.cache/harness/data`. Each set lives in its own folder under it, in torchvision's layout (see `layout` below).
- Download on first use (`download=True`, the default), under a socket timeout so that a firewalled network fails
  instead of hanging. Any failure becomes a HarnessError that names the set, the URLs, the exact folder and how to
  point the harness at a local copy.
- Items are `(PIL.Image in RGB, int label)`; item ids are `<split>/<index>`; a split's fingerprint hashes the set's
  name, revision, split and length with the relative path, size and mtime of every file in the set's folder
  (stat only: no file is read).
- EuroSAT has no official split: ours is a stratified 80/20 split decided by a hash of each file's relative path
  and a fixed seed (see `eurosat_split`), independent of file-system order and of library versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.metadata
import json
import math
import os
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.error import URLError

from harness import hookimpl
from harness.errors import BadItemError, HarnessError
from harness.types import Dataset, DatasetSplit

#: Environment variable naming the data root when the `data_root` option is not given.
DATA_ROOT_ENV = "HARNESS_DATA_ROOT"
#: Where datasets go when neither the option nor the environment variable says otherwise.
DEFAULT_DATA_ROOT = Path("~/.cache/harness/data")
#: Seconds a single socket operation may block while downloading (connect or read), not the whole download.
DEFAULT_DOWNLOAD_TIMEOUT = 60.0

#: EuroSAT split convention; a change to the rule needs a new version string (it is part of the revision).
EUROSAT_SPLIT_VERSION = "eurosat-split-v1"
EUROSAT_SPLIT_SEED = 0
EUROSAT_TEST_FRACTION = 0.2
#: torchvision's EuroSAT downloads from here; the URL sits inside its `download()` method, so we repeat it.
EUROSAT_URL = ("https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
               "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip")


# -- the sets -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SetSpec:
    """How one torchvision class maps onto a harness dataset."""

    name: str
    tv_class: str  # attribute of torchvision.datasets
    description: str
    folder: str  # the set's folder under the data root: fingerprinted, and named in messages
    splits: Mapping[str, Mapping[str, Any]]  # harness split -> torchvision constructor arguments
    layout: str  # what a local copy must look like, relative to the data root (starts with `folder`)
    split_convention: str  # goes into the revision
    urls: Callable[[Any], list[str]]  # torchvision class -> the URLs it downloads from (for messages)
    #: Where the class names come from: "class" (a class attribute of the torchvision class), "data" (the opened
    #: split), or a fixed tuple.
    classes: str | tuple[str, ...] = "data"
    #: The torchvision `root`, relative to the data root ("" = the data root itself).
    tv_root: str = ""
    #: Splits carved out of one torchvision object: (object, harness split, set folder) -> indices into it.
    subset: Callable[[Any, str, Path], list[int]] | None = None
    #: Downloads every split's files up front, for sets whose splits are separate downloads (see svhn).
    prefetch: Callable[[Any, Path], None] | None = None
    extra_info: Mapping[str, Any] = field(default_factory=dict)


def _attr(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        obj = getattr(obj, name, None)
        if obj is None:
            return default
    return obj


def _mnist_urls(cls: Any) -> list[str]:
    files = [name for name, _ in _attr(cls, "resources", default=[])]
    return [f"{mirror}{files[0] if files else ''}" for mirror in _attr(cls, "mirrors", default=[])]


def _svhn_urls(cls: Any) -> list[str]:
    table = _attr(cls, "split_list", default={})
    return [table[s][0] for s in ("train", "test") if s in table]


def _svhn_prefetch(cls: Any, tv_root: Path) -> None:
    """SVHN downloads each split's .mat file separately. Fetching both at once keeps the folder, and so the
    fingerprint of the split opened first, from changing when the other split is opened later."""
    from torchvision.datasets.utils import download_url

    for split in ("train", "test"):
        url, filename, md5 = cls.split_list[split]
        if not os.path.exists(tv_root / filename):  # a present but corrupt file is SVHN's own check to find
            download_url(url, str(tv_root), filename, md5)


def eurosat_split(relative_paths: Sequence[str], labels: Sequence[int], split: str,
                  seed: int = EUROSAT_SPLIT_SEED, test_fraction: float = EUROSAT_TEST_FRACTION) -> list[int]:
    """Indices of `split` ("train" or "test") in a stratified split decided by hashes of the file names.

    Per class, the files are ordered by sha256(f"{EUROSAT_SPLIT_VERSION}:{seed}:{relative path}") and the first
    floor(n * test_fraction + 0.5) form the test split; the rest is train. Relative paths use "/" and are relative
    to the image folder (`eurosat/2750`), e.g. "Forest/Forest_1.jpg". The result does not depend on the order the
    files are listed in, on numpy's random streams, or on which other files exist, so a copy with a file missing
    moves no other file between splits. Indices are returned in ascending order.
    """
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    test: set[int] = set()
    for indices in by_class.values():
        ordered = sorted(indices, key=lambda i: hashlib.sha256(
            f"{EUROSAT_SPLIT_VERSION}:{seed}:{relative_paths[i]}".encode()).hexdigest())
        test.update(ordered[:math.floor(len(ordered) * test_fraction + 0.5)])
    want_test = split == "test"
    return [i for i in range(len(labels)) if (i in test) == want_test]


def _eurosat_subset(source: Any, split: str, folder: Path) -> list[int]:
    # Not `source.root`: torchvision's EuroSAT resets it to the data root after ImageFolder has listed the files.
    image_folder = folder / "2750"
    relative = [Path(path).relative_to(image_folder).as_posix() for path, _ in source.samples]
    return eurosat_split(relative, [label for _, label in source.samples], split)


def _one_kwargs(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "all files"


SETS: dict[str, SetSpec] = {spec.name: spec for spec in (
    SetSpec("cifar10", "CIFAR10", "CIFAR-10 (torchvision): 10 classes, 50,000 train / 10,000 test images, 32 px",
            "cifar-10-batches-py", {"train": {"train": True}, "test": {"train": False}},
            "cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} (cifar-10-python.tar.gz, extracted)",
            "official train/test", lambda c: [c.url]),
    SetSpec("cifar100", "CIFAR100",
            "CIFAR-100 (torchvision): 100 fine classes, 50,000 train / 10,000 test images, 32 px",
            "cifar-100-python", {"train": {"train": True}, "test": {"train": False}},
            "cifar-100-python/{train, test, meta} (cifar-100-python.tar.gz, extracted)",
            "official train/test, fine labels", lambda c: [c.url]),
    SetSpec("stl10", "STL10", "STL-10 (torchvision): 10 classes, 5,000 train / 8,000 test (+100,000 unlabelled), "
            "96 px", "stl10_binary",
            {"train": {"split": "train"}, "test": {"split": "test"}, "unlabeled": {"split": "unlabeled"}},
            "stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin, class_names.txt} "
            "(stl10_binary.tar.gz, extracted)",
            "official train/test (no folds); unlabeled split has label -1", lambda c: [c.url]),
    SetSpec("mnist", "MNIST", "MNIST (torchvision): handwritten digits, 60,000 train / 10,000 test, 28 px grey",
            "MNIST", {"train": {"train": True}, "test": {"train": False}},
            "MNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte}", "official train/test", _mnist_urls, classes="class"),
    SetSpec("fashion-mnist", "FashionMNIST",
            "Fashion-MNIST (torchvision): 10 clothing classes, 60,000 train / 10,000 test, 28 px grey",
            "FashionMNIST", {"train": {"train": True}, "test": {"train": False}},
            "FashionMNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte}", "official train/test", _mnist_urls, classes="class"),
    SetSpec("svhn", "SVHN", "SVHN (torchvision): house-number digits, 73,257 train / 26,032 test, 32 px",
            "svhn", {"train": {"split": "train"}, "test": {"split": "test"}},
            "svhn/{train_32x32.mat, test_32x32.mat} (note the svhn/ folder: torchvision itself would put the "
            ".mat files directly in its root)",
            "official train/test (extra not used); label 10 mapped to digit 0", _svhn_urls,
            classes=tuple(str(d) for d in range(10)), tv_root="svhn", prefetch=_svhn_prefetch),
    SetSpec("flowers102", "Flowers102",
            "Oxford Flowers-102 (torchvision): 102 classes, 1,020 train / 1,020 val / 6,149 test",
            "flowers-102", {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
            "flowers-102/{jpg/image_00001.jpg..., imagelabels.mat, setid.mat}",
            "official train/val/test (setid.mat)",
            lambda c: [c._download_url_prefix + name for name, _ in c._file_dict.values()], classes="class"),
    SetSpec("dtd", "DTD", "Describable Textures (torchvision): 47 classes, 1,880 train / val / test (partition 1)",
            "dtd", {"train": {"split": "train", "partition": 1}, "val": {"split": "val", "partition": 1},
                    "test": {"split": "test", "partition": 1}},
            "dtd/dtd/{images/<class>/<file>.jpg, labels/{train1, val1, test1}.txt}",
            "official partition 1 train/val/test", lambda c: [c._URL]),
    SetSpec("pets", "OxfordIIITPet", "Oxford-IIIT Pet (torchvision): 37 breeds, 3,680 trainval / 3,669 test",
            "oxford-iiit-pet", {"train": {"split": "trainval"}, "test": {"split": "test"}},
            "oxford-iiit-pet/{images/<Breed>_<n>.jpg, annotations/{trainval.txt, test.txt}}",
            "official trainval as train, test as test; category labels", lambda c: [u for u, _ in c._RESOURCES]),
    SetSpec("eurosat", "EuroSAT", "EuroSAT RGB (torchvision): 10 land-use classes, 27,000 images, 64 px; "
            "our stratified 80/20 split", "eurosat", {"train": {}, "test": {}},
            "eurosat/2750/<Class>/<Class>_<n>.jpg (EuroSAT.zip, extracted)",
            f"no official split: stratified {1 - EUROSAT_TEST_FRACTION:.0%}/{EUROSAT_TEST_FRACTION:.0%} train/test "
            f"by sha256 of '{EUROSAT_SPLIT_VERSION}:<seed>:<path relative to eurosat/2750>', seed "
            f"{EUROSAT_SPLIT_SEED}", lambda c: [EUROSAT_URL], subset=_eurosat_subset,
            extra_info={"split_method": {"version": EUROSAT_SPLIT_VERSION, "seed": EUROSAT_SPLIT_SEED,
                                         "test_fraction": EUROSAT_TEST_FRACTION, "stratified": True,
                                         "function": "harness.plugins.torchvision_sets.eurosat_split"}}),
)}


# -- helpers --------------------------------------------------------------------------------------------------------

def torchvision_version() -> str:
    """The installed torchvision release, without a local build tag (`+cu130`): the loaders are the same."""
    try:
        return importlib.metadata.version("torchvision").split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def resolve_data_root(data_root: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """(the data root, where that choice came from), without touching the file system."""
    if data_root is not None and str(data_root) != "":
        return Path(os.path.abspath(os.path.expanduser(data_root))), "--data-root / the data_root option"
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(os.path.abspath(os.path.expanduser(env))), f"${DATA_ROOT_ENV}"
    return Path(os.path.abspath(os.path.expanduser(DEFAULT_DATA_ROOT))), f"the default, {DEFAULT_DATA_ROOT}"


def _as_bool(value: Any, option: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise HarnessError(f"option {option}={value!r} is not a boolean (true/false)")


@contextlib.contextmanager
def socket_timeout(seconds: float | None) -> Iterator[None]:
    """A default socket timeout for the duration of a download, so that a dropped connection raises.

    urllib (which torchvision downloads with) blocks forever without one on networks that drop packets instead of
    refusing them. An already configured default is respected. The setting is process-wide, which is why it is
    only held for the download.
    """
    previous = socket.getdefaulttimeout()
    if seconds is None or previous is not None:
        yield
        return
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _walk_files(folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative posix path, stat) of every file under `folder`, following links to folders once."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link cycle
            dirnames[:] = []
            continue
        seen.add(real)
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            try:
                stat = os.stat(path)
            except OSError:  # a dangling link
                continue
            yield Path(path).relative_to(folder).as_posix(), stat


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(True for _ in _walk_files(folder))


_NETWORK_ERRORS = (URLError, TimeoutError, ConnectionError, socket.gaierror, socket.herror, ssl.SSLError,
                   http.client.HTTPException)


def _is_network_error(error: BaseException | None) -> bool:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, _NETWORK_ERRORS):
            return True
        if isinstance(error, RuntimeError) and ("Error downloading" in str(error) or "urlopen error" in str(error)):
            return True  # MNIST wraps each mirror's URLError in one RuntimeError
        error = error.__cause__ or error.__context__
    return False


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def to_rgb(image: Any) -> Any:
    """Any PIL image -> RGB. Palette images with transparency go through RGBA, as PIL asks; alpha is dropped."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


# -- the Dataset and its splits -------------------------------------------------------------------------------------

class TorchvisionDataset(Dataset):
    """One torchvision set under the data root; splits are opened (and downloaded) on first use."""

    OPTIONS = ("data_root", "download", "download_timeout")

    def __init__(self, spec: SetSpec, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise HarnessError(f"dataset {spec.name!r} has no option(s) {unknown}; it accepts "
                               f"{list(self.OPTIONS)}")
        self.spec = spec
        self.name = spec.name
        self.data_root, self.data_root_origin = resolve_data_root(options.get("data_root"))
        self.download = _as_bool(options.get("download", True), "download")
        timeout = options.get("download_timeout", DEFAULT_DOWNLOAD_TIMEOUT)
        try:
            self.download_timeout = None if timeout is None else float(timeout)
        except (TypeError, ValueError):
            raise HarnessError(f"option download_timeout={timeout!r} is not a number of seconds") from None
        self.tv_root = self.data_root / spec.tv_root if spec.tv_root else self.data_root
        #: The folder whose files make up the set (and its fingerprint).
        self.folder = self.data_root / spec.folder
        self.revision = f"torchvision {torchvision_version()}; {spec.split_convention}"
        self._sources: dict[str, Any] = {}  # frozen torchvision kwargs -> opened torchvision dataset
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TorchvisionDataset({self.name!r}, folder={str(self.folder)!r})"

    # -- Dataset interface --------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "source": f"torchvision.datasets.{self.spec.tv_class}",
            "revision": self.revision,
            "class_names": self.class_names(),
            "splits": list(self.spec.splits),
            "data_root": str(self.data_root),
            "folder": str(self.folder),
            **self.spec.extra_info,
        }

    def split(self, name: str) -> TorchvisionSplit:
        if name not in self.spec.splits:
            raise HarnessError(f"dataset {self.name!r} has no split {name!r}; available splits: "
                               f"{', '.join(self.spec.splits)}")
        source = self._open(name)
        indices = self.spec.subset(source, name, self.folder) if self.spec.subset is not None else None
        return TorchvisionSplit(self, name, source, indices)

    # -- internals ----------------------------------------------------------------------------------------------

    def class_names(self) -> list[str]:
        """Class names in label order. For sets whose names live in the data files, this opens the first split."""
        classes = self.spec.classes
        if isinstance(classes, tuple):
            return list(classes)
        if classes == "class" and isinstance(getattr(self._tv_class(), "classes", None), list):
            return [str(c) for c in self._tv_class().classes]
        if self._sources:
            source = next(iter(self._sources.values()))
        else:
            source = self._open(next(iter(self.spec.splits)))
        return [str(c) for c in getattr(source, "classes", [])]

    def _tv_class(self) -> Any:
        try:
            import torchvision.datasets
        except ImportError as error:
            raise HarnessError(f"dataset {self.name!r} needs torchvision ({_one_line(error)}); "
                               f"install it with `pip install torchvision`") from error
        cls = getattr(torchvision.datasets, self.spec.tv_class, None)
        if cls is None:
            raise HarnessError(f"dataset {self.name!r} needs torchvision.datasets.{self.spec.tv_class}, which "
                               f"torchvision {torchvision_version()} lacks; upgrade torchvision")
        return cls

    def _open(self, split: str) -> Any:
        kwargs = dict(self.spec.splits[split])
        key = json.dumps(kwargs, sort_keys=True)
        with self._lock:
            if key not in self._sources:
                self._sources[key] = self._construct(kwargs)
            return self._sources[key]

    def _construct(self, kwargs: dict[str, Any]) -> Any:
        cls = self._tv_class()
        root = str(self.tv_root)
        if self.download and self.spec.prefetch is not None:
            try:
                with socket_timeout(self.download_timeout):
                    self.spec.prefetch(cls, self.tv_root)
            except Exception as error:  # noqa: BLE001 - every failure becomes a message the user can act on
                raise self._failure(cls, error, None) from error
        try:
            return cls(root, download=False, **kwargs)
        except ImportError as error:
            raise self._import_failure(error) from error
        except Exception as first:  # noqa: BLE001
            if not self.download:
                raise self._failure(cls, first, None, downloading=False) from first
            try:
                with socket_timeout(self.download_timeout):
                    return cls(root, download=True, **kwargs)
            except ImportError as error:
                raise self._import_failure(error) from error
            except Exception as error:  # noqa: BLE001
                raise self._failure(cls, error, first) from error

    def _import_failure(self, error: ImportError) -> HarnessError:
        return HarnessError(f"dataset {self.name!r}: torchvision.datasets.{self.spec.tv_class} needs the "
                            f"{error.name or 'missing'} package ({_one_line(error)}); install it, e.g. "
                            f"`pip install {error.name or 'scipy'}`")

    def _local_copy_hint(self) -> str:
        return (f"To use a local copy, put it under a folder DIR in the layout torchvision expects, "
                f"DIR/{self.spec.layout}, and pass "
                f"--data-root DIR (option data_root) or set {DATA_ROOT_ENV}=DIR. The data root now is "
                f"{self.data_root} (from {self.data_root_origin}).")

    def _failure(self, cls: Any, error: BaseException, local_error: BaseException | None,
                 downloading: bool = True) -> HarnessError:
        """A message that says what failed, where the files were expected and how to supply them."""
        where = f"expected in {self.folder}"
        if not downloading:
            if _has_files(self.folder):
                what = (f"dataset {self.name!r}: the files in {self.folder} were not accepted by "
                        f"torchvision.datasets.{self.spec.tv_class} ({_one_line(error)}); they are incomplete, "
                        f"in another layout, or failed torchvision's MD5 check")
            else:
                what = (f"dataset {self.name!r} not found: its files were {where} and downloading is off "
                        f"(download=False)")
            return HarnessError(f"{what}. {self._local_copy_hint()} Or allow the download (download=True).")
        try:
            urls = self.spec.urls(cls)
        except Exception:  # noqa: BLE001 - a torchvision release that renamed an attribute
            urls = []
        url_text = ", ".join(urls) if urls else "torchvision's download URL"
        local = ""
        if local_error is not None and _has_files(self.folder):
            local = f" The copy in {self.folder} was not accepted either ({_one_line(local_error)})."
        if _is_network_error(error):
            what = (f"dataset {self.name!r} could not be downloaded from {url_text} ({_one_line(error)}): this "
                    f"machine may be offline or the host unreachable. Its files were {where}.{local}")
        else:
            what = (f"dataset {self.name!r} could not be downloaded or opened by "
                    f"torchvision.datasets.{self.spec.tv_class} ({_one_line(error)}); downloads come from "
                    f"{url_text} and are checked against torchvision's MD5 sums. Files {where}; delete that "
                    f"folder to download again.{local}")
        return HarnessError(f"{what} {self._local_copy_hint()}")


class TorchvisionSplit(DatasetSplit):
    """One split: a torchvision dataset object, or a subset of one (EuroSAT), with RGB images and int labels."""

    def __init__(self, dataset: TorchvisionDataset, split: str, source: Any, indices: list[int] | None) -> None:
        self.dataset_name = dataset.name
        self.split = split
        self.source = source
        self.indices = indices
        self.folder = dataset.folder
        self.data_root = dataset.data_root
        self.revision = dataset.revision

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.source)

    def _position(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.dataset_name}/{self.split} "
                             f"({len(self)} items)")
        return self.indices[index] if self.indices is not None else index

    def __getitem__(self, index: int) -> tuple[Any, int]:
        position = self._position(index)
        try:
            image, label = self.source[position]
            image = to_rgb(image)
        except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for unreadable or truncated files
            raise BadItemError(self._describe(index, position), _one_line(error)) from error
        except Exception as error:  # noqa: BLE001 - e.g. PIL's DecompressionBombError
            if type(error).__module__.startswith("PIL"):
                raise BadItemError(self._describe(index, position), _one_line(error)) from error
            raise
        return image, int(label)

    def _describe(self, index: int, position: int) -> str:
        """The file behind an item where the set has one file per image, else its id."""
        path = None
        for attribute in ("_image_files", "_images"):
            files = getattr(self.source, attribute, None)
            if files is not None:
                path = files[position]
                break
        samples = getattr(self.source, "samples", None)
        if path is None and samples is not None:
            path = samples[position][0]
        if path is None:
            return f"{self.dataset_name} item {self.item_id(index)}"
        return f"{self.dataset_name} item {self.item_id(index)} ({path})"

    def item_id(self, index: int) -> str:
        self._position(index)
        return f"{self.split}/{int(index)}"

    def fingerprint(self) -> str:
        files = sorted((rel, stat.st_size, stat.st_mtime_ns) for rel, stat in _walk_files(self.folder))
        payload = {"name": self.dataset_name, "revision": self.revision, "split": self.split,
                   "length": len(self), "files": files}
        return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()

    def __repr__(self) -> str:
        return f"TorchvisionSplit({self.dataset_name!r}, {self.split!r}, {len(self)} items)"


def _factory(spec: SetSpec) -> Callable[..., TorchvisionDataset]:
    def build(**options: Any) -> TorchvisionDataset:
        return TorchvisionDataset(spec, **options)

    build.__name__ = f"build_{spec.name.replace('-', '_')}"
    build.__doc__ = f"{spec.description}. Options: data_root=None, download=True, download_timeout=60."
    return build


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    for name, spec in SETS.items():
        register(name, _factory(spec), spec.description)
