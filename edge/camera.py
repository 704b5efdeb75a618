"""Camera over the belt: a simulated camera, JPEG helpers and a foreign-object detector.

The simulator renders an iron-ore stream (dark red-brown to black lumps and
fines, shading, moisture sheen) with foreign objects of known size and
position, so the detector can be tested against ground truth. The detector
models the ore of each frame statistically (median and MAD of luma and
chroma, local texture against ore of the same brightness) and reports the
regions that deviate from it. numpy and OpenCV only; no GUI calls.

Image geometry: x runs across the belt from the left image edge, y runs along
the belt in its direction of travel. Appearance of the waste materials is
illustrative, not measured.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

MATERIALS = ("plastic", "wood", "rubber", "paper", "textile")

# Display colours (BGR, 0-1) of the ore minerals as lit by the camera's lights.
_HEMATITE_BGR = (0.15, 0.18, 0.29)
_MAGNETITE_BGR = (0.10, 0.10, 0.11)
_GOETHITE_BGR = (0.13, 0.22, 0.32)


# ---------------------------------------------------------------- JPEG


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """A BGR (or grey) uint8 image as JPEG bytes."""
    image = _check_image(image, "image", allow_grey=True)
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be an integer 1-100, got {quality!r}")
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} {image.dtype} image as JPEG")
    return buffer.tobytes()


def decode_jpeg(jpeg: bytes) -> np.ndarray:
    """JPEG bytes as a BGR uint8 image; ValueError names what is wrong with bytes that are not a whole JPEG.

    A frame cut short in transfer (no end-of-image marker) is refused rather
    than decoded into a partly grey image that the detector would read as objects.
    """
    if not isinstance(jpeg, (bytes, bytearray, memoryview)):
        raise ValueError(f"JPEG must be bytes, got {type(jpeg).__name__}")
    data = bytes(jpeg)
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        raise ValueError(f"not a JPEG: {len(data)} bytes starting {data[:4].hex() or 'with nothing'}; "
                         "a JPEG starts with the SOI marker ffd8")
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ValueError(f"truncated JPEG: {len(data)} bytes without the EOI marker ffd9 at the end")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ValueError(f"JPEG of {len(data)} bytes could not be decoded (corrupt data)")
    return image


def _check_image(image: np.ndarray, name: str, allow_grey: bool = False) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {image.dtype}")
    grey = image.ndim == 2
    if not (image.ndim == 3 and image.shape[2] == 3) and not (allow_grey and grey):
        accepted = "(height, width, 3) BGR" + (" or (height, width) grey" if allow_grey else "")
        raise ValueError(f"{name} has shape {image.shape}; accepted: {accepted}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"{name} is {image.shape[1]}x{image.shape[0]} px; at least 8x8 is needed")
    return image


# ---------------------------------------------------------------- simulated scene


@dataclass(frozen=True)
class SceneObject:
    """A foreign object lying on the ore, as a rotated rectangle in the camera's field of view.

    centre_x_m runs across the belt from the left image edge, centre_y_m along the
    belt from the top image edge; width_m is across and length_m along the belt
    before rotation by angle_deg (clockwise as seen in the image).
    """

    material: str
    centre_x_m: float
    centre_y_m: float
    width_m: float
    length_m: float
    angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.material not in MATERIALS:
            raise ValueError(f"unknown material {self.material!r}; known: {', '.join(MATERIALS)}")
        for name in ("width_m", "length_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{self.material} {name} must be a finite length > 0 m, got {value!r}")
        for name in ("centre_x_m", "centre_y_m", "angle_deg"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{self.material} {name} must be finite, got {getattr(self, name)!r}")

    @property
    def area_cm2(self) -> float:
        return self.width_m * self.length_m * 1e4


@dataclass(frozen=True)
class ObjectTruth:
    """What of an object the camera can see: ore lumps on top of it hide part of its area."""

    object: SceneObject
    visible_area_cm2: float
    bbox_px: tuple[int, int, int, int]  # x, y, width, height of the whole object
    centre_px: tuple[float, float]  # centroid of the visible part
    across_m: float  # visible centroid from the left image edge
    along_m_offset: float  # visible centroid from the image centre row, positive in the travel direction


@dataclass(frozen=True)
class RenderedFrame:
    image: np.ndarray  # BGR uint8
    truth: tuple[ObjectTruth, ...]


def render_frame(width_px: int, height_px: int, pixel_size_mm: float, objects: Iterable[SceneObject],
                 rng: np.random.Generator, occlusion: float = 0.1) -> np.ndarray:
    """A BGR uint8 frame of ore with `objects` (SceneObject) on it; see render_scene for the truth."""
    return render_scene(width_px, height_px, pixel_size_mm, objects, rng, occlusion).image


def render_scene(width_px: int, height_px: int, pixel_size_mm: float, objects: Iterable[SceneObject],
                 rng: np.random.Generator, occlusion: float = 0.1) -> RenderedFrame:
    """Render ore with foreign objects and return the image with what of each object is visible.

    occlusion is the largest fraction of an object's area that ore lumps lying
    on it may hide (0 for none); each object draws its own fraction up to that.
    """
    if not (isinstance(width_px, (int, np.integer)) and isinstance(height_px, (int, np.integer))
            and 16 <= width_px <= 8192 and 16 <= height_px <= 8192):
        raise ValueError(f"frame size must be integers of 16-8192 px, got {width_px!r} x {height_px!r}")
    if not (math.isfinite(pixel_size_mm) and 0.1 <= pixel_size_mm <= 50):
        raise ValueError(f"pixel_size_mm must be 0.1-50 mm, got {pixel_size_mm!r}")
    if not 0.0 <= occlusion < 1.0:
        raise ValueError(f"occlusion must be a fraction in [0, 1), got {occlusion!r}")
    objects = tuple(objects)
    for i, obj in enumerate(objects):
        if not isinstance(obj, SceneObject):
            raise ValueError(f"objects[{i}] must be a SceneObject, got {type(obj).__name__}")
    h, w = int(height_px), int(width_px)
    ore = _render_ore(h, w, pixel_size_mm, rng)
    scene = ore.copy()
    truth = []
    for obj in objects:
        truth.append(_draw_object(scene, ore, obj, pixel_size_mm, rng, occlusion))
    lighting = _lighting(h, w, rng)
    channels = []
    for channel in cv2.split(scene):
        channel *= lighting
        # Sensor: read noise plus shot noise, then 8-bit quantisation.
        noise = rng.standard_normal((h, w), dtype=np.float32)
        channel += noise * (0.006 + 0.02 * np.sqrt(np.maximum(channel, 0.0)))
        channels.append(cv2.convertScaleAbs(np.maximum(channel, 0.0), alpha=255.0))
    return RenderedFrame(cv2.merge(channels), tuple(truth))


def _smooth_noise(h: int, w: int, cell_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-ish noise with features about cell_px wide (value noise, bicubic)."""
    cell_px = max(cell_px, 1.0)
    gh, gw = max(2, int(math.ceil(h / cell_px)) + 2), max(2, int(math.ceil(w / cell_px)) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (int(gw * cell_px), int(gh * cell_px)), interpolation=cv2.INTER_CUBIC)
    return big[:h, :w]


