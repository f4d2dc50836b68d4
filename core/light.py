"""The light: its direction, colour and maps, a weight-free shading, and the live preview.

Contract: images are uint8 H×W×3 ``numpy`` arrays in R, G, B order (numpy in, numpy out; convert
PIL images with ``np.asarray(image.convert("RGB"))``); a mask is a bool H×W array, True = the
subject; a light map is float32 H×W in [0, 1]. Sizes are ``(width, height)`` like everywhere in
core; arrays are indexed ``[y, x]``.

Directions live in image space: x to the right, y down, z out of the photo toward the viewer.
``LightParams.azimuth`` turns counter-clockwise on the photo from the right (90° = from the top);
``elevation`` tilts the light out of the photo's plane toward the viewer (0° grazing, 90° frontal).
A light *behind* the subject is a negative elevation (down to -90°, straight behind): it lights
only the subject's rims that face its in-plane direction, which is what a back light does, so it
needs no separate flag. The ``back-light`` preset is behind and above (a hair light).

Without model weights, :func:`shade` relights a subject by Lambert shading of a dome-shaped
normal field grown from its mask (:func:`pseudo_normals`); :class:`PreviewCache` does the same on
a downscaled copy fast enough to follow a slider. The IC-Light engine starts its img2img from
:func:`light_image`, and :func:`transfer_detail` puts the photo's texture back into its output.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from core.masks import bounding_box, check_mask, distance_inside, feather

RGB = tuple[int, int, int]

WHITE: RGB = (255, 255, 255)
ELEVATION_RANGE = (-90.0, 90.0)
AMBIENT_RANGE = (0.0, 1.0)
TEMPERATURE_RANGE = (1000.0, 40000.0)
"""Kelvin range where the Tanner Helland fit of :func:`color_from_temperature` holds."""

PRESETS: dict[str, tuple[float, float]] = {
    "left": (180.0, 0.0),
    "right": (0.0, 0.0),
    "top": (90.0, 0.0),
    "bottom": (270.0, 0.0),
    "front": (0.0, 90.0),
    "back-light": (90.0, -30.0),
}
"""Name → (azimuth, elevation) in degrees. The side presets are grazing (elevation 0), so their
light maps are the full-width gradients IC-Light was trained with; ``back-light`` is behind the
subject (negative elevation) and above it."""

DEFAULT_EDGE_PX = 6.0
"""Width of the soft edge inside the mask over which shading fades in (no hard seam)."""


def color_from_temperature(kelvin: float) -> RGB:
    """The RGB colour (0–255) of a black body at ``kelvin``, Tanner Helland's fit.

    Warm (reddish) below about 6500 K, near white at 6500 K, bluish above. Values outside
    ``TEMPERATURE_RANGE`` are clamped to it (1900–12000 K, candle to blue sky, is the useful span).
    """
    t = float(np.clip(kelvin, *TEMPERATURE_RANGE)) / 100.0
    if t <= 66.0:
        red = 255.0
        green = 99.4708025861 * math.log(t) - 161.1195681661
    else:
        red = 329.698727446 * (t - 60.0) ** -0.1332047592
        green = 288.1221695283 * (t - 60.0) ** -0.0755148492
    if t >= 66.0:
        blue = 255.0
    elif t <= 19.0:
        blue = 0.0
    else:
        blue = 138.5177312231 * math.log(t - 10.0) - 305.0447927307
    return tuple(int(round(float(np.clip(c, 0.0, 255.0)))) for c in (red, green, blue))


@dataclass(frozen=True)
class LightParams:
    """One light: where it comes from, how strong, what colour, and how much fill there is.

    ``azimuth`` degrees, 0 = from the right, counter-clockwise (90 top, 180 left, 270 bottom),
    wrapped to [0, 360). ``elevation`` degrees in [-90, 90]: 0 grazing, 90 frontal, negative =
    behind the subject. ``intensity`` ≥ 0, 1 = a frontal light keeps the subject's brightness.
    ``color`` RGB 0–255. ``ambient`` in [0, 1]: the untinted fill that unlit parts keep.

    Out-of-range values are clamped on construction, silently; :meth:`clamped` does the same and
    says what it changed, for the page to show.
    """

    azimuth: float = 135.0
    elevation: float = 30.0
    intensity: float = 1.0
    color: RGB = WHITE
    ambient: float = 0.35

    def __post_init__(self) -> None:
        values, _ = _clamp_values(asdict(self))
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def clamped(cls, **values) -> tuple[LightParams, list[str]]:
        """Build from ``values``, clamping out-of-range ones; returns the params and one note per clamp."""
        values, notes = _clamp_values(values)
        return cls(**values), notes

    @classmethod
    def from_temperature(cls, kelvin: float, **values) -> LightParams:
        """A light of the colour of a black body at ``kelvin`` (see :func:`color_from_temperature`)."""
        return cls(color=color_from_temperature(kelvin), **values)

    @classmethod
    def from_preset(cls, name: str, **values) -> LightParams:
        """A light from one of ``PRESETS`` (other fields from ``values`` or their defaults)."""
        if name not in PRESETS:
            raise ValueError(f"Unknown light preset {name!r}; choose one of {', '.join(PRESETS)}.")
        azimuth, elevation = PRESETS[name]
        return cls(azimuth=azimuth, elevation=elevation, **values)

    def to_dict(self) -> dict:
        """JSON-ready fields (the colour as a list)."""
        data = asdict(self)
        data["color"] = list(self.color)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LightParams:
        """The inverse of :meth:`to_dict`; unknown keys are an error, missing ones take defaults."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Unknown light setting(s): {', '.join(sorted(unknown))}.")
        return cls(**data)

    @property
    def direction(self) -> np.ndarray:
        """Unit vector toward the light, (x, y, z) in image space (y down, z toward the viewer)."""
        azimuth, elevation = math.radians(self.azimuth), math.radians(self.elevation)
        planar = math.cos(elevation)
        return np.array(
            [planar * math.cos(azimuth), -planar * math.sin(azimuth), math.sin(elevation)], np.float32
        )

    @property
    def tint(self) -> np.ndarray:
        """The colour as float32 (3,) in [0, 1]."""
        return np.asarray(self.color, np.float32) / 255.0


