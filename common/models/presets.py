"""Model and training presets: one frozen record per scale (tiny for tests, demo for a CPU laptop, full for a GPU).

A preset fixes everything that makes a checkpoint what it is: the network's input grid (pixel count
and spacing), the ViT shape, the decoder width, the input HU range, plus the training defaults per phase.
Checkpoints store the preset as a plain dict, so a model can be rebuilt from the file alone.

The network sees a fixed field of view: ``image_size * spacing_mm`` millimetres (about 400-460 mm,
an adult abdomen at L3). Images are resampled to ``spacing_mm`` and centre-cropped or padded with air.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from common.errors import ConfigError

PHASES: tuple[str, ...] = ("ssl", "seg", "cls", "l3")


@dataclass(frozen=True)
class Preset:
    """Network shape, input geometry, HU normalisation and per-phase training defaults.

    Parameters
    ----------
    name : str
        Preset name ("tiny", "demo", "full", or a custom name in a checkpoint).
    image_size : int
        Network input is (image_size, image_size) pixels.
    spacing_mm : float
        Isotropic pixel spacing of the network grid, mm.
    patch_size : int
        ViT patch edge in pixels; a power of two (the UNETR decoder upsamples by 2 per stage).
    hidden_size, num_layers, num_heads, mlp_dim : int
        ViT width, depth, heads and MLP width (MONAI ``ViT``).
    feature_size : int
        Channels of the full-resolution UNETR decoder stage (doubled per coarser stage).
    batch_size : int
        Slices per optimiser step.
    lr_ssl, lr_seg, lr_cls, lr_l3 : float
        AdamW peak learning rates per phase.
    epochs_ssl, epochs_seg, epochs_cls, epochs_l3 : int
        Default epochs per phase (``train-local --epochs`` overrides).
    hu_min, hu_max : float
        Input HU range: values are clipped to it, then scaled to 0..1 (air and everything below hu_min -> 0).
    mask_ratio : float
        Fraction of patches the SSL student sees replaced by the mask token.
    proto_dim : int
        Number of DINO/iBOT prototypes (output size of the self-distillation head).
    head_hidden : int
        Hidden width of the self-distillation projection head.
    ema_momentum : float
        Teacher EMA momentum per step.
    teacher_temp, student_temp : float
        Self-distillation temperatures (teacher sharpened, as in DINO/iBOT).
    center_momentum : float
        Momentum of the teacher output centre.
    weight_decay : float
        AdamW weight decay.
    image_skips : bool
        Add a small convolutional path from the image (stride 2 per decoder stage) to the decoder's
        transformer skips, so fine stages see local shape as well as 16-pixel patch tokens.
    locator_width : int
        Channels of the L3 locator (common.models.locator), which reads series, not the L3 slice.
    seg_dice_weight : float
        Weight of the Dice term beside cross-entropy (weight 1) in the segmentation loss. Dice pushes
        uncertain pixels towards muscle, so areas come out too large; cross-entropy on the soft
        targets keeps the probabilities calibrated, which is what an area measurement needs.
    """

    name: str
    image_size: int
    spacing_mm: float
    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    feature_size: int
    batch_size: int
    lr_ssl: float
    lr_seg: float
    lr_cls: float
    epochs_ssl: int
    epochs_seg: int
    epochs_cls: int
    hu_min: float = -200.0
    hu_max: float = 300.0
    mask_ratio: float = 0.5
    proto_dim: int = 1024
    head_hidden: int = 512
    ema_momentum: float = 0.99
    teacher_temp: float = 0.04
    student_temp: float = 0.1
    center_momentum: float = 0.9
    weight_decay: float = 0.05
    image_skips: bool = False
    seg_dice_weight: float = 1.0
    lr_l3: float = 1e-3
    epochs_l3: int = 60
    locator_width: int = 32

    def __post_init__(self) -> None:
        p = self.patch_size
        if p < 2 or p & (p - 1):
            raise ConfigError(f"preset {self.name!r}: patch_size must be a power of two >= 2, got {p}")
        if self.image_size % p:
            raise ConfigError(f"preset {self.name!r}: image_size {self.image_size} is not a multiple of patch {p}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"preset {self.name!r}: hidden_size {self.hidden_size} not divisible by heads")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"preset {self.name!r}: mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.seg_dice_weight < 0:
            raise ConfigError(f"preset {self.name!r}: seg_dice_weight must be >= 0")
        if not self.hu_max > self.hu_min:
            raise ConfigError(f"preset {self.name!r}: hu_max must exceed hu_min")

    @property
    def grid(self) -> int:
        """Token grid edge: image_size // patch_size."""
        return self.image_size // self.patch_size

    @property
    def field_of_view_mm(self) -> float:
        """Edge of the square the network sees, mm."""
        return self.image_size * self.spacing_mm

    def lr(self, phase: str) -> float:
        """Default peak learning rate of a phase."""
        return float(getattr(self, f"lr_{check_phase(phase)}"))

    def epochs(self, phase: str) -> int:
        """Default number of epochs of a phase."""
        return int(getattr(self, f"epochs_{check_phase(phase)}"))

    def to_dict(self) -> dict:
        """Plain dict (what a checkpoint stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preset:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, missing ones take defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def check_phase(phase: str) -> str:
    """Return ``phase`` if it is one of ssl / seg / cls, else raise ConfigError listing them."""
    if phase not in PHASES:
        raise ConfigError(f"unknown phase {phase!r}; choose one of {', '.join(PHASES)}")
    return phase


PRESETS: dict[str, Preset] = {
    # Seconds on a CPU: for tests. 64 px at 6.4 mm (410 mm field), patch 8, 3 thin layers.
    "tiny": Preset(
        name="tiny",
        image_size=64,
        spacing_mm=6.4,
        patch_size=8,
        hidden_size=64,
        num_layers=3,
        num_heads=4,
        mlp_dim=128,
        feature_size=8,
        batch_size=8,
        lr_ssl=1e-3,
        lr_seg=2e-3,
        lr_cls=1e-3,
        epochs_ssl=2,
        epochs_seg=3,
        epochs_cls=3,
        proto_dim=128,
        head_hidden=128,
        ema_momentum=0.9,
        epochs_l3=2,
        locator_width=8,
    ),
    # Minutes on a CPU laptop: 208 px at 2.0 mm (416 mm field), ViT width 192, depth 6, plus the convolutional
    # image path into the decoder, cross-entropy only: the variants tried are in docs/performance.md.
    "demo": Preset(
        name="demo",
        image_size=208,
        spacing_mm=2.0,
        patch_size=16,
        hidden_size=192,
        num_layers=6,
        num_heads=6,
        mlp_dim=768,
        feature_size=8,
        batch_size=4,
        lr_ssl=5e-4,
        lr_seg=1e-3,
        lr_cls=3e-4,
        epochs_ssl=10,
        epochs_seg=70,
        epochs_cls=15,
        proto_dim=1024,
        head_hidden=512,
        ema_momentum=0.99,
        image_skips=True,
        seg_dice_weight=0.0,
    ),
    # The paper's scale on a GPU: 512 px at 0.9 mm (461 mm field), ViT-B/16.
    "full": Preset(
        name="full",
        image_size=512,
        spacing_mm=0.9,
        patch_size=16,
        hidden_size=768,
        num_layers=12,
        num_heads=12,
        mlp_dim=3072,
        feature_size=32,
        batch_size=8,
        lr_ssl=2e-4,
        lr_seg=2e-4,
        lr_cls=1e-4,
        epochs_ssl=100,
        epochs_seg=100,
        epochs_cls=50,
        proto_dim=8192,
        head_hidden=2048,
        ema_momentum=0.996,
        weight_decay=0.05,
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ConfigError listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
