"""Camera simulator, JPEG helpers and the foreign-object detector, checked against rendered truth.

What the detector achieves, measured on 30 frames per case with seeds 1000-1029, which these tests
do not use (object fully visible; found = score >= 0.5 at the object, area within 30% unless noted),
and the size from which every object was found:
  plastic  from 3x3 cm   (3x3: 30/30)
  paper    from 4x4 cm   (3x3: 27/30)
  wood     from 10x15 cm (3x3: 11/30, 4x4: 21/30, 5x6: 29/30, 6x8: 29/30)
  textile  from 6x8 cm   (3x3: 24/30, 4x4: 26/30, 5x6: 28/30)
  rubber   from 10x15 cm (6x8: 25/30 two more over 30%, 5x6: 9/30 two more over, 4x4: none)
Black, smooth rubber on dark ore is the camera's hard case; small pieces are left to NIR.
Against issue 4's goal (bench/camera_rates.py: one object 5-30 cm a side, up to 10% of it under
ore, on fresh seeds) objects of 5 cm and more were found in 995 and 997 of 1,000 frames in two runs
(rubber 197/200 in each), with 3 and 5 false objects in 5,000 frames of clean ore.
The tests hold each material to the sizes found every time, and to a floor below the
measured rate at the sizes found only mostly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.camera import (
    MATERIALS,
    ObjectDetector,
    SceneObject,
    SimulatedCamera,
    _alarm_score,
    _group_medians,
    decode_jpeg,
    encode_jpeg,
    frame_exposure,
    render_frame,
    render_scene,
)

PIXEL_SIZE_MM = 2.5
ALARM_SCORE = 0.5
AREA_TOLERANCE = 0.30
CENTRE_TOLERANCE_M = 0.02

# (material, width_m, length_m) found every time: the smallest such size of each material and larger.
DETECTABLE = [
    *[("plastic", w, l) for w, l in ((0.04, 0.04), (0.06, 0.08), (0.20, 0.30))],
    *[("paper", w, l) for w, l in ((0.05, 0.06), (0.20, 0.30))],
    *[("wood", w, l) for w, l in ((0.10, 0.15), (0.03, 0.30), (0.20, 0.30))],
    *[("textile", w, l) for w, l in ((0.10, 0.15), (0.20, 0.30))],
    *[("rubber", w, l) for w, l in ((0.10, 0.15), (0.20, 0.30))],
]
SEEDS_PER_SIZE = 4

# (material, width_m, length_m, measured rate, floor of 12): sizes found most of the time. The
# rates count a find only with its area within 30%; each floor is about two below the count
# the rate predicts for 12 frames.
MOSTLY_DETECTABLE = [
    ("paper", 0.03, 0.03, "27/30", 9),
    ("wood", 0.04, 0.04, "20/30", 6),
    ("wood", 0.05, 0.06, "29/30", 10),
    ("wood", 0.06, 0.08, "29/30", 10),
    ("textile", 0.04, 0.04, "26/30", 8),
    ("textile", 0.05, 0.06, "28/30", 9),
    ("rubber", 0.06, 0.08, "25/30", 8),
]


@pytest.fixture(scope="module")
def detector() -> ObjectDetector:
    return ObjectDetector(PIXEL_SIZE_MM)


def one_object_frame(material: str, width_m: float, length_m: float, seed: int, occlusion: float = 0.0):
    """A frame with one object at a random place and angle; its image, the object and what is visible."""
    rng = np.random.default_rng(seed)
    camera = SimulatedCamera(pixel_size_mm=PIXEL_SIZE_MM, rng=rng, occlusion=occlusion)
    field_w, field_h = camera.field_of_view_m
    margin = max(width_m, length_m) / 2 + 0.03
    obj = SceneObject(material, rng.uniform(margin, field_w - margin), rng.uniform(margin, field_h - margin),
                      width_m, length_m, rng.uniform(0.0, 180.0))
    jpeg, truth = camera.frame([obj])
    return decode_jpeg(jpeg), obj, truth[0]


def alarm_near(detections, across_m: float, along_m_offset: float, radius_m: float):
    """The largest detection at alarm level whose centre is within radius_m of the given point."""
    near = [d for d in detections if d.score >= ALARM_SCORE
            and math.hypot(d.across_m - across_m, d.along_m_offset - along_m_offset) <= radius_m]
    return max(near, key=lambda d: d.area_cm2, default=None)


# ---------------------------------------------------------------- detection against truth


@pytest.mark.parametrize("material,width_m,length_m", DETECTABLE,
                         ids=[f"{m}-{w * 100:.0f}x{l * 100:.0f}cm" for m, w, l in DETECTABLE])
def test_object_is_found_with_its_area_and_position(detector, material, width_m, length_m):
    for seed in range(SEEDS_PER_SIZE):
        image, obj, truth = one_object_frame(material, width_m, length_m, seed)
        field_h_m = image.shape[0] * PIXEL_SIZE_MM / 1000.0
        # Position from the scene itself: across from the left edge, along from the centre row,
        # positive down the image (the direction of travel).
        across_m, along_m_offset = obj.centre_x_m, obj.centre_y_m - field_h_m / 2
        found = alarm_near(detector.detect(image), across_m, along_m_offset, max(width_m, length_m) / 2)
        assert found is not None, f"{material} {obj.area_cm2:.0f} cm2, seed {seed}: not found at alarm level"
        assert found.area_cm2 == pytest.approx(truth.visible_area_cm2, rel=AREA_TOLERANCE), f"seed {seed}"
        assert math.hypot(found.across_m - across_m, found.along_m_offset - along_m_offset) < CENTRE_TOLERANCE_M
        px_per_m = 1000.0 / PIXEL_SIZE_MM
        assert found.centre_px == pytest.approx((across_m * px_per_m, (along_m_offset + field_h_m / 2) * px_per_m),
                                                abs=CENTRE_TOLERANCE_M * px_per_m)


@pytest.mark.parametrize("material,width_m,length_m,measured,floor", MOSTLY_DETECTABLE,
                         ids=[f"{m}-{w * 100:.0f}x{l * 100:.0f}cm" for m, w, l, _, _ in MOSTLY_DETECTABLE])
def test_small_objects_are_found_at_the_measured_rate(detector, material, width_m, length_m, measured, floor):
    found = 0
    for seed in range(12):
        image, _, truth = one_object_frame(material, width_m, length_m, 200 + seed)
        best = alarm_near(detector.detect(image), truth.across_m, truth.along_m_offset, max(width_m, length_m) / 2)
        found += best is not None and abs(best.area_cm2 / truth.visible_area_cm2 - 1) <= AREA_TOLERANCE
    assert found >= floor, f"{material}: {found}/12 found; measured {measured} on other seeds"


@pytest.mark.parametrize("material", MATERIALS)
def test_partly_buried_object_is_found_and_measured_between_its_visible_and_whole_area(detector, material):
    for seed in range(3):
        image, obj, truth = one_object_frame(material, 0.15, 0.20, 100 + seed, occlusion=0.3)
        found = alarm_near(detector.detect(image), truth.across_m, truth.along_m_offset, 0.08)
        assert found is not None, f"{material}, seed {seed}"
        assert truth.visible_area_cm2 * (1 - AREA_TOLERANCE) <= found.area_cm2
        assert found.area_cm2 <= obj.area_cm2 * (1 + AREA_TOLERANCE)


def test_several_objects_in_one_frame_are_each_found(detector):
    objects = [SceneObject("plastic", 0.30, 0.30, 0.10, 0.15, 10.0),
               SceneObject("paper", 1.20, 0.30, 0.08, 0.08, 45.0),
               SceneObject("wood", 0.50, 0.90, 0.05, 0.40, 100.0),
               SceneObject("textile", 1.30, 0.90, 0.20, 0.15, 0.0),
               SceneObject("rubber", 0.85, 0.60, 0.20, 0.30, 20.0)]
    jpeg, truths = SimulatedCamera(rng=np.random.default_rng(7), occlusion=0.0).frame(objects)
    detections = detector.detect(decode_jpeg(jpeg))
    for truth in truths:
        found = alarm_near(detections, truth.across_m, truth.along_m_offset, 0.05)
        assert found is not None, truth.object.material
        assert found.area_cm2 == pytest.approx(truth.visible_area_cm2, rel=AREA_TOLERANCE)
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)


@pytest.mark.parametrize("material", ["wood", "rubber"])
def test_fine_frames_are_searched_at_quarter_resolution_and_outlined_at_full(material):
    # 1280x1024 at 1.25 mm (the bench's frames): the search runs on 5 mm pixels, two octaves down.
    detector = ObjectDetector(1.25)
    assert detector.search_levels == 2 and ObjectDetector(PIXEL_SIZE_MM).search_levels == 1
    for seed in range(21, 24):
        obj = SceneObject(material, 0.7, 0.6, 0.10, 0.15, 25.0)
        camera = SimulatedCamera(1280, 1024, 1.25, rng=np.random.default_rng(seed), occlusion=0.0)
        jpeg, (truth,) = camera.frame([obj])
        found = alarm_near(detector.detect(decode_jpeg(jpeg)), truth.across_m, truth.along_m_offset, 0.05)
        assert found is not None, f"seed {seed}"
        assert found.area_cm2 == pytest.approx(truth.visible_area_cm2, rel=AREA_TOLERANCE), f"seed {seed}"
        assert math.hypot(found.across_m - truth.across_m,
                          found.along_m_offset - truth.along_m_offset) < CENTRE_TOLERANCE_M, f"seed {seed}"


def test_candidate_medians_are_each_components_median():
    # The candidate stage takes the medians of all components at once (small ones sorted together, large ones
    # partitioned one by one); each must be the upper median of its own values, as _median gives.
    rng = np.random.default_rng(3)
    values = rng.normal(0.0, 5.0, 4000).astype(np.float32)
    values[rng.random(4000) < 0.3] = 2.0  # ties, as 8-bit data gives
    group = rng.integers(0, 40, 4000)
    group[:1500] = 7  # one object-sized component among small ore patches
    group[group == 12] = 13  # and an empty one
    group.sort()
    medians = _group_medians(values, group, 41)
    for g in range(41):
        own = np.sort(values[group == g])
        assert medians[g] == own[len(own) // 2] if len(own) else np.isnan(medians[g]), g


@pytest.mark.parametrize("gain", [0.6, 1.5])
def test_detection_follows_exposure_because_the_ore_is_modelled_per_frame(detector, gain):
    image, _, truth = one_object_frame("wood", 0.08, 0.12, 3)
    scaled = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    found = alarm_near(detector.detect(scaled), truth.across_m, truth.along_m_offset, 0.05)
    assert found is not None
    assert found.area_cm2 == pytest.approx(truth.visible_area_cm2, rel=AREA_TOLERANCE)


def test_detection_reports_colour_and_shape_features(detector):
    image, _, truth = one_object_frame("plastic", 0.10, 0.15, 1)
    found = alarm_near(detector.detect(image), truth.across_m, truth.along_m_offset, 0.05)
    assert found.cue in ("bright", "colour")
    assert found.solidity > 0.9 and found.rectangularity > 0.8  # a flat sheet
    assert 0 <= found.lightness <= 100 and found.chroma >= 0 and 0 <= found.hue_deg < 360
    x, y, w, h = found.bbox_px
    assert x <= found.centre_px[0] <= x + w and y <= found.centre_px[1] <= y + h


# ---------------------------------------------------------------- false alarms on plain ore


def test_plain_ore_frames_raise_almost_no_alarms(detector):
    # Measured: no detection at alarm level on these 500 seeds, 1 in 10,000 frames of other seeds
    # (bench/camera_rates.py) and 3 in another 10,000, large dark patches found by the smooth cue. The
    # bound is that rate with margin; a detector that does not see a lump's shaded rim raised 2 here.
    alarms = []
    for seed in range(500):
        jpeg, _ = SimulatedCamera(rng=np.random.default_rng(seed)).frame([])
        alarms += [(seed, round(d.score, 2), d.cue, round(d.area_cm2, 1))
                   for d in detector.detect(decode_jpeg(jpeg)) if d.score > ALARM_SCORE]
    assert len(alarms) <= 1, alarms


@pytest.mark.parametrize("seed", [702853, 706457, 709721, 709995])
def test_yellow_ore_lumps_smaller_than_an_object_of_interest_raise_no_alarm(detector, seed):
    # The four frames of 10,000 (seeds 702,000-711,999) where a score blind to a region's cue raised a yellow
    # ore lump of 4-14 cm2 found by colour; goethite comes in lumps that size, so below 25 cm2 a colour region
    # needs more evidence. The weight of that term was set on other seeds.
    jpeg, _ = SimulatedCamera(rng=np.random.default_rng(seed)).frame([])
    detections = detector.detect(decode_jpeg(jpeg))
    assert [d for d in detections if d.score >= ALARM_SCORE and d.cue == "colour"] == []
    assert all(d.area_cm2 < 25 for d in detections if d.cue == "colour")  # reported below the alarm, if at all


def test_colour_regions_below_lump_size_need_more_evidence_and_larger_ones_do_not():
    contrast, solidity, rectangularity = 2.0, 0.95, 0.8
    for area in (6.0, 12.0, 20.0):
        assert (_alarm_score(contrast, area, solidity, rectangularity, colour=True)
                < _alarm_score(contrast, area, solidity, rectangularity, colour=False))
    for area in (25.0, 40.0, 400.0):
        assert (_alarm_score(contrast, area, solidity, rectangularity, colour=True)
                == _alarm_score(contrast, area, solidity, rectangularity, colour=False))


@pytest.mark.parametrize("level", [0, 30, 128, 255])
def test_uniform_frame_has_no_detections(detector, level):
    image = np.full((480, 640, 3), level, dtype=np.uint8)
    assert detector.detect(image) == []


# ---------------------------------------------------------------- simulator


def test_render_is_reproducible_from_its_seed():
    objects = [SceneObject("wood", 0.5, 0.5, 0.05, 0.2, 30.0)]
    a = render_frame(320, 240, PIXEL_SIZE_MM, objects, np.random.default_rng(3))
    b = render_frame(320, 240, PIXEL_SIZE_MM, objects, np.random.default_rng(3))
    assert a.shape == (240, 320, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)


def test_ore_is_dark_red_brown():
    image = render_frame(640, 480, PIXEL_SIZE_MM, [], np.random.default_rng(4))
    b, g, r = (float(np.median(image[:, :, c])) for c in range(3))
    assert r > g > b * 0.9 and r < 110


@pytest.mark.parametrize("material", MATERIALS)
def test_truth_area_is_the_object_area_without_occlusion(material):
    obj = SceneObject(material, 0.8, 0.6, 0.12, 0.18, 33.0)
    rendered = render_scene(640, 480, PIXEL_SIZE_MM, [obj], np.random.default_rng(5), occlusion=0.0)
    (truth,) = rendered.truth
    assert truth.visible_area_cm2 == pytest.approx(obj.area_cm2, rel=0.02)
    assert truth.across_m == pytest.approx(0.8, abs=0.002)
    assert truth.along_m_offset == pytest.approx(0.6 - 0.6, abs=0.002)


def test_occlusion_hides_part_of_the_object():
    obj = SceneObject("paper", 0.8, 0.6, 0.2, 0.2, 0.0)
    rendered = render_scene(640, 480, PIXEL_SIZE_MM, [obj], np.random.default_rng(6), occlusion=0.5)
    assert 0.4 * obj.area_cm2 < rendered.truth[0].visible_area_cm2 < obj.area_cm2


@pytest.mark.parametrize("kwargs,message", [
    (dict(material="glass"), "unknown material"),
    (dict(width_m=0.0), "width_m"),
    (dict(length_m=float("nan")), "length_m"),
])
def test_scene_object_refuses_bad_values(kwargs, message):
    values = dict(material="wood", centre_x_m=0.5, centre_y_m=0.5, width_m=0.1, length_m=0.1) | kwargs
    with pytest.raises(ValueError, match=message):
        SceneObject(**values)


# ---------------------------------------------------------------- JPEG


def test_jpeg_round_trip_keeps_the_frame():
    image = render_frame(640, 480, PIXEL_SIZE_MM, [SceneObject("plastic", 0.8, 0.6, 0.1, 0.1)],
                         np.random.default_rng(8))
    jpeg = encode_jpeg(image, quality=85)
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    decoded = decode_jpeg(jpeg)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    error = decoded.astype(np.float64) - image
    assert 10 * np.log10(255 ** 2 / np.mean(error ** 2)) > 30.0  # PSNR in dB; grainy ore is hard for JPEG
    assert np.all(np.abs(error.mean(axis=(0, 1))) < 0.5)  # no colour shift
    assert len(encode_jpeg(image, quality=95)) > len(jpeg)


def test_simulated_camera_frame_is_jpeg_of_its_size():
    jpeg, truth = SimulatedCamera(width_px=320, height_px=200, rng=np.random.default_rng(9)).frame()
    assert decode_jpeg(jpeg).shape == (200, 320, 3)
    assert truth == ()


@pytest.mark.parametrize("payload", [b"", b"\xff\xd8", b"not a jpeg at all", b"\x89PNG\r\n\x1a\n" + bytes(100),
                                     b"\xff\xd8" + bytes(200) + b"\xff\xd9"])
def test_decode_jpeg_refuses_bytes_that_are_not_a_jpeg(payload):
    with pytest.raises(ValueError, match="JPEG"):
        decode_jpeg(payload)


def test_decode_jpeg_refuses_a_truncated_frame():
    jpeg = encode_jpeg(render_frame(320, 240, PIXEL_SIZE_MM, [], np.random.default_rng(10)))
    with pytest.raises(ValueError, match="truncated"):
        decode_jpeg(jpeg[: len(jpeg) // 2])


def test_decode_jpeg_refuses_text():
    with pytest.raises(ValueError, match="bytes"):
        decode_jpeg("ffd8ffd9")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048), st.booleans())
def test_decode_jpeg_raises_only_value_error_on_random_bytes(payload, framed):
    if framed:
        payload = b"\xff\xd8" + payload + b"\xff\xd9"
    try:
        image = decode_jpeg(payload)
    except ValueError:
        return
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


@pytest.mark.parametrize("image,quality,message", [
    (np.zeros((48, 64, 3), dtype=np.float32), 85, "uint8"),
    (np.zeros((48, 64, 4), dtype=np.uint8), 85, "shape"),
    (np.zeros((48, 64, 3), dtype=np.uint8), 0, "quality"),
    (np.zeros((48, 64, 3), dtype=np.uint8), 101, "quality"),
])
def test_encode_jpeg_refuses_bad_input(image, quality, message):
    with pytest.raises(ValueError, match=message):
        encode_jpeg(image, quality)


# ---------------------------------------------------------------- frame quality and validation


def test_frame_exposure_reports_brightness_saturation_and_darkness():
    ore = frame_exposure(render_frame(640, 480, PIXEL_SIZE_MM, [], np.random.default_rng(11)))
    assert 10 < ore["mean_brightness"] < 120
    assert ore["saturated_fraction"] < 0.01 and ore["dark_fraction"] < 0.5

    half = np.zeros((480, 640, 3), dtype=np.uint8)
    half[:, 320:] = 255
    exposure = frame_exposure(half)
    assert exposure["mean_brightness"] == pytest.approx(127.5, abs=1)
    assert exposure["saturated_fraction"] == pytest.approx(0.5)
    assert exposure["dark_fraction"] == pytest.approx(0.5)

    red = np.zeros((480, 640, 3), dtype=np.uint8)
    red[:, :, 2] = 255  # one channel clipped is saturation too
    assert frame_exposure(red)["saturated_fraction"] == 1.0


@pytest.mark.parametrize("image,message", [
    (np.zeros((480, 640), dtype=np.uint8), "shape"),
    (np.zeros((480, 640, 3), dtype=np.uint16), "uint8"),
    (np.zeros((4, 4, 3), dtype=np.uint8), "8x8"),
    ([[0, 0, 0]], "numpy array"),
])
def test_detector_refuses_images_it_cannot_read(detector, image, message):
    with pytest.raises(ValueError, match=message):
        detector.detect(image)


@pytest.mark.parametrize("kwargs,message", [
    (dict(pixel_size_mm=0.0), "pixel_size_mm"),
    (dict(pixel_size_mm=2.5, min_area_cm2=-1.0), "min_area_cm2"),
    (dict(pixel_size_mm=2.5, weak_sigma=8.0, strong_sigma=7.0), "weak_sigma"),
    (dict(pixel_size_mm=2.5, texture_window_px=3), "texture_window_px"),
])
def test_detector_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ObjectDetector(**kwargs)


def test_min_area_drops_smaller_objects():
    image, _, truth = one_object_frame("paper", 0.06, 0.08, 12)
    assert alarm_near(ObjectDetector(PIXEL_SIZE_MM).detect(image), truth.across_m, truth.along_m_offset, 0.04)
    strict = ObjectDetector(PIXEL_SIZE_MM, min_area_cm2=60.0)
    assert all(d.area_cm2 >= 60.0 for d in strict.detect(image))
    assert alarm_near(strict.detect(image), truth.across_m, truth.along_m_offset, 0.04) is None
