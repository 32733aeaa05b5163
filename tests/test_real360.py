"""The real-360 fixes: sky and operator masks, EXIF heading check, interior hold-out, pose comparison."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from splatforge_core import masks
from splatforge_core.errors import InputError
from splatforge_core.cameras import view_rotation
from splatforge_core.project import ProjectOptions, main as project_main, view_layout
from splatforge_core.sfm.align import heading_check, wrap_deg, yaw_deg
from splatforge_core.sfm.compare import Pose, compare_poses, mean_rotation, poses_from_inria_cameras, rotation_angle_deg
from splatforge_core.train.data import held_out_frame_indices
from splatforge_core.metrics import psnr


def _rot(axis, deg):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = math.radians(deg)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * K + (1 - math.cos(t)) * K @ K


# ---- masks ---------------------------------------------------------------------------------

def test_nadir_cap_rows():
    m = masks.nadir_cap(180, 360, 45.0)
    lat = 90.0 - (np.arange(180) + 0.5)
    assert np.array_equal(m[:, 0], lat < -45.0)
    assert m[:, 0].sum() == 45 and m.all(axis=1).sum() == 45
    assert not masks.nadir_cap(180, 360, 0.0).any()
    with pytest.raises(ValueError):
        masks.nadir_cap(10, 20, 95.0)


def _synthetic_pano(w=720):
    """Blue sky with white textured clouds above a grey ground with texture, a white wall
    outlined in dark grey reaching above the horizon."""
    h = w // 2
    rng = np.random.default_rng(0)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (200, 140, 60)  # BGR blue sky
    yy, xx = np.mgrid[0:h, 0:w]
    for cx, cy, r in ((100, 40, 30), (400, 70, 40), (600, 30, 25)):
        cloud = (xx - cx) ** 2 + ((yy - cy) * 2) ** 2 < r ** 2
        img[cloud] = (235, 235, 235) + rng.integers(-8, 8, (int(cloud.sum()), 1))
    ground = rng.integers(60, 140, (h - h // 2, w, 1)).astype(np.uint8)
    img[h // 2:] = np.repeat(ground, 3, axis=2)
    img[120:h // 2 + 40, 250:330] = (40, 40, 40)      # dark outline
    img[126:h // 2 + 40, 256:324] = (225, 230, 232)   # white wall
    return img


def test_sky_mask_finds_sky_and_clouds_not_the_wall_or_ground():
    img = _synthetic_pano()
    sky = masks.sky_mask(img)
    h = img.shape[0]
    assert sky[:100, :240].mean() > 0.97           # blue sky and the cloud at (100, 40)
    assert sky[50:90, 370:430].all()               # the big cloud
    assert not sky[140:h // 2 + 30, 262:318].any()  # the white wall behind its outline
    assert not sky[h // 2 + 5:].any()              # nothing below the horizon
    with pytest.raises(ValueError):
        masks.sky_mask(img[..., 0])


def test_panorama_labels_priority_and_fractions():
    img = _synthetic_pano()
    lab = masks.panorama_labels(img, sky=True, nadir_cap_deg=30.0, work_width=360)
    assert lab.shape == (180, 360) and lab.dtype == np.uint8
    assert (lab[-30:] == masks.OPERATOR).all() and not (lab[:-30] == masks.OPERATOR).any()
    fr = masks.describe(lab)
    assert abs(fr["operator"] - 30 / 180) < 1e-9 and 0.3 < fr["sky"] < 0.5
    assert masks.panorama_labels(img, sky=False, nadir_cap_deg=0).max() == masks.VALID


def test_view_nadir_fraction_geometry():
    K = np.array([[50.0, 0, 50], [0, 50, 50], [0, 0, 1]])  # 90 deg, 100 px
    down = view_rotation(0.0, -90.0)
    assert masks.view_nadir_fraction(down, K, 100, 100, 60.0, step=2) == 1.0   # whole view within 60 deg
    assert masks.view_nadir_fraction(view_rotation(0.0, 0.0), K, 100, 100, 44.0, step=2) == 0.0
    half = masks.view_nadir_fraction(view_rotation(0.0, -45.0), K, 100, 100, 45.0, step=1)
    assert 0.4 < half < 0.6


def test_layout_drops_views_inside_the_nadir_cap():
    views = view_layout(ProjectOptions(elevations_deg=(-90.0, 0.0), num_azimuths=4, nadir_mask_deg=60.0))  # corners at 54.7 deg
    assert {v.elevation_deg for v in views} == {0.0}
    kept = view_layout(ProjectOptions(elevations_deg=(-90.0, 0.0), num_azimuths=4, nadir_mask_deg=0.0))
    assert len(kept) == 8
    with pytest.raises(InputError, match="nadir_mask_deg"):
        ProjectOptions(nadir_mask_deg=120.0)


def test_project_writes_view_labels_that_follow_the_geometry(tmp_path):
    img = _synthetic_pano(1024)
    src = tmp_path / "p.jpg"
    cv2.imwrite(str(src), img)
    man = {"schema_version": 1, "camera_kind": "equirectangular", "images": [
        {"name": "p.jpg", "path": str(src), "width": 1024, "height": 512, "kind": "equirectangular",
         "enu": [0, 0, 0], "heading_deg": 12.5}]}
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    out = project_main(tmp_path / "manifest.json", tmp_path / "images", tmp_path / "views.json",
                       {"size": 64, "workers": 1, "nadir_mask_deg": 40.0}, masks_dir=tmp_path / "masks")
    fr = out["frames"][0]
    assert fr["heading_deg"] == 12.5 and out["mask_dir"] == str(tmp_path / "masks")
    assert set(fr["masks"]) == set(fr["images"])
    assert 0.05 < fr["mask_fractions"]["operator"] < 0.3 and fr["mask_fractions"]["sky"] > 0.1
    cam = {c["view"]: c for c in out["cameras"]}
    for view, rel in fr["masks"].items():
        lab = cv2.imread(str(tmp_path / "masks" / rel), cv2.IMREAD_UNCHANGED)
        c = cam[view]
        fx, fy, cx, cy = c["params"]
        R = np.array(c["cam_from_rig"]["rotation"])
        uu, vv = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5)
        rays = np.stack([(uu - cx) / fx, (vv - cy) / fy, np.ones_like(uu)], -1) @ R
        lat = np.degrees(np.arctan2(-rays[..., 1], np.hypot(rays[..., 0], rays[..., 2])))
        clear = np.abs(lat - (40.0 - 90.0)) > 1.5  # away from the cap's edge (0.5 deg label pixels)
        assert np.array_equal((lab == masks.OPERATOR)[clear], (lat < -50.0)[clear]), view
    # without masks_dir nothing about masks is written
    out2 = project_main(tmp_path / "manifest.json", tmp_path / "images2", tmp_path / "views2.json", {"size": 64, "workers": 1})
    assert "mask_dir" not in out2 and "masks" not in out2["frames"][0]


# ---- heading check ---------------------------------------------------------------------------

def test_yaw_and_heading_check():
    assert yaw_deg(np.array([0.0, 1.0, 0.0])) == 0.0
    assert yaw_deg(np.array([1.0, 0.0, 0.3])) == pytest.approx(90.0)
    assert yaw_deg(np.array([-1.0, 0.0, 0.0])) == pytest.approx(270.0)
    assert wrap_deg(350.0) == pytest.approx(-10.0)
    frames = [{"frame": f"f{i}", "heading_deg": h} for i, h in enumerate([350.0, 10.0, 90.0, None])]
    fwd = np.array([[math.sin(math.radians(a)), math.cos(math.radians(a)), 0.0] for a in (355.0, 5.0, 180.0, 0.0)])
    hc = heading_check(frames, fwd, 30.0)
    assert hc["num_frames"] == 3 and hc["disagreeing"] == ["f2"]
    assert [round(f["diff_deg"], 6) for f in hc["frames"]] == [5.0, -5.0, 90.0]
    assert heading_check([{"frame": "a", "heading_deg": None}], fwd[:1], 30.0) is None


def test_ingest_reads_exif_heading(shared_data, tmp_path):
    from splatforge_core import ingest

    man = ingest.main(shared_data / "geovisio360", tmp_path / "m.json")
    heads = {r["name"]: r["heading_deg"] for r in man["images"]}
    assert heads["1.jpg"] == pytest.approx(1163411 / 3333) and heads["3.jpg"] == pytest.approx(25539 / 17329)
    assert all(r["heading_ref"] == "T" for r in man["images"])
    assert man["images"][0]["gpano_pose_deg"] == {"heading": 0.0, "pitch": 0.0, "roll": 0.0}


# ---- held-out split ------------------------------------------------------------------------

def test_held_out_frame_indices_interior():
    assert held_out_frame_indices(5, 8) == [2]
    assert held_out_frame_indices(12, 8) == [4]
    assert held_out_frame_indices(29, 8) == [4, 12, 20]     # 28 is the last frame: never held out
    assert held_out_frame_indices(2, 8) == [] and held_out_frame_indices(3, 8) == [1]
    assert held_out_frame_indices(12, 8, offset=0) == [0, 8]   # Mip-NeRF 360 protocol
    assert held_out_frame_indices(12, 0) == []
    with pytest.raises(ValueError):
        held_out_frame_indices(5, -1)


def test_masked_psnr_ignores_masked_pixels():
    import torch

    gt = torch.zeros(1, 4, 4, 3)
    pred = torch.full((1, 4, 4, 3), 0.1)
    pred[:, :2] = 1.0  # wrong only where masked
    m = torch.ones(1, 4, 4, 1, dtype=torch.bool)
    m[:, :2] = False
    assert psnr(pred, gt, m) == pytest.approx(20.0, abs=1e-4)
    assert psnr(pred, gt) < 5.0


# ---- pose comparison -----------------------------------------------------------------------

def _walk_poses(n=6, seed=0):
    rng = np.random.default_rng(seed)
    poses = {}
    for i in range(n):
        R = _rot([0, 1, 0], rng.uniform(-20, 20)) @ _rot([1, 0, 0], 90)  # cameras upright in a z-up world
        c = np.array([0.05 * rng.normal(), 1.5 * i, 0.02 * rng.normal()])  # nearly on one line
        poses[f"{i}.jpg"] = Pose(R, c)
    return poses


def test_compare_poses_recovers_similarity_on_a_line():
    ref = _walk_poses()
    S, s, t = _rot([0.3, -0.5, 0.8], 70.0), 0.37, np.array([4.0, -2.0, 1.0])
    # ours = ref mapped by the inverse similarity: x_ours = S^T (x_ref - t) / s, R_ours = R_ref S
    ours = {k: Pose(p.R @ S, S.T @ (p.centre - t) / s) for k, p in ref.items()}
    out = compare_poses(ours, ref)
    assert out["rotation_deg"]["max"] < 1e-6 and out["centre"]["max"] < 1e-9
    assert out["sim3"]["scale"] == pytest.approx(s)
    # a 3 deg error on one camera shows on that camera only
    k = "2.jpg"
    ours[k] = Pose(_rot([0, 1, 0], 3.0) @ ours[k].R, ours[k].centre)
    out = compare_poses(ours, ref)
    per = {p["name"]: p["rotation_deg"] for p in out["per_image"]}
    assert per[k] == pytest.approx(3.0, abs=0.7) and out["rotation_deg"]["median"] < 0.7
    with pytest.raises(InputError):
        compare_poses({"a": ref["0.jpg"]}, ref)


def test_mean_rotation_and_angle():
    R = _rot([1, 2, 3], 40.0)
    assert rotation_angle_deg(R) == pytest.approx(40.0)
    rs = [R @ _rot([0, 0, 1], d) for d in (-1.0, 1.0, 0.5, -0.5)] + [R @ _rot([1, 0, 0], 90.0)]
    assert rotation_angle_deg(mean_rotation(rs).T @ R) < 0.5   # the 90 deg outlier is left out


def test_inria_cameras_json(tmp_path, shared_data):
    cams = poses_from_inria_cameras(shared_data / "snowmiku" / "cameras.json")
    assert len(cams) == 97
    p = cams["20240212_003919"]
    assert np.allclose(p.R @ p.R.T, np.eye(3), atol=1e-9)
    assert p.centre == pytest.approx([-2.0239410600999292, 1.5094239986550113, -3.171810618383385])
    (tmp_path / "bad.json").write_text('[{"img_name": "a"}]')
    with pytest.raises(InputError, match="cameras.json"):
        poses_from_inria_cameras(tmp_path / "bad.json")
