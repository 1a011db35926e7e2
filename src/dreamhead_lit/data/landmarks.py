"""Landmark index sets, the dense landmark topology, canonical-pose normalisation and rasterisation.

Conventions (shared by real and synthetic data):
- The 68 sparse points follow dlib / iBUG-300W order: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lips 48-59,
  inner lips 60-67. M-LMD uses the mouth points 48-67, F-LMD all 68.
- A dataset's dense set (``landmarks.npy``, N points) is described by a ``LandmarkTopology``: which region each point
  belongs to (for the region channels of the landmark image) and where the 68 sparse points sit inside it.
- Canonical coordinates remove head pose with a similarity transform (scale, rotation, translation) fitted on points
  that do not move when a person speaks (eye corners, nose, upper jaw), so what remains is expression and speech.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

JAW = tuple(range(0, 17))
RIGHT_BROW = tuple(range(17, 22))  # subject's right, image left
LEFT_BROW = tuple(range(22, 27))
NOSE_BRIDGE = tuple(range(27, 31))
NOSE_BOTTOM = tuple(range(31, 36))
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))
OUTER_LIPS = tuple(range(48, 60))
INNER_LIPS = tuple(range(60, 68))
MOUTH = OUTER_LIPS + INNER_LIPS  # 48-67, the M-LMD set
# Points that a talking face does not move: fitting the pose on them keeps speech out of the pose estimate.
STABLE_68 = (0, 1, 2, 14, 15, 16, 27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45)

# Region channels of the landmark image: 0 face outline + nose, 1 eyes + brows, 2 mouth.
REGION_OUTLINE, REGION_EYES, REGION_MOUTH = 0, 1, 2
NUM_REGIONS = 3


def regions_68() -> np.ndarray:
    """Region id of each of the 68 sparse points."""
    regions = np.full(68, REGION_OUTLINE, dtype=np.int64)
    regions[list(RIGHT_BROW + LEFT_BROW + RIGHT_EYE + LEFT_EYE)] = REGION_EYES
    regions[list(MOUTH)] = REGION_MOUTH
    return regions


# (name, indices, closed) of the 68-point contours, in the order dense points are added to them (mouth first:
# it is what speech moves, so a small dense budget goes there).
CONTOURS_68: tuple[tuple[str, tuple[int, ...], bool], ...] = (
    ("outer_lips", OUTER_LIPS, True),
    ("inner_lips", INNER_LIPS, True),
    ("right_eye", RIGHT_EYE, True),
    ("left_eye", LEFT_EYE, True),
    ("jaw", JAW, False),
    ("right_brow", RIGHT_BROW, False),
    ("left_brow", LEFT_BROW, False),
    ("nose_bridge", NOSE_BRIDGE, False),
    ("nose_bottom", NOSE_BOTTOM, False),
)


@dataclass(frozen=True)
class LandmarkTopology:
    """What a dataset's dense landmark set is made of.

    ``index68[k]`` is the dense index of sparse point k (the 68 are a subset of the dense set; for a 68-point dataset
    it is the identity). ``regions[i]`` is the region channel of dense point i. ``contours`` lists, per named contour,
    the dense indices in drawing order (used by the renderer and the landmark video).
    """

    name: str
    num_points: int
    index68: tuple[int, ...]
    regions: tuple[int, ...]
    contours: dict[str, tuple[int, ...]] = field(default_factory=dict)
    closed: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.index68) != 68:
            raise ValueError(f"topology {self.name!r}: index68 must have 68 entries, got {len(self.index68)}")
        if len(self.regions) != self.num_points:
            raise ValueError(f"topology {self.name!r}: {len(self.regions)} regions for {self.num_points} points")

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "num_points": self.num_points,
            "index68": list(self.index68),
            "regions": list(self.regions),
            "contours": {k: list(v) for k, v in self.contours.items()},
            "closed": dict(self.closed),
        }

    @classmethod
    def from_json(cls, data: dict) -> "LandmarkTopology":
        return cls(
            name=data["name"],
            num_points=int(data["num_points"]),
            index68=tuple(int(i) for i in data["index68"]),
            regions=tuple(int(r) for r in data["regions"]),
            contours={k: tuple(int(i) for i in v) for k, v in data.get("contours", {}).items()},
            closed={k: bool(v) for k, v in data.get("closed", {}).items()},
        )

    def sparse(self, points: np.ndarray) -> np.ndarray:
        """The 68 sparse points of a dense array (..., N, 2) -> (..., 68, 2)."""
        return points[..., list(self.index68), :]


def topology_68() -> LandmarkTopology:
    """The plain dlib 68-point set (used when a dataset has no denser landmarks)."""
    return LandmarkTopology(
        name="dlib68",
        num_points=68,
        index68=tuple(range(68)),
        regions=tuple(int(r) for r in regions_68()),
        contours={name: idx for name, idx, _ in CONTOURS_68},
        closed={name: closed for name, _, closed in CONTOURS_68},
    )


@dataclass(frozen=True)
class DenseLayout:
    """How SynthTalk builds N >= 68 dense points from the 68 sparse ones.

    Dense point i = sum_k weights[i, k] * sparse[k] (+ a generator-side offset along ``normals`` for lip midpoints, so
    the dense set carries lip curvature that the 68 points do not). Extra points are contour midpoints (mouth first),
    then quarter points, then interior points of the face mesh.
    """

    topology: LandmarkTopology
    weights: np.ndarray  # (N, 68) float32, rows sum to 1
    contour_midpoint: np.ndarray  # (N,) bool: extra point inserted on a lip contour (receives the curvature offset)
    contour_pairs: np.ndarray  # (N, 2) int: for contour points, the two sparse neighbours (-1 otherwise)


def build_dense_layout(num_points: int, *, template68: np.ndarray) -> DenseLayout:
    """Deterministic dense layout with ``num_points`` points; the first 68 are the sparse set in dlib order."""
    if num_points < 68:
        raise ValueError(f"num_landmarks must be >= 68 (the dlib subset), got {num_points}")
    rows: list[np.ndarray] = [np.eye(68, dtype=np.float32)[k] for k in range(68)]
    regions = list(regions_68())
    lip_mid = [False] * 68
    pairs = [(-1, -1)] * 68
    # contour position of each point: (contour name, position along the contour) for drawing order
    positions: dict[str, list[tuple[float, int]]] = {
        name: [(float(i), idx[i]) for i in range(len(idx))] for name, idx, _ in CONTOURS_68
    }
    candidates: list[tuple[str, int, int, float, int]] = []  # (contour, a, b, fraction, position base)
    for fractions in ((0.5,), (0.25, 0.75)):
        for name, idx, closed in CONTOURS_68:
            segments = len(idx) if closed else len(idx) - 1
            for s in range(segments):
                a, b = idx[s], idx[(s + 1) % len(idx)]
                for f in fractions:
                    candidates.append((name, a, b, f, s))
    for name, a, b, f, s in candidates:
        if len(rows) >= num_points:
            break
        w = np.zeros(68, dtype=np.float32)
        w[a], w[b] = 1.0 - f, f
        rows.append(w)
        regions.append(regions_68()[a])
        lip_mid.append(name in ("outer_lips", "inner_lips"))
        pairs.append((a, b))
        positions[name].append((s + f, len(rows) - 1))
    # Interior points: barycentric points of a fixed triangulation of the template (low-discrepancy, deterministic).
    if len(rows) < num_points:
        from scipy.spatial import Delaunay

        tri = Delaunay(template68).simplices
        areas = np.abs(np.cross(template68[tri[:, 1]] - template68[tri[:, 0]], template68[tri[:, 2]] - template68[tri[:, 0]]))
        order = np.argsort(-areas, kind="stable")
        golden = (np.sqrt(5.0) - 1.0) / 2.0
        n = 0
        while len(rows) < num_points:
            t = tri[order[n % len(order)]]
            u, v = (n * golden) % 1.0, (n * golden * golden + 0.5) % 1.0
            if u + v > 1.0:
                u, v = 1.0 - u, 1.0 - v
            w = np.zeros(68, dtype=np.float32)
            w[t[0]] += 1.0 - u - v
            w[t[1]] += u
            w[t[2]] += v
            rows.append(w)
            regions.append(int(regions_68()[t[np.argmax([1.0 - u - v, u, v])]]))
            lip_mid.append(False)
            pairs.append((-1, -1))
            n += 1
    contours = {name: tuple(i for _, i in sorted(pos)) for name, pos in positions.items()}
    topology = LandmarkTopology(
        name=f"synthtalk{num_points}",
        num_points=num_points,
        index68=tuple(range(68)),
        regions=tuple(int(r) for r in regions),
        contours=contours,
        closed={name: closed for name, _, closed in CONTOURS_68},
    )
    return DenseLayout(
        topology=topology,
        weights=np.stack(rows).astype(np.float32),
        contour_midpoint=np.array(lip_mid, dtype=bool),
        contour_pairs=np.array(pairs, dtype=np.int64),
    )


# ---------------------------------------------------------------------------------------------------------------
# Canonical pose
# ---------------------------------------------------------------------------------------------------------------


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms (Umeyama 1991) mapping src onto dst.

    src, dst: (..., K, 2). Returns (..., 2, 3) matrices A with dst ≈ src @ A[:, :2].T + A[:, 2].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(-2, keepdims=True), dst.mean(-2, keepdims=True)
    s0, d0 = src - mu_s, dst - mu_d
    # For 2-D similarity the optimum has a closed form in complex numbers: a + ib = sum(conj(s) d) / sum(|s|^2).
    sc = s0[..., 0] + 1j * s0[..., 1]
    dc = d0[..., 0] + 1j * d0[..., 1]
    z = (np.conj(sc) * dc).sum(-1) / np.maximum((np.abs(sc) ** 2).sum(-1), 1e-12)
    a, b = z.real, z.imag
    rot = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], -2)  # (..., 2, 2)
    t = mu_d[..., 0, :] - np.einsum("...ij,...j->...i", rot, mu_s[..., 0, :])
    return np.concatenate([rot, t[..., None]], -1).astype(np.float32)


def apply_affine(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """points (..., N, 2), affine (..., 2, 3) -> (..., N, 2)."""
    return np.einsum("...ij,...nj->...ni", affine[..., :2], points) + affine[..., None, :, 2]


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of (..., 2, 3) affine transforms."""
    lin = np.linalg.inv(affine[..., :2].astype(np.float64))
    t = -np.einsum("...ij,...j->...i", lin, affine[..., 2])
    return np.concatenate([lin, t[..., None]], -1).astype(np.float32)


