"""Generate an ultrasound-like liver dataset in the on-disk layout of AUL.

``generate(out_dir, cfg)`` writes, for each class folder of the Annotated
Ultrasound Liver dataset (Zenodo 7272660)::

    <Class>/image/N.jpg                      B-mode-like image, grey saved as 3-channel JPEG
    <Class>/segmentation/outline/N.json      fan-shaped field of view
    <Class>/segmentation/liver/N.json        liver
    <Class>/segmentation/mass/N.json         mass (Benign and Malignant only)

Each JSON file is a flat list of ``[x, y]`` pixel points, as in AUL (whole
pixels here, so ``cv2.fillPoly`` on them gives exactly the rendered region).
Image numbers run from 1 across Benign, then Malignant, then Normal.

Every image is drawn from its own generator seeded with ``(cfg.seed, N)``,
so a file depends on the seed, its number, class and the image size only,
never on the order of generation or on the other counts. Polygons come first; the image is rendered from exactly the
pixels ``cv2.fillPoly`` gives for the integer points written to JSON, so the
annotation and the picture agree pixel for pixel.

The picture imitates a curvilinear-probe scan: a fan seen from a virtual
apex above the image, an echogenicity map (abdominal wall, heterogeneous
surrounding tissue, a homogeneous liver with a bright capsule and dark
vessels, masses), multiplied by correlated Rayleigh speckle, attenuated with
depth, partially compensated by time-gain control, then log-compressed.
Benign masses are round, sharp and hypoechoic with posterior enhancement;
malignant ones are lobulated, heterogeneous and ringed by a dark halo.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from medseg.config import AUL_FOLDERS, SyntheticSource

log = logging.getLogger(__name__)

JPEG_QUALITY = 92
# Pixel margins keep rounded polygon points strictly inside their container,
# so the liver never leaves the fan and a mass never leaves the liver.
FAN_MARGIN_PX = 4
MASS_MARGIN_PX = 3
REFERENCE_HEIGHT = 288  # sizes below are tuned at this height and scaled with it

Polygon = np.ndarray  # (K, 2) int32 points, x then y


@dataclass(frozen=True)
class Fan:
    """Field of view of a curvilinear probe.

    Beams leave a virtual apex ``(cx, cy)`` above the image; ``theta`` is the
    beam angle (0 straight down, positive to the right) and the image spans
    radii ``r0`` (probe surface) to ``r1`` (maximum depth).
    """

    cx: float
    cy: float
    r0: float
    r1: float
    half_angle: float

    def to_pixels(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Normalised beam coordinates (u in [-1, 1] across, v in [0, 1] deep) -> (K, 2) x, y."""
        r = self.r0 + v * (self.r1 - self.r0)
        theta = u * self.half_angle
        return np.stack([self.cx + r * np.sin(theta), self.cy + r * np.cos(theta)], axis=1)


@dataclass(frozen=True)
class Scene:
    """The polygons of one image and the masks rasterised from them."""

    outline: Polygon
    liver: Polygon
    mass: Polygon | None
    fan_mask: np.ndarray
    liver_mask: np.ndarray
    mass_mask: np.ndarray


