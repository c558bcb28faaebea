#!/usr/bin/env bash
# Fetch the real photographs of the training split (see training/photos.py for the list and why).
#
#   bash training/get_photos.sh                 # apt-get install the packages (root, or sudo when available)
#   bash training/get_photos.sh --extract DIR   # no root: apt-get download + dpkg-deb -x into DIR, keep only
#                                               # the listed photos; then: export BANET_PHOTO_ROOT=DIR
#
# Downloads ~275 MB of .debs (opencv-doc 96 MB, plasma-workspace-wallpapers 94 MB, mate-backgrounds 47 MB);
# installing takes ~490 MB of disk (opencv-doc's HTML docs and its mathjax dependency are most of it), while
# --extract keeps only the 68 listed photos (~40 MB). --extract needs current apt lists (apt-get update).
# The held-out split needs nothing: it is scikit-image's bundled photos.
set -euo pipefail

PACKAGES=(
    lomiri-wallpapers-16.04
    lomiri-wallpapers-20.04
    mate-backgrounds
    plasma-workspace-wallpapers
    palapeli-data
    opencv-doc
)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ "${1:-}" == "--extract" ]]; then
    dest="${2:?usage: get_photos.sh --extract DIR}"
    mkdir -p "$dest"
    dest="$(cd "$dest" && pwd)"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download "${PACKAGES[@]}")
    for deb in "$work"/*.deb; do
        dpkg-deb -x "$deb" "$work/root"
    done
    # Copy only the photos training/photos.py lists, keeping their absolute paths under $dest.
    python3 - "$work/root" "$dest" "$here/photos.py" <<'EOF'
import ast, shutil, sys
from pathlib import Path

src, dest, module = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
tree = ast.parse(module.read_text())
# Evaluate TRAINING_PHOTOS without importing the package (it needs numpy/cv2, which system python may lack).
env: dict = {}
for node in tree.body:
    targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        targets = [node.target.id]
    if any(t.startswith("_") and t.isupper() or t == "TRAINING_PHOTOS" for t in targets):
        exec(compile(ast.Module([node], []), str(module), "exec"), env)
copied = 0
for paths in env["TRAINING_PHOTOS"].values():
    for p in paths:
        f = src / p.lstrip("/")
        if f.is_file():
            out = dest / p.lstrip("/")
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out)
            copied += 1
print(f"extracted {copied} photos into {dest}; now: export BANET_PHOTO_ROOT={dest}")
EOF
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