def canonicalize(
    points: np.ndarray, points68: np.ndarray, *, template68: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Remove head pose: map each frame into the canonical template frame.

    points (T, N, 2) dense, points68 (T, 68, 2) sparse, both in crop pixels. The per-frame similarity is fitted on the
    stable points of the 68 and applied to the dense set. Returns (canonical (T, N, 2), to_image (T, 2, 3)), where
    ``apply_affine(canonical, to_image)`` gives back the pixels.
    """
    stable = list(STABLE_68)
    to_canonical = fit_similarity(points68[:, stable], np.broadcast_to(template68[stable], points68[:, stable].shape))
    canonical = apply_affine(points, to_canonical)
    return canonical.astype(np.float32), invert_affine(to_canonical)


# ---------------------------------------------------------------------------------------------------------------
# Rasterisation: landmarks -> region-channel image
# ---------------------------------------------------------------------------------------------------------------


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, int(round(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def rasterize_landmarks(
    points: torch.Tensor, *, regions: torch.Tensor, size: int, sigma: float = 1.0, num_regions: int = NUM_REGIONS
) -> torch.Tensor:
    """Render landmarks as a region-channel heat image in [0, 1].

    points (B, N, 2) pixel coordinates (x, y) at resolution ``size``; regions (N,) long. Each point is splatted
    bilinearly into its region's channel, the channels are blurred with a Gaussian of ``sigma`` pixels, and each
    channel is scaled so an isolated point peaks at 1. O(B·H·W) whatever N is, so 478 MediaPipe points at 256 px cost
    no more than 68. Returns (B, num_regions, size, size).
    """
    if points.ndim == 2:
        return rasterize_landmarks(points[None], regions=regions, size=size, sigma=sigma, num_regions=num_regions)[0]
    b, n, _ = points.shape
    device = points.device
    k = _gaussian_kernel(sigma, device)
    # The bilinear splat and the separable blur both factor into x and y, so each point's blurred splat is an outer
    # product of two 1-D profiles and a channel is (profiles_y)^T @ (profiles_x) over its points: one small matmul
    # instead of two convolutions over every pixel of every channel (the stage-2 loader's main cost at 256+ px).
    py = _blurred_profiles(points[..., 1].float(), k, size)  # (B, N, H)
    px = _blurred_profiles(points[..., 0].float(), k, size)  # (B, N, W)
    regions = regions.to(device).long()
    img = torch.zeros(b, num_regions, size, size, device=device, dtype=torch.float32)
    for r in range(num_regions):
        sel = (regions == r).nonzero().squeeze(1)
        if sel.numel():
            img[:, r] = py[:, sel].transpose(1, 2) @ px[:, sel]  # (B, H, n_r) @ (B, n_r, W)
    peak = k.max() ** 2
    return (img / peak).clamp(0.0, 1.0)


def _blurred_profiles(coord: torch.Tensor, k: torch.Tensor, size: int) -> torch.Tensor:
    """coord (B, N) pixel coordinates -> (B, N, size): the 1-D bilinear splat (pixel centres at i + 0.5, taps outside
    the image dropped) convolved with ``k`` (zero padding), i.e. one axis of the blurred splat."""
    radius = k.numel() // 2
    c0 = torch.floor(coord - 0.5)
    f = (coord - 0.5) - c0
    # the kernel padded with zeros on both sides: output pixel j of a tap at pixel t reads kpad[j - t + pad]
    pad = size + radius + 1
    kpad = torch.cat([k.new_zeros(pad - radius), k, k.new_zeros(pad - radius)])
    pix = torch.arange(size, device=coord.device)
    out = None
    for d, w in ((0, 1 - f), (1, f)):
        tap = (c0 + d).long()  # the pixel this half of the splat lands on
        weight = w * ((tap >= 0) & (tap < size))
        idx = (pix - tap.clamp(-pad + size, pad - 1)[..., None]) + pad
        part = kpad[idx] * weight[..., None]
        out = part if out is None else out + part
    return out


def lower_face_mask(points68: torch.Tensor, *, size: int, margin: float = 0.08) -> torch.Tensor:
    """Mask (B, 1, H, W), 1 over the lower face, for dubbing-mode inputs.

    The box is built from points that speech does not move (the nose and the jaw's upper ends), and extends to the
    bottom of the frame, so its shape leaks nothing about the mouth it hides.
    """
    if points68.ndim == 2:
        return lower_face_mask(points68[None], size=size, margin=margin)[0]
    top = points68[:, 29, 1]  # (B,) mid nose
    left = torch.minimum(points68[:, 2, 0], points68[:, 3, 0]) - margin * size
    right = torch.maximum(points68[:, 14, 0], points68[:, 13, 0]) + margin * size
    coords = torch.arange(size, device=points68.device, dtype=torch.float32) + 0.5
    in_x = (coords[None, :] >= left[:, None]) & (coords[None, :] <= right[:, None])  # (B, W)
    in_y = coords[None, :] >= top[:, None]  # (B, H)
    return (in_y[:, :, None] & in_x[:, None, :]).float()[:, None]


# The canonical 68-point template (face units) every dataset is canonicalised onto: the mean neutral face of SynthTalk's
# face model over 64 identities (``data.synth_face.neutral_template``; a test keeps them equal), kept here as data so
# that real datasets do not depend on the generator.
_CANONICAL_TEMPLATE68 = (
    (-0.992250, -0.150000), (-0.968836, 0.062383), (-0.900959, 0.267022), (-0.795131, 0.455979),
    (-0.660443, 0.621888), (-0.506524, 0.758244), (-0.341669, 0.859683), (-0.171718, 0.922198),
    (-0.000000, 0.943315), (0.171718, 0.922198), (0.341669, 0.859683), (0.506524, 0.758244), (0.660443, 0.621888),
    (0.795131, 0.455979), (0.900959, 0.267022), (0.968836, 0.062383), (0.992250, -0.150000), (-0.754110, -0.521959),
    (-0.600311, -0.571457), (-0.446513, -0.591959), (-0.292714, -0.571457), (-0.138915, -0.521959),
    (0.138915, -0.521959), (0.292714, -0.571457), (0.446513, -0.591959), (0.600311, -0.571457),
    (0.754110, -0.521959), (0.000000, -0.360000), (0.000000, -0.224634), (0.000000, -0.081685), (0.000000, 0.071474),
    (-0.186737, 0.163370), (-0.098860, 0.194002), (0.000000, 0.214423), (0.098860, 0.194002), (0.186737, 0.163370),
    (-0.508907, -0.300000), (-0.416233, -0.354416), (-0.323559, -0.354416), (-0.230885, -0.300000),
    (-0.323559, -0.256467), (-0.416233, -0.256467), (0.230885, -0.300000), (0.323559, -0.354416),
    (0.416233, -0.354416), (0.508907, -0.300000), (0.416233, -0.256467), (0.323559, -0.256467),
    (-0.351259, 0.501665), (-0.210756, 0.452320), (-0.087815, 0.440678), (0.000000, 0.449410), (0.087815, 0.440678),
    (0.210756, 0.452320), (0.351259, 0.501665), (0.210756, 0.563751), (0.087815, 0.578578), (0.000000, 0.582285),
    (-0.087815, 0.578578), (-0.210756, 0.563751), (-0.298570, 0.501665), (-0.122941, 0.499723), (0.000000, 0.498890),
    (0.122941, 0.499723), (0.298570, 0.501665), (0.122941, 0.503607), (0.000000, 0.504440), (-0.122941, 0.503607),
)


def canonical_template68() -> np.ndarray:
    """(68, 2) float32, face units: the template of :func:`canonicalize` for every dataset."""
    return np.array(_CANONICAL_TEMPLATE68, dtype=np.float32)
