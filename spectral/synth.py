"""Synthetic NIR reflectance of iron ore and of the waste found in ore cargoes, and an instrument model.

Used by the simulated spectrometer, the tests, the demo's default model and the benchmark.

No measured spectra were available to the project (``shared/spectra/`` does not exist), so
every endmember below is *modelled* from published band positions, not measured:

* Fe3+ crystal-field band of hematite near 860-880 nm and of goethite near 900-940 nm (both broad,
  we see their long-wavelength wings); magnetite and carbon-black rubber dark and nearly flat;
* Al-OH doublet of kaolinite near 1395/1415 nm; quartz bright and featureless;
* water near 970, 1190 and 1450 nm (ore moisture, wood);
* C-H overtones and combinations of polyolefins near 1210, 1390-1420 and 1700-1730 nm;
  aromatic C-H of PET and polystyrene near 1130-1145 and 1660-1680 nm;
* cellulose O-H near 1490 and 1580 nm and C-H near 1200 nm (wood, paper, cotton);
* a broad Fe2+ glass band of slag near 1000-1100 nm.

Shapes, depths and brightness are illustrative. The lane model layered on top does linear areal
mixing of ore and contaminant, ore moisture, illumination gain and offset from varying ore height,
a wavelength shift with temperature, shot and read noise of an InGaAs detector (SNR about 200 on the
white tile, 50-70 on dark ore) and drift of the dark and white references since they were taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ORE_MINERALS = ("hematite", "goethite", "magnetite", "kaolinite", "quartz")
CONTAMINANTS = ("plastic", "wood", "rubber", "paper", "textile", "slag")

# Contaminant classes are families of endmembers; each spectrum of a class draws one member.
CLASS_MEMBERS: dict[str, tuple[str, ...]] = {
    "plastic": ("polyethylene", "polypropylene", "pet", "pvc", "polystyrene"),
    "wood": ("wood",),
    "rubber": ("rubber",),
    "paper": ("paper", "cardboard"),
    "textile": ("cotton", "polyester"),
    "slag": ("slag",),
}

# (centre nm, width nm, depth 0-1) Gaussian absorption bands; see the module docstring for sources.
_WATER_BANDS = [(970.0, 35.0, 0.15), (1190.0, 45.0, 0.25), (1450.0, 50.0, 1.0)]


@dataclass(frozen=True)
class Brand:
    """A declared ore product: Dirichlet concentration over ORE_MINERALS and a moisture range (0-1)."""

    name: str
    mineral_alpha: tuple[float, float, float, float, float]
    moisture: tuple[float, float]
    grain_brightness: tuple[float, float] = (0.9, 1.1)  # fines scatter more than lump


BRANDS: dict[str, Brand] = {b.name: b for b in (
    Brand("hematite_lump_63", (40.0, 8.0, 2.0, 1.0, 3.0), (0.01, 0.05), (0.85, 1.0)),
    Brand("blend_fines_61", (24.0, 20.0, 1.5, 2.5, 2.5), (0.04, 0.09)),
    Brand("goethite_fines_58", (12.0, 36.0, 1.0, 5.0, 2.0), (0.06, 0.11), (0.95, 1.15)),
    Brand("magnetite_concentrate_66", (6.0, 1.5, 40.0, 0.5, 2.0), (0.02, 0.08)),
)}


def wavelength_grid(n_bands: int = 224, start_nm: float = 900.0, end_nm: float = 1700.0) -> np.ndarray:
    return np.linspace(start_nm, end_nm, n_bands)


def _bands(w: np.ndarray, bands: list[tuple[float, float, float]]) -> np.ndarray:
    """Product of Gaussian absorption bands (centre nm, width nm, depth 0-1) applied to 1."""
    out = np.ones_like(w, dtype=np.float64)
    for centre, width, depth in bands:
        out *= 1.0 - depth * np.exp(-0.5 * ((w - centre) / width) ** 2)
    return out


def water_absorption(w: np.ndarray) -> np.ndarray:
    """Relative absorption of liquid water (1 at 1450 nm); multiply by moisture for an optical depth."""
    out = np.zeros_like(w, dtype=np.float64)
    for centre, width, depth in _WATER_BANDS:
        out += depth * np.exp(-0.5 * ((w - centre) / width) ** 2)
    return out


def pure_reflectance(material: str, w: np.ndarray) -> np.ndarray:
    """Mean reflectance (0-1) of one endmember (or the first member of a contaminant class) on grid w (nm)."""
    w = np.asarray(w, dtype=np.float64)
    x = (w - 900.0) / 800.0
    xc = np.clip(x, 0, None)
    if material in CLASS_MEMBERS:
        material = CLASS_MEMBERS[material][0]
    if material == "hematite":
        return (0.08 + 0.10 * xc ** 0.6) * _bands(w, [(870, 90, 0.45)])
    if material == "goethite":
        return (0.10 + 0.12 * xc ** 0.8) * _bands(w, [(930, 110, 0.5), (1420, 40, 0.12)])
    if material == "magnetite":
        return 0.045 + 0.012 * x
    if material == "kaolinite":
        return (0.72 + 0.08 * xc) * _bands(w, [(1395, 9, 0.22), (1413, 9, 0.18), (1450, 40, 0.05)])
    if material == "quartz":
        return 0.74 + 0.03 * x
    if material == "polyethylene":
        return 0.62 * _bands(w, [(1212, 16, 0.32), (1395, 20, 0.2), (1420, 15, 0.16), (1728, 28, 0.65)])
    if material == "polypropylene":
        return 0.6 * _bands(w, [(1195, 14, 0.22), (1215, 12, 0.2), (1395, 20, 0.22), (1706, 22, 0.55)])
    if material == "pet":
        return 0.55 * _bands(w, [(1130, 15, 0.18), (1415, 22, 0.16), (1660, 16, 0.42)])
    if material == "pvc":
        return 0.5 * _bands(w, [(1190, 20, 0.15), (1410, 25, 0.16), (1716, 22, 0.5)])
    if material == "polystyrene":
        return 0.6 * _bands(w, [(1143, 15, 0.25), (1213, 15, 0.15), (1415, 20, 0.14), (1680, 15, 0.45)])
    if material == "rubber":
        return 0.035 + 0.004 * np.sin(6 * x)
    if material == "wood":
        return (0.35 + 0.15 * x) * _bands(w, [(1200, 40, 0.15), (1450, 60, 0.35), (1490, 30, 0.15),
                                              (1580, 40, 0.1)])
    if material == "paper":
        return (0.72 + 0.05 * x) * _bands(w, [(1200, 40, 0.1), (1450, 45, 0.08), (1490, 35, 0.3),
                                              (1580, 40, 0.12)])
    if material == "cardboard":
        return (0.42 + 0.12 * x) * _bands(w, [(1200, 40, 0.1), (1450, 45, 0.1), (1490, 35, 0.26),
                                              (1580, 40, 0.1)])
    if material == "cotton":
        return (0.62 + 0.05 * x) * _bands(w, [(1210, 35, 0.1), (1490, 35, 0.28), (1590, 35, 0.14)])
    if material == "polyester":
        return (0.5 + 0.05 * x) * _bands(w, [(1130, 25, 0.12), (1420, 30, 0.18), (1660, 20, 0.38)])
    if material == "slag":
        return (0.22 + 0.05 * x) * _bands(w, [(1050, 200, 0.15)])
    known = ORE_MINERALS + tuple(sorted({m for ms in CLASS_MEMBERS.values() for m in ms}))
    raise ValueError(f"unknown material {material!r}; known: ore, {', '.join(CONTAMINANTS)}, {', '.join(known)}")


def ore_reflectance(w: np.ndarray, n: int, rng: np.random.Generator, brand: str | None = None,
                    moisture: np.ndarray | float | None = None) -> np.ndarray:
    """n spectra of iron ore of one brand (or each of a random brand): mineral mix, moisture, grain scatter."""
    w = np.asarray(w, dtype=np.float64)
    if brand is None:
        names = list(BRANDS)
        pick = rng.integers(0, len(names), size=n)
        out = np.empty((n, w.size))
        for i, name in enumerate(names):
            rows = np.flatnonzero(pick == i)
            if rows.size:
                m = None if moisture is None else np.broadcast_to(moisture, (n,))[rows]
                out[rows] = ore_reflectance(w, rows.size, rng, name, m)
        return out
    if brand not in BRANDS:
        raise ValueError(f"unknown brand {brand!r}; known: {', '.join(BRANDS)}")
    spec = BRANDS[brand]
    weights = rng.dirichlet(spec.mineral_alpha, size=n)
    minerals = np.stack([pure_reflectance(m, w) for m in ORE_MINERALS])
    r = weights @ minerals
    if moisture is None:
        moisture = rng.uniform(*spec.moisture, size=n)
    m = np.broadcast_to(np.asarray(moisture, dtype=np.float64), (n,))[:, None]
    r = r * np.exp(-1.6 * m * water_absorption(w)[None, :])
    r = r * rng.uniform(*spec.grain_brightness, size=(n, 1)) * (1 + rng.normal(0, 0.03, (n, 1)) * (w - 1300) / 400)
    return np.clip(r, 1e-4, 1.0)


def contaminant_reflectance(material: str, w: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n spectra of one contaminant class: a random member, brightness (pigment) and band-depth variation."""
    w = np.asarray(w, dtype=np.float64)
    members = CLASS_MEMBERS.get(material, (material,))
    pick = rng.integers(0, len(members), size=n)
    out = np.empty((n, w.size))
    for i, member in enumerate(members):
        rows = np.flatnonzero(pick == i)
        if rows.size == 0:
            continue
        pure = pure_reflectance(member, w)[None, :]
        level = pure.mean()
        depth = rng.uniform(0.7, 1.3, size=(rows.size, 1))  # thickness / fill changes band depths
        spectra = level + (pure - level) * depth
        out[rows] = spectra * rng.uniform(0.8, 1.2, size=(rows.size, 1))
    return np.clip(out, 1e-4, 1.0)


