"""Procedural renderer of one synthetic sewer CCTV frame (numpy only, vectorised).

Geometry: the camera sits inside a cylinder of radius 1 (pipe units) looking down its axis.
Every pixel is ray-cast against the wall and the water plane, which gives the hit depth ``z``
and wall angle ``phi``; texture, joints and most defects are defined on the pipe surface in
(z, phi) so they obey perspective. Objects in the lumen (roots, sealing, obstacles) live in
planes of constant depth in front of the wall. Each positive class adds local evidence and
returns its exact visible pixel mask.
"""
from __future__ import annotations

import numpy as np

from benchmark.classes import CLASS_INDEX, NUM_CLASSES

TWO_PI = 2.0 * np.pi
Z_MAX = 60.0
MASK_THRESHOLD = 0.3

# Layer order: surface evidence first (composited into the albedo before lighting),
# lumen objects last (they occlude).
_SURFACE_ORDER = ("DE", "OK", "FS", "PF", "OB", "RB", "BE", "IN", "GR", "PH", "PB", "OS", "OP", "AF")
_FRONT_ORDER = ("IS", "RO", "FO")

_MATERIALS = (
    np.array([0.56, 0.54, 0.50]),  # concrete
    np.array([0.62, 0.43, 0.30]),  # vitrified clay
    np.array([0.70, 0.68, 0.62]),  # PVC / liner, light grey
    np.array([0.50, 0.52, 0.46]),  # old concrete, greenish
    np.array([0.66, 0.58, 0.42]),  # liner, ochre
)


def _wrap(a):
    return (a + np.pi) % TWO_PI - np.pi


def _smooth(x):
    return x * x * (3.0 - 2.0 * x)


