"""Train/test transforms: the original, random-erased and random-cropped views of each image.

Reference: LFEM paper Sec. 3.2 (random erasing, random cropping) and Sec. 4.2 (flip 0.5, pad 10, RE 0.5);
TransReID's train pipeline (bicubic resize, flip, pad + random crop, normalise, timm pixel-mode erasing).
"""
from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import torch
from PIL import Image
from timm.data.random_erasing import RandomErasing
from torchvision import transforms as T

__all__ = ["MultiView", "EnsureErased", "build_train_transform", "build_test_transform", "timm_eraser",
           "default_erasing"]


class MultiView:
    """Apply each transform to the same image and return the list of results.

    Matches torchreid's ``k_tfm`` list semantics: a dataset item's ``img`` becomes a list of tensors, which the
    default collate turns into a list of batches (one per view).

    Reference: mmpretrain ``MultiView``.

    Args:
        transforms: one callable per view.
        names: a name per view (for ``repr`` and logs).
    """

    def __init__(self, transforms: Sequence[Callable], names: Sequence[str] = ()) -> None:
        self.transforms = list(transforms)
        self.names = tuple(names) or tuple(f"view{i}" for i in range(len(self.transforms)))
        if len(self.names) != len(self.transforms):
            raise ValueError(f"{len(self.names)} names for {len(self.transforms)} views")

    @property
    def num_views(self) -> int:
        return len(self.transforms)

    def __call__(self, img: Image.Image) -> List[torch.Tensor]:
        return [t(img) for t in self.transforms]

    def __repr__(self) -> str:
        body = "".join(f"\n  {name}: {t!r}".replace("\n", "\n  ") for name, t in zip(self.names, self.transforms))
        return f"{type(self).__name__}(num_views={self.num_views},{body}\n)"


class EnsureErased:
    """Random erasing that always erases: retries timm's eraser until a rectangle fits.

    timm's ``RandomErasing`` gives up after 10 placement attempts (a drawn rectangle may not fit), so with
    ``probability=1`` it still leaves a small fraction of images untouched; the erased view must always be occluded.
    """

    def __init__(self, eraser: RandomErasing, max_tries: int = 100) -> None:
        self.eraser = eraser
        self.max_tries = max_tries

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        for _ in range(self.max_tries):
            out = self.eraser(img.clone())
            if not torch.equal(out, img):
                return out
        raise RuntimeError(f"random erasing found no rectangle in {self.max_tries} tries for an image of shape "
                           f"{tuple(img.shape)}; lower min_area/aspect range")

    def __repr__(self) -> str:
        return f"EnsureErased({self.eraser!r})"


def timm_eraser(probability: float) -> RandomErasing:
    """The paper's random erasing: timm's ``RandomErasing``, pixel mode (per-pixel normal noise), one rectangle."""
    return RandomErasing(probability=probability, mode="pixel", max_count=1, device="cpu")


def default_erasing(probability: float, always: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The erasing step of a view: :func:`timm_eraser` with ``probability``, or (``always``) one that always erases
    (:class:`EnsureErased`). The default ``erasing`` of :func:`build_train_transform`."""
    return EnsureErased(timm_eraser(1.0)) if always else timm_eraser(probability)


def build_train_transform(height: int = 256, width: int = 128, mean: Sequence[float] = (0.5, 0.5, 0.5),
                          std: Sequence[float] = (0.5, 0.5, 0.5), flip_prob: float = 0.5, padding: int = 10,
                          re_prob: float = 0.5, views: Sequence[str] = ("original", "erased", "cropped"),
                          crop_scale: Tuple[float, float] = (0.5, 1.0),
                          crop_ratio: Tuple[float, float] = (0.375, 0.667),
                          erasing: Callable[[float, bool], Callable] = default_erasing) -> MultiView:
    """The multi-view train transform.

    * ``original``: bicubic resize, flip, zero pad + random crop, normalise, random erasing with ``re_prob``
      (timm pixel mode: the rectangle is filled with per-pixel normal noise).
    * ``erased``: the same, but erasing always happens (:class:`EnsureErased`).
    * ``cropped``: bicubic resize, flip, a random sub-region (area fraction ``crop_scale``, width/height ratio
      ``crop_ratio``) cropped and resized back to ``height x width``, normalise; no erasing, so the view isolates
      the paper's random-cropping occlusion.

    ``erasing(probability, always)`` builds the erasing step of the original (``re_prob``) and erased (always)
    views: :func:`default_erasing` by default; a research project may pass one that also reports what it hid (e.g.
    ``projects/visibility``'s ``MarkedErasing``).

    Reference: LFEM paper Sec. 3.2 and 4.2.
    """
    size = (height, width)
    resize_flip = [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip(flip_prob)]
    tensor = [T.ToTensor(), T.Normalize(mean, std)]
    pad_crop = [T.Pad(padding), T.RandomCrop(size)] if padding > 0 else []
    erase_sometimes, erase_always = erasing(re_prob, False), erasing(1.0, True)
    builders = {
        "original": lambda: T.Compose(resize_flip + pad_crop + tensor + [erase_sometimes]),
        "erased": lambda: T.Compose(resize_flip + pad_crop + tensor + [erase_always]),
        "cropped": lambda: T.Compose(resize_flip + [T.RandomResizedCrop(size, crop_scale, crop_ratio,
                                                                        T.InterpolationMode.BICUBIC)] + tensor),
    }
    unknown = [v for v in views if v not in builders]
    if unknown:
        raise ValueError(f"unknown views {unknown}; choices: {list(builders)}")
    return MultiView([builders[v]() for v in views], names=views)


def build_test_transform(height: int = 256, width: int = 128, mean: Sequence[float] = (0.5, 0.5, 0.5),
                         std: Sequence[float] = (0.5, 0.5, 0.5)) -> T.Compose:
    """Resize (bilinear, as TransReID's test pipeline) + normalise; one view."""
    return T.Compose([T.Resize((height, width)), T.ToTensor(), T.Normalize(mean, std)])
