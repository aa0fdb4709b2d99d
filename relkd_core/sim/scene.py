"""Procedural street scenes: layout, objects with realistic sizes, and the ego trajectory.

A scene is a straight street along world +x (right-hand traffic: lanes with y < 0 drive
towards +x). Across the street, from the centre out: lanes (with an optional ``other_flat``
median), parking strips, raised sidewalks with driveways, a terrain verge with trees, poles and
signs, then buildings, fences, hedges and parking lots. Objects take nuScenes mean sizes; class
frequencies follow real streets (many cars, few buses, bicycles and pedestrians), and the
first 45 m of the drive always hold at least one object of every class so that short logs
still cover the whole taxonomy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from relkd_core.config import bounded
from relkd_core.sim.raycast import BOX, CYLINDER, ELLIPSOID, PrimitiveSet
from relkd_core.taxonomy import LABEL_OF, THING_CLASSES

# Texture ids, interpreted by sim.shading.
TEX_PLAIN = 0
TEX_BUILDING = 1
TEX_GLASS = 2
TEX_FOLIAGE = 3
TEX_TILES = 4
TEX_STRIPES = 5
TEX_BARK = 6

# Reflectivity (0..1) by class: retro-reflective cones and signs return strongly, dark
# asphalt and foliage weakly; this is what makes lidar intensity informative.
REFLECTIVITY = {
    'barrier': 0.45, 'bicycle': 0.3, 'bus': 0.5, 'car': 0.45, 'construction_vehicle': 0.55,
    'motorcycle': 0.35, 'pedestrian': 0.25, 'traffic_cone': 0.85, 'trailer': 0.5, 'truck': 0.5,
    'driveable_surface': 0.12, 'other_flat': 0.2, 'sidewalk': 0.28, 'terrain': 0.18,
    'manmade': 0.35, 'vegetation': 0.15,
}
#: Lane paint is retro-reflective: far brighter than the asphalt around it.
LANE_PAINT_REFLECTIVITY = 0.7

# Base colours (RGB 0..1); per-instance variation is added on top.
_COLORS = {
    'barrier': (0.75, 0.75, 0.72), 'bicycle': (0.15, 0.2, 0.6), 'bus': (0.85, 0.75, 0.15),
    'construction_vehicle': (0.95, 0.65, 0.05), 'motorcycle': (0.1, 0.1, 0.12),
    'pedestrian': (0.3, 0.25, 0.35), 'traffic_cone': (0.98, 0.45, 0.05),
    'trailer': (0.8, 0.8, 0.82), 'truck': (0.9, 0.9, 0.88), 'sidewalk': (0.62, 0.6, 0.57),
    'manmade': (0.6, 0.52, 0.45), 'vegetation': (0.2, 0.45, 0.15),
}
_CAR_PAINTS = np.array([
    (0.9, 0.9, 0.9), (0.08, 0.08, 0.09), (0.55, 0.56, 0.58), (0.6, 0.08, 0.08),
    (0.1, 0.2, 0.5), (0.75, 0.75, 0.78), (0.2, 0.35, 0.25), (0.45, 0.35, 0.25),
])


@dataclass(frozen=True, kw_only=True)
class SceneConfig:
    """Street layout and object densities (per 100 m of street, both sides together)."""

    lane_width_m: float = bounded(3.5, min=2.5, max=5.0)
    lanes_choices: tuple[int, ...] = (2, 2, 4)
    parking_strip_probability: float = bounded(0.7, min=0.0, max=1.0)
    sidewalk_width_range_m: tuple[float, float] = (2.0, 4.5)
    verge_width_range_m: tuple[float, float] = (2.0, 9.0)
    curb_height_m: float = bounded(0.15, min=0.0, max=0.5)
    parked_cars_per_100m: float = bounded(8.0, min=0.0)
    moving_vehicles_per_100m: float = bounded(5.0, min=0.0)
    pedestrians_per_100m: float = bounded(5.0, min=0.0)
    cyclists_per_100m: float = bounded(0.8, min=0.0)
    trees_per_100m: float = bounded(14.0, min=0.0)
    poles_per_100m: float = bounded(8.0, min=0.0)


@dataclass(frozen=True)
class GroundRegions:
    """Flat ground (z = 0) labels: road band, optional median, ``other_flat`` rectangles
    (x0, x1, y0, y1) for driveways and parking lots, terrain elsewhere."""

    road_half_width_m: float
    median_half_width_m: float
    lane_lines_y_m: tuple[float, ...]
    edge_lines_y_m: tuple[float, ...]
    flat_patches: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 4)))

    def labels(self, xy: NDArray[np.float64]) -> NDArray[np.uint16]:
        """Class label of ground points (N×2 world xy)."""
        y_abs = np.abs(xy[:, 1])
        out = np.full(len(xy), LABEL_OF['terrain'], dtype=np.uint16)
        out[y_abs <= self.road_half_width_m] = LABEL_OF['driveable_surface']
        out[y_abs <= self.median_half_width_m] = LABEL_OF['other_flat']
        for x0, x1, y0, y1 in self.flat_patches:
            inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
            out[inside] = LABEL_OF['other_flat']
        return out


@dataclass(frozen=True)
class Scene:
    """Everything in a drive: primitives (with velocities), ground and the ego path."""

    primitives: PrimitiveSet
    velocity_mps: NDArray[np.float64]  # P×3; zero for static primitives
    ground: GroundRegions
    ego_lane_y_m: float
    ego_speed_mps: float

    def primitives_at(self, t_s: float) -> PrimitiveSet:
        """Primitives with moving objects advanced to time ``t_s`` (seconds from start)."""
        p = self.primitives
        return PrimitiveSet(
            kind=p.kind, center=p.center + self.velocity_mps * t_s, half_size=p.half_size,
            yaw=p.yaw, label=p.label, instance=p.instance, color=p.color,
            reflectivity=p.reflectivity, texture=p.texture,
        )

    def ego_pose(self, t_s: float) -> tuple[float, float, float]:
        """Ego ``(x_m, y_m, yaw_rad)`` of ``base_link`` in ``odom`` at ``t_s``: along the lane
        with a gentle lane-keeping sway."""
        x = self.ego_speed_mps * t_s
        wavelength, amplitude = 90.0, 0.25
        phase = 2 * np.pi * x / wavelength
        y = self.ego_lane_y_m + amplitude * np.sin(phase)
        dy_dx = amplitude * 2 * np.pi / wavelength * np.cos(phase)
        return x, y, float(np.arctan(dy_dx))


class _Builder:
    """Accumulates primitives; one call per object part."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.rows: list[tuple] = []
        self.next_instance = 1

    def new_instance(self, class_name: str) -> int:
        if class_name not in THING_CLASSES:
            return 0
        self.next_instance += 1
        return self.next_instance - 1

    def add(self, kind: int, class_name: str, center: tuple[float, float, float],
            half: tuple[float, float, float], yaw: float = 0.0, *, instance: int = 0,
            color: tuple[float, float, float] | NDArray[np.float64] | None = None,
            texture: int = TEX_PLAIN, velocity: tuple[float, float] = (0.0, 0.0)) -> None:
        base = np.asarray(color if color is not None else _COLORS.get(class_name, (0.5,) * 3))
        jitter = self.rng.normal(0.0, 0.04, 3)
        rgb = np.clip(base + jitter, 0.0, 1.0)
        refl = float(np.clip(REFLECTIVITY[class_name] * self.rng.uniform(0.85, 1.15), 0, 1))
        self.rows.append((kind, center, half, yaw, LABEL_OF[class_name], instance, rgb, refl,
                          texture, (velocity[0], velocity[1], 0.0)))

    def build(self) -> tuple[PrimitiveSet, NDArray[np.float64]]:
        cols = list(zip(*self.rows, strict=True)) if self.rows else [()] * 10
        prims = PrimitiveSet(
            kind=np.asarray(cols[0], dtype=np.int8).reshape(-1),
            center=np.asarray(cols[1], dtype=np.float64).reshape(-1, 3),
            half_size=np.asarray(cols[2], dtype=np.float64).reshape(-1, 3),
            yaw=np.asarray(cols[3], dtype=np.float64).reshape(-1),
            label=np.asarray(cols[4], dtype=np.uint16).reshape(-1),
            instance=np.asarray(cols[5], dtype=np.uint32).reshape(-1),
            color=np.asarray(cols[6], dtype=np.float64).reshape(-1, 3),
            reflectivity=np.asarray(cols[7], dtype=np.float64).reshape(-1),
            texture=np.asarray(cols[8], dtype=np.int8).reshape(-1),
        )
        return prims, np.asarray(cols[9], dtype=np.float64).reshape(-1, 3)

    # ---- things -------------------------------------------------------------------------
    def car(self, x: float, y: float, yaw: float, v: tuple[float, float] = (0.0, 0.0)) -> None:
        length, width = self.rng.uniform(4.2, 5.0), self.rng.uniform(1.8, 2.0)
        height = self.rng.uniform(1.45, 1.9)
        paint = _CAR_PAINTS[self.rng.integers(len(_CAR_PAINTS))]
        inst = self.new_instance('car')
        self.add(BOX, 'car', (x, y, 0.55), (length / 2, width / 2, 0.35), yaw, instance=inst,
                 color=paint, velocity=v)
        c, s = np.cos(yaw), np.sin(yaw)
        back = -0.15 * length
        cabin_h = (height - 0.9) / 2
        self.add(BOX, 'car', (x + c * back, y + s * back, 0.9 + cabin_h),
                 (0.28 * length, 0.45 * width, cabin_h), yaw, instance=inst,
                 color=paint * 0.5 + 0.05, texture=TEX_GLASS, velocity=v)

    def truck(self, x: float, y: float, yaw: float, v: tuple[float, float] = (0.0, 0.0),
              with_trailer: bool = False) -> None:
        length = self.rng.uniform(6.0, 8.5) if not with_trailer else 2.4
        width, height = self.rng.uniform(2.3, 2.6), self.rng.uniform(2.6, 3.4)
        inst = self.new_instance('truck')
        c, s = np.cos(yaw), np.sin(yaw)
        front = length / 2 - 1.0
        self.add(BOX, 'truck', (x + c * front, y + s * front, 0.4 + (height - 0.5) / 2),
                 (1.0, width / 2, (height - 0.5) / 2), yaw, instance=inst, velocity=v,
                 color=_CAR_PAINTS[self.rng.integers(len(_CAR_PAINTS))])
        if length > 2.5:
            cargo = length - 2.1
            back = -length / 2 + cargo / 2
            self.add(BOX, 'truck', (x + c * back, y + s * back, 0.5 + height / 2 - 0.25),
                     (cargo / 2, width / 2, height / 2 - 0.25), yaw, instance=inst, velocity=v)
        if with_trailer:
            t_len = self.rng.uniform(8.0, 13.0)
            offset = -length / 2 - 0.3 - t_len / 2
            self.trailer(x + c * offset, y + s * offset, yaw, v, t_len)

    def trailer(self, x: float, y: float, yaw: float, v: tuple[float, float] = (0.0, 0.0),
                length: float | None = None) -> None:
        length = length if length is not None else self.rng.uniform(8.0, 13.0)
        height = self.rng.uniform(3.2, 4.0)
        inst = self.new_instance('trailer')
        self.add(BOX, 'trailer', (x, y, 1.0 + (height - 1.0) / 2),
                 (length / 2, 1.3, (height - 1.0) / 2), yaw, instance=inst, velocity=v)

    def bus(self, x: float, y: float, yaw: float, v: tuple[float, float] = (0.0, 0.0)) -> None:
        length, height = self.rng.uniform(10.5, 12.5), self.rng.uniform(3.1, 3.6)
        inst = self.new_instance('bus')
        half_h = (height - 0.3) / 2
        self.add(BOX, 'bus', (x, y, 0.3 + half_h), (length / 2, 1.27, half_h), yaw,
                 instance=inst, velocity=v, texture=TEX_BUILDING)

    def construction_vehicle(self, x: float, y: float, yaw: float) -> None:
        inst = self.new_instance('construction_vehicle')
        c, s = np.cos(yaw), np.sin(yaw)
        self.add(BOX, 'construction_vehicle', (x, y, 0.9), (3.0, 1.35, 0.7), yaw, instance=inst)
        self.add(BOX, 'construction_vehicle', (x - 1.2 * c, y - 1.2 * s, 2.4), (1.0, 1.0, 0.8),
                 yaw, instance=inst, texture=TEX_GLASS)
        self.add(BOX, 'construction_vehicle', (x + 3.6 * c, y + 3.6 * s, 1.9), (1.6, 0.25, 0.25),
                 yaw, instance=inst)
        self.add(BOX, 'construction_vehicle', (x + 5.0 * c, y + 5.0 * s, 0.8), (0.5, 0.9, 0.6),
                 yaw, instance=inst)

    def two_wheeler(self, class_name: str, x: float, y: float, yaw: float,
                    v: tuple[float, float] = (0.0, 0.0), ridden: bool = True) -> None:
        # nuScenes annotates a cycle's rider as part of the cycle, so the rider shares its label.
        inst = self.new_instance(class_name)
        is_moto = class_name == 'motorcycle'
        length = self.rng.uniform(1.9, 2.3) if is_moto else self.rng.uniform(1.6, 1.8)
        half_w = 0.35 if is_moto else 0.12
        body_h = 0.45 if is_moto else 0.4
        self.add(BOX, class_name, (x, y, 0.25 + body_h), (length / 2, half_w, body_h), yaw,
                 instance=inst, velocity=v)
        if ridden:
            self.add(CYLINDER, class_name, (x, y, 1.35), (0.22, 0.22, 0.35), yaw, instance=inst,
                     color=(0.25, 0.25, 0.3), velocity=v)
            self.add(ELLIPSOID, class_name, (x, y, 1.85), (0.13, 0.13, 0.15), yaw, instance=inst,
                     color=(0.7, 0.6, 0.5), velocity=v)

    def pedestrian(self, x: float, y: float, v: tuple[float, float] = (0.0, 0.0)) -> None:
        inst = self.new_instance('pedestrian')
        height = self.rng.uniform(1.55, 1.9)
        body = height - 0.27
        shirt = self.rng.uniform(0.1, 0.9, 3)
        self.add(CYLINDER, 'pedestrian', (x, y, body / 2), (0.2, 0.2, body / 2), instance=inst,
                 color=shirt, velocity=v)
        self.add(ELLIPSOID, 'pedestrian', (x, y, body + 0.13), (0.11, 0.11, 0.13), instance=inst,
                 color=(0.75, 0.6, 0.5), velocity=v)

    def barrier(self, x: float, y: float, yaw: float) -> None:
        inst = self.new_instance('barrier')
        self.add(BOX, 'barrier', (x, y, 0.5), (1.2, 0.25, 0.5), yaw, instance=inst,
                 texture=TEX_STRIPES)

    def cone(self, x: float, y: float) -> None:
        inst = self.new_instance('traffic_cone')
        self.add(CYLINDER, 'traffic_cone', (x, y, 0.36), (0.16, 0.16, 0.36), instance=inst,
                 texture=TEX_STRIPES)

    # ---- stuff --------------------------------------------------------------------------
    def tree(self, x: float, y: float) -> None:
        trunk = self.rng.uniform(2.0, 3.5)
        crown = self.rng.uniform(1.5, 3.5)
        self.add(CYLINDER, 'vegetation', (x, y, trunk / 2), (0.2, 0.2, trunk / 2),
                 color=(0.35, 0.25, 0.15), texture=TEX_BARK)
        self.add(ELLIPSOID, 'vegetation', (x, y, trunk + crown * 0.8),
                 (crown, crown, crown * 1.1), texture=TEX_FOLIAGE)

    def bush(self, x: float, y: float, length: float) -> None:
        self.add(ELLIPSOID, 'vegetation', (x, y, 0.5), (length / 2, 0.8, 0.8),
                 texture=TEX_FOLIAGE)

    def pole(self, x: float, y: float, side: float) -> None:
        height = self.rng.uniform(6.0, 9.0)
        self.add(CYLINDER, 'manmade', (x, y, height / 2), (0.12, 0.12, height / 2),
                 color=(0.45, 0.45, 0.47))
        self.add(BOX, 'manmade', (x, y - side * 1.0, height - 0.1), (0.2, 1.0, 0.08),
                 color=(0.45, 0.45, 0.47))

    def sign(self, x: float, y: float) -> None:
        self.add(CYLINDER, 'manmade', (x, y, 1.3), (0.05, 0.05, 1.3), color=(0.5, 0.5, 0.5))
        self.add(BOX, 'manmade', (x, y, 2.5), (0.04, 0.35, 0.35),
                 color=(0.9, 0.9, 0.95), texture=TEX_STRIPES)


