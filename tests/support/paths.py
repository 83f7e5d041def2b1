"""Where the repository's models and photos are (standard library only)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
IMAGES = ROOT / "images"

MOBILENET_V2 = MODELS / "mobilenet_v2_quant"
MOBILENET_V1 = MODELS / "mobilenet_v1_025_quant"
FACE_MASK = MODELS / "face_mask"
DEEPLAB = MODELS / "deeplabv3"
EDGETPU_MODEL = MODELS / "mobilenet_v1_025_quant_edgetpu"


def image_bytes(name: str) -> bytes:
    """A photo from images/."""
    return (IMAGES / name).read_bytes()


def labels(model_dir: Path) -> list[str]:
    return (model_dir / "labels.txt").read_text().splitlines()


def tflite_file(model_dir: Path) -> Path:
    """The one .tflite of a model directory."""
    (model,) = model_dir.glob("*.tflite")
    return model