def mixed_reflectance(material: str, fraction: np.ndarray | float, w: np.ndarray, n: int,
                      rng: np.random.Generator, brand: str | None = None) -> np.ndarray:
    """Ore with `fraction` (0-1) of the field of view covered by `material` (linear areal mixing)."""
    ore = ore_reflectance(w, n, rng, brand)
    if material == "ore":
        return ore
    f = np.broadcast_to(np.asarray(fraction, dtype=np.float64), (n,))[:, None]
    if np.any((f < 0) | (f > 1)):
        raise ValueError("area fraction must be within 0-1")
    return np.clip((1 - f) * ore + f * contaminant_reflectance(material, w, n, rng), 1e-4, 1.0)


@dataclass(frozen=True)
class Instrument:
    """An InGaAs spectrometer: dark offset, lamp-times-detector response, shot and read noise, 16-bit ADC."""

    wavelengths_nm: np.ndarray
    dark_level: float = 1200.0
    white_peak: float = 42000.0
    read_noise: float = 12.0

    def white_response(self) -> np.ndarray:
        x = (self.wavelengths_nm - 1300.0) / 500.0
        return self.white_peak * (1.0 - 0.55 * x ** 2)

    def counts(self, reflectance: np.ndarray, rng: np.random.Generator, gain: np.ndarray | float = 1.0,
               dark_offset: np.ndarray | float = 0.0) -> np.ndarray:
        """Detector counts for reflectance (n, bands); gain and dark_offset model lamp and dark drift."""
        signal = self.dark_level + dark_offset + reflectance * self.white_response() * gain
        noisy = signal + rng.normal(0, 1, signal.shape) * np.sqrt(np.maximum(signal, 0) + self.read_noise ** 2)
        return np.clip(np.rint(noisy), 0, 65535).astype(np.uint16)

    def dark_reference(self) -> np.ndarray:
        return np.full(self.wavelengths_nm.shape, self.dark_level)

    def white_reference(self) -> np.ndarray:
        return self.dark_level + self.white_response()


