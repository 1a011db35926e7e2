"""SynthTalk's frames: a face drawn from its dense landmarks in its identity's colours (hair, skin with directional
light, brows, eyes with irises, nose, lips, mouth interior and teeth), anti-aliased by supersampling."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .landmarks import DenseLayout
from .synth_speaker import Identity


class FaceRenderer:
    """Anti-aliased rendering of a face from its dense landmarks (supersampled polygon masks composited in numpy)."""

    def __init__(self, ident: Identity, layout: DenseLayout, resolution: int, supersample: int):
        self.ident = ident
        self.topo = layout.topology
        self.r = resolution
        self.ss = supersample
        yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32) + 0.5
        self.grid = np.stack([xx, yy], -1) / resolution
        top = np.array(ident.background) * 1.1
        bottom = np.array(ident.background) * 0.75
        ramp = np.linspace(0.0, 1.0, resolution)[:, None, None]
        self.background = np.clip(top * (1 - ramp) + bottom * ramp, 0, 1) * np.ones((resolution, resolution, 3))

    def _mask(self, polygons: list[np.ndarray], *, width: float = 0.0, closed: bool = True) -> np.ndarray:
        size = self.r * self.ss
        img = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(img)
        for poly in polygons:
            pts = [tuple(pt) for pt in (poly * self.ss).tolist()]
            if closed:
                draw.polygon(pts, fill=255)
            else:
                draw.line(pts, fill=255, width=max(1, int(round(width * self.ss))), joint="curve")
        if self.ss > 1:
            img = img.reduce(self.ss)  # box filter in C: the anti-aliasing step
        return np.asarray(img, dtype=np.float32)[..., None] / 255.0

    def contour(self, points: np.ndarray, name: str) -> np.ndarray:
        return points[list(self.topo.contours[name])]

    def render(self, points: np.ndarray, *, scale: float, centre: np.ndarray) -> np.ndarray:
        """points (N, 2) crop pixels of one frame -> (H, W, 3) uint8."""
        ident, r = self.ident, self.r
        unit = 0.34 * r * scale  # face unit in pixels for this frame
        jaw = self.contour(points, "jaw")
        # forehead: an arc over the top from the right ear back to the left ear
        left, right = jaw[0], jaw[-1]
        mid = (left + right) / 2
        ang = np.linspace(0.0, np.pi, 15)
        up = np.array([right[1] - left[1], left[0] - right[0]])
        up = up / (np.linalg.norm(up) + 1e-9)
        half = (right - left) / 2
        forehead = mid + np.cos(ang)[:, None] * half + np.sin(ang)[:, None] * up * 0.95 * unit
        face_poly = np.concatenate([jaw, forehead[1:-1]])
        hair_poly = mid + np.cos(np.linspace(0, 2 * np.pi, 30))[:, None] * half * 1.12 * ident.hair_volume
        hair_poly = hair_poly + np.sin(np.linspace(0, 2 * np.pi, 30))[:, None] * up * unit * 1.15 * ident.hair_volume
        hair_poly = hair_poly - up * 0.15 * unit
        neck = np.array([jaw[4], jaw[-5], jaw[-5] + [0, r], jaw[4] + [0, r]])
        # light: linear gradient across the face + darker rim
        d = self.grid - centre / r
        light_dir = np.array([np.cos(ident.light), np.sin(ident.light)])
        rim = np.clip(np.linalg.norm(d, axis=-1) / (1.2 * unit / r), 0, 1) ** 4
        shade = (1.0 + 0.35 * (d @ light_dir) / (unit / r) * 0.5 - 0.35 * rim)[..., None]
        skin = np.array(ident.skin)
        img = self.background.copy()

        def comp(mask: np.ndarray, colour: np.ndarray) -> None:
            nonlocal img
            img = img * (1 - mask) + mask * colour

        comp(self._mask([hair_poly]), np.array(ident.hair))
        comp(self._mask([neck]), skin * 0.78)
        comp(self._mask([face_poly]), np.clip(skin * shade, 0, 1))
        brow_w = 0.06 * unit
        comp(self._mask([self.contour(points, "right_brow"), self.contour(points, "left_brow")], width=brow_w,
                        closed=False), np.array(ident.hair) * 0.8)
        for eye in ("right_eye", "left_eye"):
            poly = self.contour(points, eye)
            white = self._mask([poly])
            centre_eye = poly.mean(0)
            rad = 0.055 * unit
            circle = centre_eye + rad * np.stack([np.cos(ang * 2), np.sin(ang * 2)], -1)
            iris = self._mask([circle]) * white
            comp(white, np.array([0.93, 0.93, 0.9]))
            comp(iris, np.array(ident.iris))
            comp(iris * self._mask([centre_eye + 0.45 * (circle - centre_eye)]), np.array([0.05, 0.05, 0.05]))
        nose = np.concatenate([self.contour(points, "nose_bottom")])
        comp(self._mask([nose], width=0.035 * unit, closed=False) * 0.6, skin * 0.55)
        comp(self._mask([self.contour(points, "nose_bridge")], width=0.03 * unit, closed=False) * 0.25, skin * 0.6)
        outer = self.contour(points, "outer_lips")
        inner = self.contour(points, "inner_lips")
        comp(self._mask([outer]), np.array(ident.lips))
        mouth = self._mask([inner])
        comp(mouth, np.array([0.25, 0.05, 0.07]))
        # upper teeth: a band under the inner upper lip, visible only inside the open mouth
        n_in = len(inner)
        upper = inner[: n_in // 2 + 1]
        teeth = np.concatenate([upper, upper[::-1] + [0, 0.09 * unit]])
        comp(self._mask([teeth]) * mouth, np.array([0.95, 0.95, 0.92]))
        return (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)
