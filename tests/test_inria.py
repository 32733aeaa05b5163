"""The Inria dataset layout (cameras.json + images/): read, write, validate, load views."""

import json

import numpy as np
import pytest

from splatforge_core.errors import InputError
from splatforge_core.inria import (InriaCamera, camera_from_pinhole, load_views, read_cameras_json, write_dataset,
                                   write_cameras_json)


def _rot(deg):
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def test_round_trip_and_pose(tmp_path):
    K = np.array([[100.0, 0, 32], [0, 110, 24], [0, 0, 1]])
    cfw = np.eye(4)
    cfw[:3, :3] = _rot(30)
    cfw[:3, 3] = [1.0, -2.0, 3.0]
    cam = camera_from_pinhole(0, "a", K, cfw, 64, 48, frame="pano1")
    write_cameras_json(tmp_path / "cameras.json", [cam])
    back = read_cameras_json(tmp_path / "cameras.json")[0]
    np.testing.assert_allclose(back.cam_from_world, cfw, atol=1e-12)
    np.testing.assert_allclose(back.K(32, 24), [[50, 0, 16], [0, 55, 12], [0, 0, 1]])
    assert back.frame == "pano1"
    # a world point projects to the same pixel through both
    X = np.array([0.3, 0.2, 9.0, 1.0])
    x = K @ (cfw @ X)[:3]
    y = back.K() @ (back.cam_from_world @ X)[:3]
    np.testing.assert_allclose(x[:2] / x[2], y[:2] / y[2])


def test_off_centre_principal_point_refused():
    with pytest.raises(InputError, match="principal point"):
        camera_from_pinhole(0, "a", np.array([[100.0, 0, 40], [0, 100, 24], [0, 0, 1]]), np.eye(4), 64, 48)


def test_snowmiku_reference_cameras(shared_data):
    cams = read_cameras_json(shared_data / "snowmiku" / "cameras.json")
    assert len(cams) == 97
    c0 = [c for c in cams if c.img_name == "20240212_003919"][0]
    assert (c0.width, c0.height) == (3958, 2968) and abs(c0.fx - 3276.92) < 0.01
    data = load_views(shared_data / "snowmiku", cams, max_side=64)
    assert len(data.train) + len(data.test) == 97 and len(data.test) == 12
    v = data.train[0]
    assert max(v.image.shape[:2]) == 64 and abs(v.K[0, 0] - 3276.92 * v.width / 3958) < 1e-3


@pytest.mark.hostile(cls="cameras.json", expect="clear_error")
@pytest.mark.parametrize("mutate,match", [
    (lambda r: r.pop("fx"), "missing fx"),
    (lambda r: r.update(img_name="../x"), "plain file name"),
    (lambda r: r.update(rotation=[[2, 0, 0], [0, 1, 0], [0, 0, 1]]), "rotation"),
    (lambda r: r.update(position=[0, float("nan"), 0]), "NaN"),
    (lambda r: r.update(width=10**9), "image size"),
    (lambda r: r.update(fx=-1.0), "focal"),
], ids=["missing", "traversal", "not_rotation", "nan", "huge", "negative_focal"])
def test_bad_records(tmp_path, mutate, match):
    rec = InriaCamera(0, "a", 64, 48, np.zeros(3), np.eye(3), 50.0, 50.0).to_json()
    mutate(rec)
    p = tmp_path / "cameras.json"
    p.write_text(json.dumps([rec]))
    with pytest.raises(InputError, match=match) as e:
        read_cameras_json(p)
    assert str(p) in str(e.value)


@pytest.mark.hostile(cls="cameras.json", expect="clear_error")
def test_duplicate_and_missing_image(tmp_path):
    rec = InriaCamera(0, "a", 64, 48, np.zeros(3), np.eye(3), 50.0, 50.0).to_json()
    (tmp_path / "cameras.json").write_text(json.dumps([rec, rec]))
    with pytest.raises(InputError, match="twice"):
        read_cameras_json(tmp_path / "cameras.json")
    (tmp_path / "cameras.json").write_text(json.dumps([rec]))
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="no image for camera 'a'"):
        load_views(tmp_path)


def test_write_dataset_keeps_trainer_split(tmp_path):
    from splatforge_core.train.data import View, held_out_frame_indices
    rng = np.random.default_rng(0)
    views = []
    for f in range(10):
        for k in range(2):
            cfw = np.eye(4)
            cfw[:3, :3] = _rot(36 * f + 90 * k)
            cfw[:3, 3] = rng.normal(size=3)
            img = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
            views.append(View(f"f{f:02d}/v{k}.jpg", f"f{f:02d}", img,
                              np.array([[30, 0, 16], [0, 30, 12], [0, 0, 1]], np.float32), cfw.astype(np.float32)))
    write_dataset(views, tmp_path)
    data = load_views(tmp_path, eval_every_n=4)
    frames = sorted({v.frame for v in views})
    assert data.test_frames == [frames[i] for i in held_out_frame_indices(10, 4)]
    back = {v.name: v for v in data.train + data.test}
    assert set(back) == {f"f{f:02d}__v{k}.png" for f in range(10) for k in range(2)}
    v0 = back["f00__v0.png"]
    np.testing.assert_array_equal(v0.image, views[0].image)
    np.testing.assert_allclose(v0.viewmat, views[0].viewmat, atol=1e-6)
    np.testing.assert_allclose(v0.K, views[0].K)
