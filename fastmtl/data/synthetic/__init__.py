"""Procedural street scenes: a built-in, offline stand-in for MiniScapes.

Every image is rendered by casting one ray per pixel (vectorised numpy) into a small random
3D street: a straight road with lanes, markings, crossings and zebra crossings, raised
sidewalks, building rows with windows and shop fronts, lamp posts and sign poles at many
distances, traffic signs and lights, trees and hedges, fences, parked and driving cars,
buses/trucks, pedestrians and a sky with clouds. The camera sits on a car with random
lateral position, height, pitch, yaw, roll and field of view. Shading uses a sun with
analytic building shadows, ambient light, specular paint and glass, procedural texture
noise, distance fog, exposure, vignetting and sensor noise, so that colour alone gives
neither the class nor the depth.

Labels are Cityscapes trainIds (:mod:`fastmtl.data.classes`); the classes that occur are
road, sidewalk, building, wall, fence, pole, traffic light, traffic sign, vegetation,
terrain, sky, person, car, truck and bus. Depth is the z-depth (distance along the optical
axis) of the first hit in metres, clamped to :data:`DEPTH_RANGE`; sky has no depth. Surface
normals are the exact normals of the hit geometry (box faces, ellipsoids, the ground) in
camera coordinates (x right, y down, z forward); sky has none.

On disk (the MiniScapes layout), per split and index ``i``:

* ``{split}/rgb/{i}.png``: 8-bit RGB PNG;
* ``{split}/semseg/{i}.png``: 8-bit PNG (mode ``L``) of trainIds, 255 = ignore (unused here);
* ``{split}/depth/{i}.png``: 16-bit PNG (mode ``I;16``), value = ``round(depth_m * 256)``,
  0 = invalid (sky);
* ``{split}/normals/{i}.png``: 8-bit RGB PNG, value = ``round((n + 1) * 127.5)`` per axis,
  ``(0, 0, 0)`` = invalid (sky); decode ``n = v / 127.5 - 1`` and renormalise;
* ``meta.json``: format, classes, colours, depth and normals encodings, depth range and statistics.

Images depend only on ``(seed, split, index, size)``: the same arguments give byte-identical
files for any number of workers.

Modules: :mod:`.constants` (ids, materials, palettes), :mod:`.primitives` (scene description),
:mod:`.props` (furniture, trees, vehicles, people), :mod:`.scene` (a random street),
:mod:`.raycast`, :mod:`.shading`, :mod:`.render` (one sample), :mod:`.writer` (a dataset folder).

Version 2 (``GENERATOR_VERSION``) adds the normals folder and about twice v1's thin objects
(poles, signs, traffic lights); v1 folders still read (without normals).
"""
from .constants import (DEFAULT_SEED, DEFAULT_SIZE, DEFAULT_TRAIN, DEFAULT_VAL, DEPTH_RANGE, DEPTH_SCALE,
                        FORMAT_NAME, GENERATOR_VERSION, NORMALS_ENCODING, SPLITS, SUBFOLDERS)
from .render import render_sample
from .writer import (default_data_root, encode_depth, encode_normals, ensure_default_dataset,
                     generate_dataset)

__all__ = [
    "DEFAULT_SEED", "DEFAULT_SIZE", "DEFAULT_TRAIN", "DEFAULT_VAL", "DEPTH_RANGE", "DEPTH_SCALE",
    "FORMAT_NAME", "GENERATOR_VERSION", "NORMALS_ENCODING", "SPLITS", "SUBFOLDERS", "render_sample",
    "default_data_root", "encode_depth", "encode_normals", "ensure_default_dataset", "generate_dataset",
]
