"""Benchmark: the camera's foreign-object detector (edge.camera.ObjectDetector, OpenCV) on 1280x1024 frames,
against the same algorithm written in plain NumPy, in the same run, on the same frames, on one core.

    python bench/vision.py [--frames 16] [--seconds 10] [--baseline-seconds 10] [--pixel-size-mm 1.25]
                           [--seed 11] [--profile]

Frames: simulated ore (edge.camera.render_scene) at --pixel-size-mm, half of them clean and half with one to
three foreign objects of 5-30 cm of random material and angle; each goes through JPEG (quality 85) and back,
because that is what the daemon hands the detector. Both paths run on the same decoded frames, in turn,
for about --seconds each (at least one pass over the frames). cv2.setNumThreads(1) and one BLAS thread make
it a one-core figure.

Baseline ("numpy"): NumpyDetector below, the detector's steps one by one without OpenCV: 2x2 means and one 2x
Gaussian pyramid step down to the search resolution (pixels of about 5 mm: a quarter of 1280x1024 at 1.25 mm),
BGR to YCrCb (OpenCV's fixed-point coefficients), 3x3 median (sorting network), histogram median and MAD,
box-filter texture (from 2x2 block moments of luma one octave above the search) and its expectation by
brightness, the three deviation maps (the smooth one standardised by its own median and MAD), weak and strong
thresholds, 3x3 closing, connected components, the candidate regions' medians, and per region the same
full-resolution outline, the luma of its rim against its inside, moments, convex hull, minimum-area rectangle
and score. Connected-component labelling uses scipy.ndimage.label: labelling in pure NumPy needs a union-find
loop in Python, which would measure the interpreter rather than the algorithm. The pure-NumPy parts of
edge.camera (_median, _expected_by_level, _candidate_regions with the bounds _best_contrast and _best_area_px,
_squared_z_table, the score _alarm_score, the colour conversion _bgr_to_lab) and the detector's choice of
pyramid levels and texture window are shared by both paths.

The run prints how far the two paths agree (detections matched by centre, their areas and scores).
The last line is:  frames_per_s=<N> speedup=<R>
where N is the OpenCV detector's frames/s (detection only, JPEG decoding excluded and printed separately) and R
is N over the NumPy baseline's frames/s.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
# bench/ holds edge.py: take bench/ off the path so `import edge` finds the edge package, not that script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from edge import camera  # noqa: E402

WIDTH_PX, HEIGHT_PX = 1280, 1024


# ------------------------------------------------------------------ NumPy building blocks


def pyr_down(image: np.ndarray) -> np.ndarray:
    """cv2.pyrDown: 5x5 binomial blur (1 4 6 4 1)/16 each way, reflect-101 border, every second pixel, rounded."""
    h, w = image.shape[:2]
    p = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="reflect").astype(np.uint16)
    oh, ow = (h + 1) // 2, (w + 1) // 2
    rows = (p[0:2 * oh:2] + p[4:4 + 2 * oh:2] + 4 * (p[1:1 + 2 * oh:2] + p[3:3 + 2 * oh:2])
            + 6 * p[2:2 + 2 * oh:2])
    rows = rows.astype(np.uint32)
    out = (rows[:, 0:2 * ow:2] + rows[:, 4:4 + 2 * ow:2] + 4 * (rows[:, 1:1 + 2 * ow:2] + rows[:, 3:3 + 2 * ow:2])
           + 6 * rows[:, 2:2 + 2 * ow:2])
    return ((out + 128) >> 8).astype(np.uint8)


def halve_by_means(image: np.ndarray) -> np.ndarray:
    """cv2.resize(INTER_AREA) to half size of an image cut to even size: rounded 2x2 means."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    p = image[:h, :w].astype(np.uint16)
    return ((p[0::2, 0::2] + p[0::2, 1::2] + p[1::2, 0::2] + p[1::2, 1::2] + 2) >> 2).astype(np.uint8)


