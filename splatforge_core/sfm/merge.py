"""Per-cluster SfM of a clustered scene (issue #12): database subsets and the model merge.

* :func:`filter_database` copies the scene's matched ``colmap/database.db`` keeping only a
  cluster's images (and their frames, features, matches, pose priors). Image, camera, rig and
  frame ids are kept as they are, so the same image has the same id in every cluster's model.
* :func:`merge_models` unites the clusters' geo-aligned models (all in the scene's ENU frame,
  metres): cameras, rigs, frames and images by id, a shared image's pose taken from the cluster
  whose core holds it; every 3D point is added with its track, and where a track element's 2D
  point already has a 3D point from another cluster (a shared track) the two points are merged
  with ``Reconstruction.merge_points3D`` (pycolmap 4.2 has no model-merger binding). The
  disagreement of the shared images' camera centres between clusters, in metres, is reported.
* :func:`map_cluster` is the ``sfm_map_cluster`` rule: the one-block mapper on a cluster's
  database, whose failure names the cluster and its frames.
* :func:`place_cluster` is the ``sfm_place_cluster`` rule: a cluster's model moved by its chain
  alignment, which the cluster trains on.
* :func:`main` is the ``sfm_merge`` rule: ``clusters/*/aligned`` -> ``aligned/`` +
  ``alignment.json`` (the clusters' residuals, each frame from the cluster whose core holds it)
  + ``merge.json``.

No global bundle adjustment is run after the merge (the clusters are each adjusted and then
geo-aligned; see ``benchmarks/results/cluster.md`` for the disagreement this leaves).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap

from ..errors import InputError, SplatForgeError
from ..io import atomic_path, read_json, write_json
from ..log import get_logger

log = get_logger("sfm.merge")

#: COLMAP's pair id: ``image_id1 * MAX_IMAGE_ID + image_id2`` with ``image_id1 < image_id2``.
MAX_IMAGE_ID = 2147483647


def filter_database(src: str | os.PathLike, dst: str | os.PathLike, image_names: list[str] | set[str]) -> dict[str, int]:
    """Copy a COLMAP database keeping only the images named (atomically written).

    Frames left without images, and the removed images' keypoints, descriptors, matches,
    two-view geometries and pose priors are deleted; ids are unchanged.

    Args:
        src: the scene's matched ``database.db`` (COLMAP >= 3.12 schema with rigs and frames).
        dst: output database.
        image_names: names (relative to ``images/``) to keep.

    Returns:
        ``{"num_images": kept, "num_removed": removed, "num_verified_pairs": kept pairs}``.

    Raises:
        InputError: unreadable database, or a name not in it (the message lists a few).
    """
    src, dst = Path(src), Path(dst)
    keep = set(image_names)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
        try:
            con = sqlite3.connect(tmp)
            rows = con.execute("SELECT image_id, name FROM images").fetchall()
        except sqlite3.Error as e:
            raise InputError(f"{src}: cannot read the COLMAP database ({e})") from e
        try:
            names = {n for _, n in rows}
            missing = sorted(keep - names)
            if missing:
                raise InputError(f"{src}: {len(missing)} image(s) of the cluster are not in the database, e.g. "
                                 f"{missing[:3]}; rerun sfm_extract/sfm_match")
            removed = [(i,) for i, n in rows if n not in keep]
            con.execute("CREATE TEMP TABLE gone (id INTEGER PRIMARY KEY)")
            con.executemany("INSERT INTO gone VALUES (?)", removed)
            camera = int(pycolmap.SensorType.CAMERA.value)
            con.execute("DELETE FROM frame_data WHERE sensor_type = ? AND data_id IN (SELECT id FROM gone)", (camera,))
            con.execute("DELETE FROM frames WHERE frame_id NOT IN (SELECT frame_id FROM frame_data)")
            for table in ("keypoints", "descriptors", "images"):
                con.execute(f"DELETE FROM {table} WHERE image_id IN (SELECT id FROM gone)")
            for table in ("matches", "two_view_geometries"):
                con.execute(f"DELETE FROM {table} WHERE pair_id % {MAX_IMAGE_ID} IN (SELECT id FROM gone) "
                            f"OR pair_id / {MAX_IMAGE_ID} IN (SELECT id FROM gone)")
            con.execute("DELETE FROM pose_priors WHERE corr_sensor_type = ? AND corr_data_id IN (SELECT id FROM gone)",
                        (camera,))
            pairs = con.execute("SELECT COUNT(*) FROM two_view_geometries WHERE rows > 0").fetchone()[0]
            con.commit()
            con.execute("VACUUM")
        finally:
            con.close()
    return {"num_images": len(rows) - len(removed), "num_removed": len(removed), "num_verified_pairs": int(pairs)}


def map_cluster(clusters_path: str | os.PathLike, cluster: str, database_path: str | os.PathLike,
                images_dir: str | os.PathLike, sparse_dir: str | os.PathLike, summary_path: str | os.PathLike,
                options: dict | None = None) -> dict:
    """The ``sfm_map_cluster`` rule: :func:`splatforge_core.sfm.mapping.main` on one cluster's
    database; a failure stops the run with an error naming the cluster and its frames.

    The other clusters' finished models stay where they are (each cluster is a Snakemake job
    of its own, and only a failed job's outputs are removed), so a rerun after the fix maps
    only what is missing.

    Args:
        clusters_path: ``clusters.json`` (the cluster's ``members``: frame names).
        cluster: the cluster's name (``c0``, ...).
        database_path, images_dir, sparse_dir, summary_path, options: as
            :func:`splatforge_core.sfm.mapping.main`.

    Returns:
        The mapping summary.

    Raises:
        InputError / SplatForgeError: the mapping failed (same class as the mapper's error),
            message: the cluster, its frames, the database and the mapper's reason; or
            ``clusters.json`` does not list ``cluster``.
    """
    from ..cluster import read_clusters
    from . import mapping

    doc = read_clusters(clusters_path)
    byname = {c["name"]: c for c in doc["clusters"]}
    if cluster not in byname:
        raise InputError(f"{clusters_path}: no cluster {cluster!r} (clusters: {', '.join(byname)}); rerun the cluster rule")
    try:
        return mapping.main(database_path, images_dir, sparse_dir, summary_path, options)
    except SplatForgeError as e:
        frames = byname[cluster]["members"]
        raise type(e)(f"cluster {cluster} ({len(frames)} frames: {', '.join(frames)}) could not be mapped: {e}. "
                      f"The other clusters' outputs are kept; check these frames' overlap (or change "
                      f"cluster.n_clusters / cluster.margin_m) and rerun") from e


def _add_frame(dst: pycolmap.Reconstruction, src: pycolmap.Reconstruction, frame_id: int) -> None:
    """Copy frame ``frame_id`` of ``src`` (pose, rig, cameras, images without 3D points) into ``dst``."""
    fr = src.frame(frame_id)
    if not dst.exists_rig(fr.rig_id):
        rig = src.rig(fr.rig_id)
        for sensor in [rig.ref_sensor_id, *rig.non_ref_sensors]:
            if sensor.type == pycolmap.SensorType.CAMERA and not dst.exists_camera(sensor.id):
                dst.add_camera(src.camera(sensor.id))
        dst.add_rig(rig)
    new = pycolmap.Frame()
    new.frame_id = frame_id
    new.rig_id = fr.rig_id
    for d in fr.data_ids:
        new.add_data_id(d)
    new.rig_from_world = fr.rig_from_world
    dst.add_frame(new)
    for image_id in fr.image_ids:
        im = src.image(image_id.id if hasattr(image_id, "id") else image_id)
        if not dst.exists_camera(im.camera_id):
            dst.add_camera(src.camera(im.camera_id))
        copy = pycolmap.Image(name=im.name, points2D=pycolmap.Point2DList([pycolmap.Point2D(p.xy) for p in im.points2D]),
                              camera_id=im.camera_id, image_id=im.image_id)
        copy.frame_id = frame_id
        dst.add_image(copy)
    dst.register_frame(frame_id)


def shared_centre_distances(models: dict[str, pycolmap.Reconstruction], frame_of_image: dict[str, str]) -> dict[str, list[float]]:
    """Frame name -> distances (metres) between the camera centres of its images in every pair
    of clusters that registered them (empty dict when no image is shared)."""
    names = list(models)
    ids = set().union(*(set(m.reg_image_ids()) for m in models.values()))
    out: dict[str, list[float]] = {}
    for image_id in sorted(ids):
        regs = [models[c] for c in names if models[c].exists_image(image_id) and models[c].image(image_id).has_pose]
        if len(regs) < 2:
            continue
        cs = [m.image(image_id).projection_center() for m in regs]
        name = regs[0].image(image_id).name
        out.setdefault(frame_of_image.get(name, name), []).extend(
            float(np.linalg.norm(a - b)) for i, a in enumerate(cs) for b in cs[i + 1:])
    return out


def _stats(dists: dict[str, list[float]]) -> dict[str, Any]:
    d = np.array([x for v in dists.values() for x in v], dtype=np.float64)
    return {"num_frames": len(dists), "num_image_pairs": int(d.size),
            "median_m": float(np.median(d)) if d.size else None, "max_m": float(d.max()) if d.size else None,
            "per_frame_median_m": {f: float(np.median(v)) for f, v in sorted(dists.items())}}


def leave_one_frame_out(src: pycolmap.Reconstruction, tgt: pycolmap.Reconstruction,
                        frame_of_image: dict[str, str]) -> dict[str, float]:
    """Out-of-sample check of aligning ``src`` onto ``tgt`` through their shared images.

    For every shared frame, the similarity is fitted (``pycolmap.estimate_sim3d``) on the camera
    centres of the *other* shared frames' images and the left-out frame's images are measured:
    frame name -> median distance (metres) between its images' centres in ``tgt`` and mapped
    from ``src``. Empty when fewer than 2 frames are shared (nothing to leave out).
    """
    shared = sorted(set(src.reg_image_ids()) & set(tgt.reg_image_ids()))
    frames: dict[str, list[int]] = {}
    for i in shared:
        name = src.image(i).name
        frames.setdefault(frame_of_image.get(name, name), []).append(i)
    out: dict[str, float] = {}
    if len(frames) < 2:
        return out
    for f, ids in frames.items():
        fit = [i for g, v in frames.items() if g != f for i in v]
        a = np.array([src.image(i).projection_center() for i in fit])
        b = np.array([tgt.image(i).projection_center() for i in fit])
        if len(fit) < 3 or np.linalg.matrix_rank(a - a.mean(0), tol=1e-6) < 2:
            continue
        sim = pycolmap.estimate_sim3d(a, b)
        if sim is None:
            continue
        m = np.asarray(sim.matrix())
        d = [np.linalg.norm(m[:, :3] @ src.image(i).projection_center() + m[:, 3] - tgt.image(i).projection_center())
             for i in ids]
        out[f] = float(np.median(d))
    return out


def chain_align(models: dict[str, pycolmap.Reconstruction], max_error_m: float = 5.0,
                frame_of_image: dict[str, str] | None = None) -> dict[str, Any]:
    """Align the clusters onto each other through their shared images, in place.

    The cluster with the most registered images stays as it is (geo-aligned to its frames'
    GPS); the others follow one by one, each the one sharing most images with a cluster
    already placed, with the similarity that maps its shared images' camera centres onto the
    placed cluster's (``pycolmap.align_reconstructions_via_proj_centers``, LO-RANSAC, inlier
    threshold ``max_error_m`` metres). A cluster sharing no image, or whose alignment fails,
    keeps its own geo-alignment (logged).

    Returns:
        ``{"reference": name, "steps": [{"cluster", "onto", "shared_images", "scale",
        "translation_m", "aligned", "sim3", "leave_one_frame_out_m"}]}``
        (:func:`leave_one_frame_out`, measured before the cluster is moved).
    """
    names = sorted(models, key=lambda c: -models[c].num_reg_images())
    regs = {c: set(models[c].reg_image_ids()) for c in names}
    placed, steps = [names[0]], []
    rest = names[1:]
    while rest:
        best = max(((len(regs[c] & regs[t]), c, t) for c in rest for t in placed), key=lambda x: x[0])
        n, c, t = best
        rest.remove(c)
        placed.append(c)
        sim = pycolmap.align_reconstructions_via_proj_centers(models[c], models[t], max_error_m) if n >= 3 else None
        if sim is None:
            log.warning("sfm merge: cluster %s shares %d image(s) with the placed clusters; it keeps its own "
                        "geo-alignment", c, n)
            steps.append({"cluster": c, "onto": t, "shared_images": n, "aligned": False})
            continue
        loo = leave_one_frame_out(models[c], models[t], frame_of_image or {})
        models[c].transform(sim)
        steps.append({"cluster": c, "onto": t, "shared_images": n, "aligned": True, "scale": float(sim.scale),
                      "leave_one_frame_out_m": loo,
                      "translation_m": float(np.linalg.norm(np.asarray(sim.translation))), "sim3": sim3_dict(sim)})
    return {"reference": names[0], "steps": steps}


def sim3_dict(sim: pycolmap.Sim3d) -> dict[str, Any]:
    """A similarity as JSON: ``scale``, 3x3 ``rotation``, ``translation`` (metres); x' = s R x + t."""
    m = np.asarray(sim.matrix())
    return {"scale": float(sim.scale), "rotation": (m[:, :3] / sim.scale).tolist(), "translation": m[:, 3].tolist()}


def sim3_from_dict(d: dict[str, Any]) -> pycolmap.Sim3d:
    """Inverse of :func:`sim3_dict`."""
    return pycolmap.Sim3d(float(d["scale"]), pycolmap.Rotation3d(np.asarray(d["rotation"], dtype=np.float64)),
                          np.asarray(d["translation"], dtype=np.float64))


def place_cluster(aligned_dir: str | os.PathLike, merge_path: str | os.PathLike, cluster: str,
                  placed_dir: str | os.PathLike) -> dict[str, Any]:
    """Write a cluster's geo-aligned model moved by its chain alignment (``merge.json``), so the
    cluster trains in the merged model's frame and the cropped splats fit together.

    Args:
        aligned_dir: ``clusters/{cluster}/aligned``.
        merge_path: the sparse merge's ``merge.json`` (``chain.steps[*].sim3``).
        cluster: the cluster's name.
        placed_dir: output model folder (``clusters/{cluster}/placed``), replaced whole.

    Returns:
        The similarity applied (identity for the reference cluster or a cluster left as it was).

    Raises:
        InputError: unreadable model or ``merge.json``.
    """
    try:
        rec = pycolmap.Reconstruction(str(aligned_dir))
    except Exception as e:
        raise InputError(f"{aligned_dir}: cannot read cluster {cluster}'s model ({e})") from e
    try:
        steps = (read_json(merge_path).get("chain") or {}).get("steps") or []
    except (OSError, ValueError) as e:
        raise InputError(f"{merge_path}: cannot read merge.json ({e}); rerun sfm_merge") from e
    step = next((st for st in steps if st["cluster"] == cluster and st.get("aligned")), None)
    sim = sim3_from_dict(step["sim3"]) if step else pycolmap.Sim3d()
    rec.transform(sim)
    with atomic_path(placed_dir) as tmp:
        tmp.mkdir(parents=True)
        rec.write_binary(str(tmp))
    log.info("sfm place: cluster %s moved by scale %.5f, translation %.3f m", cluster, sim.scale,
             float(np.linalg.norm(np.asarray(sim.translation))))
    return sim3_dict(sim)


def merge_models(models: dict[str, pycolmap.Reconstruction], core_frames: dict[str, set[str]],
                 frame_of_image: dict[str, str], max_merge_m: float = 1.0, align: bool = True,
                 max_align_error_m: float = 5.0) -> tuple[pycolmap.Reconstruction, dict[str, Any]]:
    """Unite geo-aligned cluster models (see the module docstring).

    Args:
        models: cluster name -> its model in the scene's ENU frame (ids from one database);
            with ``align`` they are moved onto each other in place (:func:`chain_align`).
        core_frames: cluster name -> frame names of its core.
        frame_of_image: image name -> frame name (views.json).
        max_merge_m: a 3D point observed by a shared image is merged with the point the other
            cluster triangulated there only when they are closer than this (metres); else the
            observation is dropped from the new point (a wrong match in one cluster).
        align: first align the clusters onto each other through their shared images.
        max_align_error_m: inlier threshold of that alignment, metres.

    Returns:
        (merged model, report) with ``num_images``, ``num_frames``, ``num_points3D``,
        ``num_merged_points``, ``num_skipped_far_points``, ``owner`` (frame -> cluster),
        ``chain`` (:func:`chain_align`) and ``shared_centres`` (``num_frames``,
        ``num_image_pairs``, ``median_m``, ``max_m``, ``per_frame_median_m``): the distance
        between a shared image's camera centres in two clusters, over every pair of clusters
        registering it, after the chain alignment (``shared_centres_geo``: before it, with each
        cluster geo-aligned to its own frames' GPS).

    Raises:
        InputError: no models.
    """
    if not models:
        raise InputError("sfm merge: no cluster models to merge")
    names = list(models)
    geo = _stats(shared_centre_distances(models, frame_of_image))
    chain = chain_align(models, max_align_error_m, frame_of_image) if align else None
    # owner of each frame: the cluster whose core holds it and that registered it, else the first
    owner: dict[int, str] = {}
    frame_name: dict[int, str] = {}
    for c in names:
        for fid in models[c].reg_frame_ids():
            fr = models[c].frame(fid)
            ims = [models[c].image(d.id) for d in fr.data_ids if d.sensor_id.type == pycolmap.SensorType.CAMERA]
            fname = frame_of_image.get(ims[0].name, ims[0].name) if ims else str(fid)
            frame_name[fid] = fname
            if fid not in owner or (fname in core_frames.get(c, set()) and fname not in core_frames.get(owner[fid], set())):
                owner[fid] = c
    merged = pycolmap.Reconstruction()
    for fid in sorted(owner):
        _add_frame(merged, models[owner[fid]], fid)
    n_merged = n_dropped = 0
    for c in names:
        rec = models[c]
        for pid, p in rec.points3D.items():
            free, taken = [], set()
            for el in p.track.elements:
                if not merged.exists_image(el.image_id):
                    continue
                p2 = merged.image(el.image_id).point2D(el.point2D_idx)
                if p2.has_point3D():
                    taken.add(p2.point3D_id)
                else:
                    free.append(el)
            if not free and not taken:
                continue
            if free:
                new_id = merged.add_point3D(p.xyz, pycolmap.Track(), p.color)
                for el in free:
                    merged.add_observation(new_id, el)
            else:
                new_id = None
            for other in sorted(taken):
                if not merged.exists_point3D(other):
                    continue
                if new_id is None:
                    new_id = other
                    continue
                if np.linalg.norm(merged.point3D(other).xyz - merged.point3D(new_id).xyz) <= max_merge_m:
                    new_id = merged.merge_points3D(new_id, other)
                    n_merged += 1
                else:
                    n_dropped += 1
    report = {
        "num_images": int(merged.num_reg_images()),
        "num_frames": int(merged.num_reg_frames()),
        "num_points3D": int(merged.num_points3D()),
        "num_merged_points": int(n_merged),
        "num_skipped_far_points": int(n_dropped),
        "owner": {frame_name[f]: owner[f] for f in sorted(owner)},
        "shared_centres_geo": geo,
        "chain": chain,
        "shared_centres": _stats(shared_centre_distances(models, frame_of_image)),
    }
    loo = [v for st in (chain or {}).get("steps", []) for v in (st.get("leave_one_frame_out_m") or {}).values()]
    report["shared_centres_leave_one_frame_out"] = {
        "num_frames": len(loo), "median_m": float(np.median(loo)) if loo else None, "max_m": float(np.max(loo)) if loo else None}
    return merged, report


def merged_alignment(merged: pycolmap.Reconstruction, views: dict, reports: dict[str, dict], owner: dict[str, str]) -> dict[str, Any]:
    """One ``alignment.json`` for the merged model (same keys as the align stage's report).

    Residuals are recomputed on the merged model: each registered frame's camera centre (mean
    of its images' centres, ENU metres) against its GPS position in ``views``. A frame is an
    inlier when its residual is within its owner cluster's ``max_error_m``. ``sim3`` is the
    identity (the merged model is in ENU already); ``clusters`` holds each cluster's own sim3,
    inliers and residual medians.
    """
    centres: dict[str, list[np.ndarray]] = {}
    frame_of_image = {im: fr["frame"] for fr in views["frames"] for im in fr["images"].values()}
    for im in merged.images.values():
        if im.has_pose and im.name in frame_of_image:
            centres.setdefault(frame_of_image[im.name], []).append(im.projection_center())
    residuals = []
    for fr in views["frames"]:
        if fr["frame"] not in centres or fr.get("enu") is None:
            continue
        c, g = np.mean(centres[fr["frame"]], axis=0), np.asarray(fr["enu"], dtype=np.float64)
        r = c - g
        max_err = ((reports.get(owner.get(fr["frame"], "")) or {}).get("options") or {}).get("max_error_m", np.inf)
        residuals.append({"frame": fr["frame"], "images": sorted(fr["images"].values()), "enu_gps": g.tolist(),
                          "enu_sfm": c.tolist(), "residual_m": float(np.linalg.norm(r)),
                          "horizontal_m": float(np.linalg.norm(r[:2])), "vertical_m": float(r[2]),
                          "inlier": bool(np.linalg.norm(r) <= max_err), "cluster": owner.get(fr["frame"])})
    norms = np.array([r["residual_m"] for r in residuals], dtype=np.float64)
    inl = np.array([r["inlier"] for r in residuals], dtype=bool)
    first = next(iter(reports.values()))
    return {
        "schema_version": 1,
        "method": f"clusters ({first.get('method')}) + chain alignment",
        "up_prior": first.get("up_prior"),
        "degenerate_line": any(bool(r.get("degenerate_line")) for r in reports.values()),
        "sim3": {"scale": 1.0, "rotation": np.eye(3).tolist(), "translation": [0.0, 0.0, 0.0]},
        "num_frames": len(views["frames"]),
        "num_registered_frames": len(residuals),
        "num_inliers": int(inl.sum()),
        "median_residual_m": float(np.median(norms)) if norms.size else None,
        "max_residual_m": float(norms.max()) if norms.size else None,
        "median_inlier_residual_m": float(np.median(norms[inl])) if inl.any() else None,
        "residuals": residuals,
        "unregistered_frames": sorted({fr["frame"] for fr in views["frames"]} - {r["frame"] for r in residuals}),
        "heading_check": None,
        "clusters": {c: {k: rep.get(k) for k in ("sim3", "num_registered_frames", "num_inliers", "median_residual_m",
                                                  "max_residual_m", "method", "ground_truth_error")}
                     for c, rep in reports.items()},
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def main(clusters_path: str | os.PathLike, aligned_dirs: dict[str, str | os.PathLike], reports: dict[str, str | os.PathLike],
         views_path: str | os.PathLike, aligned_dir: str | os.PathLike, alignment_path: str | os.PathLike,
         merge_path: str | os.PathLike) -> dict:
    """Merge the clusters' geo-aligned models into the scene's ``aligned/`` and ``alignment.json``.

    Args:
        clusters_path: ``clusters.json`` (:mod:`splatforge_core.cluster`).
        aligned_dirs: cluster name -> its ``clusters/{cluster}/aligned`` model folder.
        reports: cluster name -> its ``clusters/{cluster}/alignment.json``.
        views_path: the scene's ``views.json``.
        aligned_dir: output merged COLMAP binary model (ENU metres), replaced whole.
        alignment_path: output alignment report of the merged model (:func:`merged_alignment`).
        merge_path: output ``merge.json``: :func:`merge_models`'s report plus ``clusters``
            (name -> registered images/frames, points) and ``wall_s``.

    Returns:
        The merge report.

    Raises:
        InputError: an unreadable cluster model or report (named), a cluster missing.
    """
    t0 = time.perf_counter()
    from ..cluster import read_clusters

    doc = read_clusters(clusters_path)
    views = read_json(views_path)
    frame_of_image = {im: fr["frame"] for fr in views["frames"] for im in fr["images"].values()}
    models, reps = {}, {}
    for c in doc["clusters"]:
        name = c["name"]
        if name not in aligned_dirs or name not in reports:
            raise InputError(f"{clusters_path}: cluster {name} has no aligned model to merge")
        try:
            models[name] = pycolmap.Reconstruction(str(aligned_dirs[name]))
        except Exception as e:
            raise InputError(f"{aligned_dirs[name]}: cannot read cluster {name}'s model ({e})") from e
        reps[name] = read_json(reports[name])
    core = {c["name"]: set(c["core"]) for c in doc["clusters"]}
    merged, report = merge_models(models, core, frame_of_image)
    report["clusters"] = {c: {"num_reg_images": int(m.num_reg_images()), "num_reg_frames": int(m.num_reg_frames()),
                              "num_points3D": int(m.num_points3D())} for c, m in models.items()}
    report["num_scene_frames"] = len(views["frames"])
    report["unregistered_frames"] = sorted({fr["frame"] for fr in views["frames"]} - set(report["owner"]))
    alignment = merged_alignment(merged, views, reps, report["owner"])
    with atomic_path(aligned_dir) as tmp:
        tmp.mkdir(parents=True)
        merged.write_binary(str(tmp))
    report["wall_s"] = round(time.perf_counter() - t0, 3)
    write_json(alignment_path, alignment)
    write_json(merge_path, report)
    sc, geo = report["shared_centres"], report["shared_centres_geo"]
    log.info("sfm merge: %d clusters -> %d/%d frames, %d images, %d points (%d merged); shared-image centres "
             "differ by median %s m, max %s m over %d frames (each cluster geo-aligned alone: median %s m)",
             len(models), report["num_frames"], len(views["frames"]), report["num_images"], report["num_points3D"],
             report["num_merged_points"], _r(sc["median_m"]), _r(sc["max_m"]), sc["num_frames"], _r(geo["median_m"]))
    return report
