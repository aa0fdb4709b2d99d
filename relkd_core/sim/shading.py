"""Colours for camera pixels: textures, Lambert shading, sky and haze.

Images must not be flat label maps, otherwise a 2D teacher would be trivially perfect: every
surface gets procedural texture (asphalt grain, lane markings, facade windows, foliage,
paving tiles, warning stripes), sun shading from its normal, and distance haze.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from relkd_core.sim.raycast import GROUND_INDEX, MISS_INDEX, HitBuffer, PrimitiveSet
from relkd_core.sim.scene import (
    TEX_BARK,
    TEX_BUILDING,
    TEX_FOLIAGE,
    TEX_GLASS,
    TEX_STRIPES,
    TEX_TILES,
    GroundRegions,
)
from relkd_core.taxonomy import LABEL_OF

_SUN = np.array([0.45, 0.3, 0.84]) / np.linalg.norm([0.45, 0.3, 0.84])
_SKY_ZENITH = np.array([0.35, 0.55, 0.85])
_SKY_HORIZON = np.array([0.78, 0.84, 0.9])
_GROUND_COLORS = {
    LABEL_OF['driveable_surface']: np.array([0.26, 0.26, 0.28]),
    LABEL_OF['other_flat']: np.array([0.55, 0.53, 0.5]),
    LABEL_OF['terrain']: np.array([0.33, 0.45, 0.2]),
}


def hash_noise(cells: NDArray[np.float64]) -> NDArray[np.float64]:
    """Deterministic pseudo-random value in [0, 1) per integer cell (N×3 → N)."""
    dots = cells @ np.array([12.9898, 78.233, 37.719])
    return np.modf(np.abs(np.sin(dots) * 43758.5453))[0]


def lane_marking_mask(ground: GroundRegions, xy: NDArray[np.float64]) -> NDArray[np.bool_]:
    """True where a ground point lies on a painted line: dashed between lanes, solid at the
    edge of the traffic lanes (15 cm wide)."""
    mask = np.zeros(len(xy), dtype=bool)
    dashes = np.modf(np.abs(xy[:, 0]) / 9.0)[0] < 0.35
    for y_line in ground.lane_lines_y_m:
        mask |= (np.abs(xy[:, 1] - y_line) < 0.075) & dashes
    for y_line in ground.edge_lines_y_m:
        mask |= np.abs(xy[:, 1] - y_line) < 0.075
    return mask


def sky_color(directions: NDArray[np.float64]) -> NDArray[np.float64]:
    """Vertical gradient from horizon to zenith for rays that hit nothing (N×3 → N×3)."""
    up = np.clip(directions[:, 2], 0.0, 1.0)[:, None] ** 0.6
    return _SKY_HORIZON * (1 - up) + _SKY_ZENITH * up


def shade(primitives: PrimitiveSet, ground: GroundRegions, ground_labels: NDArray[np.uint16],
          hits: HitBuffer, origin: NDArray[np.float64], directions: NDArray[np.float64],
          rng: np.random.Generator) -> NDArray[np.uint8]:
    """RGB (N×3 uint8) of each camera ray. ``ground_labels`` holds the ground class per ray
    (used where ``hits.index == GROUND_INDEX``)."""
    n = len(directions)
    rgb = sky_color(directions)
    hit = hits.index != MISS_INDEX
    t = np.where(hit, hits.t_m, 0.0)
    p = origin + t[:, None] * directions

    on_ground = hits.index == GROUND_INDEX
    if on_ground.any():
        gp = p[on_ground]
        labels = ground_labels[on_ground]
        base = _ground_base(labels)
        grain = hash_noise(np.floor(gp * 6.0))
        patch = hash_noise(np.floor(gp * 0.7) + 17.0)
        color = base * (0.8 + 0.25 * grain[:, None] + 0.15 * patch[:, None])
        marked = lane_marking_mask(ground, gp[:, :2]) & (labels == LABEL_OF['driveable_surface'])
        color[marked] = 0.88
        rgb[on_ground] = color

    on_prim = hit & ~on_ground
    if on_prim.any():
        idx = hits.index[on_prim]
        pp = p[on_prim]
        normal = hits.normal[on_prim]
        color = primitives.color[idx].copy()
        tex = primitives.texture[idx]
        noise = hash_noise(np.floor(pp * 4.0))
        color *= (0.9 + 0.2 * noise)[:, None]
        _apply_textures(color, tex, pp, normal, noise)
        rgb[on_prim] = color

    # Lambert shading with ambient light, then haze towards the horizon colour with distance.
    lambert = np.clip(hits.normal @ _SUN, 0.0, 1.0)
    light = np.where(hit, 0.5 + 0.6 * lambert, 1.0)
    rgb = rgb * light[:, None]
    haze = np.where(hit, 1.0 - np.exp(-t / 220.0), 0.0)[:, None]
    rgb = rgb * (1 - haze) + _SKY_HORIZON * haze
    rgb += rng.normal(0.0, 0.012, (n, 3))
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _ground_base(labels: NDArray[np.uint16]) -> NDArray[np.float64]:
    base = np.tile(_GROUND_COLORS[LABEL_OF['terrain']], (len(labels), 1))
    for lab, col in _GROUND_COLORS.items():
        base[labels == lab] = col
    return base


def _apply_textures(color: NDArray[np.float64], tex: NDArray[np.int8], p: NDArray[np.float64],
                    normal: NDArray[np.float64], noise: NDArray[np.float64]) -> None:
    """Modify ``color`` in place according to each hit's texture id."""
    vertical = np.abs(normal[:, 2]) < 0.5
    along = np.where(np.abs(normal[:, 0]) > np.abs(normal[:, 1]), p[:, 1], p[:, 0])
    windows = (
        (tex == TEX_BUILDING) & vertical & (p[:, 2] > 1.0)
        & (np.modf(np.abs(along) / 3.0)[0] > 0.25) & (np.modf(np.abs(along) / 3.0)[0] < 0.75)
        & (np.modf(p[:, 2] / 3.2)[0] > 0.3) & (np.modf(p[:, 2] / 3.2)[0] < 0.75)
    )
    color[windows] = np.array([0.18, 0.22, 0.3]) * (0.8 + 0.4 * noise[windows, None])
    glass = tex == TEX_GLASS
    color[glass] = color[glass] * 0.45 + np.array([0.1, 0.13, 0.18])
    foliage = tex == TEX_FOLIAGE
    color[foliage] *= (0.55 + 0.9 * noise[foliage])[:, None]
    tiles = (tex == TEX_TILES) & (
        (np.modf(np.abs(p[:, 0]))[0] < 0.06) | (np.modf(np.abs(p[:, 1]))[0] < 0.06)
    )
    color[tiles] *= 0.7
    stripes = (tex == TEX_STRIPES) & (np.modf(p[:, 2] * 2.5)[0] < 0.45)
    color[stripes] = 0.92
    bark = tex == TEX_BARK
    color[bark] *= (0.6 + 0.6 * noise[bark])[:, None]