def generate_scene(config: SceneConfig, rng: np.random.Generator, route_length_m: float,
                   ego_speed_mps: float) -> Scene:
    """A new street for a drive of ``route_length_m`` metres along +x from x = 0."""
    b = _Builder(rng)
    lanes = int(rng.choice(config.lanes_choices))
    lane_w = config.lane_width_m
    median = 0.9 if lanes >= 4 and rng.random() < 0.6 else 0.0
    # A kerb-side strip always exists (buses stop and works happen there); parked cars fill it
    # only on streets that allow parking.
    parking_allowed = rng.random() < config.parking_strip_probability
    parking = 2.4
    traffic_half = median + lanes / 2 * lane_w
    road_half = traffic_half + parking
    sidewalk_w = float(rng.uniform(*config.sidewalk_width_range_m))
    verge_w = float(rng.uniform(*config.verge_width_range_m))
    x_min, x_max = -80.0, route_length_m + 130.0
    length = x_max - x_min
    per_m = length / 100.0
    ego_lane_y = -(median + lane_w / 2)
    lane_ys = [s * (median + lane_w * (k + 0.5)) for s in (-1, 1) for k in range(lanes // 2)]
    lane_lines = tuple(s * (median + lane_w * k) for s in (-1, 1) for k in range(1, lanes // 2))
    if median == 0.0:
        lane_lines = (*lane_lines, 0.0)
    edge_lines = (-traffic_half, traffic_half)

    # Sidewalks: raised slabs in 10 m segments, interrupted by driveways (other_flat).
    patches: list[tuple[float, float, float, float]] = []
    for side in (-1.0, 1.0):
        y_center = side * (road_half + sidewalk_w / 2)
        x = x_min
        while x < x_max:
            seg = min(float(rng.uniform(8.0, 14.0)), x_max - x)
            if rng.random() < 0.12 and x > 5.0:  # a driveway crossing the sidewalk and verge
                y0, y1 = sorted((side * road_half, side * (road_half + sidewalk_w + verge_w)))
                patches.append((x, x + 4.0, y0, y1))
                x += 4.0
                continue
            b.add(BOX, 'sidewalk', (x + seg / 2, y_center, config.curb_height_m / 2),
                  (seg / 2, sidewalk_w / 2, config.curb_height_m / 2), texture=TEX_TILES)
            x += seg
    verge_in = road_half + sidewalk_w
    verge_out = verge_in + verge_w

    def free_x(n: float) -> NDArray[np.float64]:
        return np.sort(rng.uniform(x_min, x_max, rng.poisson(n)))

    def on_driveway(x: float, y: float) -> bool:
        return any(x0 - 1 <= x <= x1 + 1 and y0 <= y <= y1 for x0, x1, y0, y1 in patches)

    # Verge: trees, poles, signs, hedges; buildings, fences and parking lots behind it.
    for side in (-1.0, 1.0):
        for x in free_x(config.trees_per_100m * per_m / 2):
            y = side * float(rng.uniform(verge_in + 1.0, max(verge_in + 1.2, verge_out - 1.0)))
            if not on_driveway(x, y):
                b.tree(x, y)
        pole_spacing = 100.0 / max(config.poles_per_100m / 2, 0.1)
        for x in np.arange(x_min + rng.uniform(0, 20), x_max, pole_spacing):
            y = side * (verge_in + 0.4)
            if not on_driveway(x, y):
                b.pole(float(x), y, side)
        for x in free_x(2.0 * per_m / 2):
            y = side * (road_half + 0.5)
            if not on_driveway(x, y):
                b.sign(x, y)
        x = x_min
        while x < x_max:
            width = float(rng.uniform(8.0, 30.0))
            gap = float(rng.uniform(0.0, 10.0))
            depth = float(rng.uniform(8.0, 16.0))
            setback = verge_out + float(rng.uniform(0.0, 4.0))
            kind = rng.random()
            if kind < 0.72:
                height = float(rng.choice([rng.uniform(4, 9), rng.uniform(9, 25)], p=[0.6, 0.4]))
                tone = np.array([0.55, 0.5, 0.45]) * rng.uniform(0.6, 1.4) + rng.normal(0, 0.05, 3)
                b.add(BOX, 'manmade', (x + width / 2, side * (setback + depth / 2), height / 2),
                      (width / 2, depth / 2, height / 2), color=np.clip(tone, 0, 1),
                      texture=TEX_BUILDING)
            elif kind < 0.84:  # parking lot with parked cars
                y0, y1 = sorted((side * verge_out, side * (verge_out + 18.0)))
                patches.append((x, x + width, y0, y1))
                for px in np.arange(x + 1.5, x + width - 1.5, 2.8):
                    if rng.random() < 0.6:
                        b.car(float(px), side * (verge_out + 4.0), np.pi / 2)
            elif kind < 0.92:
                b.add(BOX, 'manmade', (x + width / 2, side * setback, 0.8),
                      (width / 2, 0.04, 0.8), color=(0.4, 0.4, 0.42))
            else:
                b.add(BOX, 'vegetation', (x + width / 2, side * (setback + 0.6), 0.9),
                      (width / 2, 0.6, 0.9), texture=TEX_FOLIAGE)
            x += width + gap
        for x in free_x(3.0 * per_m / 2):
            y = side * float(rng.uniform(verge_in + 0.8, verge_out))
            b.bush(x, y, float(rng.uniform(1, 4)))

    # Parked vehicles in the parking strips, away from the guaranteed set near the start.
    if parking_allowed:
        for side in (-1.0, 1.0):
            x = x_min
            while x < x_max:
                x += float(rng.uniform(5.5, 100.0 / max(config.parked_cars_per_100m / 2, 0.1) * 2))
                if 0.0 < x < 50.0:
                    continue
                y = side * (traffic_half + 1.2)
                r = rng.random()
                if r < 0.85:
                    b.car(x, y, 0.0 if side < 0 else np.pi)
                elif r < 0.93:
                    b.truck(x, y, 0.0)
                    x += 4
                elif r < 0.97:
                    b.two_wheeler('motorcycle', x, y, 0.0, ridden=False)
                else:
                    b.two_wheeler('bicycle', x, y, 0.0, ridden=False)

    # Moving traffic: one speed per lane so vehicles never run into each other.
    lane_speeds = {y: ego_speed_mps if abs(y - ego_lane_y) < 1e-6 else float(rng.uniform(5, 13))
                   for y in lane_ys}
    oncoming = max(lane_ys)
    for lane_y in lane_ys:
        direction = 1.0 if lane_y < 0 else -1.0
        is_ego_lane = abs(lane_y - ego_lane_y) < 1e-6
        speed = lane_speeds[lane_y]
        v = (direction * speed, 0.0)
        yaw = 0.0 if direction > 0 else np.pi
        x = x_min + float(rng.uniform(0, 20))
        while x < x_max:
            mean_gap = 100.0 * len(lane_ys) / max(config.moving_vehicles_per_100m, 0.01)
            gap = float(rng.exponential(mean_gap))
            x += max(gap, 14.0)
            if (is_ego_lane and -25.0 < x < 25.0) or (lane_y == oncoming and 0.0 < x < 70.0):
                continue  # keep room for the ego and for the guaranteed set's movers
            r = rng.random()
            if r < 0.74:
                b.car(x, lane_y, yaw, v)
            elif r < 0.84:
                b.truck(x, lane_y, yaw, v)
            elif r < 0.89:
                b.truck(x, lane_y, yaw, v, with_trailer=True)
                x += 14.0
            elif r < 0.93:
                b.bus(x, lane_y, yaw, v)
                x += 6.0
            else:
                b.two_wheeler('motorcycle', x, lane_y, yaw, v)

    # People on the sidewalks and cyclists near the curb.
    for side in (-1.0, 1.0):
        for x in free_x(config.pedestrians_per_100m * per_m / 2):
            y = side * float(rng.uniform(road_half + 0.5, road_half + sidewalk_w - 0.4))
            speed = float(rng.choice([0.0, rng.uniform(0.9, 1.6)], p=[0.3, 0.7]))
            direction = 1.0 if rng.random() < 0.5 else -1.0
            for k in range(int(rng.choice([1, 1, 1, 2, 3]))):
                b.pedestrian(x + 0.8 * k, y + 0.1 * k, (direction * speed, 0.0))
        for x in free_x(config.cyclists_per_100m * per_m / 2):
            direction = 1.0 if side < 0 else -1.0
            b.two_wheeler('bicycle', x, side * (traffic_half - 0.5), 0.0 if side < 0 else np.pi,
                          (direction * float(rng.uniform(3.0, 6.0)), 0.0))

    _guaranteed_set(b, rng, traffic_half, road_half, sidewalk_w, verge_in, ego_lane_y,
                    ego_speed_mps, oncoming, lane_speeds[oncoming], patches)

    primitives, velocity = b.build()
    ground = GroundRegions(road_half_width_m=road_half, median_half_width_m=median,
                           lane_lines_y_m=lane_lines, edge_lines_y_m=edge_lines,
                           flat_patches=np.asarray(patches, dtype=np.float64).reshape(-1, 4))
    return Scene(primitives=primitives, velocity_mps=velocity, ground=ground,
                 ego_lane_y_m=ego_lane_y, ego_speed_mps=ego_speed_mps)


def _guaranteed_set(b: _Builder, rng: np.random.Generator, traffic_half: float, road_half: float,
                    sidewalk_w: float, verge_in: float, ego_lane_y: float, ego_speed: float,
                    oncoming_y: float, oncoming_speed: float,
                    patches: list[tuple[float, float, float, float]]) -> None:
    """At least one object of every class within 45 m of the start, placed per seed where the
    ego can see it (not hidden behind one another)."""

    def jitter() -> float:
        return float(rng.uniform(-3.0, 3.0))

    right_kerb = -(traffic_half + 1.2)
    left_kerb = traffic_half + 1.2
    v_oncoming = (-oncoming_speed, 0.0)
    # A lead vehicle in the ego lane, at the ego's speed.
    b.car(18.0 + jitter(), ego_lane_y, 0.0, (ego_speed, 0.0))
    # Bus at a stop on the right; road works with barriers and cones on the left.
    b.bus(32.0 + jitter(), right_kerb, 0.0)
    x_work = 14.0 + jitter()
    b.construction_vehicle(x_work + 6.0, left_kerb, np.pi)
    for k in range(4):
        b.barrier(x_work + 2.6 * k, left_kerb - 1.5, 0.0)
    for k in range(6):
        b.cone(x_work - 4.0 + 2.0 * k, left_kerb - 1.9)
    # Oncoming motorcycle and truck with trailer at the lane's speed; a parked motorcycle
    # behind the ego, a cyclist at the kerb and pedestrians on both sidewalks.
    b.two_wheeler('motorcycle', 30.0 + jitter(), oncoming_y, np.pi, v_oncoming)
    b.truck(50.0 + jitter(), oncoming_y, np.pi, v_oncoming, with_trailer=True)
    b.two_wheeler('motorcycle', -8.0 + jitter(), right_kerb, 0.0, ridden=False)
    b.two_wheeler('bicycle', 10.0 + jitter(), -(traffic_half - 0.5), 0.0, (4.0, 0.0))
    for k in range(3):
        b.pedestrian(8.0 + 3.0 * k + jitter(), -(road_half + sidewalk_w / 2), (1.2, 0.0))
        b.pedestrian(16.0 + 2.5 * k + jitter(), road_half + sidewalk_w / 2, (-1.0, 0.0))
    # A parked trailer on a driveway to the right.
    x_drive = 4.0 + jitter()
    patches.append((x_drive, x_drive + 5.0, -(verge_in + 12.0), -road_half))
    b.trailer(x_drive + 2.5, -(verge_in + 7.0), np.pi / 2, length=9.0)