def _clamp_values(values: dict) -> tuple[dict, list[str]]:
    values = dict(values)
    notes = []

    def clamp(name: str, label: str, low: float, high: float, unit: str = "") -> None:
        if name not in values:
            return
        value = float(values[name])
        clipped = min(max(value, low), high)
        if clipped != value:
            notes.append(f"{label} {value:g}{unit} was clamped to {clipped:g}{unit}.")
        values[name] = clipped

    if "azimuth" in values:
        values["azimuth"] = float(values["azimuth"]) % 360.0
    clamp("elevation", "Elevation", *ELEVATION_RANGE, unit="°")
    clamp("intensity", "Intensity", 0.0, math.inf)
    clamp("ambient", "Ambient", *AMBIENT_RANGE)
    if "color" in values:
        color = tuple(int(round(float(c))) for c in values["color"])
        if len(color) != 3:
            raise ValueError(f"A light colour has three channels (R, G, B), got {len(color)}.")
        clipped = tuple(min(max(c, 0), 255) for c in color)
        if clipped != color:
            notes.append(f"Colour {color} was clamped to {clipped}.")
        values["color"] = clipped
    return values, notes


# --- light maps -----------------------------------------------------------------------------


def light_map(size: tuple[int, int], params: LightParams) -> np.ndarray:
    """How much light reaches each pixel of a photo of ``size`` = (width, height): float32 (H, W).

    A linear gradient along the light's direction projected on the photo, 1 on the side it comes
    from and 0 on the far corner, mixed with a flat level by elevation: ``cos(elevation)`` of the
    gradient plus the rest flat (1 in front of the subject, 0 behind it), so 90° is uniform and
    -90° is dark. Then ``ambient + (1 - ambient) · intensity · level``, clipped to [ambient, 1].
    """
    width, height = size
    azimuth, elevation = math.radians(params.azimuth), math.radians(params.elevation)
    dx, dy = math.cos(azimuth), -math.sin(azimuth)
    # Pixel centres at u, v ∈ [-1, 1]; u·dx + v·dy reaches ±(|dx| + |dy|) exactly at the corners.
    u = np.linspace(-1.0, 1.0, width, dtype=np.float32) if width > 1 else np.zeros(1, np.float32)
    v = np.linspace(-1.0, 1.0, height, dtype=np.float32) if height > 1 else np.zeros(1, np.float32)
    span = abs(dx) + abs(dy)
    gradient = 0.5 + 0.5 * np.add.outer(v * (dy / span), u * (dx / span))
    planar = math.cos(elevation)
    flat = 1.0 if params.elevation >= 0 else 0.0
    level = planar * gradient + (1.0 - planar) * flat
    ambient = params.ambient
    return np.clip(ambient + (1.0 - ambient) * params.intensity * level, ambient, 1.0).astype(np.float32)


