"""Training views that know what they hide, and occluders cut from other identities' images.

* :class:`MarkedErasing` runs timm's ``RandomErasing`` (the paper's random erasing, unchanged in distribution) and
  reports the rectangle it filled, read from a marker channel rather than guessed from pixel values.
* :class:`VisibilityMultiView` is :class:`~lfem_plugin.data.transforms.MultiView` that also returns, per image,
  each view's hidden rectangle and the visible fraction of every JPM group
  (:class:`~lfem_plugin.models.visibility.TokenGeometry`); a view that hides nothing gets 1.
* :func:`paste_occluders` fills those rectangles, in a batch, with pixels of another identity's image (a piece of a
  person or of the scene), so that occluders look like real ones: the same rectangle (``'paste'``) or a rectangle
  cut from anywhere in it and resized into the hidden one (``'paste_resized'``); the targets stay exact because
  only hidden pixels change.

Beyond the paper (which fills its erased rectangle with noise, Sec. 3.2): pasted occluders from other training
images follow FED (Wang et al., "Feature Erasing and Diffusion Network for Occluded Person Re-Identification",
CVPR 2022), which pastes background and person patches as synthetic occluders.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.data.random_erasing import RandomErasing

from lfem_plugin.data.transforms import build_train_transform, timm_eraser
from lfem_plugin.models.visibility import TokenGeometry, box_mask

__all__ = ["OCCLUDERS", "PASTED", "MarkedErasing", "VisibilityMultiView", "build_visibility_transform",
           "paste_occluders", "split_views", "view_major"]

# what fills an erased rectangle: timm's per-pixel noise (paper), another identity's same rectangle, or a rectangle
# cut from anywhere in another identity's image and resized into it
OCCLUDERS = ("noise", "paste", "paste_resized")
PASTED = ("paste", "paste_resized")


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


def build_visibility_transform(geometry: TokenGeometry, *args: Any, **kwargs: Any) -> VisibilityMultiView:
    """The paper's multi-view train transform (:func:`~lfem_plugin.data.transforms.build_train_transform`, same
    arguments) whose erasing reports its rectangle (:class:`MarkedErasing`), wrapped in a
    :class:`VisibilityMultiView` of ``geometry``; the cropped view hides nothing (visibility 1)."""
    def marked(probability: float, always: bool) -> MarkedErasing:
        return MarkedErasing(timm_eraser(probability), always=always)
    return VisibilityMultiView(build_train_transform(*args, erasing=marked, **kwargs), geometry)


def view_major(x: torch.Tensor) -> torch.Tensor:
    """The one change of batch layout: the collate's image-major ``(B, V, ...)`` (one row per image, its views
    inside) -> the plugin's view-major ``(V, B, ...)`` (the order :func:`~lfem_plugin.models.interface.stack_views`
    gives the model: row ``v*B + b`` of the stacked batch is view ``v`` of image ``b``)."""
    return x.transpose(0, 1)


def split_views(img: Any) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """A collated ``data['img']`` -> ``(views, visibility, boxes)``: the list of ``(B, C, H, W)`` views, and
    ``(B, V, K)`` / ``(B, V, 4)`` from a :class:`VisibilityMultiView` (None from a plain transform)."""
    if isinstance(img, dict):
        return list(img["views"]), img["visibility"], img["boxes"]
    return (list(img) if isinstance(img, (list, tuple)) else [img]), None, None


def paste_occluders(images: torch.Tensor, boxes: torch.Tensor, pids: torch.Tensor, source_view: int = 0,
                    generator: torch.Generator | None = None, resize: bool = False,
                    scale: tuple[float, float] = (0.5, 2.0)) -> torch.Tensor:
    """Fill every view's hidden rectangle with pixels of another identity's image of the batch.

    Each image draws one donor uniformly among the batch's images of another identity (an image whose identity
    fills the batch keeps its noise); the donor's view ``source_view`` (the original view, which may carry its own
    random-erasing noise, as the model sees it) gives the pixels. Without ``resize`` they are the donor's pixels
    inside the same rectangle: on aligned pedestrian crops, often the same body part of another person. With
    ``resize`` each hidden rectangle ``(h, w)`` draws a source rectangle of the donor, ``(h * s_h, w * s_w)`` with
    ``s_h``, ``s_w`` log-uniform in ``scale`` (clipped to the image) at a uniform position, and resamples it into
    the hidden one (bilinear): a piece from elsewhere, at another scale, as real occluders are. Only hidden pixels
    change, so the visibility targets stay exact.

    Args:
        images: ``(V, B, C, H, W)`` stacked views.
        boxes: ``(B, V, 4)`` hidden rectangles ``(top, left, h, w)`` (zeros: none).
        pids: ``(B,)`` identities.
        source_view: the view the donor pixels come from.
        generator: random generator on ``images``' device (default: torch's global one, so ``torch.manual_seed``
            fixes the draw).
        resize: cut the source rectangle anywhere in the donor and resize it (``lfem.occluder paste_resized``).
        scale: ``resize``'s range of source-to-hidden size ratios, per side.

    Returns:
        a new ``(V, B, C, H, W)`` tensor.

    Raises:
        ValueError: ``boxes`` or ``pids`` do not fit ``images``; ``scale`` is not ``0 < lo <= hi``.
    """
    num_views, batch = images.shape[:2]
    if boxes.shape != (batch, num_views, 4) or pids.shape != (batch,):
        raise ValueError(f"boxes {tuple(boxes.shape)} and pids {tuple(pids.shape)} do not fit {num_views} views "
                         f"of {batch} images: expected ({batch}, {num_views}, 4) and ({batch},)")
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale={scale}: needs 0 < lo <= hi")
    other = pids.unsqueeze(0) != pids.unsqueeze(1)
    scores = torch.rand(batch, batch, generator=generator, device=images.device)
    donor = scores.masked_fill(~other, -1.0).argmax(1)
    boxes = view_major(boxes.to(images.device))  # (V, B, 4)
    hidden = box_mask(boxes, *images.shape[-2:]) < 0.5  # (V, B, H, W)
    hidden &= other.any(1).view(1, batch, 1, 1)
    source = images[source_view, donor].unsqueeze(0).expand_as(images)
    if resize:
        source = _resample_pieces(source, boxes, scale, generator)
    return torch.where(hidden.unsqueeze(2), source, images)


def _resample_pieces(source: torch.Tensor, boxes: torch.Tensor, scale: tuple[float, float],
                     generator: torch.Generator | None) -> torch.Tensor:
    """``source`` ``(V, B, C, H, W)`` resampled so that each hidden rectangle ``boxes`` ``(V, B, 4)`` shows a
    random rectangle of it (see :func:`paste_occluders`); pixels outside the rectangles are not meaningful."""
    num_views, batch, channels, height, width = source.shape
    size = torch.tensor([height, width], dtype=torch.float32, device=source.device)
    box = boxes.reshape(-1, 4).float()
    top_left, hw = box[:, :2], box[:, 2:].clamp(min=1.0)
    log_lo, log_hi = torch.log(torch.tensor(scale, dtype=torch.float32)).tolist()
    draws = torch.rand(box.shape[0], 4, generator=generator, device=source.device)
    src_hw = torch.minimum(hw * torch.exp(log_lo + (log_hi - log_lo) * draws[:, :2]), size)
    src_top_left = draws[:, 2:] * (size - src_hw)
    # affine map in grid_sample's normalised coordinates (align_corners=False): pixel coordinate u in the hidden
    # rectangle -> u' = src + (u - box) s with s = src_hw / hw; with n = 2u / size - 1 this is
    # n' = s n + s - 1 + 2 (src - box s) / size
    s = src_hw / hw
    offset = s - 1 + 2 * (src_top_left - top_left * s) / size
    theta = torch.zeros(box.shape[0], 2, 3, device=source.device)
    theta[:, 0, 0], theta[:, 0, 2] = s[:, 1], offset[:, 1]  # x: columns
    theta[:, 1, 1], theta[:, 1, 2] = s[:, 0], offset[:, 0]  # y: rows
    flat = source.reshape(-1, channels, height, width)
    grid = F.affine_grid(theta.to(flat.dtype), list(flat.shape), align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view_as(source)