def _render_ore(h: int, w: int, pixel_size_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Ore as a float32 BGR image (0-1): lumps and fines, lit from the upper left, with wet patches."""
    px = pixel_size_mm
    # Lumps: spheres around random seeds (a Voronoi cobble); radii log-normal around 9 mm for this
    # frame's grading, fines fill the gaps at a smaller scale.
    lump_mm = 9.0 * rng.uniform(0.7, 1.4)
    heights = []
    for radius_mm, spread, fill in ((lump_mm, 0.45, 0.8), (lump_mm * 0.35, 0.3, 1.0)):
        r_px = max(radius_mm / px, 0.8)
        n_seeds = max(4, int(fill * h * w / (math.pi * r_px ** 2)))
        seeds = np.full((h, w), 255, dtype=np.uint8)
        seeds[rng.integers(0, h, n_seeds), rng.integers(0, w, n_seeds)] = 0
        dist, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, cv2.DIST_MASK_5,
                                                       labelType=cv2.DIST_LABEL_PIXEL)
        radii = (r_px * rng.lognormal(0.0, spread, labels.max() + 1)).astype(np.float32)
        r = radii[labels]
        heights.append(np.sqrt(np.maximum(r * r - dist * dist, 0.0)))
        if len(heights) == 1:
            lump_labels, n_lumps = labels, int(labels.max()) + 1
    fines = heights[1] * 0.5
    lump_mask = heights[0] >= fines
    height = np.maximum(heights[0], fines)
    height += _smooth_noise(h, w, 40.0 / px, rng) * (0.4 * lump_mm / px)

    # Albedo: each lump its own mineral mix and brightness (a few are yellow goethite); fines
    # follow one mix.
    mix = rng.dirichlet([5.0, 2.5, 0.6], size=n_lumps).astype(np.float32)
    mix[rng.random(n_lumps) < 0.04] = (0.2, 0.0, 0.8)
    minerals = np.array([_HEMATITE_BGR, _MAGNETITE_BGR, _GOETHITE_BGR], dtype=np.float32)
    lump_colour = (mix @ minerals) * rng.lognormal(0.0, 0.18, (n_lumps, 1)).astype(np.float32)
    fines_colour = np.asarray(rng.dirichlet([5.0, 3.0, 0.5]) @ minerals, dtype=np.float32)
    lump_labels[~lump_mask] = n_lumps
    palette = np.vstack([lump_colour, fines_colour[None, :]])
    albedo = rng.uniform(0.8, 1.25) * (1.0 + 0.12 * _smooth_noise(h, w, 120.0 / px, rng)
                                       + 0.08 * _smooth_noise(h, w, 15.0 / px, rng))
    albedo *= 1.0 + 0.18 * cv2.GaussianBlur(rng.standard_normal((h, w), dtype=np.float32), (0, 0), 0.6)

    # Shading: light from the upper left and above; crevices between lumps fall into shadow.
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
    inv_norm = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    light = np.array([-0.45, -0.55, 0.70], dtype=np.float32)
    light /= np.linalg.norm(light)
    diffuse = np.clip((light[2] - gx * light[0] - gy * light[1]) * inv_norm, 0.0, 1.0)
    cavity = np.sqrt(np.clip(height * (1.0 / (1.2 * lump_mm / px)), 0.0, 1.0))
    shade = (0.25 + 0.85 * diffuse) * (0.45 + 0.55 * cavity)

    # Moisture: wet patches are darker and give small specular glints on the lump tops.
    wet = np.clip(_smooth_noise(h, w, 200.0 / px, rng) + 2.0 * rng.uniform(0.0, 1.0) - 1.2, 0.0, 1.0)
    half = light + np.array([0, 0, 1], dtype=np.float32)
    half /= np.linalg.norm(half)
    specular = np.clip((half[2] - gx * half[0] - gy * half[1]) * inv_norm, 0.0, 1.0)
    for _ in range(6):  # a Phong exponent of 64
        specular *= specular
    gain = albedo * shade * (1.0 - 0.2 * wet)
    glint = 0.5 * wet * specular
    # Channel by channel: numpy is slow at broadcasting over a last axis of 3.
    return cv2.merge([np.take(palette[:, c], lump_labels) * gain + glint * sheen
                      for c, sheen in enumerate((0.9, 0.95, 1.0))])


def _lighting(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Exposure, vignetting and the light bar's falloff across the belt, as a gain per pixel."""
    ys = (np.arange(h, dtype=np.float32) - h / 2) / (h / 2)
    xs = (np.arange(w, dtype=np.float32) - w / 2) / (w / 2)
    vignette = 1.0 - 0.09 * (ys[:, None] ** 2 + xs[None, :] ** 2)
    bar = 1.0 + rng.uniform(-0.1, 0.1) * xs
    return (rng.uniform(0.85, 1.15) * vignette * bar[None, :]).astype(np.float32)


def _draw_object(scene: np.ndarray, ore: np.ndarray, obj: SceneObject, pixel_size_mm: float,
                 rng: np.random.Generator, max_occlusion: float) -> ObjectTruth:
    h, w = scene.shape[:2]
    px_per_m = 1000.0 / pixel_size_mm
    cx, cy = obj.centre_x_m * px_per_m, obj.centre_y_m * px_per_m
    ow, ol = obj.width_m * px_per_m, obj.length_m * px_per_m
    corners = cv2.boxPoints(((cx, cy), (ow, ol), obj.angle_deg))
    x0 = int(max(0, math.floor(corners[:, 0].min()) - 3))
    y0 = int(max(0, math.floor(corners[:, 1].min()) - 3))
    x1 = int(min(w, math.ceil(corners[:, 0].max()) + 4))
    y1 = int(min(h, math.ceil(corners[:, 1].max()) + 4))
    bx, by = math.floor(corners[:, 0].min()), math.floor(corners[:, 1].min())
    bbox = (int(bx), int(by), int(math.ceil(corners[:, 0].max()) - bx), int(math.ceil(corners[:, 1].max()) - by))
    if x1 <= x0 or y1 <= y0:
        return ObjectTruth(obj, 0.0, bbox, (cx, cy), obj.centre_x_m, obj.centre_y_m - h / 2 / px_per_m)
    rh, rw = y1 - y0, x1 - x0

    # Coverage of each pixel, from a 4x supersampled polygon.
    ss = 4
    fine = np.zeros((rh * ss, rw * ss), dtype=np.uint8)
    pts = np.round(((corners - (x0, y0)) * ss - 0.5) * 16).astype(np.int32)
    cv2.fillConvexPoly(fine, pts, 255, cv2.LINE_8, 4)
    alpha = cv2.resize(fine, (rw, rh), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0

    # Local coordinates on the object: u across its width, v along its length (pixels).
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    theta = math.radians(obj.angle_deg)
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    surface = _material_surface(obj.material, u, v, pixel_size_mm, rng)

    # Ore dust lies on the object in patches.
    dust = np.clip(rng.uniform(0.0, 0.25) * (1.0 + _smooth_noise(rh, rw, 30.0 / pixel_size_mm, rng)), 0.0, 0.5)
    ore_patch = ore[y0:y1, x0:x1]
    surface = surface * (1.0 - dust[:, :, None]) + ore_patch * dust[:, :, None]

    # Ore lumps lying on top of the object hide part of it; they are lit like the lumps around.
    region = scene[y0:y1, x0:x1]
    hidden = np.zeros((rh, rw), dtype=np.float32)
    lumps = np.zeros((rh, rw, 3), dtype=np.float32)
    if max_occlusion > 0:
        lump_colour = np.median(ore_patch.reshape(-1, 3), axis=0) * 1.8
        target = rng.uniform(0.0, max_occlusion) * float(alpha.sum())
        covered = 0.0
        for _ in range(200):
            if covered >= target:
                break
            radius = max(1.0, rng.uniform(6.0, 18.0) / pixel_size_mm)
            pu, pv = rng.uniform(-0.5, 0.5) * ow, rng.uniform(-0.5, 0.5) * ol
            lx = cx - 0.5 + pu * math.cos(theta) - pv * math.sin(theta)
            ly = cy - 0.5 + pu * math.sin(theta) + pv * math.cos(theta)
            nx, ny = (xx - lx) / radius, (yy - ly) / radius
            inside = nx * nx + ny * ny < 1.0
            nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
            diffuse = np.clip(-0.45 * nx - 0.55 * ny + 0.70 * nz, 0.0, 1.0)
            lumps[inside] = lump_colour * (0.2 + 0.8 * diffuse[inside, None]) * rng.uniform(0.7, 1.3)
            hidden[inside] = 1.0
            covered = float((alpha * hidden).sum())
    visible = alpha * (1.0 - hidden)

    # A thin shadow on the side away from the light, where the object's edge stands proud of the ore.
    shadow = np.clip(np.roll(np.roll(alpha, 2, axis=0), 2, axis=1) - alpha, 0.0, 1.0)
    region *= (1.0 - 0.5 * shadow)[:, :, None]
    on_top = (alpha * hidden)[:, :, None]
    region[:] = region * (1.0 - visible[:, :, None] - on_top) + surface * visible[:, :, None] + lumps * on_top

    area_px = float(visible.sum())
    if area_px > 0:
        vcx = float((visible * xx).sum() / area_px) + 0.5
        vcy = float((visible * yy).sum() / area_px) + 0.5
    else:
        vcx, vcy = cx, cy
    m_per_px = pixel_size_mm / 1000.0
    return ObjectTruth(obj, area_px * (pixel_size_mm / 10.0) ** 2, bbox, (vcx, vcy),
                       vcx * m_per_px, (vcy - h / 2) * m_per_px)


def _material_surface(material: str, u: np.ndarray, v: np.ndarray, pixel_size_mm: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Colour (float32 BGR 0-1) of a material over the local grid u (across), v (along) in pixels."""
    rh, rw = u.shape
    px = pixel_size_mm
    # Crumples and folds: slow shading that every material has to some degree.
    folds = _smooth_noise(rh, rw, 40.0 / px, rng)
    if material == "plastic":
        palette = [(0.78, 0.45, 0.12), (0.90, 0.90, 0.88), (0.25, 0.62, 0.22), (0.85, 0.62, 0.30)]
        base = np.array(palette[rng.integers(len(palette))], dtype=np.float32) * rng.uniform(0.8, 1.1)
        shade = 1.0 + 0.15 * folds
        glint = np.clip(folds - 1.2, 0.0, None) * 0.6
        out = base * shade[:, :, None] + glint[:, :, None]
    elif material == "wood":
        base = np.array((0.36, 0.54, 0.70), dtype=np.float32) * rng.uniform(0.65, 1.05)
        period = rng.uniform(7.5, 17.5) / px  # grain stripes 7.5-17.5 mm apart
        wobble = 2.0 * _smooth_noise(rh, rw, 60.0 / px, rng)
        grain = 1.0 + 0.13 * np.sin(2 * np.pi * (u + wobble) / period) \
            + 0.06 * _smooth_noise(rh, rw, 4.0 / px, rng)
        out = base * (grain * (1.0 + 0.06 * folds))[:, :, None]
    elif material == "rubber":
        base = np.array((0.075, 0.075, 0.08), dtype=np.float32) * rng.uniform(0.8, 1.25)
        sheen = 0.04 * np.exp(-0.5 * (folds / 0.5) ** 2)
        out = base * (1.0 + 0.08 * folds)[:, :, None] + sheen[:, :, None]
    elif material == "paper":
        grey = rng.uniform(0.62, 0.92)
        base = np.array((grey * 0.97, grey, grey * 1.0), dtype=np.float32)
        out = base * (1.0 + 0.05 * folds)[:, :, None]
    elif material == "textile":
        palette = [(0.20, 0.18, 0.62), (0.55, 0.35, 0.18), (0.15, 0.45, 0.75), (0.30, 0.55, 0.30),
                   (0.60, 0.60, 0.58)]
        base = np.array(palette[rng.integers(len(palette))], dtype=np.float32) * rng.uniform(0.7, 1.05)
        weave_px = max(1.2, 3.0 / px)
        weave = np.sign(np.sin(np.pi * u / weave_px) * np.sin(np.pi * v / weave_px))
        out = base * (1.0 + 0.08 * weave + 0.2 * folds)[:, :, None]
    else:  # guarded by SceneObject
        raise ValueError(f"unknown material {material!r}")
    return np.clip(out, 0.0, 1.2).astype(np.float32)


@dataclass(frozen=True)
class SimulatedCamera:
    """A camera over simulated ore: each call to `frame` renders, JPEG-encodes and returns the truth."""

    width_px: int = 640
    height_px: int = 480
    pixel_size_mm: float = 2.5
    rng: np.random.Generator | None = None
    jpeg_quality: int = 85
    occlusion: float = 0.1

    def __post_init__(self) -> None:
        if self.rng is None:
            object.__setattr__(self, "rng", np.random.default_rng())

    @property
    def field_of_view_m(self) -> tuple[float, float]:
        """Width (across the belt) and height (along it) of the image in metres."""
        return self.width_px * self.pixel_size_mm / 1000.0, self.height_px * self.pixel_size_mm / 1000.0

    def frame(self, objects_in_view: Iterable[SceneObject] = ()) -> tuple[bytes, tuple[ObjectTruth, ...]]:
        rendered = render_scene(self.width_px, self.height_px, self.pixel_size_mm, objects_in_view, self.rng,
                                self.occlusion)
        return encode_jpeg(rendered.image, self.jpeg_quality), rendered.truth


# ---------------------------------------------------------------- frame quality


def frame_exposure(image: np.ndarray, saturated_level: int = 250, dark_level: int = 8) -> dict[str, float]:
    """Exposure health of a frame, for the instrument's status.

    mean_brightness is the mean luma in 8-bit counts (0-255); saturated_fraction
    is the fraction of pixels with any channel at or above saturated_level;
    dark_fraction the fraction whose luma is at or below dark_level. Every
    second row and column is read, which is plenty for fractions and costs
    well under a millisecond.
    """
    image = _check_image(image, "image", allow_grey=True)
    sample = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_NEAREST)
    if sample.ndim == 2:
        luma = peak = sample
    else:
        luma = cv2.cvtColor(sample, cv2.COLOR_BGR2GRAY)
        b, g, r = cv2.split(sample)
        peak = cv2.max(cv2.max(b, g), r)
    n = float(luma.size)
    return {
        "mean_brightness": float(cv2.mean(luma)[0]),
        "saturated_fraction": cv2.countNonZero((peak >= saturated_level).view(np.uint8)) / n,
        "dark_fraction": cv2.countNonZero((luma <= dark_level).view(np.uint8)) / n,
    }


# ---------------------------------------------------------------- detection


CUES = ("bright", "colour", "smooth")
# Pixel size the search runs at (a pyramid level of the frame): the ore model, the deviation maps and the
# candidate regions cost the same per square metre of belt whatever the camera's resolution, and their
# windows keep their size on the belt. Frames of 2.5 mm pixels are searched at half resolution, of 1.25 mm
# at quarter resolution.
_SEARCH_PIXEL_MM = 5.0


@dataclass(frozen=True)
class Detection:
    """One region of a frame that does not look like ore.

    across_m is measured from the left image edge; along_m_offset from the
    image centre row, positive in the direction of belt travel (down the
    image). The lane places a detection at the belt coordinate under the
    sensors at the frame's time minus the lane's camera_offset_m minus
    along_m_offset: ore further along the direction of travel passed the
    sensors earlier.
    """

    area_cm2: float
    bbox_px: tuple[int, int, int, int]  # x, y, width, height
    centre_px: tuple[float, float]  # x, y; pixel (0, 0) spans 0-1 in both
    across_m: float
    along_m_offset: float
    score: float  # 0-1; 0.5 is the suggested alarm level
    cue: str  # the strongest deviation from the ore: "bright", "colour" or "smooth"
    contrast_sigma: float  # median deviation inside the region, in robust ore sigmas of that cue
    lightness: float  # CIE L* of the region's mean colour, 0-100
    chroma: float  # CIE a*b* chroma of the region's mean colour
    hue_deg: float  # CIE a*b* hue of the region's mean colour, 0-360
    texture_ratio: float  # local standard deviation of luma / that of ore of the same brightness
    solidity: float  # area / convex hull area
    rectangularity: float  # area / minimum-area rectangle
    rim_ratio: float = 1.0  # mean luma of the outline's 5 mm rim / that of its inside (1 for the smooth cue)


@dataclass(frozen=True)
class OreModel:
    """Robust statistics of the ore in one frame (at the search resolution), as the detector saw it."""

    median_ycc: tuple[float, float, float]  # luma Y, chroma Cr, Cb in 8-bit counts
    sigma_ycc: tuple[float, float, float]  # 1.4826 MAD of each, floored
    texture_log_sigma: float  # robust spread of log local texture around the ore's own at that brightness


class ObjectDetector:
    """Finds foreign objects on ore in a BGR frame by how far they stand out from this frame's ore.

    Each frame's ore is modelled by the median and MAD of its colour (luma and
    chroma) and by its local texture as a function of brightness, so a change
    of ore brand, moisture or exposure moves the model with it. A pixel is a
    candidate when it is brighter (cue "bright"), of another colour ("colour")
    or smoother and greyer ("smooth": rubber, the hard case) than the ore by a
    weak level of robust sigmas; regions that reach the strong level somewhere
    and cover at least `min_area_cm2` are reported with a score that combines
    contrast, size, shape and shading (a lump's rim is darker than its inside).

    The search runs on a pyramid level of about 5 mm pixels (half resolution
    at 2.5 mm/px, quarter at 1.25 mm/px); each region's outline is then found
    at full resolution for its area and centre. Regions whose score cannot
    reach `min_score` are dropped, all at once, before that step, which keeps
    plain-ore frames cheap.

    min_score is 0.3: the lane's fusion counts nothing below the 0.5 alarm
    level, so weaker regions only ever reached the published frame results,
    where plain ore's faint candidates read as "objects"; from 0.3 up the
    near misses stay visible for engineers watching the camera drift. Raising
    it from 0.1 left every detection at or above 0.3 identical (464 frames,
    292 detections) and outlines fewer regions.
    """

    def __init__(self, pixel_size_mm: float, min_area_cm2: float = 4.0, weak_sigma: float = 4.0,
                 strong_sigma: float = 7.0, smooth_weak_sigma: float = 3.0, smooth_strong_sigma: float = 5.0,
                 texture_window_px: int = 10, min_score: float = 0.3, max_detections: int = 50):
        if not (isinstance(pixel_size_mm, (int, float)) and math.isfinite(pixel_size_mm)
                and 0.1 <= pixel_size_mm <= 50):
            raise ValueError(f"pixel_size_mm must be 0.1-50 mm, got {pixel_size_mm!r}")
        if not (math.isfinite(min_area_cm2) and min_area_cm2 > 0):
            raise ValueError(f"min_area_cm2 must be > 0 cm2, got {min_area_cm2!r}")
        for weak_name, strong_name, weak_value, strong_value in (
                ("weak_sigma", "strong_sigma", weak_sigma, strong_sigma),
                ("smooth_weak_sigma", "smooth_strong_sigma", smooth_weak_sigma, smooth_strong_sigma)):
            if not 0 < weak_value <= strong_value:
                raise ValueError(f"need 0 < {weak_name} <= {strong_name}, got {weak_value!r} and {strong_value!r}")
        if not (isinstance(texture_window_px, int) and 4 <= texture_window_px <= 64):
            raise ValueError(f"texture_window_px must be an integer 4-64, got {texture_window_px!r}")
        if not 0.0 <= min_score < 1.0:
            raise ValueError(f"min_score must be in [0, 1), got {min_score!r}")
        if not (isinstance(max_detections, int) and max_detections >= 1):
            raise ValueError(f"max_detections must be an integer >= 1, got {max_detections!r}")
        self.pixel_size_mm = float(pixel_size_mm)
        self.min_area_cm2 = float(min_area_cm2)
        self.weak_sigma = float(weak_sigma)
        self.strong_sigma = float(strong_sigma)
        self.smooth_weak_sigma = float(smooth_weak_sigma)
        self.smooth_strong_sigma = float(smooth_strong_sigma)
        self.texture_window_px = texture_window_px
        self.min_score = float(min_score)
        self.max_detections = max_detections
        # Pyramid steps to the search resolution: at least one, to pixels of about _SEARCH_PIXEL_MM.
        self.search_levels = max(1, int(round(math.log2(_SEARCH_PIXEL_MM / self.pixel_size_mm))))
        self.last_ore_model_: OreModel | None = None

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Regions of the frame that are not ore, highest score first."""
        image = _check_image(image_bgr, "image_bgr")
        levels = self._search_levels_for(image.shape)
        small, finer = _search_image(image, levels)
        maps, residual, model = self._deviation_maps(small, finer, self._texture_kernel(levels))
        self.last_ore_model_ = model
        weak_levels, strong_levels = self._levels()
        weak = (maps[0] > weak_levels[0]) | (maps[1] > weak_levels[1]) | (maps[2] > weak_levels[2])
        strong = (maps[0] > strong_levels[0]) | (maps[1] > strong_levels[1]) | (maps[2] > strong_levels[2])
        weak = cv2.morphologyEx(weak.view(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
        # Grana's algorithm: the same labels as the default, and its statistics cost a third as much here.
        n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(weak, 8, cv2.CV_32S, cv2.CCL_GRANA)
        if n <= 1:
            return []
        # A search pixel is scale x scale full ones; the weak outline is wider than the final one.
        scale = 1 << levels
        px_cm2 = (self.pixel_size_mm / 10.0) ** 2
        min_small_px = 0.6 * self.min_area_cm2 / (scale * scale * px_cm2)
        areas = stats[:, cv2.CC_STAT_AREA]
        regions = _candidate_regions(labels, weak, strong, maps, residual, areas, min_small_px,
                                     (weak_levels, strong_levels))
        # Regions whose best score (perfect shape, the best contrast and area their outline can show) is below
        # min_score are dropped before they are outlined.
        best_score = _alarm_score(_best_contrast(regions) / np.asarray(strong_levels)[regions.cue],
                                  np.maximum(_best_area_px(regions, areas) * (scale * scale * px_cm2),
                                             self.min_area_cm2), 1.0, 1.0, colour=regions.cue == 1)
        detections = []
        for i in np.flatnonzero(best_score >= self.min_score):
            label = int(regions.label[i])
            detection = self._describe(image, maps, labels, stats[label], label, int(regions.cue[i]),
                                       float(regions.contrast[i]), float(regions.core_contrast[i]),
                                       math.exp(float(regions.mean_residual[i])), model, levels)
            if detection is not None:
                detections.append(detection)
        detections.sort(key=lambda d: d.score, reverse=True)
        return detections[: self.max_detections]

    def _levels(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """Weak and strong levels per cue, in robust sigmas of that cue's map."""
        return ((self.weak_sigma, self.weak_sigma, self.smooth_weak_sigma),
                (self.strong_sigma, self.strong_sigma, self.smooth_strong_sigma))

    def _search_levels_for(self, shape: tuple[int, ...]) -> int:
        """Pyramid steps from the frame to the search: search_levels, fewer if the search image would be
        under 8 pixels across."""
        levels = self.search_levels
        while levels > 1 and min(shape[0], shape[1]) >> levels < 8:
            levels -= 1
        return levels

    def _texture_kernel(self, levels: int) -> int:
        """Window of the texture measure at the search resolution: odd, about texture_window_px full-resolution
        pixels."""
        return max(3, int(round(self.texture_window_px / (1 << levels))) | 1)

    def _deviation_maps(self, small: np.ndarray, finer: np.ndarray,
                        k: int) -> tuple[tuple[np.ndarray, ...], np.ndarray, OreModel]:
        """Per-cue deviation from the ore in robust sigmas (float32, at the resolution of `small`), the log
        texture residual (window of k search pixels, measured on `finer`, the frame one octave above) and the
        ore model."""
        ycc = cv2.cvtColor(small, cv2.COLOR_BGR2YCrCb)
        # A 3x3 median keeps the edges of objects and removes single bright grains and glints.
        luma, cr, cb = cv2.split(cv2.medianBlur(ycc, 3))
        # Sigma floors: a chroma spread below 1.5 counts is JPEG quantisation (q 85 and 4:2:0
        # subsampling move chroma by about that much), not colour variation of the ore.
        mY, sY = _hist_median_sigma(luma, 2.0)
        mCr, sCr = _hist_median_sigma(cr, 1.5)
        mCb, sCb = _hist_median_sigma(cb, 1.5)

        # Texture is the log local standard deviation of luma, averaged over a second window
        # because rubber differs from ore by a little over a large area, not a lot anywhere. It is
        # compared with this frame's ore of the same brightness: ore texture scales with brightness,
        # and in dark, vignetted or shadowed parts noise and JPEG set a floor. The deviation is taken
        # over the pixels of the frame one octave above the search, whose grain and fines the search
        # image has smoothed away (rubber has neither): 2x2 block means of luma and of its square give
        # the window's moments at the search resolution.
        mean_block, square_block = _block_moments(finer, small.shape[:2])
        mean = cv2.blur(mean_block, (k, k))
        var = cv2.blur(square_block, (k, k))
        var -= mean * mean
        np.maximum(var, 0.25, out=var)
        log_tex = cv2.blur(cv2.log(var), (k, k))
        log_tex *= 0.5
        level = cv2.convertScaleAbs(cv2.blur(mean, (k, k)))
        expected = _expected_by_level(level[::2, ::2].ravel(), log_tex[::2, ::2].ravel())
        residual = log_tex - cv2.LUT(level, expected)
        sample = residual[::4, ::4].ravel()
        centre = float(_median(sample))
        sig_log = max(1.4826 * float(_median(np.abs(sample - centre))), 0.05)

        z_bright = cv2.LUT(luma, _z_table(mY, sY))
        z_cr = cv2.LUT(cr, _z_table(mCr, sCr))
        z_cb = cv2.LUT(cb, _z_table(mCb, sCb))
        # NumPy rather than cv2.magnitude: OpenCV's vector and scalar paths round differently, so its result
        # would depend on where the arrays happen to lie in memory.
        z_colour = z_cr * z_cr
        z_colour += z_cb * z_cb
        np.sqrt(z_colour, out=z_colour)
        # Rubber is smooth and neutral black where hematite ore is red-brown: the texture deviation
        # and the shift towards neutral grey (Cr = Cb = 128) are added as two independent z-scores.
        to_grey = np.array([(128.0 - mCr) / sCr, (128.0 - mCb) / sCb])
        norm = float(np.hypot(*to_grey))
        smooth_scale = 1.0 / (sig_log * math.sqrt(2.0))
        z_smooth = residual * -smooth_scale
        z_smooth += centre * smooth_scale
        if norm > 1.0:
            # (NumPy rather than cv2.addWeighted, whose rounding depends on memory alignment; the 1 / sqrt(2)
            # is folded into the weights and the clip.)
            # float() keeps the arithmetic in float32: a NumPy float64 scalar would make `toward` float64.
            weight = 1.0 / (norm * math.sqrt(2.0))
            toward = z_cr * float(to_grey[0] * weight)
            toward += z_cb * float(to_grey[1] * weight)
            np.clip(toward, 0.0, norm / math.sqrt(2.0), out=toward)
            z_smooth += cv2.blur(toward, (3, 3))
        # The two terms are neither independent nor Gaussian, so their sum is not in robust sigmas of the ore:
        # on 80 ore frames its median came out 0.1-0.45 and its MAD 0.6-0.9 sigma, and rubber that stood
        # above every ore pixel of its frame could stay under the strong level. The sum is standardised by
        # its own median and MAD, as luma and chroma are.
        sample = z_smooth[::4, ::4].ravel()
        smooth_centre = float(_median(sample))
        smooth_sigma = max(1.4826 * float(_median(np.abs(sample - smooth_centre))), 0.05)
        z_smooth -= smooth_centre
        z_smooth *= 1.0 / smooth_sigma
        model = OreModel((mY, mCr, mCb), (sY, sCr, sCb), sig_log)
        return (z_bright, z_colour, z_smooth), residual, model

    def _describe(self, image: np.ndarray, maps: tuple[np.ndarray, ...], labels: np.ndarray, stats: np.ndarray,
                  label: int, cue_index: int, contrast: float, core_contrast: float, texture_ratio: float,
                  model: OreModel, levels: int) -> Detection | None:
        """Outline one search-resolution component at full resolution; None if it is too small or too weak."""
        x, y, w, h = stats[:4].tolist()
        weak_levels, strong_levels = self._levels()
        cue = CUES[cue_index]
        scale = 1 << levels
        k = self._texture_kernel(levels)
        px_cm2 = (self.pixel_size_mm / 10.0) ** 2

        # Region of interest at search and at full resolution. A smooth region is seen through two
        # texture windows, so its component can fall a window short of the object's edge.
        full_h, full_w = image.shape[:2]
        small_h, small_w = labels.shape
        r = k - 1 if cue == "smooth" else 2
        sx0, sy0, sx1, sy1 = max(0, x - r), max(0, y - r), min(small_w, x + w + r), min(small_h, y + h + r)
        # The component's pixels all lie in its bounding box, so the wider window holds no others of its label.
        near_small = (labels[sy0:sy1, sx0:sx1] == label).view(np.uint8)
        near_small = cv2.dilate(near_small, _element(cv2.MORPH_ELLIPSE, 2 * r + 1))
        # Search pixel j is centred on full-resolution pixel scale * j (pyrDown keeps even pixels); the
        # upsampled blocks are placed to be centred there too, to half a pixel.
        shift = (scale - 1) // 2
        ux0, uy0 = scale * sx0 - shift, scale * sy0 - shift
        up_size = (scale * (sx1 - sx0), scale * (sy1 - sy0))
        X0, Y0 = max(0, ux0), max(0, uy0)
        X1, Y1 = min(full_w, ux0 + up_size[0]), min(full_h, uy0 + up_size[1])
        window = (slice(Y0 - uy0, Y1 - uy0), slice(X0 - ux0, X1 - ux0))
        near = cv2.resize(near_small, up_size, interpolation=cv2.INTER_NEAREST)[window]
        crop = image[Y0:Y1, X0:X1]
        # The edge of a step, however blurred, lies where the deviation is half the step's height.
        if cue == "smooth":
            z = cv2.resize(maps[2][sy0:sy1, sx0:sx1], up_size, interpolation=cv2.INTER_LINEAR)[window]
            above = z > 0.5 * contrast
        else:
            ycc = cv2.medianBlur(cv2.cvtColor(crop, cv2.COLOR_BGR2YCrCb), 3)
            threshold = max(weak_levels[cue_index], 0.5 * core_contrast)
            (mY, mCr, mCb), (sY, sCr, sCb) = model.median_ycc, model.sigma_ycc
            # 8-bit values put many pixels exactly on the threshold (half of a median that is itself one of
            # them); a small margin keeps them out however the float arithmetic rounds.
            if cue == "bright":
                above = ycc[:, :, 0] > mY + threshold * sY + 1e-3  # (Y - mY) / sY > threshold, in counts
            else:
                # Squared chroma z-scores from two 256-entry tables: no float image of the crop.
                z2 = cv2.LUT(ycc[:, :, 1], _squared_z_table(mCr, sCr))
                z2 += cv2.LUT(ycc[:, :, 2], _squared_z_table(mCb, sCb))
                above = z2 > threshold * threshold * (1.0 + 1e-5)
        mask = np.logical_and(above, near, out=above).view(np.uint8)
        # Close gaps left by texture on the object (wood grain, weave, the sheen on rubber); the
        # smooth cue is coarse (a texture window at full resolution), so its gaps are wider.
        closing = scale * k + 1 if cue == "smooth" else 3
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _element(cv2.MORPH_ELLIPSE, closing))
        if cue == "smooth":
            # A texture window on the edge sees the step from object to ore as texture, which moves
            # the half-contrast line about a pixel inwards.
            mask = cv2.dilate(mask, _element(cv2.MORPH_CROSS, 3)) & near
        area_px = int(cv2.countNonZero(mask))
        area_cm2 = area_px * px_cm2
        if area_px == 0 or area_cm2 < self.min_area_cm2:
            return None
        if cue != "smooth":
            # Contrast of the region as outlined, on the search-resolution map the levels refer to.
            inside_small = mask[scale * sy0 - Y0::scale, scale * sx0 - X0::scale].view(bool)  # 0 or 1
            inside = maps[cue_index][sy0:sy0 + inside_small.shape[0], sx0:sx0 + inside_small.shape[1]][inside_small]
            if inside.size:
                contrast = float(_median(inside))
        contrast_ratio = contrast / strong_levels[cue_index]
        if self._score(cue_index, contrast_ratio, area_cm2, 1.0, 1.0) < self.min_score:
            return None  # too weak even if perfectly sheet-like; spare the shape measurements

        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        hull = cv2.convexHull(np.concatenate(contours))
        # Contours run through pixel centres; half a pixel of perimeter restores the pixel-count scale.
        hull_px = cv2.contourArea(hull) + 0.5 * cv2.arcLength(hull, True) + 1.0
        (_, _), (rect_w, rect_h), _ = cv2.minAreaRect(hull)
        solidity = min(1.0, area_px / hull_px)
        rectangularity = min(1.0, area_px / ((rect_w + 1.0) * (rect_h + 1.0)))
        score = self._score(cue_index, contrast_ratio, area_cm2, solidity, rectangularity)
        if score < self.min_score:
            return None  # too weak even with a rim as bright as its inside; spare the rim measurement
        rim_ratio = 1.0 if cue == "smooth" else self._rim_ratio(ycc[:, :, 0], mask)
        score = self._score(cue_index, contrast_ratio, area_cm2, solidity, rectangularity, rim_ratio)
        if score < self.min_score:
            return None

        m = cv2.moments(mask, binaryImage=True)
        cx = X0 + m["m10"] / m["m00"] + 0.5
        cy = Y0 + m["m01"] / m["m00"] + 0.5
        bx, by, bw, bh = cv2.boundingRect(hull)
        lab = _bgr_to_lab(*(c / 255.0 for c in cv2.mean(crop, mask=mask)[:3]))
        m_per_px = self.pixel_size_mm / 1000.0
        return Detection(
            area_cm2=area_cm2, bbox_px=(X0 + bx, Y0 + by, bw, bh), centre_px=(cx, cy),
            across_m=cx * m_per_px, along_m_offset=(cy - full_h / 2.0) * m_per_px, score=score, cue=cue,
            contrast_sigma=contrast, lightness=float(lab[0]), chroma=float(math.hypot(lab[1], lab[2])),
            hue_deg=math.degrees(math.atan2(lab[2], lab[1])) % 360.0, texture_ratio=texture_ratio,
            solidity=solidity, rectangularity=rectangularity, rim_ratio=rim_ratio)

    def _score(self, cue_index: int, contrast_ratio: float, area_cm2: float, solidity: float,
               rectangularity: float, rim_ratio: float = 1.0) -> float:
        """Alarm score 0-1 of a region found by CUES[cue_index] (see _alarm_score); 0.5 is the suggested alarm
        level."""
        return float(_alarm_score(contrast_ratio, area_cm2, solidity, rectangularity, rim_ratio,
                                  colour=CUES[cue_index] == "colour"))

    def _rim_ratio(self, luma: np.ndarray, mask: np.ndarray) -> float:
        """Mean luma of the outline's rim (_RIM_MM wide) over that of its inside; 1 when it has no inside."""
        rim_px = max(1, int(round(_RIM_MM / self.pixel_size_mm)))
        inside = cv2.erode(mask, _element(cv2.MORPH_RECT, 2 * rim_px + 1), borderType=cv2.BORDER_CONSTANT,
                           borderValue=0)
        if not cv2.countNonZero(inside):
            return 1.0
        return cv2.mean(luma, mask=mask - inside)[0] / max(cv2.mean(luma, mask=inside)[0], 1.0)


def _alarm_score(contrast_ratio, area_cm2, solidity, rectangularity, rim_ratio=1.0, colour=False):
    """Alarm score 0-1 of one region (floats) or of many (arrays, elementwise).

    contrast_ratio is the region's median deviation over its cue's strong level. The evidence
    adds contrast, log size and shape: a strong level of contrast counts as much as a factor
    14 in area, and sheets are solid and rectangular where ore patches are ragged. Contrast
    alone cannot tell a small piece of wood from an oversize goethite lump, so size weighs in,
    and so does shading: a lump is lit like a dome and darkens towards its edge (rim_ratio, the
    luma of its rim over that of its inside, well under 1) where a flat sheet does not. Only a
    dark rim counts, so a region's score is at most that of the same region with rim_ratio 1.
    A region found by colour (`colour` true) and smaller than _LUMP_CM2 needs more evidence the
    smaller it is: the ore's own coloured mineral, yellow goethite, comes in lumps up to that size,
    while bright or smooth ore is not a mineral of its own.
    """
    shape = 0.5 * (solidity + rectangularity)
    area_cm2 = np.maximum(area_cm2, 1e-6)  # a degenerate region scores as a speck, not a division by zero
    evidence = (_SCORE_CONTRAST * (contrast_ratio - 1.0) + _SCORE_AREA * np.log(area_cm2 / _SCORE_AREA_CM2)
                + _SCORE_SHAPE * (shape - 0.75) + _SCORE_RIM * np.minimum(rim_ratio - _SCORE_RIM_FLAT, 0.0)
                - _SCORE_LUMP * np.asarray(colour) * np.maximum(np.log(_LUMP_CM2 / area_cm2), 0.0))
    return 1.0 / (1.0 + np.exp(np.minimum(50.0, -_SCORE_SLOPE * (evidence - _SCORE_LEVEL))))


# Weights of the alarm score's evidence (see _alarm_score), set on 250 simulated ore
# frames and 250 single-object frames whose seeds the tests do not use: the level sits 0.3 above
# the most object-like ore region seen (an oversize yellow goethite lump).
_SCORE_CONTRAST = 4.0
_SCORE_AREA = 1.5
_SCORE_AREA_CM2 = 4.0  # reference area of the size term, fixed so min_area_cm2 does not move scores
_SCORE_SHAPE = 3.0
# Rim darkening (see _alarm_score), set on 2,500 ore frames and 1,500 frames of one 3-12 cm object whose seeds
# the tests do not use. Between the 5th and 95th percentile, the rims of the ore regions that scored 0.3 or
# more (yellow goethite lumps, all of the colour cue) had 0.64-0.87 of their insides' luma (median 0.73),
# those of wood 0.80-0.96 (median 0.90), of textile 0.77-0.99, of paper 0.90-1.03 and of plastic 0.77-1.06.
_SCORE_RIM = 10.0
_SCORE_RIM_FLAT = 0.85
_RIM_MM = 5.0  # width of the rim measured inside an outline
# Colour regions below lump size (see _alarm_score), set on 10,000 ore frames and 3,500 frames of one 2-30 cm
# object whose seeds the tests do not use: 7 of the 8 ore regions at alarm level there were yellow lumps of
# 6-14 cm2 found by colour, and objects of 5 cm and more (25 cm2) lose nothing.
_SCORE_LUMP = 1.0
_LUMP_CM2 = 25.0
_SCORE_LEVEL = 4.35
_SCORE_SLOPE = 1.0


def _bgr_to_lab(b: float, g: float, r: float) -> tuple[float, float, float]:
    """CIE L*a*b* (D65, sRGB companding) of one BGR colour with channels 0-1, as cv2.COLOR_BGR2Lab gives for float
    images to within 0.6. In plain Python because OpenCV takes about 0.15 ms to convert a single new colour."""
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    def f(t: float) -> float:
        return t ** (1.0 / 3.0) if t > 0.008856 else 7.787 * t + 16.0 / 116.0

    lr, lg, lb = linear(r), linear(g), linear(b)
    x = (0.412453 * lr + 0.357580 * lg + 0.180423 * lb) / 0.950456
    y = 0.212671 * lr + 0.715160 * lg + 0.072169 * lb
    z = (0.019334 * lr + 0.119193 * lg + 0.950227 * lb) / 1.088754
    lightness = 116.0 * f(y) - 16.0 if y > 0.008856 else 903.3 * y
    return lightness, 500.0 * (f(x) - f(y)), 200.0 * (f(y) - f(z))


def _search_image(image: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """The frame `levels` octaves down, and the image one octave above that (the frame itself for one level).

    2x2 means go down to one octave above the search, then one Gaussian step: its 5x5 kernel is the
    anti-aliasing the deviation maps rely on, and the 2x2 means before it average about as much noise as
    Gaussian steps would, at a third of the cost on a full frame.
    """
    for _ in range(levels - 1):
        image = _halve(image)
    return cv2.pyrDown(image), image


def _halve(image: np.ndarray) -> np.ndarray:
    """2x2 means of an image (an odd last row or column dropped)."""
    h, w = image.shape[:2]
    return cv2.resize(image[:h - h % 2, :w - w % 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA)


_LEVELS = np.arange(256, dtype=np.float32)
_SQUARED_LEVELS = _LEVELS * _LEVELS


def _block_moments(finer: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean luma and mean squared luma (float32) of the 2x2 blocks of a BGR image, as arrays of `shape` (the
    pyrDown size: an odd last row or column repeats the one before)."""
    luma = cv2.cvtColor(finer, cv2.COLOR_BGR2GRAY)
    moments = [_halve(cv2.LUT(luma, _LEVELS)), _halve(cv2.LUT(luma, _SQUARED_LEVELS))]
    short_h, short_w = shape[0] - moments[0].shape[0], shape[1] - moments[0].shape[1]
    if short_h or short_w:
        moments = [cv2.copyMakeBorder(m, 0, short_h, 0, short_w, cv2.BORDER_REPLICATE) for m in moments]
    return moments[0], moments[1]


class CandidateRegions(NamedTuple):
    """Per candidate component of the search: its label, cue index, median deviation in that cue (its
    contrast), the median of its pixels above the cue's strong level (its core contrast, at least the
    contrast), the median of its pixels above the outline level (half the core contrast, at least the weak
    level) and its mean log texture residual."""

    label: np.ndarray
    cue: np.ndarray
    contrast: np.ndarray
    core_contrast: np.ndarray
    outline_contrast: np.ndarray
    mean_residual: np.ndarray


def _candidate_regions(labels: np.ndarray, weak: np.ndarray, strong: np.ndarray, maps: tuple[np.ndarray, ...],
                       residual: np.ndarray, areas: np.ndarray, min_px: float,
                       levels: tuple[tuple[float, float, float], tuple[float, float, float]]) -> CandidateRegions:
    """The components of `labels` (of the 0/1 or boolean mask `weak`) that reach the `strong` mask somewhere and
    have at least min_px pixels, measured all at once: sorting their pixels by component replaces a Python loop
    over hundreds of small ore patches. `levels` are the weak and the strong level of each cue.

    A region's cue is the map whose median over the region stands out most against its strong level. A weak
    outline can join an object to ore that deviates a little; the pixels above the strong level are the
    object's, and their median is its core contrast.
    """
    flat_labels = labels.ravel()
    reaches_strong = np.zeros(len(areas), dtype=bool)
    reaches_strong[flat_labels[np.flatnonzero(strong)]] = True
    reaches_strong[0] = False
    keep = reaches_strong & (areas >= min_px)
    ids = np.flatnonzero(keep)
    if ids.size == 0:
        empty = np.zeros(0, dtype=np.float32)
        return CandidateRegions(ids, ids, empty, empty, empty, empty)
    # A few percent of the search image is labelled; np.flatnonzero is quick on booleans only.
    labelled = np.flatnonzero(weak.view(bool))
    pixels = labelled[keep[flat_labels[labelled]]]
    region_of_label = np.zeros(len(areas), dtype=np.intp)
    region_of_label[ids] = np.arange(ids.size)
    region = region_of_label[flat_labels[pixels]]
    by_region = np.argsort(region, kind="stable")  # each region's pixels together, for _group_medians
    pixels, region = pixels[by_region], region[by_region]
    values = np.stack([m.ravel()[pixels] for m in maps])
    medians = _group_medians(values, region, ids.size).T
    weak_levels, strong_levels = (np.asarray(v, dtype=np.float32) for v in levels)
    cue = np.argmax(medians / strong_levels, axis=1)
    contrast = medians[np.arange(ids.size), cue]
    pixel_cue = cue[region]
    cue_values = np.choose(pixel_cue, values)
    above = cue_values > strong_levels[pixel_cue]
    core = _group_medians(cue_values[above], region[above], ids.size)
    core_contrast = np.where(np.isnan(core), contrast, np.fmax(contrast, core))
    outline_level = np.maximum(weak_levels[cue], 0.5 * core_contrast)
    inside = cue_values > outline_level[region]
    outlined = _group_medians(cue_values[inside], region[inside], ids.size)
    outline_contrast = np.where(np.isnan(outlined), contrast, outlined)
    mean_residual = (np.bincount(region, weights=residual.ravel()[pixels], minlength=ids.size)
                     / np.bincount(region, minlength=ids.size))
    return CandidateRegions(ids, cue, contrast, core_contrast, outline_contrast, mean_residual)


def _best_contrast(regions: CandidateRegions) -> np.ndarray:
    """The highest contrast each region's outline can show. A smooth region keeps its own. A bright or colour
    one is measured again on the search map over its full-resolution outline: on 2,600 simulated frames that
    came out at most the core contrast times 1.22 and the outline contrast times 1.18; the lower of core and
    1.25 times outline contrast, with the area's margin (_best_area_px), kept every region that scored."""
    return np.where(regions.cue == 2, regions.contrast,
                    np.minimum(regions.core_contrast, 1.25 * regions.outline_contrast))


def _best_area_px(regions: CandidateRegions, areas: np.ndarray) -> np.ndarray:
    """The largest full-resolution outline of each region, in search pixels: on those frames bright and colour
    outlines came out up to 1.2 times the component, smooth ones up to 3.5 times."""
    return np.where(regions.cue == 2, 4.0, 1.5) * areas[regions.label]


def _group_medians(values: np.ndarray, group: np.ndarray, n_groups: int, large: int = 256) -> np.ndarray:
    """Median along the last axis of values in each group 0..n_groups-1 (the upper one for an even count, as
    _median), NaN for an empty group; `group` is sorted. Groups of more than `large` values (the few objects'
    components) are partitioned one by one; the many small ones are sorted together as rows of one array padded
    with +inf."""
    counts = np.bincount(group, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    medians = np.full(values.shape[:-1] + (n_groups,), np.nan, dtype=values.dtype)
    for g in np.flatnonzero(counts > large):
        medians[..., g] = _median(values[..., starts[g]:starts[g] + counts[g]])
    small = np.flatnonzero((counts > 0) & (counts <= large))
    if small.size:
        in_small = counts[group] <= large
        values, group = values[..., in_small], group[in_small]
        counts = np.bincount(group, minlength=n_groups)
        starts = np.cumsum(counts) - counts
        rows = np.full(values.shape[:-1] + (n_groups, counts.max()), np.inf, dtype=values.dtype)
        rows[..., group, np.arange(len(group)) - starts[group]] = values
        rows.sort(axis=-1)
        medians[..., small] = rows[..., small, counts[small] // 2]
    return medians


def _expected_by_level(level: np.ndarray, value: np.ndarray) -> np.ndarray:
    """256-entry float32 table of the mean of value at each 8-bit level (bins of 4 levels; sparse bins
    interpolated from their neighbours)."""
    bins = level.astype(np.intp) >> 2
    counts = np.bincount(bins, minlength=64)
    sums = np.bincount(bins, weights=value, minlength=64)
    filled = counts >= 20
    if not filled.any():
        return np.full(256, float(np.mean(value)) if value.size else 0.0, dtype=np.float32)
    centres = np.arange(64) * 4 + 1.5
    table = np.interp(np.arange(256), centres[filled], sums[filled] / counts[filled])
    return table.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _element(shape: int, size: int) -> np.ndarray:
    """cv2.getStructuringElement(shape, (size, size)), made once per shape and size."""
    return cv2.getStructuringElement(shape, (size, size))


@functools.lru_cache(maxsize=16)
def _squared_z_table(median: float, sigma: float) -> np.ndarray:
    """256-entry float32 table of ((v - median) / sigma) ** 2 over 8-bit values v (made once per frame's ore)."""
    z = (np.arange(256, dtype=np.float32) - np.float32(median)) * np.float32(1.0 / sigma)
    return z * z


@functools.lru_cache(maxsize=16)
def _z_table(median: float, sigma: float) -> np.ndarray:
    """256-entry float32 table of (v - median) / sigma over 8-bit values v: one cv2.LUT makes a z-score map."""
    z = np.arange(256, dtype=np.float32)
    z -= median
    z *= 1.0 / sigma
    return z


def _median(values: np.ndarray) -> np.ndarray | float:
    """Median along the last axis (the upper one for an even count); np.median's overhead dominates
    for the small arrays of one region."""
    k = values.shape[-1] // 2
    return np.partition(values, k, axis=-1)[..., k]


def _hist_median_sigma(channel: np.ndarray, floor: float) -> tuple[float, float]:
    """Median and 1.4826 MAD (at least floor) of an 8-bit channel, from its histogram."""
    hist = cv2.calcHist([channel], [0], None, [256], [0, 256]).ravel()
    half = hist.sum() / 2.0
    median = int(np.searchsorted(np.cumsum(hist), half))
    # Folding the histogram about the median gives the histogram of absolute deviations.
    deviation_hist = np.bincount(np.abs(np.arange(256) - median), weights=hist, minlength=256)
    mad = int(np.searchsorted(np.cumsum(deviation_hist), half))
    return float(median), max(1.4826 * mad, floor)
