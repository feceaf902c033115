"""Training views that know what they hide, and occluders cut from other identities' images.

* :class:`MarkedErasing` runs timm's ``RandomErasing`` (the paper's random erasing, unchanged in distribution) and
  reports the rectangle it filled, read from a marker channel rather than guessed from pixel values.
* :class:`VisibilityMultiView` is :class:`~lfem_plugin.data.transforms.MultiView` that also returns, per image,
  each view's hidden rectangle and the visible fraction of every JPM group
  (:class:`~lfem_plugin.models.visibility.TokenGeometry`); a view that hides nothing gets 1.
* :func:`paste_occluders` fills those rectangles, in a batch, with the same rectangle of another identity's image
  (a piece of a person or of the scene), so that occluders look like real ones; the targets stay exact because
  the hidden pixels do not move.

Beyond the paper (which fills its erased rectangle with noise, Sec. 3.2): pasted occluders from other training
images follow FED (Wang et al., "Feature Erasing and Diffusion Network for Occluded Person Re-Identification",
CVPR 2022), which pastes background and person patches as synthetic occluders.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.data.random_erasing import RandomErasing

from ..models.visibility import TokenGeometry, box_mask

__all__ = ["OCCLUDERS", "MarkedErasing", "VisibilityMultiView", "paste_occluders", "split_views"]

OCCLUDERS = ("noise", "paste")  # what fills an erased rectangle: timm's per-pixel noise (paper) or another image


class MarkedErasing:
    """timm's ``RandomErasing`` that returns ``(image, box)``: the rectangle it filled, ``(top, left, h, w)``.

    The image gets a fourth channel of NaN before erasing; timm fills the rectangle across all channels with
    finite noise, so the hidden pixels are exactly where the marker is no longer NaN. The noise drawn for the
    image's own channels has timm's distribution. ``box`` is all zeros when nothing was erased.

    Args:
        eraser: a single-rectangle ``RandomErasing`` (``max_count=1``).
        always: retry until a rectangle is erased (timm gives up after 10 placements), as
            :class:`~lfem_plugin.data.transforms.EnsureErased` does for the erased view.
        max_tries: retries for ``always``.
    """

    def __init__(self, eraser: RandomErasing, always: bool = False, max_tries: int = 100) -> None:
        if eraser.max_count != 1:
            raise ValueError(f"MarkedErasing needs one rectangle per image (max_count=1), got {eraser.max_count}")
        self.eraser = eraser
        self.always = always
        self.max_tries = max_tries

    def __call__(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(self.max_tries if self.always else 1):
            marked = self.eraser(torch.cat([img, torch.full_like(img[:1], float("nan"))]))
            hidden = ~torch.isnan(marked[-1])
            if hidden.any() or not self.always:
                return marked[:-1], _bounding_box(hidden)
        raise RuntimeError(f"random erasing found no rectangle in {self.max_tries} tries for an image of shape "
                           f"{tuple(img.shape)}; lower min_area/aspect range")

    def __repr__(self) -> str:
        return f"MarkedErasing({self.eraser!r}, always={self.always})"


def _bounding_box(hidden: torch.Tensor) -> torch.Tensor:
    """``(top, left, h, w)`` of a rectangle mask ``(H, W)``; zeros for an empty one."""
    rows, cols = hidden.any(1).nonzero().flatten(), hidden.any(0).nonzero().flatten()
    if rows.numel() == 0:
        return torch.zeros(4, dtype=torch.long)
    box = torch.stack([rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1])
    if int(hidden.sum()) != int(box[2] * box[3]):
        raise RuntimeError("the erased region is not one rectangle; MarkedErasing needs max_count=1")
    return box


class VisibilityMultiView:
    """A :class:`~lfem_plugin.data.transforms.MultiView` whose views may hide a rectangle; returns a dict per image:

    ``views``: the list of view tensors (as ``MultiView``); ``boxes``: ``(V, 4)`` long, each view's hidden
    rectangle in its own pixels (zeros: none); ``visibility``: ``(V, K)`` float, each view's JPM group visible
    fractions. torchreid's default collate turns these into a list of ``(B, C, H, W)``, ``(B, V, 4)`` and
    ``(B, V, K)``; :func:`split_views` reads them back.

    Args:
        views: the ``MultiView``; a view that hides a rectangle returns ``(image, box)`` (:class:`MarkedErasing`
            last), any other a tensor.
        geometry: the model's patch grid and JPM grouping.
    """

    def __init__(self, views: Any, geometry: TokenGeometry) -> None:
        self.views = views
        self.geometry = geometry

    @property
    def num_views(self) -> int:
        return self.views.num_views

    def __call__(self, img: Any) -> dict[str, Any]:
        outputs = self.views(img)
        views = [out[0] if isinstance(out, tuple) else out for out in outputs]
        for name, view in zip(self.views.names, views):
            if tuple(view.shape[-2:]) != tuple(self.geometry.img_size):
                raise ValueError(f"view {name} is {tuple(view.shape[-2:])} but the model's input is "
                                 f"{tuple(self.geometry.img_size)}")
        boxes = torch.stack([out[1] if isinstance(out, tuple) else torch.zeros(4, dtype=torch.long)
                             for out in outputs])
        return {"views": views, "boxes": boxes, "visibility": self.geometry.from_boxes(boxes)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.geometry},\n{self.views!r})"


def split_views(img: Any) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """A collated ``data['img']`` -> ``(views, visibility, boxes)``: the list of ``(B, C, H, W)`` views, and
    ``(B, V, K)`` / ``(B, V, 4)`` from a :class:`VisibilityMultiView` (None from a plain transform)."""
    if isinstance(img, dict):
        return list(img["views"]), img["visibility"], img["boxes"]
    return (list(img) if isinstance(img, (list, tuple)) else [img]), None, None


def paste_occluders(images: torch.Tensor, boxes: torch.Tensor, pids: torch.Tensor, source_view: int = 0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill every view's hidden rectangle with the same rectangle of another identity's image of the batch.

    Each image draws one donor uniformly among the batch's images of another identity (an image whose identity
    fills the batch keeps its noise); the donor's view ``source_view`` (the original view, which may carry its own
    random-erasing noise, as the model sees it) gives the pixels. Only hidden pixels change, so the visibility
    targets stay exact.

    Args:
        images: ``(V, B, C, H, W)`` stacked views.
        boxes: ``(B, V, 4)`` hidden rectangles ``(top, left, h, w)`` (zeros: none).
        pids: ``(B,)`` identities.
        source_view: the view the donor pixels come from.
        generator: random generator on ``images``' device (default: torch's global one, so ``torch.manual_seed``
            fixes the draw).

    Returns:
        a new ``(V, B, C, H, W)`` tensor.
    """
    num_views, batch = images.shape[:2]
    if boxes.shape != (batch, num_views, 4) or pids.shape != (batch,):
        raise ValueError(f"boxes {tuple(boxes.shape)} and pids {tuple(pids.shape)} do not fit {num_views} views "
                         f"of {batch} images: expected ({batch}, {num_views}, 4) and ({batch},)")
    other = pids.unsqueeze(0) != pids.unsqueeze(1)
    scores = torch.rand(batch, batch, generator=generator, device=images.device)
    donor = scores.masked_fill(~other, -1.0).argmax(1)
    hidden = box_mask(boxes.to(images.device).transpose(0, 1), *images.shape[-2:]) < 0.5  # (V, B, H, W)
    hidden &= other.any(1).view(1, batch, 1, 1)
    return torch.where(hidden.unsqueeze(2), images[source_view, donor].unsqueeze(0), images)