# --------------------------------------------------------------------------- randomness
def image_rng(seed: int, number: int) -> np.random.Generator:
    """The generator for image ``number``: independent of generation order."""
    # SeedSequence takes non-negative entropy only; keep the sign as its own word.
    return np.random.default_rng(np.random.SeedSequence([abs(seed), int(seed < 0), number]))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean, unit-std noise that varies over about ``cell`` pixels (cheap: upsampled grid)."""
    h, w = shape
    grid = rng.standard_normal((max(2, round(h / cell)) + 2, max(2, round(w / cell)) + 2)).astype(np.float32)
    field = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def wobble(rng: np.random.Generator, phi: np.ndarray, harmonics: range, amplitude: float) -> np.ndarray:
    """A smooth periodic radius perturbation; higher harmonics are weaker, as in real outlines."""
    out = np.zeros_like(phi)
    for k in harmonics:
        out += amplitude * rng.uniform(0.3, 1.0) / math.sqrt(k) * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
    return out


# --------------------------------------------------------------------------- geometry
def fan_geometry(rng: np.random.Generator, height: int, width: int) -> Fan:
    """A fan that fills most of the image, its apex above the top edge."""
    half = math.radians(rng.uniform(30, 40))
    r0 = height * rng.uniform(0.2, 0.4)
    # The probe arc rises towards its ends; keep them inside the image so the
    # outline is never clipped (clipping would bend the fan's straight sides).
    top = max(height * rng.uniform(0.04, 0.09), r0 * (1 - math.cos(half)) + 1)
    bottom = height * rng.uniform(0.88, 0.97)
    cy = top - r0
    r1 = bottom - cy
    cx = width * (0.5 + rng.uniform(-0.05, 0.05))
    room = min(cx, width - 1 - cx) - 2
    half = min(half, math.asin(min(1.0, room / r1)))
    return Fan(cx=cx, cy=cy, r0=r0, r1=r1, half_angle=half)


def fan_outline(fan: Fan, height: int, width: int, arc_points: int = 33) -> Polygon:
    """Outline of the field of view: the probe arc left to right, then the deep arc back."""
    u = np.linspace(-1, 1, arc_points)
    pts = np.concatenate([fan.to_pixels(u, np.zeros_like(u)), fan.to_pixels(u[::-1], np.ones_like(u))])
    return to_int_polygon(pts, height, width)


def liver_polygon(rng: np.random.Generator, fan: Fan, wall: float, height: int, width: int) -> Polygon:
    """A large smooth blob in beam coordinates, below the abdominal wall, clipped to the fan.

    Clipping in beam coordinates makes the liver run along the fan's sides
    and deep arc, as it does when the liver fills the view.
    """
    phi = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    radius = 1 + wobble(rng, phi, range(2, 7), 0.14)
    uc, vc = rng.uniform(-0.35, 0.35), rng.uniform(wall + 0.3, 0.62)
    ru, rv = rng.uniform(0.75, 1.15), rng.uniform(0.3, 0.45)
    tilt = rng.uniform(-0.4, 0.4)
    du, dv = ru * radius * np.cos(phi), rv * radius * np.sin(phi)
    u = uc + du * math.cos(tilt) - dv * math.sin(tilt) * 0.5
    v = vc + dv * math.cos(tilt) + du * math.sin(tilt) * 0.5
    v = np.clip(v, wall, 1 - FAN_MARGIN_PX / (fan.r1 - fan.r0))
    r = fan.r0 + v * (fan.r1 - fan.r0)
    u_max = 1 - FAN_MARGIN_PX / (r * fan.half_angle)
    u = np.clip(u, -u_max, u_max)
    return to_int_polygon(fan.to_pixels(u, v), height, width)


def mass_polygon(rng: np.random.Generator, liver_mask: np.ndarray, malignant: bool) -> Polygon:
    """A mass of 4-15 % of the liver area placed wholly inside the liver.

    Benign: a near-perfect ellipse. Malignant: lobulated (strong harmonics,
    concave in places) and a little larger on average.
    """
    n = 96 if malignant else 48
    phi = np.linspace(0, 2 * math.pi, n, endpoint=False)
    if malignant:
        radius = 1 + wobble(rng, phi, range(2, 8), 0.22)
    else:
        radius = 1 + wobble(rng, phi, range(2, 4), 0.03)
    aspect, rot = rng.uniform(0.6, 1.0), rng.uniform(0, math.pi)
    x, y = radius * np.cos(phi) / math.sqrt(aspect), radius * np.sin(phi) * math.sqrt(aspect)
    unit = np.stack([x * math.cos(rot) - y * math.sin(rot), x * math.sin(rot) + y * math.cos(rot)], axis=1)
    unit_area = polygon_area(unit)
    extent = float(np.hypot(unit[:, 0], unit[:, 1]).max())

    fraction = rng.uniform(0.06, 0.15) if malignant else rng.uniform(0.04, 0.12)
    dist = cv2.distanceTransform(liver_mask.astype(np.uint8), cv2.DIST_L2, 5)
    # A small liver cannot hold the drawn size: take the largest mass that fits.
    scale = min(math.sqrt(fraction * liver_mask.sum() / unit_area), (dist.max() - MASS_MARGIN_PX) / extent)
    if scale * extent < 4:
        raise RuntimeError("liver too small to hold a mass; fan or liver geometry is off")
    candidates = np.flatnonzero(dist >= scale * extent + MASS_MARGIN_PX)
    cy, cx = np.unravel_index(candidates[rng.integers(candidates.size)], liver_mask.shape)
    h, w = liver_mask.shape
    return to_int_polygon(unit * scale + (cx, cy), h, w)


def polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def to_int_polygon(points: np.ndarray, height: int, width: int) -> Polygon:
    """Round to pixels inside the image and drop repeated points; these are the points saved."""
    pts = np.rint(points).astype(np.int32)
    pts[:, 0] = np.clip(pts[:, 0], 0, width - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, height - 1)
    keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
    return pts[keep]


def rasterise(polygon: Polygon, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of a polygon, filled the way a consumer of the JSON files fills it."""
    canvas = np.zeros(shape, np.uint8)
    cv2.fillPoly(canvas, [polygon.reshape(-1, 1, 2)], 1)
    return canvas.astype(bool)