def _vnoise(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Periodic bilinear value noise: ``grid`` sampled at (v, u) in cell units."""
    gh, gw = grid.shape
    u0 = np.floor(u)
    v0 = np.floor(v)
    fu = _smooth(u - u0)
    fv = _smooth(v - v0)
    iu = u0.astype(np.int64) % gw
    iv = v0.astype(np.int64) % gh
    iu1 = (iu + 1) % gw
    iv1 = (iv + 1) % gh
    top = grid[iv, iu] * (1 - fu) + grid[iv, iu1] * fu
    bot = grid[iv1, iu] * (1 - fu) + grid[iv1, iu1] * fu
    return top * (1 - fv) + bot * fv


def _segments_alpha(h: int, w: int, a: np.ndarray, b: np.ndarray, width) -> np.ndarray:
    """Anti-aliased coverage of line segments a[i]->b[i] (pixel coords x, y) of given widths."""
    out = np.zeros((h, w), np.float32)
    if len(a) == 0:
        return out
    width = np.broadcast_to(np.asarray(width, np.float64), (len(a),))
    pad = float(width.max()) / 2 + 1.5
    allx = np.concatenate([a[:, 0], b[:, 0]])
    ally = np.concatenate([a[:, 1], b[:, 1]])
    x0 = max(0, int(np.floor(allx.min() - pad)))
    x1 = min(w, int(np.ceil(allx.max() + pad)) + 1)
    y0 = max(0, int(np.floor(ally.min() - pad)))
    y1 = min(h, int(np.ceil(ally.max() + pad)) + 1)
    if x0 >= x1 or y0 >= y1:
        return out
    ys, xs = np.mgrid[y0:y1, x0:x1]
    p = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)  # (P, 2)
    ab = b - a
    den = np.maximum((ab ** 2).sum(1), 1e-9)
    t = np.clip(((p[:, None, :] - a[None]) * ab[None]).sum(2) / den[None], 0, 1)
    near = a[None] + t[..., None] * ab[None]
    d = np.sqrt(((p[:, None, :] - near) ** 2).sum(2))  # (P, S)
    alpha = np.clip(width[None] / 2 + 0.5 - d, 0, 1).max(1)
    out[y0:y1, x0:x1] = alpha.reshape(y1 - y0, x1 - x0)
    return out


class Scene:
    """Camera, ray-cast geometry and albedo of one frame."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, water_level: float,
                 difficulty: float, deform: dict | None = None):
        self.rng = rng
        self.w, self.h = width, height
        self.difficulty = difficulty
        self.f = width * rng.uniform(0.55, 0.75)
        self.cx = width / 2 + rng.uniform(-0.08, 0.08) * width
        self.cy = height / 2 + rng.uniform(-0.08, 0.08) * height
        self.roll = rng.normal(0, 0.06)
        wl = min(max(float(water_level), 0.0), 100.0) / 100.0
        # WaterLevel is a percentage of the pipe height; the plane sits at y_w (pipe radius 1).
        self.yw = -1.0 + 2.0 * min(wl, 0.88) if wl > 0 else -2.0
        self.ox = rng.uniform(-0.15, 0.15)
        self.oy = max(rng.uniform(-0.12, 0.15), self.yw + 0.14)
        u = np.arange(width) + 0.5 - self.cx
        v = np.arange(height) + 0.5 - self.cy
        uu, vv = np.meshgrid(u, v)
        c, s = np.cos(self.roll), np.sin(self.roll)
        self.du = c * uu + s * vv
        self.dv = -s * uu + c * vv
        self.norm = np.sqrt(self.du ** 2 + self.dv ** 2 + self.f ** 2)
        self.seg_len = rng.uniform(1.0, 2.2)
        self.z0 = rng.uniform(0.2, self.seg_len)
        self.joint_w = rng.uniform(0.015, 0.035)

        # wall: |o + t d|_xy = 1
        a = np.maximum(self.du ** 2 + self.dv ** 2, 1e-9)
        b = 2 * (self.ox * self.du - self.oy * self.dv)
        cc = self.ox ** 2 + self.oy ** 2 - 1.0
        t = (-b + np.sqrt(b * b - 4 * a * cc)) / (2 * a)
        t = np.minimum(t, Z_MAX / self.f)
        phi = np.arctan2(self.oy - t * self.dv, self.ox + t * self.du)
        self.deform_amount = np.zeros_like(t)
        self.de_e = deform["e"] if deform is not None else 1.0
        if deform is not None:  # local dent of the cross-section (DE), centred on a joint
            js = self.joints_between(deform["z"] - self.seg_len, deform["z"] + self.seg_len)
            deform["z"] = float(js[np.argmin(np.abs(js - deform["z"]))]) if len(js) else deform["z"]
            z = t * self.f
            bump = np.exp(-0.5 * ((z - deform["z"]) / deform["len"]) ** 2)
            amount = deform["e"] * bump * np.clip(np.cos(phi - deform["phi"]), 0, 1) ** 2
            t = t * (1 - amount)
            phi = np.arctan2(self.oy - t * self.dv, self.ox + t * self.du)
            self.deform_amount = amount
        self.t_wall = t
        self.phi = phi
        self.z_wall = t * self.f

        dir_y = -self.dv
        with np.errstate(divide="ignore", invalid="ignore"):
            tw = np.where(dir_y < 0, (self.yw - self.oy) / dir_y, np.inf)
        self.water = (tw > 0) & (tw < t)
        self.wall = ~self.water
        self.t_hit = np.where(self.water, tw, t)
        self.z = self.t_hit * self.f
        self.x_hit = self.ox + self.t_hit * self.du
        self.y_hit = self.oy - self.t_hit * self.dv
        self.dist = self.t_hit * self.norm

        self.albedo = self._base_albedo()

    # ------------------------------------------------------------------ geometry helpers
    def project(self, x, y, z):
        """Pipe coordinates -> pixel coordinates (x index, y index)."""
        z = np.maximum(np.asarray(z, np.float64), 1e-3)
        du = self.f * (np.asarray(x) - self.ox) / z
        dv = -self.f * (np.asarray(y) - self.oy) / z
        c, s = np.cos(self.roll), np.sin(self.roll)
        u = c * du - s * dv
        v = s * du + c * dv
        return np.stack([u + self.cx - 0.5, v + self.cy - 0.5], -1)

    def project_surface(self, z, phi, r=1.0):
        return self.project(r * np.cos(phi), r * np.sin(phi), z)

    def plane_coords(self, zp: float):
        """Where each pixel's ray crosses the plane z = zp: (x, y, in_front mask)."""
        tp = zp / self.f
        x = self.ox + tp * self.du
        y = self.oy - tp * self.dv
        return x, y, tp < self.t_hit

    def joints_between(self, lo: float, hi: float) -> np.ndarray:
        k0 = np.ceil((lo - self.z0) / self.seg_len)
        k1 = np.floor((hi - self.z0) / self.seg_len)
        return self.z0 + self.seg_len * np.arange(k0, k1 + 1)

    def in_frame(self, pt, margin=2.0) -> bool:
        return (margin <= pt[0] <= self.w - 1 - margin) and (margin <= pt[1] <= self.h - 1 - margin)

    # ------------------------------------------------------------------ base appearance
    def _base_albedo(self) -> np.ndarray:
        rng = self.rng
        self.material = int(rng.integers(len(_MATERIALS)))
        base = _MATERIALS[self.material] * rng.uniform(0.94, 1.06, 3) * rng.uniform(0.85, 1.15)
        zc = np.minimum(self.z_wall, Z_MAX)
        n1 = _vnoise(rng.random((32, 24)), self.phi / TWO_PI * 24, zc * 1.5)
        n2 = _vnoise(rng.random((64, 64)), self.phi / TWO_PI * 64, zc * 5.0)
        tex = 1 + rng.uniform(0.10, 0.25) * (n1 - 0.5) + rng.uniform(0.05, 0.15) * (n2 - 0.5)
        alb = base[None, None, :] * tex[..., None]
        # joints: dark grooves with a faint bright lip
        dz = (zc - self.z0) % self.seg_len
        dj = np.minimum(dz, self.seg_len - dz)
        groove = np.clip(1 - dj / self.joint_w, 0, 1)
        lip = np.clip(1 - np.abs(dz - 1.5 * self.joint_w) / self.joint_w, 0, 1) * (dz < 3 * self.joint_w)
        alb = alb * (1 - 0.55 * groove[..., None]) * (1 + 0.15 * lip[..., None])
        # stains (distractors present in every frame class)
        for _ in range(rng.integers(0, 4)):
            z0, p0 = rng.uniform(1, 8), rng.uniform(-np.pi, np.pi)
            r = rng.uniform(0.1, 0.5)
            d2 = ((zc - z0) / r) ** 2 + (_wrap(self.phi - p0) / r) ** 2
            alb = alb * (1 - rng.uniform(0.05, 0.2) * np.exp(-d2))[..., None]
        # water surface
        if self.water.any():
            wcol = np.array([0.30, 0.27, 0.18]) * rng.uniform(0.7, 1.3, 3)
            zw = np.minimum(self.z, Z_MAX)
            rip = _vnoise(rng.random((64, 16)), self.x_hit * 6 + 8, zw * 3)
            wtex = wcol[None, None, :] * (0.85 + 0.3 * rip)[..., None]
            alb = np.where(self.water[..., None], wtex, alb)
        return alb

    def lighting(self) -> np.ndarray:
        rng = self.rng
        cos_wall = np.abs(-self.du * np.cos(self.phi) + self.dv * np.sin(self.phi)) / self.norm
        cos_water = np.abs(self.dv) / self.norm
        cosi = np.where(self.water, cos_water, cos_wall)
        d0 = rng.uniform(2.0, 4.5)
        gain = rng.uniform(1.0, 1.5)
        light = gain / (1 + (self.dist / d0) ** 2) * (0.35 + 0.65 * cosi)
        hx, hy = rng.uniform(0.3, 0.7) * self.w, rng.uniform(0.3, 0.7) * self.h
        yy, xx = np.mgrid[0:self.h, 0:self.w]
        hot = np.exp(-(((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (0.5 * self.w) ** 2)))
        return (0.03 + light * (0.75 + 0.35 * hot)).astype(np.float64)

    def light_at(self, dist: float) -> float:
        return 1.2 / (1 + (dist / 3.0) ** 2)


# ---------------------------------------------------------------------- helpers for defects
def _strength(scene: Scene, rng) -> tuple[float, float]:
    """Contrast c in (0, 1] and size factor s; harder frames get fainter, smaller evidence."""
    d = scene.difficulty
    lo = float(np.clip(1 - 0.85 * d, 0.12, 0.95))
    return rng.uniform(lo, 1.0), rng.uniform(max(0.35, 1 - 0.6 * d), 1.15)


def _zrange(scene: Scene) -> tuple[float, float]:
    return 1.25, 2.5 + 5.0 * scene.difficulty


def _pick_depth(scene: Scene, rng, easy: bool) -> float:
    lo, hi = _zrange(scene)
    if easy:
        hi = min(hi, 2.2)
    return lo + (hi - lo) * rng.random() ** 1.5


def _place_wall(scene: Scene, rng, easy=False, phi_lo=-np.pi, phi_hi=np.pi, margin=0.15):
    """A (z, phi) on the visible, dry wall whose projection is inside the frame."""
    for _ in range(40):
        z = _pick_depth(scene, rng, easy)
        phi = rng.uniform(phi_lo, phi_hi)
        if np.sin(phi) < scene.yw + margin:
            continue
        if scene.in_frame(scene.project_surface(z, phi)):
            return z, phi
    return z, phi


def _pick_joint(scene: Scene, rng, easy=False) -> float:
    lo, hi = _zrange(scene)
    if easy:
        hi = min(hi, 2.6)
    js = scene.joints_between(lo, hi + 1.0)
    if len(js) == 0:
        js = scene.joints_between(1.0, 40)
    return float(js[rng.integers(len(js))]) if rng.random() < 0.7 else float(js[0])


def _patch(scene: Scene, rng, z0, phi0, az, aw, rough):
    """Soft-edged irregular patch on the wall around (z0, phi0); alpha in [0, 1]."""
    dz = (scene.z_wall - z0) / az
    dw = _wrap(scene.phi - phi0) / aw
    r = np.sqrt(dz ** 2 + dw ** 2)
    ang = np.arctan2(dw, dz)
    k = rng.integers(3, 8)
    edge = 1 + rough * sum(rng.normal(0, 1) * np.cos(j * ang + rng.uniform(0, TWO_PI)) / j for j in range(1, k))
    return np.clip((edge - r) * 4, 0, 1) * scene.wall


def _fine_noise(scene: Scene, rng, scale=14.0):
    return _vnoise(rng.random((64, 128)), scene.phi / TWO_PI * 128 * scale / 14, np.minimum(scene.z, Z_MAX) * scale)


def _granular(scene, rng, col):
    g = _fine_noise(scene, rng, 18.0)
    g2 = _fine_noise(scene, rng, 7.0)
    return col[None, None, :] * (0.7 + 0.45 * g + 0.25 * g2)[..., None]


def _deposit_colour(rng):
    return np.array([0.62, 0.52, 0.36]) * rng.uniform(0.75, 1.25, 3)


def _opening(scene: Scene, rng, easy, rough, radius=None):
    """Circular hole in the wall (branch / connection). Returns (z0, phi0, a, rho, ang, scale)."""
    z0, phi0 = _place_wall(scene, rng, easy, margin=0.3)
    c, s = _strength(scene, rng)
    a = (radius if radius is not None else rng.uniform(0.14, 0.32)) * (s if not easy else 1.0)
    dz = scene.z_wall - z0
    dw = _wrap(scene.phi - phi0)
    rho = np.sqrt(dz ** 2 + dw ** 2) / a
    ang = np.arctan2(dw, dz)
    if rough > 0:
        k = 12
        edge = 1 + rough * sum(rng.normal(0, 1) * np.cos(j * ang + rng.uniform(0, TWO_PI)) / np.sqrt(j)
                               for j in range(2, k)) / 2.5
    else:
        edge = np.ones_like(rho)
    return z0, phi0, a, rho, edge, c


def _hole_colour(scene, rng, rho):
    dark = np.array([0.05, 0.045, 0.04]) * rng.uniform(0.6, 1.6)
    return dark[None, None, :] * (0.6 + 0.8 * np.clip(rho, 0, 1))[..., None]


# ---------------------------------------------------------------------- class evidence
# Each function returns (alpha (H,W), colour (H,W,3) or (3,), stage) with stage "albedo"/"front".

def _rb(scene, rng, easy):
    c, s = _strength(scene, rng)
    if easy:
        c = max(c, 0.7)
    z0, phi0 = _place_wall(scene, rng, easy)
    segs_a, segs_b, widths = [], [], []
    for _ in range(rng.integers(1, 4)):
        longit = rng.random() < 0.5
        n = rng.integers(5, 14)
        step = rng.uniform(0.04, 0.09) * s
        heading = (0.0 if longit else np.pi / 2) + rng.normal(0, 0.3)
        pts = [(z0 + rng.normal(0, 0.05), phi0 + rng.normal(0, 0.05))]
        for _ in range(n):
            heading += rng.normal(0, 0.5)
            zz, pp = pts[-1]
            pts.append((max(1.0, zz + step * np.cos(heading)), pp + step * np.sin(heading)))
        pts = np.array(pts)
        img = scene.project_surface(pts[:, 0], pts[:, 1])
        segs_a.append(img[:-1])
        segs_b.append(img[1:])
        widths.append(rng.uniform(0.7, 1.6, n) * (0.8 + 0.4 * s))
    alpha = _segments_alpha(scene.h, scene.w, np.concatenate(segs_a), np.concatenate(segs_b),
                            np.concatenate(widths)) * scene.wall
    col = scene.albedo * (1 - 0.75 * c)
    if rng.random() < 0.35:  # spalling halo around the crack: looks like surface damage
        halo = np.clip(_segments_alpha(scene.h, scene.w, np.concatenate(segs_a), np.concatenate(segs_b), 4.0)
                       * scene.wall - alpha, 0, 1) * 0.5 * c
        scene.albedo = scene.albedo * (1 - halo[..., None] * (0.4 * _fine_noise(scene, rng))[..., None])
    return alpha, col, "albedo"


def _ob(scene, rng, easy):
    c, s = _strength(scene, rng)
    z0, phi0 = _place_wall(scene, rng, easy)
    a = rng.uniform(0.1, 0.35) * (1.0 if easy else s)
    alpha = _patch(scene, rng, z0, phi0, a * rng.uniform(0.7, 1.4), a, rng.uniform(0.1, 0.35))
    g = _fine_noise(scene, rng, 22.0)
    tint = np.array([1.05, 1.0, 0.9]) * rng.uniform(0.8, 1.15)
    col = scene.albedo * tint * (1 + c * (0.9 * (g - 0.5) - 0.2))[..., None]
    pits = (g > 0.8) * c
    col = col * (1 - 0.6 * pits)[..., None]
    if rng.random() < 0.3:  # a short dark line inside the patch: looks like a crack
        p = scene.project_surface(np.array([z0 - a / 2, z0 + a / 2]), np.array([phi0, phi0 + rng.normal(0, a)]))
        line = _segments_alpha(scene.h, scene.w, p[:1], p[1:], 1.0) * alpha
        col = col * (1 - 0.5 * c * line)[..., None]
    return alpha * (0.55 + 0.45 * c), col, "albedo"


def _pf(scene, rng, easy):
    c, s = _strength(scene, rng)
    z0, phi0 = _place_wall(scene, rng, easy)
    length = rng.uniform(0.5, 1.8) * s
    wdt = rng.uniform(0.05, 0.14) * (1.0 if easy else s)
    dz = (scene.z_wall - z0) / length
    dw = _wrap(scene.phi - phi0) / wdt
    inside = (np.abs(dz) < 1) & (np.abs(dw) < 1) & scene.wall
    alpha = inside * np.clip((1 - np.abs(dw)) * 3, 0, 1) * np.clip((1 - np.abs(dz)) * 4, 0, 1)
    ridge = np.sin(np.clip(dw, -1, 1) * np.pi / 2)  # lit on one side, shaded on the other
    col = scene.albedo * (1 + 0.6 * c * ridge)[..., None]
    return alpha, col, "albedo"


def _de(scene, rng, easy):
    # geometry was already warped at scene construction; draw nothing extra except shading
    amount = np.abs(scene.deform_amount)
    e = scene.de_e
    alpha = np.clip((amount - 0.5 * e) / (0.2 * e + 1e-9), 0, 1) * scene.wall
    col = scene.albedo * (1 + 2.5 * scene.deform_amount)[..., None]
    return alpha, col, "albedo"


def _joint_step(scene, rng, easy, uniform: bool):
    c, s = _strength(scene, rng)
    zj = _pick_joint(scene, rng, easy)
    phi0 = rng.uniform(-np.pi, np.pi)
    g = rng.uniform(0.05, 0.22) * (1.0 if easy else s)
    cosd = np.cos(_wrap(scene.phi - phi0))
    if uniform:
        gap = g * (rng.uniform(0.7, 1.0) + rng.uniform(0.0, 0.3) * cosd)
    else:
        p = rng.uniform(0.7, 3.0)
        gap = g * np.clip(cosd, 0, 1) ** p
    dz = scene.z_wall - zj
    face = (dz > -0.005) & (dz < gap) & scene.wall & (gap > 0.012)
    rel = np.clip(dz / np.maximum(gap, 1e-6), 0, 1)
    col = scene.albedo * (1 + c * (0.9 * (1 - rel) - 0.45 * rel))[..., None]
    alpha = face.astype(np.float64)
    if uniform and rng.random() < 0.7:  # construction change: material differs after the joint
        nxt = (scene.z_wall >= zj + gap) & (scene.z_wall < zj + scene.seg_len) & scene.wall
        scene.albedo = np.where(nxt[..., None], scene.albedo * rng.uniform(0.8, 1.2, 3), scene.albedo)
    return alpha, col, "albedo"


def _fs(scene, rng, easy):
    return _joint_step(scene, rng, easy, uniform=False)


def _ok(scene, rng, easy):
    return _joint_step(scene, rng, easy, uniform=True)


def _in(scene, rng, easy):
    c, s = _strength(scene, rng)
    if easy:
        c = max(c, 0.7)
    zj = _pick_joint(scene, rng, easy)
    side = rng.choice([-1.0, 1.0])
    segs_a, segs_b = [], []
    for _ in range(rng.integers(1, 4)):
        phi_start = np.pi / 2 - side * rng.uniform(0.1, 1.2)
        span = rng.uniform(0.3, 1.3) * s
        phis = phi_start - side * np.linspace(0, span, 8)
        zs = zj + 0.02 + np.cumsum(rng.normal(0, 0.01, 8))
        keep = np.sin(phis) > scene.yw + 0.02
        if keep.sum() < 2:
            phis = np.linspace(np.pi / 2, np.pi / 2 - side * 0.4, 6)
            zs = np.full(6, zj + 0.02)
            keep = np.ones(6, bool)
        p = scene.project_surface(zs[keep], phis[keep])
        segs_a.append(p[:-1])
        segs_b.append(p[1:])
    a, b = np.concatenate(segs_a), np.concatenate(segs_b)
    alpha = _segments_alpha(scene.h, scene.w, a, b, rng.uniform(1.0, 2.2) * (0.7 + 0.4 * s)) * scene.wall
    wet = np.array([0.85, 0.85, 0.8])
    col = scene.albedo * (1 - c) + wet * c * 1.2
    return alpha, col, "albedo"


def _af(scene, rng, easy):
    c, s = _strength(scene, rng)
    lo, hi = _zrange(scene)
    z1 = lo + rng.uniform(0, 0.5 if easy else 2.0)
    zlen = rng.uniform(0.6, 3.0) * s
    x0 = rng.normal(0, 0.12)
    wx = rng.uniform(0.2, 0.6) * (1.0 if easy else s)
    hgt = rng.uniform(0.15, 0.45)
    zz = np.minimum(scene.z, Z_MAX)
    n = _vnoise(rng.random((16, 16)), scene.x_hit * 5 + 8, zz * 2)
    width = wx * (0.7 + 0.6 * n)
    inside = (zz > z1) & (zz < z1 + zlen) & (np.abs(scene.x_hit - x0) < width)
    inside &= scene.y_hit < max(-1 + hgt, scene.yw + 0.03)
    edge = np.clip((width - np.abs(scene.x_hit - x0)) / (0.15 * wx), 0, 1)
    alpha = inside * edge * (0.5 + 0.5 * c)
    col = _granular(scene, rng, _deposit_colour(rng))
    return alpha, col, "albedo"


def _be(scene, rng, easy):
    c, s = _strength(scene, rng)
    if scene.yw > -1.5 and rng.random() < 0.5:  # grease line at the water surface
        phi_lo, phi_hi = np.arcsin(np.clip(scene.yw + 0.08, -1, 1)), np.arcsin(np.clip(scene.yw + 0.3, -1, 1))
        phi0 = rng.uniform(phi_lo, phi_hi)
        if rng.random() < 0.5:
            phi0 = np.pi - phi0
        z0 = _pick_depth(scene, rng, easy)
    else:
        z0, phi0 = _place_wall(scene, rng, easy, margin=0.2)
    a = rng.uniform(0.1, 0.3) * (1.0 if easy else s)
    alpha = _patch(scene, rng, z0, phi0, a * rng.uniform(1.0, 3.0), a * 0.8, rng.uniform(0.2, 0.45))
    alpha = alpha * (0.5 + 0.5 * c)
    col = _granular(scene, rng, _deposit_colour(rng))
    return alpha, col, "albedo"


def _gr(scene, rng, easy):
    z0, phi0, a, rho, edge, c = _opening(scene, rng, easy, rough=0.0, radius=rng.uniform(0.18, 0.36))
    hole = np.clip((edge - rho) * 6, 0, 1)
    rim = np.clip((edge * 1.3 - rho) * 6, 0, 1) - hole
    col = np.where(hole[..., None] > 0, _hole_colour(scene, rng, rho), scene.albedo * (1 + 0.5 * c))
    return np.clip(hole + rim, 0, 1) * scene.wall, col, "albedo"


def _ph(scene, rng, easy):
    z0, phi0, a, rho, edge, c = _opening(scene, rng, easy, rough=rng.uniform(0.12, 0.45))
    hole = np.clip((edge - rho) * 6, 0, 1)
    rubble = (rho < edge * 1.35) & (rho >= edge) & (_fine_noise(scene, rng, 30.0) > 0.6)
    col = np.where(hole[..., None] > 0, _hole_colour(scene, rng, rho), scene.albedo * (1 - 0.4 * c))
    return np.clip(hole + rubble * 0.8, 0, 1) * scene.wall, col, "albedo"


def _pb(scene, rng, easy):
    z0, phi0, a, rho, edge, c = _opening(scene, rng, easy, rough=rng.uniform(0.0, 0.12))
    hole = np.clip((edge - rho) * 6, 0, 1)
    return hole * scene.wall, _hole_colour(scene, rng, rho), "albedo"


def _os(scene, rng, easy):
    z0, phi0, a, rho, edge, c = _opening(scene, rng, easy, rough=rng.uniform(0.05, 0.25))
    hole = np.clip((edge - rho) * 6, 0, 1)
    ang = np.arctan2(_wrap(scene.phi - phi0), scene.z_wall - z0)
    cuts = (np.cos(ang * rng.integers(5, 10)) > 0.6) & (rho >= edge) & (rho < edge * 1.45)
    col = np.where(hole[..., None] > 0, _hole_colour(scene, rng, rho),
                   np.array([0.8, 0.78, 0.7]) * (1 - 0.5 * c))
    return np.clip(hole + cuts * 0.9, 0, 1) * scene.wall, col, "albedo"


def _op(scene, rng, easy):
    z0, phi0, a, rho, edge, c = _opening(scene, rng, easy, rough=0.0, radius=rng.uniform(0.2, 0.36))
    outer = np.clip((edge - rho) * 6, 0, 1)
    inner = rho < edge * rng.uniform(0.45, 0.7)
    cone = scene.albedo * (0.55 + 0.3 * rho)[..., None] * (1 - 0.3 * c)
    col = np.where(inner[..., None], _hole_colour(scene, rng, rho * 2), cone)
    return outer * scene.wall, col, "albedo"


def _is(scene, rng, easy):
    c, s = _strength(scene, rng)
    zj = _pick_joint(scene, rng, easy) - 0.01
    x, y, front = scene.plane_coords(zj)
    rho = np.sqrt(x ** 2 + y ** 2)
    psi = np.arctan2(y, x)
    psi0 = rng.uniform(-np.pi, np.pi)
    if np.sin(psi0) < scene.yw + 0.2:
        psi0 = np.pi / 2 + rng.normal(0, 0.6)
    half = rng.uniform(0.4, 1.3)
    t = _wrap(psi - psi0) / half
    on = np.abs(t) < 1
    hmax = rng.uniform(0.08, 0.3) * (1.0 if easy else s)
    curve = 1 - hmax * np.sqrt(np.clip(1 - t ** 2, 0, 1))
    thick = rng.uniform(0.025, 0.06) * (1.0 if easy else max(s, 0.6))
    band = on & (np.abs(rho - curve) < thick) & front & (y > scene.yw)
    alpha = band.astype(np.float64) * (0.6 + 0.4 * c)
    col = np.array([0.12, 0.12, 0.12]) * rng.uniform(0.6, 2.0) * scene.light_at(zj) * 1.5
    return alpha, np.broadcast_to(col, (scene.h, scene.w, 3)), "front"


def _ro(scene, rng, easy):
    c, s = _strength(scene, rng)
    zj = _pick_joint(scene, rng, easy) - 0.01
    for _ in range(20):
        psi0 = rng.uniform(-np.pi, np.pi)
        if np.sin(psi0) > scene.yw + 0.15 and scene.in_frame(scene.project_surface(zj, psi0)):
            break
    n = int(rng.integers(4, 18) * (0.5 + 0.5 * s)) + 2
    segs_a, segs_b = [], []
    length = rng.uniform(0.15, 0.5) * (1.0 if easy else s)
    for _ in range(n):
        ang = psi0 + rng.normal(0, 0.12)
        r = 1.0
        zz = zj
        heading = rng.normal(0, 0.7)
        pts = [(r * np.cos(ang), r * np.sin(ang), zz)]
        steps = rng.integers(3, 8)
        for _ in range(steps):
            heading += rng.normal(0, 0.5)
            r -= length / steps * abs(np.cos(heading))
            ang += length / steps * np.sin(heading) * 0.8
            zz -= rng.uniform(0, 0.03)
            pts.append((r * np.cos(ang), r * np.sin(ang), zz))
        pts = np.array(pts)
        p = scene.project(pts[:, 0], pts[:, 1], pts[:, 2])
        segs_a.append(p[:-1])
        segs_b.append(p[1:])
    alpha = _segments_alpha(scene.h, scene.w, np.concatenate(segs_a), np.concatenate(segs_b),
                            rng.uniform(0.6, 1.2) * (0.8 + 0.3 * s))
    root = np.array([0.62, 0.50, 0.34]) * rng.uniform(0.8, 1.2, 3) * scene.light_at(zj) * 1.6
    alpha = alpha * (0.5 + 0.5 * c)
    return alpha, np.broadcast_to(root, (scene.h, scene.w, 3)), "front"


def _fo(scene, rng, easy):
    c, s = _strength(scene, rng)
    lo, hi = _zrange(scene)
    zo = lo + 0.5 + rng.uniform(0, 0.8 if easy else hi - lo)
    x, y, front = scene.plane_coords(zo)
    x0 = rng.uniform(-0.5, 0.5)
    y0 = rng.uniform(max(scene.yw, -0.8), max(0.3, scene.yw + 0.25))
    rb = rng.uniform(0.12, 0.35) * (1.0 if easy else s)
    dx, dy = (x - x0) / rb, (y - y0) / (rb * rng.uniform(0.5, 1.0))
    r = np.sqrt(dx ** 2 + dy ** 2)
    ang = np.arctan2(dy, dx)
    edge = 1 + 0.25 * sum(rng.normal(0, 1) * np.cos(j * ang + rng.uniform(0, TWO_PI)) / j for j in range(1, 5))
    inside = (r < edge) & front & (y > scene.yw) & (x ** 2 + y ** 2 < 1)
    base = [np.array([0.5, 0.5, 0.5]), np.array([0.5, 0.35, 0.2]), np.array([0.7, 0.2, 0.15]),
            np.array([0.25, 0.3, 0.55])][rng.integers(4)] * rng.uniform(0.7, 1.3)
    shade = (1.1 - 0.5 * np.clip(r, 0, 1.2)) * scene.light_at(zo) * 1.5
    col = base[None, None, :] * (0.6 + 0.4 * c) * shade[..., None]
    return inside.astype(np.float64), col, "front"


_FUNCS = {"RB": _rb, "OB": _ob, "PF": _pf, "DE": _de, "FS": _fs, "IS": _is, "RO": _ro, "IN": _in,
          "AF": _af, "BE": _be, "FO": _fo, "GR": _gr, "PH": _ph, "PB": _pb, "OS": _os, "OP": _op, "OK": _ok}


def _osd(img: np.ndarray, rng) -> None:
    """On-screen-display text look-alike (inspection frames carry date/metre overlays)."""
    h, w, _ = img.shape
    if rng.random() < 0.3 or h < 16:
        return
    for _ in range(rng.integers(1, 3)):
        n = int(rng.integers(4, max(5, w // 8)))
        bits = rng.random((5, 4 * n)) < 0.45
        bits[:, 3::4] = False
        y = int(rng.choice([1, h - 7]))
        x = int(rng.integers(1, max(2, w - 4 * n - 1)))
        region = img[y:y + 5, x:x + bits.shape[1]]
        b = bits[:region.shape[0], :region.shape[1]]
        region[b] = 0.95


def render(labels: np.ndarray, water_level: float, rng: np.random.Generator, width: int = 128,
           height: int = 96, difficulty: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Render one frame. Returns (image uint8 (H, W, 3), masks bool (17, H, W))."""
    out, masks, _scene = render_scene(labels, water_level, rng, width, height, difficulty)
    return out, masks


#: Scene parameters of :func:`scene_parameters` (the pretext targets of ``sewerbench pretrain``):
#: name -> (low, high) of the renderer's draw, used to scale each to [-1, 1].
SCENE_PARAMETERS = {
    "water": (0.0, 1.0),              # water level as a fraction of the pipe height
    "focal": (0.55, 0.75),            # focal length / image width
    "centre_x": (-0.08, 0.08),        # principal point offset / width
    "centre_y": (-0.08, 0.08),        # principal point offset / height
    "roll": (-0.15, 0.15),            # camera roll (rad), drawn N(0, 0.06)
    "offset_x": (-0.15, 0.15),        # camera position in the pipe cross-section
    "offset_y": (-0.12, 0.15),
    "joint_spacing": (1.0, 2.2),      # pipe segment length (pipe radii)
    "joint_phase": (0.0, 1.0),        # first joint's depth / segment length
    "joint_width": (0.015, 0.035),
}
#: The texture families (:data:`_MATERIALS`): a classification target of the pretext task.
NUM_MATERIALS = len(_MATERIALS)


def scene_parameters(scene: "Scene", water_level: float) -> tuple[np.ndarray, int]:
    """The frame's scene parameters scaled to [-1, 1] (order of :data:`SCENE_PARAMETERS`)
    and its texture family. None of them is a defect label."""
    raw = {"water": min(max(float(water_level), 0.0), 100.0) / 100.0,
           "focal": scene.f / scene.w, "centre_x": scene.cx / scene.w - 0.5,
           "centre_y": scene.cy / scene.h - 0.5, "roll": scene.roll, "offset_x": scene.ox,
           "offset_y": scene.oy, "joint_spacing": scene.seg_len,
           "joint_phase": scene.z0 / scene.seg_len, "joint_width": scene.joint_w}
    vec = np.array([2 * (raw[k] - lo) / (hi - lo) - 1 for k, (lo, hi) in SCENE_PARAMETERS.items()],
                   np.float32)
    return np.clip(vec, -1.5, 1.5), int(scene.material)


def render_scene(labels: np.ndarray, water_level: float, rng: np.random.Generator, width: int = 128,
                 height: int = 96, difficulty: float = 0.5) -> tuple[np.ndarray, np.ndarray, "Scene"]:
    """:func:`render` that also returns the frame's :class:`Scene` (same random draws)."""
    labels = np.asarray(labels).astype(bool)
    difficulty = float(difficulty)
    deform = None
    if labels[CLASS_INDEX["DE"]]:
        lo, hi = _zrange_static(difficulty)
        deform = {"z": lo + 0.3 + rng.uniform(0, hi - lo), "len": rng.uniform(0.3, 0.9),
                  "e": rng.uniform(0.06, 0.22) * (1 - 0.4 * difficulty * rng.random()),
                  "phi": rng.uniform(0.15, np.pi - 0.15)}
    scene = Scene(rng, width, height, water_level, difficulty, deform)
    masks = np.zeros((NUM_CLASSES, height, width), bool)

    for code in _SURFACE_ORDER:
        k = CLASS_INDEX[code]
        if not labels[k]:
            continue
        alpha, col = _evidence(scene, rng, code)
        masks[k] = alpha > MASK_THRESHOLD
        scene.albedo = scene.albedo * (1 - alpha[..., None]) + col * alpha[..., None]

    img = scene.albedo * scene.lighting()[..., None]
    for code in _FRONT_ORDER:
        k = CLASS_INDEX[code]
        if not labels[k]:
            continue
        alpha, col = _evidence(scene, rng, code)
        m = alpha > MASK_THRESHOLD
        masks[k] = m
        occl = alpha > 0.5
        for j in range(NUM_CLASSES):  # visible evidence only, but never erase a class entirely
            if j != k and masks[j].any():
                rest = masks[j] & ~occl
                if rest.any():
                    masks[j] = rest
        img = img * (1 - alpha[..., None]) + col * alpha[..., None]

    # camera: colour cast, vignette, sensor noise, on-screen text
    img = img * rng.normal(1.0, 0.035, 3)[None, None, :]
    img = img * rng.uniform(0.8, 1.25)
    img = img + rng.normal(0, 0.012 + 0.03 * difficulty * rng.random(), img.shape)
    _osd(img, rng)
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.0)
    out = (img * 255 + 0.5).astype(np.uint8)
    return out, masks, scene


def _zrange_static(difficulty: float) -> tuple[float, float]:
    return 1.25, 2.5 + 5.0 * difficulty


def _evidence(scene: Scene, rng, code: str):
    """Run a class's evidence function; retry easier if its mask came out empty."""
    fn = _FUNCS[code]
    for attempt in range(6):
        saved = scene.albedo
        alpha, col, _stage = fn(scene, rng, attempt >= 2)  # stage is implied by the order lists
        if (alpha > MASK_THRESHOLD).any():
            return np.asarray(alpha, np.float64), col
        scene.albedo = saved
    # last resort: a small patch at the image centre of the visible wall
    alpha = np.zeros((scene.h, scene.w))
    ys, xs = np.nonzero(scene.wall)
    i = rng.integers(len(ys)) if len(ys) else None
    if i is None:
        ys, xs = np.array([scene.h // 2]), np.array([scene.w // 2])
        i = 0
    alpha[max(0, ys[i] - 1):ys[i] + 2, max(0, xs[i] - 1):xs[i] + 2] = 1.0
    col = scene.albedo * 0.5
    return alpha, col