@dataclass(frozen=True)
class LaneConditions:
    """How a real lane departs from the lab: ore height, stray light, temperature and reference drift.

    gain_range: illumination gain from ore height (closer ore is brighter), per spectrum.
    offset_sd: additive stray/specular light in reflectance units, per spectrum.
    shift_nm_sd: wavelength-axis shift from spectrometer temperature, per spectrum (nm).
    white_drift_sd: relative lamp drift since the white reference was taken, per call.
    dark_drift_sd: dark-level drift in counts since the dark reference was taken, per call.
    """

    gain_range: tuple[float, float] = (0.75, 1.25)
    offset_sd: float = 0.003
    shift_nm_sd: float = 0.3
    white_drift_sd: float = 0.01
    dark_drift_sd: float = 15.0


LAB = LaneConditions(gain_range=(1.0, 1.0), offset_sd=0.0, shift_nm_sd=0.0, white_drift_sd=0.0, dark_drift_sd=0.0)


def lane_counts(instrument: Instrument, reflectance: np.ndarray, rng: np.random.Generator,
                conditions: LaneConditions = LaneConditions()) -> np.ndarray:
    """Counts a lane spectrometer reports for true reflectance (n, bands), against its nominal references."""
    r = np.asarray(reflectance, dtype=np.float64)
    n = r.shape[0]
    w = instrument.wavelengths_nm
    if conditions.shift_nm_sd > 0:
        # A small axis shift, to first order: R(w - d) = R(w) - d dR/dw.
        shift = rng.normal(0, conditions.shift_nm_sd, size=(n, 1))
        r = r - shift * np.gradient(r, w, axis=1)
    gain = rng.uniform(*conditions.gain_range, size=(n, 1))
    offset = rng.normal(0, conditions.offset_sd, size=(n, 1)) if conditions.offset_sd > 0 else 0.0
    r = np.clip(r * gain + offset, 0.0, 1.2)
    lamp = 1.0 + rng.normal(0, conditions.white_drift_sd) if conditions.white_drift_sd > 0 else 1.0
    dark = rng.normal(0, conditions.dark_drift_sd) if conditions.dark_drift_sd > 0 else 0.0
    return instrument.counts(r, rng, gain=lamp, dark_offset=dark)