def build_scene(rng: np.random.Generator, fan: Fan, wall: float, shape: tuple[int, int], folder: str) -> Scene:
    """Polygons first, then their masks: everything rendered later uses these masks."""
    h, w = shape
    outline = fan_outline(fan, h, w)
    liver = liver_polygon(rng, fan, wall, h, w)
    liver_mask = rasterise(liver, shape)
    mass_poly = None if folder == "Normal" else mass_polygon(rng, liver_mask, folder == "Malignant")
    mass_mask = rasterise(mass_poly, shape) if mass_poly is not None else np.zeros(shape, bool)
    return Scene(outline, liver, mass_poly, rasterise(outline, shape), liver_mask, mass_mask)


# --------------------------------------------------------------------------- rendering
def beam_coords(fan: Fan, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: u (across the fan, -1..1) and v (depth, 0..1); outside the fan they run beyond."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xs - np.float32(fan.cx), ys - np.float32(fan.cy)
    u = np.arctan2(dx, dy) / np.float32(fan.half_angle)
    v = (np.hypot(dx, dy) - np.float32(fan.r0)) / np.float32(fan.r1 - fan.r0)
    return u, v


def speckle(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Fully developed speckle: the envelope of low-passed complex noise, mean about 1.

    The noise lives on a beam grid (depth x angle) and is scan-converted to
    the image, so grains are short along the beam and widen with depth,
    as with a real curvilinear probe.
    """
    h, w = u.shape
    rows, cols = max(8, round(h * 0.8)), max(8, round(w * 0.5))
    sigma_axial, sigma_lateral = 0.9 * scale, 1.2 * scale
    re, im = (cv2.GaussianBlur(rng.standard_normal((rows, cols)).astype(np.float32), (0, 0), sigma_lateral,
                               sigmaY=sigma_axial) for _ in range(2))
    envelope = np.hypot(re, im)
    envelope /= envelope.mean()
    map_x = ((u + 1) * 0.5 * (cols - 1)).astype(np.float32)
    map_y = (v * (rows - 1)).astype(np.float32)
    return cv2.remap(envelope, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def abdominal_wall(rng: np.random.Generator, v: np.ndarray, wall: float) -> np.ndarray:
    """Layers parallel to the probe: skin, fat (dark), fascia lines (bright), muscle."""
    depth = np.linspace(0, wall, 64)
    profile = 0.3 + 0.08 * rng.standard_normal(64).cumsum() / 8
    profile[:3] += 1.2  # skin entry echo
    for centre in rng.uniform(0.15, 1.0, rng.integers(2, 5)) * wall:
        profile += rng.uniform(0.8, 1.8) * np.exp(-0.5 * ((depth - centre) / (0.012 + 0.01 * rng.random())) ** 2)
    return np.interp(v, depth, np.clip(profile, 0.1, None)).astype(np.float32)


def surrounding_tissue(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Outside the liver: coarse, high-contrast mixture (bowel, fat, kidney), with bright streaks."""
    h, w = shape
    base = 0.55 * np.exp(0.5 * smooth_noise(rng, shape, 28 * scale)) * (1 + 0.25 * smooth_noise(rng, shape, 5 * scale))
    streaks = np.zeros(shape, np.float32)
    for _ in range(rng.integers(3, 8)):
        x0, y0 = rng.uniform(0, w), rng.uniform(0.2 * h, h)
        angle, length = rng.uniform(-0.6, 0.6), rng.uniform(0.1, 0.35) * w
        end = (round(x0 + length * math.cos(angle)), round(y0 + length * math.sin(angle)))
        cv2.line(streaks, (round(x0), round(y0)), end, rng.uniform(0.6, 1.6), max(1, round(2 * scale)))
    streaks = cv2.GaussianBlur(streaks, (0, 0), 1.5 * scale)
    return np.clip(base + streaks, 0.02, None).astype(np.float32)


def vessel_tree(rng: np.random.Generator, start: np.ndarray, scale: float, lumen: np.ndarray,
                walls: np.ndarray | None) -> None:
    """Draw one vessel that wanders, narrows and forks twice (in place); ``walls`` only for portal veins."""
    stack = [(start.astype(float), rng.uniform(0, 2 * math.pi), rng.uniform(3.0, 7.0) * scale, 0)]
    while stack:
        point, heading, thickness, level = stack.pop()
        for _ in range(rng.integers(3, 7)):
            heading += rng.normal(0, 0.2)
            nxt = point + 7 * scale * np.array([math.cos(heading), math.sin(heading)])
            a, b = tuple(int(c) for c in np.rint(point)), tuple(int(c) for c in np.rint(nxt))
            t = max(1, round(thickness))
            if walls is not None:
                cv2.line(walls, a, b, 1.0, t + max(2, round(2 * scale)))
            cv2.line(lumen, a, b, 1.0, t)
            point, thickness = nxt, max(1.0, thickness * 0.9)
        if level < 2 and thickness > 1.5:
            for side in (-1, 1):
                stack.append((point, heading + side * rng.uniform(0.3, 0.8), thickness * 0.8, level + 1))


def vessels(rng: np.random.Generator, liver_mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Soft weights (0..1) of dark vessel lumens and their bright walls, inside the liver.

    Vessels branch through the parenchyma and also show as small round
    cross-sections; portal veins have echogenic walls, hepatic veins do not.
    """
    lumen, walls = np.zeros(liver_mask.shape, np.float32), np.zeros(liver_mask.shape, np.float32)
    ys, xs = np.nonzero(liver_mask)
    for _ in range(rng.integers(1, 4)):
        i = rng.integers(xs.size)
        vessel_tree(rng, np.array([xs[i], ys[i]]), scale, lumen, walls if rng.random() < 0.5 else None)
    for _ in range(rng.integers(0, 5)):
        i = rng.integers(xs.size)
        axes = (max(1, round(rng.uniform(1.5, 3.5) * scale)), max(1, round(rng.uniform(1.5, 3.0) * scale)))
        cv2.ellipse(lumen, (int(xs[i]), int(ys[i])), axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
    # Vessel edges are soft on a scanner (finite resolution); these are no labels, so blurring is free.
    lumen = cv2.GaussianBlur(lumen, (0, 0), 0.9 * scale) * liver_mask
    walls = cv2.GaussianBlur(walls, (0, 0), 0.9 * scale) * liver_mask * (1 - lumen)
    return lumen, walls


def capsule(polygon: Polygon, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Soft weight (0..1) of the bright line along the liver capsule, centred on the boundary."""
    canvas = np.zeros(shape, np.float32)
    cv2.polylines(canvas, [polygon.reshape(-1, 1, 2)], True, 1.0, max(1, round(2 * scale)))
    return cv2.GaussianBlur(canvas, (0, 0), 0.8 * scale)


def behind(mask: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Weight (0..1) of the beams that pass through ``mask``, below it: where
    posterior enhancement or shadowing shows."""
    us, vs = u[mask], v[mask]
    centre, half = 0.5 * (us.min() + us.max()), 0.5 * (us.max() - us.min())
    across = np.clip(1 - np.abs(u - centre) / max(half, 1e-3), 0, 1) ** 0.5
    deep = np.clip((v - vs.max()) / 0.05 + 1, 0, 1) * np.exp(-np.clip(v - vs.max(), 0, None) / 0.4)
    return (across * deep).astype(np.float32)


def echogenicity(rng: np.random.Generator, scene: Scene, u: np.ndarray, v: np.ndarray, wall: float,
                 malignant: bool, scale: float) -> np.ndarray:
    """Mean backscatter per pixel (linear amplitude; liver about 1), before speckle."""
    shape = u.shape
    tissue = surrounding_tissue(rng, shape, scale)
    tissue = np.where(v < wall, abdominal_wall(rng, v, wall), tissue)
    if rng.random() < 0.35:
        tissue = _gallbladder(rng, tissue, scene, u, v, wall)

    liver = np.exp(0.06 * smooth_noise(rng, shape, 24 * scale)) * (1 + 0.08 * smooth_noise(rng, shape, 3 * scale))
    tissue = np.where(scene.liver_mask, liver, tissue)
    lumen, walls = vessels(rng, scene.liver_mask, scale)
    tissue = tissue * (1 - walls) + walls * rng.uniform(1.6, 2.4)
    tissue = tissue * (1 - lumen) + lumen * rng.uniform(0.08, 0.2)
    # The capsule is a specular reflector: brightest deep down (diaphragm), where it faces the beam.
    weight = capsule(scene.liver, shape, scale) * np.clip(0.5 + v, 0.5, 1.5)
    tissue = tissue * (1 - np.clip(weight, 0, 1)) + weight * rng.uniform(1.8, 2.8)

    if scene.mass is not None:
        tissue = (_malignant if malignant else _benign)(rng, tissue, scene.mass_mask, u, v, scale)
    return tissue.astype(np.float32)


def _gallbladder(rng: np.random.Generator, tissue: np.ndarray, scene: Scene, u: np.ndarray, v: np.ndarray,
                 wall: float) -> np.ndarray:
    """An anechoic oval outside the liver, with the enhancement a fluid-filled organ casts.

    Drawn only where it fits whole: a dark shape cut off by the fan edge
    would look like an artefact.
    """
    h, w = u.shape
    outside = scene.fan_mask & ~scene.liver_mask & (v > wall + 0.05)
    axes = (round(rng.uniform(0.05, 0.11) * w), round(rng.uniform(0.03, 0.06) * h))
    room = cv2.distanceTransform(outside.astype(np.uint8), cv2.DIST_L2, 5)
    ys, xs = np.nonzero(room > max(axes) + 2)
    if xs.size == 0:
        return tissue
    i = rng.integers(xs.size)
    canvas = np.zeros((h, w), np.uint8)
    cv2.ellipse(canvas, (int(xs[i]), int(ys[i])), axes, rng.uniform(-30, 30), 0, 360, 1, -1)
    fluid = canvas.astype(bool)
    tissue = tissue * (1 + 0.4 * behind(fluid, u, v) * ~fluid)
    tissue[fluid] = 0.07
    return tissue


def _benign(rng: np.random.Generator, tissue: np.ndarray, mass: np.ndarray, u: np.ndarray, v: np.ndarray,
            scale: float) -> np.ndarray:
    """Hypoechoic, homogeneous, sharp-edged; sound passes easily, so tissue behind is brighter."""
    tissue = tissue * (1 + rng.uniform(0.1, 0.35) * behind(mass, u, v) * ~mass)
    inside = rng.uniform(0.25, 0.55) * (1 + 0.04 * smooth_noise(rng, mass.shape, 6 * scale))
    return np.where(mass, inside, tissue)


def _malignant(rng: np.random.Generator, tissue: np.ndarray, mass: np.ndarray, u: np.ndarray, v: np.ndarray,
               scale: float) -> np.ndarray:
    """Heterogeneous core (mixed bright and dark) ringed by a hypoechoic halo: the target sign."""
    tissue = tissue * (1 - rng.uniform(0.0, 0.3) * behind(mass, u, v) * ~mass)
    depth_in = cv2.distanceTransform(mass.astype(np.uint8), cv2.DIST_L2, 5)
    halo_width = rng.uniform(4.0, 9.0) * scale
    core = np.clip((depth_in - halo_width) / (3.0 * scale) + 0.5, 0, 1)
    level = rng.uniform(1.1, 1.8)
    texture = level * np.exp(0.55 * smooth_noise(rng, mass.shape, rng.uniform(4, 8) * scale))
    inside = core * texture + (1 - core) * rng.uniform(0.18, 0.35)
    return np.where(mass, inside, tissue)


def depth_gain(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Attenuation left over after time-gain compensation, in linear amplitude.

    Tissue attenuates with depth; the operator's TGC sliders compensate
    roughly, leaving a residual slope, slider bumps, a bright near field and
    weaker beams at the edges of the fan.
    """
    residual_db = rng.uniform(-2, 10) * v
    knots = rng.normal(0, 1.8, 6)
    sliders_db = np.interp(v, np.linspace(0, 1, 6), knots)
    near_db = rng.uniform(2, 6) * np.exp(-np.clip(v, 0, None) / 0.05)
    edge_db = -rng.uniform(1, 4) * np.clip(np.abs(u), 0, 1) ** 4
    return (10 ** ((sliders_db + near_db + edge_db - residual_db) / 20)).astype(np.float32)


def log_compress(rng: np.random.Generator, amplitude: np.ndarray) -> np.ndarray:
    """Map amplitude to 8-bit grey on a log scale, as a scanner display does (liver mid-grey)."""
    dynamic_range_db, headroom_db = rng.uniform(48, 60), rng.uniform(22, 29)
    db = 20 * np.log10(amplitude + 1e-6)
    grey = 255 * np.clip((db - headroom_db) / dynamic_range_db + 1, 0, 1)
    return grey


def depth_markers(image: np.ndarray, fan: Fan, rng: np.random.Generator) -> None:
    """Dots along the right fan edge every few millimetres, as scanners print them (in place)."""
    h, w = image.shape
    step = rng.uniform(0.08, 0.12)
    v = np.arange(0, 1.0001, step)
    x, y = fan.to_pixels(np.full_like(v, 1.0), v).T
    x = np.rint(x + 4).astype(int)
    y = np.rint(y).astype(int)
    ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    image[y[ok], x[ok]] = 200


def render_image(rng: np.random.Generator, fan: Fan, wall: float, scene: Scene, malignant: bool) -> np.ndarray:
    """The grey 8-bit image of a scene; black outside the field of view."""
    shape = scene.fan_mask.shape
    scale = shape[0] / REFERENCE_HEIGHT
    u, v = beam_coords(fan, shape)
    tissue = echogenicity(rng, scene, u, v, wall, malignant, scale)
    amplitude = tissue * rng.uniform(0.85, 1.2) * speckle(rng, u, v, scale) * depth_gain(rng, u, v)
    amplitude += 10 ** (-38 / 20) * speckle(rng, u, v, scale)  # electronic noise floor
    grey = log_compress(rng, amplitude)
    image = np.where(scene.fan_mask, np.rint(grey), 0).astype(np.uint8)
    depth_markers(image, fan, rng)
    return image


# --------------------------------------------------------------------------- files
def synthesise(seed: int, number: int, folder: str, height: int, width: int) -> tuple[np.ndarray, Scene]:
    """One image and its polygons, a function of ``(seed, number, folder, size)`` only."""
    rng = image_rng(seed, number)
    fan = fan_geometry(rng, height, width)
    wall = rng.uniform(0.08, 0.18)
    scene = build_scene(rng, fan, wall, (height, width), folder)
    return render_image(rng, fan, wall, scene, folder == "Malignant"), scene


def write_sample(folder: Path, number: int, image: np.ndarray, scene: Scene) -> None:
    """Write ``image/N.jpg`` and ``segmentation/<part>/N.json`` under a class folder."""
    ok, jpeg = cv2.imencode(".jpg", cv2.merge([image, image, image]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for image {number}")
    (folder / "image" / f"{number}.jpg").write_bytes(jpeg.tobytes())
    parts = {"outline": scene.outline, "liver": scene.liver, "mass": scene.mass}
    for part, polygon in parts.items():
        if polygon is not None:
            (folder / "segmentation" / part / f"{number}.json").write_text(json.dumps(polygon.tolist()))


def generate(out_dir: Path, cfg: SyntheticSource) -> dict[str, int]:
    """Write the dataset into ``out_dir`` (existing, empty); return images per class folder."""
    out_dir = Path(out_dir)
    number = 0
    for folder in AUL_FOLDERS:
        parts = ("outline", "liver") if folder == "Normal" else ("outline", "liver", "mass")
        for sub in ("image", *(f"segmentation/{p}" for p in parts)):
            (out_dir / folder / sub).mkdir(parents=True, exist_ok=True)
        for _ in range(cfg.counts.get(folder, 0)):
            number += 1
            image, scene = synthesise(cfg.seed, number, folder, cfg.height, cfg.width)
            write_sample(out_dir / folder, number, image, scene)
    counts = {folder: cfg.counts.get(folder, 0) for folder in AUL_FOLDERS}
    log.info("generated %d synthetic images (%s) at %dx%d, seed %d", number, counts, cfg.height, cfg.width, cfg.seed)
    return counts


def render_preview(out_dir: Path, path: Path, n: int = 6) -> None:
    """Save a grid of the first images of each class with liver (green) and mass (red) outlines."""
    out_dir = Path(out_dir)
    per_class = max(1, math.ceil(n / len(AUL_FOLDERS)))
    tiles = []
    for folder in AUL_FOLDERS:
        images = sorted((out_dir / folder / "image").glob("*.jpg"), key=lambda p: int(p.stem))[:per_class]
        for image_path in images:
            tile = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            for part, colour in (("liver", (0, 200, 0)), ("mass", (0, 0, 255))):
                json_path = out_dir / folder / "segmentation" / part / f"{image_path.stem}.json"
                if json_path.exists():
                    pts = np.array(json.loads(json_path.read_text()), np.int32).reshape(-1, 1, 2)
                    cv2.polylines(tile, [pts], True, colour, 1)
            tiles.append(tile)
    tiles = tiles[:n]
    if not tiles:
        raise FileNotFoundError(f"{out_dir}: no images to preview")
    cols = min(3, len(tiles))
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    rows = [np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.vstack(rows)):
        raise OSError(f"{path}: could not write preview")