def light_image(size: tuple[int, int], params: LightParams) -> np.ndarray:
    """The light map tinted by the light's colour, uint8 (H, W, 3) RGB (grey for white light).

    This is the image IC-Light's img2img starts from.
    """
    tinted = light_map(size, params)[:, :, None] * (params.tint * 255.0)
    return np.round(tinted).astype(np.uint8)


# --- shading --------------------------------------------------------------------------------


def pseudo_normals(mask: np.ndarray) -> np.ndarray:
    """Unit surface normals (H, W, 3) float32 of a dome raised over the mask.

    Height at distance ``d`` from the mask's edge is ``sqrt(d · (2R - d))`` with ``R`` the largest
    distance: a hemisphere for a disk, a rounded ridge for longer shapes. It is smoothed before
    differentiating so the distance transform's ridges do not crease the shading. Normals point
    outward (and lie almost in the photo's plane) at the edge, toward the viewer, (0, 0, 1), at
    the centre and everywhere outside the mask. The photo's border is not an edge: a subject cut
    by the frame stays round where it is cut, and a mask covering the whole photo is flat.
    """
    mask = check_mask(mask)
    normals = np.zeros((*mask.shape, 3), np.float32)
    normals[:, :, 2] = 1.0
    box = bounding_box(mask)
    if box is None:
        return normals
    height, width = mask.shape
    x0, y0, x1, y1 = box
    x0, y0, x1, y1 = max(0, x0 - 1), max(0, y0 - 1), min(width, x1 + 1), min(height, y1 + 1)
    region = mask[y0:y1, x0:x1]
    if region.all():  # the whole photo: no edge to round off, so a flat surface facing the viewer
        return normals
    distance = distance_inside(region)
    radius = float(distance.max())
    dome = np.sqrt(distance * (2.0 * radius - distance))
    sigma = max(1.0, radius / 16.0)
    dome = cv2.GaussianBlur(dome, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    slope_x = cv2.Sobel(dome, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8, borderType=cv2.BORDER_REPLICATE)
    slope_y = cv2.Sobel(dome, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8, borderType=cv2.BORDER_REPLICATE)
    surface = np.stack([-slope_x, -slope_y, np.ones_like(dome)], axis=2)
    surface /= np.linalg.norm(surface, axis=2, keepdims=True)
    normals[y0:y1, x0:x1][region] = surface[region]
    return normals


def lambert(normals: np.ndarray, params: LightParams) -> np.ndarray:
    """Per-pixel RGB gain (H, W, 3) float32 of a Lambertian surface under ``params``.

    ``ambient + (1 - ambient) · intensity · max(0, n · l) · colour``: a surface facing a white
    light of intensity 1 keeps its brightness, one facing away keeps ``ambient``.
    """
    facing = np.clip(normals @ params.direction, 0.0, None)
    scale = (1.0 - params.ambient) * params.intensity * params.tint
    return params.ambient + facing[:, :, None] * scale


def shade(
    image: np.ndarray, mask: np.ndarray, params: LightParams, *, edge: float = DEFAULT_EDGE_PX
) -> np.ndarray:
    """Relight the subject without model weights: Lambert shading of :func:`pseudo_normals`.

    Returns uint8 (H, W, 3). The shading fades in over ``edge`` pixels inside the mask's edge so
    there is no seam; pixels outside the mask are copied, bit-identical.
    """
    image = check_image(image)
    mask = check_mask(mask, (image.shape[1], image.shape[0]))
    return _shade(image, pseudo_normals(mask), feather(mask, inner=edge), params, over=image)


def _shade(
    image: np.ndarray, normals: np.ndarray, alpha: np.ndarray, params: LightParams, *, over: np.ndarray
) -> np.ndarray:
    """``image`` shaded by ``normals``, blended onto ``over`` through ``alpha``.

    Only pixels where ``alpha`` > 0 are computed; every other pixel is copied from ``over``.
    """
    out = over.copy()
    covered = alpha > 0
    box = bounding_box(covered)
    if box is None:
        return out
    x0, y0, x1, y1 = box
    window = (slice(y0, y1), slice(x0, x1))
    shaded = image[window] * lambert(normals[window], params)
    base = over[window].astype(np.float32)
    blended = base + alpha[window][:, :, None] * (shaded - base)
    inside = covered[window]
    out[window][inside] = np.clip(blended[inside] + 0.5, 0.0, 255.0).astype(np.uint8)
    return out


# --- live preview ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PreviewCache:
    """What the live preview needs that does not depend on the light, computed once per photo+mask.

    Build it with :meth:`build` when the photo or the mask changes, then call :meth:`render` on
    every slider move. ``image`` is the downscaled photo; ``normals`` and ``alpha`` (the subject's
    mask with its soft edge, zero outside it) are None when there is no subject.
    """

    image: np.ndarray
    normals: np.ndarray | None
    alpha: np.ndarray | None

    @classmethod
    def build(
        cls,
        image: np.ndarray,
        mask: np.ndarray | None,
        *,
        max_side: int = 1024,
        edge: float = DEFAULT_EDGE_PX,
    ) -> PreviewCache:
        """Downscale ``image`` (and ``mask``) so the long side is at most ``max_side``, precompute the normals."""
        image = check_image(image)
        height, width = image.shape[:2]
        scale = min(1.0, max_side / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if scale < 1.0:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if mask is None:
            return cls(image, None, None)
        mask = check_mask(mask, (width, height))
        if scale < 1.0:
            mask = cv2.resize(mask.view(np.uint8) * 255, size, interpolation=cv2.INTER_AREA) >= 128
        return cls(image, pseudo_normals(mask), feather(mask, inner=edge * scale))

    def render(self, params: LightParams) -> np.ndarray:
        """The preview under ``params``, uint8 (h, w, 3).

        The whole photo is multiplied by the tinted light map (what the scene's light would do);
        the subject is shaded by its normals instead, so it looks round, blended over the soft
        edge into the multiplied surroundings.
        """
        height, width = self.image.shape[:2]
        light = light_map((width, height), params)[:, :, None] * params.tint
        lit = np.clip(self.image * light + 0.5, 0.0, 255.0).astype(np.uint8)
        if self.alpha is None:
            return lit
        return _shade(self.image, self.normals, self.alpha, params, over=lit)


def preview(
    image: np.ndarray, mask: np.ndarray | None, params: LightParams, *, max_side: int = 1024
) -> np.ndarray:
    """One-off preview (see :meth:`PreviewCache.render`); a page that redraws keeps the cache instead."""
    return PreviewCache.build(image, mask, max_side=max_side).render(params)


# --- detail transfer ------------------------------------------------------------------------


def transfer_detail(
    relit: np.ndarray, original: np.ndarray, mask: np.ndarray, *, radius: float = 6.0
) -> np.ndarray:
    """Put the original's texture back into a relit subject.

    Inside the mask the result is ``relit_low + (original - original_low)``: the lighting (low
    frequencies) of ``relit`` with the texture and identity (high frequencies) of ``original``.
    ``_low`` is a Gaussian blur of sigma ``radius`` px normalised by the blurred mask, so the
    background does not bleed into the subject's low frequencies at its edge. Outside the mask the
    result is ``relit``, bit-identical. Both images uint8 (H, W, 3) of the same size.
    """
    relit = check_image(relit, "The relit image")
    original = check_image(original, "The original image")
    if relit.shape != original.shape:
        raise ValueError(
            f"The relit image is {_size(relit)} but the original is {_size(original)}; they must match."
        )
    mask = check_mask(mask, (relit.shape[1], relit.shape[0]))
    out = relit.copy()
    box = bounding_box(mask)
    if box is None:
        return out
    height, width = mask.shape
    margin = int(math.ceil(3 * radius))
    x0, y0, x1, y1 = box
    x0, y0, x1, y1 = max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin)
    window = (slice(y0, y1), slice(x0, x1))
    inside = mask[window]
    weight = inside.astype(np.float32)[:, :, None]
    coverage = np.maximum(_blur(weight, radius), 1e-6)
    relit_pixels = relit[window].astype(np.float32)
    original_pixels = original[window].astype(np.float32)
    relit_low = _blur(relit_pixels * weight, radius) / coverage
    original_low = _blur(original_pixels * weight, radius) / coverage
    result = relit_low + (original_pixels - original_low)
    out[window][inside] = np.clip(result[inside] + 0.5, 0.0, 255.0).astype(np.uint8)
    return out


def _blur(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur keeping the (H, W, C) shape (OpenCV drops a single channel's axis)."""
    blurred = cv2.GaussianBlur(pixels, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return blurred.reshape(pixels.shape)


# --- checks ---------------------------------------------------------------------------------


def check_image(image: np.ndarray, name: str = "The image") -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be a uint8 H×W×3 RGB array, got {image.dtype} {image.shape}.")
    return image


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}×{image.shape[0]}"