@dataclass
class SimulatedSet:
    """Labelled lane spectra as the calibration workflow sees them (see spectral.dataset.Dataset)."""

    counts: np.ndarray  # (n, bands) uint16
    labels: np.ndarray  # (n,) str: "ore" or a contaminant class
    groups: np.ndarray  # (n,) str lot id
    area_fraction: np.ndarray  # (n,) float, 0 for clean ore
    brands: np.ndarray  # (n,) str declared brand of the lot
    dark: np.ndarray = field(default_factory=lambda: np.zeros(0))
    white: np.ndarray = field(default_factory=lambda: np.zeros(0))


def simulate_lots(instrument: Instrument, rng: np.random.Generator, n_lots: int = 40, spectra_per_lot: int = 200,
                  contaminants: tuple[str, ...] = CONTAMINANTS, contaminant_share: float = 0.3,
                  fraction_range: tuple[float, float] = (0.05, 1.0),
                  conditions: LaneConditions = LaneConditions(), lot_prefix: str = "lot") -> SimulatedSet:
    """Lots of one brand each, with lot-level moisture, height and temperature; a share of each lot's
    spectra carries a contaminant at a random area fraction (uniform in fraction_range)."""
    w = instrument.wavelengths_nm
    brand_names = list(BRANDS)
    out_counts, labels, groups, fractions, brands = [], [], [], [], []
    for lot in range(n_lots):
        brand = brand_names[lot % len(brand_names)]
        spec = BRANDS[brand]
        lo, hi = spec.moisture
        centre = rng.uniform(lo, hi)
        moisture = np.clip(rng.normal(centre, (hi - lo) / 6, spectra_per_lot), 0, None)
        ore = ore_reflectance(w, spectra_per_lot, rng, brand, moisture)
        label = np.array(["ore"] * spectra_per_lot, dtype=object)
        frac = np.zeros(spectra_per_lot)
        if contaminants:
            dirty = np.flatnonzero(rng.random(spectra_per_lot) < contaminant_share)
            cls = rng.integers(0, len(contaminants), size=dirty.size)
            frac[dirty] = rng.uniform(*fraction_range, size=dirty.size)
            for k, material in enumerate(contaminants):
                rows = dirty[cls == k]
                if rows.size:
                    pure = contaminant_reflectance(material, w, rows.size, rng)
                    f = frac[rows][:, None]
                    ore[rows] = (1 - f) * ore[rows] + f * pure
                    label[rows] = material
        g_lo, g_hi = conditions.gain_range
        mid = rng.uniform(g_lo, g_hi)
        lot_conditions = LaneConditions(gain_range=(max(g_lo, mid - 0.1), min(g_hi, mid + 0.1)),
                                        offset_sd=conditions.offset_sd, shift_nm_sd=conditions.shift_nm_sd,
                                        white_drift_sd=conditions.white_drift_sd,
                                        dark_drift_sd=conditions.dark_drift_sd)
        out_counts.append(lane_counts(instrument, ore, rng, lot_conditions))
        labels.append(label)
        groups.append(np.full(spectra_per_lot, f"{lot_prefix}{lot:03d}", dtype=object))
        fractions.append(frac)
        brands.append(np.full(spectra_per_lot, brand, dtype=object))
    return SimulatedSet(np.vstack(out_counts), np.concatenate(labels).astype(str), np.concatenate(groups).astype(str),
                        np.concatenate(fractions), np.concatenate(brands).astype(str),
                        instrument.dark_reference(), instrument.white_reference())