def search_image(image: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """edge.camera._search_image: 2x2 means down to one octave above the search, then one Gaussian step; the
    search image and the one above it."""
    for _ in range(levels - 1):
        image = halve_by_means(image)
    return pyr_down(image), image


def block_moments(finer: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """edge.camera._block_moments: mean luma and mean squared luma of 2x2 blocks, padded to `shape`."""
    b, g, r = (finer[..., i].astype(np.int32) for i in range(3))
    luma = ((b * 1868 + g * 9617 + r * 4899 + (1 << 13)) >> 14).astype(np.float32)
    h, w = luma.shape[0] // 2 * 2, luma.shape[1] // 2 * 2
    out = []
    for x in (luma, luma * luma):
        x = x[:h, :w]
        m = (x[0::2, 0::2] + x[0::2, 1::2] + x[1::2, 0::2] + x[1::2, 1::2]) * np.float32(0.25)
        out.append(np.pad(m, ((0, shape[0] - m.shape[0]), (0, shape[1] - m.shape[1])), mode="edge"))
    return out[0], out[1]


def bgr_to_ycrcb(image: np.ndarray) -> np.ndarray:
    """cv2.COLOR_BGR2YCrCb for uint8, with OpenCV's 14-bit fixed-point coefficients."""
    b, g, r = (image[..., i].astype(np.int32) for i in range(3))
    half = 1 << 13
    y = (b * 1868 + g * 9617 + r * 4899 + half) >> 14
    cr = ((r - y) * 11682 + (128 << 14) + half) >> 14
    cb = ((b - y) * 9241 + (128 << 14) + half) >> 14
    return np.clip(np.stack([y, cr, cb], axis=-1), 0, 255).astype(np.uint8)


def median3(image: np.ndarray) -> np.ndarray:
    """cv2.medianBlur(image, 3): median of each 3x3 neighbourhood (replicated border), per channel,
    by the 19-exchange sorting network of Paeth / Devillard."""
    h, w = image.shape[:2]
    p = np.pad(image, ((1, 1), (1, 1)) + ((0, 0),) * (image.ndim - 2), mode="edge")
    v = [p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]

    def sort2(i: int, j: int) -> None:
        lo = np.minimum(v[i], v[j])
        v[j] = np.maximum(v[i], v[j])
        v[i] = lo

    for i, j in ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
                 (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2)):
        sort2(i, j)
    return v[4]


def hist_median_sigma(channel: np.ndarray, floor: float) -> tuple[float, float]:
    """Median and 1.4826 MAD (at least floor) of an 8-bit channel, from its histogram."""
    hist = np.bincount(channel.ravel(), minlength=256).astype(np.float64)
    half = hist.sum() / 2.0
    median = int(np.searchsorted(np.cumsum(hist), half))
    deviation_hist = np.bincount(np.abs(np.arange(256) - median), weights=hist, minlength=256)
    mad = int(np.searchsorted(np.cumsum(deviation_hist), half))
    return float(median), max(1.4826 * mad, floor)


def box_mean(x: np.ndarray, k: int) -> np.ndarray:
    """cv2.blur(x, (k, k)): mean over a k x k window, reflect-101 border (k odd), float32."""
    r = k // 2
    p = np.pad(x, r, mode="reflect")
    h, w = x.shape
    rows = p[0:h].copy()
    for dy in range(1, k):
        rows += p[dy:dy + h]
    out = rows[:, 0:w].copy()
    for dx in range(1, k):
        out += rows[:, dx:dx + w]
    out *= np.float32(1.0 / (k * k))
    return out


def ellipse_element(size: int) -> np.ndarray:
    """cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)) for odd size."""
    r = c = size // 2
    element = np.zeros((size, size), dtype=bool)
    inv_r2 = 1.0 / (r * r) if r else 0.0
    for i in range(size):
        dy = i - r
        if abs(dy) <= r:
            dx = int(round(c * math.sqrt((r * r - dy * dy) * inv_r2)))
            element[i, max(c - dx, 0):min(c + dx + 1, size)] = True
    return element


CROSS3 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
SQUARE3 = np.ones((3, 3), dtype=bool)


def dilate(mask: np.ndarray, element: np.ndarray) -> np.ndarray:
    """Binary dilation by a centred structuring element; outside the image counts as background."""
    r = element.shape[0] // 2
    p = np.pad(mask, r, constant_values=False)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy, dx in zip(*np.nonzero(element)):
        out |= p[dy:dy + h, dx:dx + w]
    return out


def erode(mask: np.ndarray, element: np.ndarray, outside: bool = True) -> np.ndarray:
    """Binary erosion; outside the image counts as foreground (OpenCV's default border for erosion) unless
    `outside` is False."""
    r = element.shape[0] // 2
    p = np.pad(mask, r, constant_values=outside)
    h, w = mask.shape
    out = np.ones_like(mask)
    for dy, dx in zip(*np.nonzero(element)):
        out &= p[dy:dy + h, dx:dx + w]
    return out


def close(mask: np.ndarray, element: np.ndarray) -> np.ndarray:
    return erode(dilate(mask, element), element)


def upsample_linear(x: np.ndarray, factor: int) -> np.ndarray:
    """cv2.resize by an integer factor, INTER_LINEAR (pixel centres aligned, edges replicated)."""
    def along(a: np.ndarray, axis: int) -> np.ndarray:
        n = a.shape[axis]
        pos = (np.arange(n * factor) + 0.5) / factor - 0.5
        lo = np.floor(pos).astype(np.intp)
        shape = [1] * a.ndim
        shape[axis] = -1
        w = (pos - lo).astype(np.float32).reshape(shape)
        a0 = np.take(a, np.clip(lo, 0, n - 1), axis=axis)
        a1 = np.take(a, np.clip(lo + 1, 0, n - 1), axis=axis)
        return a0 * (1 - w) + a1 * w
    return along(along(x, 0), 1)


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise, no repeated end point) of integer points (n, 2) by the monotone chain."""
    pts = np.unique(points, axis=0)
    if len(pts) <= 2:
        return pts.astype(np.float64)

    def half(seq) -> list:
        out: list = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    seq = [tuple(p) for p in pts.tolist()]
    lower, upper = half(seq), half(reversed(seq))
    return np.array(lower[:-1] + upper[:-1], dtype=np.float64)


def min_area_rect_size(hull: np.ndarray) -> tuple[float, float]:
    """Width and height of the smallest rectangle around a convex polygon: one of its sides lies on a hull edge."""
    if len(hull) == 1:
        return 0.0, 0.0
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 0
    u = edges[keep] / lengths[keep, None]  # (m, 2) edge directions
    along = hull @ u.T  # (n, m)
    across = hull @ np.stack([-u[:, 1], u[:, 0]], axis=1).T
    w = along.max(axis=0) - along.min(axis=0)
    h = across.max(axis=0) - across.min(axis=0)
    i = int(np.argmin(w * h))
    return float(w[i]), float(h[i])


# ------------------------------------------------------------------ the detector in NumPy


class NumpyDetector:
    """edge.camera.ObjectDetector's algorithm, step for step, without OpenCV (parameters taken from `reference`)."""

    def __init__(self, reference: camera.ObjectDetector):
        self.ref = reference
        self.pixel_size_mm = reference.pixel_size_mm
        self.min_area_cm2 = reference.min_area_cm2
        self.max_detections = reference.max_detections
        self.min_score = reference.min_score

    def detect(self, image: np.ndarray) -> list[camera.Detection]:
        ref = self.ref
        levels = ref._search_levels_for(image.shape)
        small, finer = search_image(image, levels)
        maps, residual, model = self._deviation_maps(small, finer, ref._texture_kernel(levels))
        weak_levels, strong_levels = ref._levels()
        weak = (maps[0] > weak_levels[0]) | (maps[1] > weak_levels[1]) | (maps[2] > weak_levels[2])
        strong = (maps[0] > strong_levels[0]) | (maps[1] > strong_levels[1]) | (maps[2] > strong_levels[2])
        weak = close(weak, SQUARE3)
        labels, n = ndimage.label(weak, structure=SQUARE3)
        if n == 0:
            return []
        # The statistics cv2.connectedComponentsWithStats gives: x, y, width, height, area per label.
        stats = np.zeros((n + 1, 5), dtype=np.int64)
        for i, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
            stats[i, :4] = xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start
        stats[:, 4] = np.bincount(labels.ravel(), minlength=n + 1)
        scale = 1 << levels
        px_cm2 = (self.pixel_size_mm / 10.0) ** 2
        min_small_px = 0.6 * self.min_area_cm2 / (scale * scale * px_cm2)
        areas = stats[:, 4]
        regions = camera._candidate_regions(labels, weak, strong, maps, residual, areas, min_small_px,
                                            (weak_levels, strong_levels))
        best_score = camera._alarm_score(camera._best_contrast(regions) / np.asarray(strong_levels)[regions.cue],
                                         np.maximum(camera._best_area_px(regions, areas) * (scale * scale * px_cm2),
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

    def _deviation_maps(self, small: np.ndarray, finer: np.ndarray, k: int):
        ycc = bgr_to_ycrcb(small)
        filtered = median3(ycc)
        luma, cr, cb = filtered[..., 0], filtered[..., 1], filtered[..., 2]
        mY, sY = hist_median_sigma(luma, 2.0)
        mCr, sCr = hist_median_sigma(cr, 1.5)
        mCb, sCb = hist_median_sigma(cb, 1.5)

        mean_block, square_block = block_moments(finer, small.shape[:2])
        mean = box_mean(mean_block, k)
        var = box_mean(square_block, k) - mean * mean
        log_tex = box_mean(np.log(np.maximum(var, np.float32(0.25))), k) * np.float32(0.5)
        level = np.clip(np.rint(np.abs(box_mean(mean, k))), 0, 255).astype(np.uint8)
        expected = camera._expected_by_level(level[::2, ::2].ravel(), log_tex[::2, ::2].ravel())
        residual = log_tex - expected[level]
        sample = residual[::4, ::4].ravel()
        centre = float(camera._median(sample))
        sig_log = max(1.4826 * float(camera._median(np.abs(sample - centre))), 0.05)

        z_bright = (luma.astype(np.float32) - np.float32(mY)) * np.float32(1.0 / sY)
        z_cr = (cr.astype(np.float32) - np.float32(mCr)) * np.float32(1.0 / sCr)
        z_cb = (cb.astype(np.float32) - np.float32(mCb)) * np.float32(1.0 / sCb)
        z_colour = np.sqrt(z_cr * z_cr + z_cb * z_cb)
        to_grey = np.array([(128.0 - mCr) / sCr, (128.0 - mCb) / sCb])
        norm = float(np.hypot(*to_grey))
        z_smooth = (np.float32(centre) - residual) * np.float32(1.0 / (sig_log * math.sqrt(2.0)))
        if norm > 1.0:
            weight = 1.0 / (norm * math.sqrt(2.0))
            toward = z_cr * np.float32(to_grey[0] * weight) + z_cb * np.float32(to_grey[1] * weight)
            np.clip(toward, 0.0, norm / math.sqrt(2.0), out=toward)
            z_smooth += box_mean(toward, 3)
        sample = z_smooth[::4, ::4].ravel()
        smooth_centre = float(camera._median(sample))
        smooth_sigma = max(1.4826 * float(camera._median(np.abs(sample - smooth_centre))), 0.05)
        z_smooth = (z_smooth - np.float32(smooth_centre)) * np.float32(1.0 / smooth_sigma)
        model = camera.OreModel((mY, mCr, mCb), (sY, sCr, sCb), sig_log)
        return (z_bright, z_colour, z_smooth), residual, model

    def _describe(self, image, maps, labels, stats, label, cue_index, contrast, core_contrast, texture_ratio,
                  model, levels) -> camera.Detection | None:
        ref = self.ref
        x, y, w, h = (int(v) for v in stats[:4])
        weak_levels, strong_levels = ref._levels()
        cue = camera.CUES[cue_index]
        scale = 1 << levels
        k = ref._texture_kernel(levels)
        px_cm2 = (self.pixel_size_mm / 10.0) ** 2

        full_h, full_w = image.shape[:2]
        small_h, small_w = labels.shape
        r = k - 1 if cue == "smooth" else 2
        sx0, sy0, sx1, sy1 = max(0, x - r), max(0, y - r), min(small_w, x + w + r), min(small_h, y + h + r)
        near_small = np.zeros((sy1 - sy0, sx1 - sx0), dtype=bool)
        near_small[y - sy0:y - sy0 + h, x - sx0:x - sx0 + w] = labels[y:y + h, x:x + w] == label
        near_small = dilate(near_small, ellipse_element(2 * r + 1))
        shift = (scale - 1) // 2
        ux0, uy0 = scale * sx0 - shift, scale * sy0 - shift
        X0, Y0 = max(0, ux0), max(0, uy0)
        X1, Y1 = min(full_w, ux0 + scale * (sx1 - sx0)), min(full_h, uy0 + scale * (sy1 - sy0))
        window = (slice(Y0 - uy0, Y1 - uy0), slice(X0 - ux0, X1 - ux0))
        near = near_small.repeat(scale, axis=0).repeat(scale, axis=1)[window]
        crop = image[Y0:Y1, X0:X1]
        if cue == "smooth":
            z = upsample_linear(maps[2][sy0:sy1, sx0:sx1], scale)[window]
            above = z > 0.5 * contrast
        else:
            ycc = median3(bgr_to_ycrcb(crop))
            threshold = max(weak_levels[cue_index], 0.5 * core_contrast)
            (mY, mCr, mCb), (sY, sCr, sCb) = model.median_ycc, model.sigma_ycc
            if cue == "bright":
                above = ycc[..., 0] > mY + threshold * sY + 1e-3
            else:
                z2 = camera._squared_z_table(mCr, sCr)[ycc[..., 1]] + camera._squared_z_table(mCb, sCb)[ycc[..., 2]]
                above = z2 > threshold * threshold * (1.0 + 1e-5)
        mask = above & near
        closing = scale * k + 1 if cue == "smooth" else 3
        mask = close(mask, ellipse_element(closing))
        if cue == "smooth":
            mask = dilate(mask, CROSS3) & near
        area_px = int(np.count_nonzero(mask))
        area_cm2 = area_px * px_cm2
        if area_px == 0 or area_cm2 < self.min_area_cm2:
            return None
        if cue != "smooth":
            inside_small = mask[scale * sy0 - Y0::scale, scale * sx0 - X0::scale]
            region = maps[cue_index][sy0:sy0 + inside_small.shape[0], sx0:sx0 + inside_small.shape[1]]
            if np.any(inside_small):
                contrast = float(camera._median(region[inside_small]))
        contrast_ratio = contrast / strong_levels[cue_index]
        if ref._score(cue_index, contrast_ratio, area_cm2, 1.0, 1.0) < self.min_score:
            return None

        # The hull of the outline is the hull of each row's first and last pixel centres.
        rows = np.flatnonzero(mask.any(axis=1))
        first = mask[rows].argmax(axis=1)
        last = mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)
        extremes = np.concatenate([np.stack([first, rows], axis=1), np.stack([last, rows], axis=1)])
        hull = convex_hull(extremes)
        if len(hull) >= 3:
            closed = np.vstack([hull, hull[:1]])
            hull_area = 0.5 * abs(float(np.sum(closed[:-1, 0] * closed[1:, 1] - closed[1:, 0] * closed[:-1, 1])))
            perimeter = float(np.sum(np.hypot(*np.diff(closed, axis=0).T)))
        else:
            hull_area = 0.0
            perimeter = 2.0 * float(np.hypot(*(hull[-1] - hull[0]))) if len(hull) == 2 else 0.0
        hull_px = hull_area + 0.5 * perimeter + 1.0
        rect_w, rect_h = min_area_rect_size(hull)
        solidity = min(1.0, area_px / hull_px)
        rectangularity = min(1.0, area_px / ((rect_w + 1.0) * (rect_h + 1.0)))
        score = ref._score(cue_index, contrast_ratio, area_cm2, solidity, rectangularity)
        if score < self.min_score:
            return None
        rim_ratio = 1.0
        if cue != "smooth":
            # edge.camera.ObjectDetector._rim_ratio: the outline less its erosion by a square _RIM_MM wide.
            rim_px = max(1, int(round(camera._RIM_MM / self.pixel_size_mm)))
            inside = erode(mask, np.ones((2 * rim_px + 1, 2 * rim_px + 1), dtype=bool), outside=False)
            if inside.any():
                luma = ycc[..., 0]
                rim_ratio = float(luma[mask & ~inside].mean()) / max(float(luma[inside].mean()), 1.0)
        score = ref._score(cue_index, contrast_ratio, area_cm2, solidity, rectangularity, rim_ratio)
        if score < self.min_score:
            return None

        ys, xs = np.nonzero(mask)
        cx = X0 + xs.mean() + 0.5
        cy = Y0 + ys.mean() + 0.5
        bx, by = int(xs.min()), int(ys.min())
        bw, bh = int(xs.max()) - bx + 1, int(ys.max()) - by + 1
        mean_bgr = crop[mask].mean(axis=0) / 255.0
        lightness, a, b = camera._bgr_to_lab(*map(float, mean_bgr))
        m_per_px = self.pixel_size_mm / 1000.0
        return camera.Detection(
            area_cm2=area_cm2, bbox_px=(X0 + bx, Y0 + by, bw, bh), centre_px=(cx, cy),
            across_m=cx * m_per_px, along_m_offset=(cy - full_h / 2.0) * m_per_px, score=score, cue=cue,
            contrast_sigma=contrast, lightness=lightness, chroma=math.hypot(a, b),
            hue_deg=math.degrees(math.atan2(b, a)) % 360.0, texture_ratio=texture_ratio,
            solidity=solidity, rectangularity=rectangularity, rim_ratio=rim_ratio)


# ------------------------------------------------------------------ the run


def make_frames(n: int, pixel_size_mm: float, seed: int) -> tuple[list[np.ndarray], list[bytes], int]:
    """Decoded JPEG frames (half clean ore, half with 1-3 objects), their JPEG bytes and the object count."""
    rng = np.random.default_rng(seed)
    width_m, height_m = WIDTH_PX * pixel_size_mm / 1000.0, HEIGHT_PX * pixel_size_mm / 1000.0
    frames, jpegs, n_objects = [], [], 0
    for i in range(n):
        objects = []
        if i % 2:
            for _ in range(int(rng.integers(1, 4))):
                width, length = rng.uniform(0.05, 0.30, size=2)
                objects.append(camera.SceneObject(
                    str(rng.choice(camera.MATERIALS)), centre_x_m=float(rng.uniform(0.2, width_m - 0.2)),
                    centre_y_m=float(rng.uniform(0.2, height_m - 0.2)), width_m=float(width), length_m=float(length),
                    angle_deg=float(rng.uniform(0, 180))))
        n_objects += len(objects)
        jpeg = camera.encode_jpeg(camera.render_frame(WIDTH_PX, HEIGHT_PX, pixel_size_mm, objects, rng), 85)
        jpegs.append(jpeg)
        frames.append(camera.decode_jpeg(jpeg))
    return frames, jpegs, n_objects


def time_path(detect, frames: list[np.ndarray], seconds: float) -> tuple[float, int, list[list]]:
    """Frames per second of `detect` over the frames, repeated for about `seconds` (at least one pass)."""
    detect(frames[0])  # warm up
    done = 0
    outputs: list[list] = []
    start = time.perf_counter()
    while True:
        for frame in frames:
            result = detect(frame)
            if done < len(frames):
                outputs.append(result)
            done += 1
        if time.perf_counter() - start >= seconds:
            break
    return done / (time.perf_counter() - start), done, outputs


def compare(reference: list[list], other: list[list], max_distance_px: float = 12.0) -> str:
    """How far two paths' detections agree, matched by centre within max_distance_px on each frame."""
    n_ref = sum(len(d) for d in reference)
    n_other = sum(len(d) for d in other)
    matched, area_diff, score_diff, alarm_disagree = 0, [], [], 0
    for ref_dets, other_dets in zip(reference, other):
        free = list(other_dets)
        for d in ref_dets:
            if not free:
                break
            dist = [math.dist(d.centre_px, o.centre_px) for o in free]
            j = int(np.argmin(dist))
            if dist[j] <= max_distance_px:
                o = free.pop(j)
                matched += 1
                area_diff.append(abs(o.area_cm2 - d.area_cm2) / d.area_cm2)
                score_diff.append(abs(o.score - d.score))
                alarm_disagree += (o.score >= 0.5) != (d.score >= 0.5)
    alarms_ref = sum(d.score >= 0.5 for dets in reference for d in dets)
    alarms_other = sum(d.score >= 0.5 for dets in other for d in dets)
    text = (f"OpenCV {n_ref} detections ({alarms_ref} at score >= 0.5), NumPy {n_other} ({alarms_other}); "
            f"{matched} matched by centre")
    if matched:
        text += (f": area differs by median {100 * np.median(area_diff):.1f} % (max {100 * max(area_diff):.1f} %), "
                 f"score by median {np.median(score_diff):.3f} (max {max(score_diff):.3f}); "
                 f"{alarm_disagree} disagree on the 0.5 alarm")
    return text


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16, help="distinct simulated frames")
    p.add_argument("--seconds", type=float, default=10.0, help="timing of the OpenCV detector (s)")
    p.add_argument("--baseline-seconds", type=float, default=10.0, help="timing of the NumPy baseline (s)")
    p.add_argument("--pixel-size-mm", type=float, default=1.25, help="pixel size on the belt (mm)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--profile", action="store_true", help="print where the OpenCV detector's time goes (cProfile)")
    args = p.parse_args(argv)
    if args.frames < 1:
        p.error("--frames must be >= 1")

    import cv2
    cv2.setNumThreads(1)

    t0 = time.perf_counter()
    frames, jpegs, n_objects = make_frames(args.frames, args.pixel_size_mm, args.seed)
    print(f"{len(frames)} frames of {WIDTH_PX}x{HEIGHT_PX} px at {args.pixel_size_mm} mm/px "
          f"({WIDTH_PX * args.pixel_size_mm / 1000:.2f} x {HEIGHT_PX * args.pixel_size_mm / 1000:.2f} m), "
          f"{n_objects} objects in {len(frames) // 2} of them; rendered in {time.perf_counter() - t0:.1f} s; "
          f"OpenCV {cv2.__version__} on {cv2.getNumThreads()} thread")

    decode_start = time.perf_counter()
    for jpeg in jpegs:
        camera.decode_jpeg(jpeg)
    decode_ms = 1e3 * (time.perf_counter() - decode_start) / len(jpegs)

    detector = camera.ObjectDetector(args.pixel_size_mm)
    baseline = NumpyDetector(detector)
    fps, n_cv, cv_out = time_path(detector.detect, frames, args.seconds)
    print(f"opencv (edge.camera.ObjectDetector): {n_cv} frames, {fps:,.1f} frames/s = {1e3 / fps:.1f} ms/frame; "
          f"JPEG decoding adds {decode_ms:.1f} ms/frame in the daemon "
          f"({1e3 / (1e3 / fps + decode_ms):,.1f} frames/s decode + detect)")
    base_fps, n_np, np_out = time_path(baseline.detect, frames, args.baseline_seconds)
    print(f"numpy baseline (NumpyDetector, scipy.ndimage.label): {n_np} frames, {base_fps:,.2f} frames/s = "
          f"{1e3 / base_fps:.0f} ms/frame")
    print("agreement: " + compare(cv_out, np_out))

    if args.profile:
        import cProfile
        import pstats
        profiler = cProfile.Profile()
        profiler.enable()
        for frame in frames:
            detector.detect(frame)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)

    print(f"frames_per_s={fps:.1f} speedup={fps / base_fps:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
