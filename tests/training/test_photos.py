"""Photo sources: the held-out split is fixed and disjoint from training; batches are seeded and blurred."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration import photos as H
from calibration.blur import BlurConfig
from training import photos as P


@pytest.fixture(scope="module")
def heldout():
    return H.heldout_pairs()


def hf_energy(img: np.ndarray) -> float:
    grey = img.mean(-1)
    return float((np.diff(grey, axis=0) ** 2).mean() + (np.diff(grey, axis=1) ** 2).mean())


def synthetic_photos(count: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Textured uint8 RGB 'photos' (no Debian package needed)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        coarse = rng.random((30, 40, 3), dtype=np.float32)
        base = cv2.resize(coarse, (400, 300), interpolation=cv2.INTER_CUBIC)
        out.append((np.clip(base + 0.2 * rng.random((300, 400, 3)), 0, 1) * 255).astype(np.uint8))
    return out


def test_heldout_set_size_format_and_names(heldout):
    assert len(heldout) >= 24
    names = [n for n, _, _ in heldout]
    assert len(set(names)) == len(names)
    for name, blurred, sharp in heldout:
        assert blurred.shape == sharp.shape == (H.EVAL_CROP, H.EVAL_CROP, 3), name
        assert blurred.dtype == sharp.dtype == np.float32
        assert 0 <= blurred.min() and blurred.max() <= 1 and 0 <= sharp.min() and sharp.max() <= 1
    # Interleaved: the first photos-many items come from distinct photos (a quick evaluation's prefix).
    first = [s.photo for s in H.heldout_crop_specs()[:12]]
    assert len(set(first)) == 12


def test_heldout_crops_do_not_overlap_within_a_photo():
    specs = H.heldout_crop_specs()
    for a in specs:
        for b in specs:
            if a is not b and a.photo == b.photo:
                assert abs(a.y - b.y) >= a.size or abs(a.x - b.x) >= a.size, (a, b)
    crops = dict(H.heldout_crops())
    assert set(crops) == {s.name for s in specs}


def test_heldout_pairs_are_blurred(heldout):
    for name, blurred, sharp in heldout:
        psnr = 10 * np.log10(1.0 / np.mean((blurred - sharp) ** 2))
        assert 12 < psnr < 40, (name, psnr)
        assert hf_energy(blurred) < hf_energy(sharp), name


def test_heldout_pairs_are_reproducible_and_order_independent(heldout):
    again = H.heldout_pairs()
    for (n1, b1, s1), (n2, b2, s2) in zip(heldout, again):
        assert n1 == n2
        np.testing.assert_array_equal(b1, b2)
        np.testing.assert_array_equal(s1, s2)
    specs = H.heldout_crop_specs()[:3]
    reversed_pairs = {n: b for n, b, _ in H._pairs(specs[::-1], 0, H.DEFAULT_CONFIG)}
    for name, blurred, _ in heldout[:3]:
        np.testing.assert_array_equal(reversed_pairs[name], blurred)
    other_seed = H._pairs(specs[:1], 1, H.DEFAULT_CONFIG)[0][1]
    assert not np.array_equal(other_seed, heldout[0][1])


def test_calibration_crops_come_from_heldout_photos():
    a = H.calibration_crops(count=6, size=128, seed=0)
    b = H.calibration_crops(count=6, size=128, seed=0)
    heldout_names = {p.name for p in H.HELDOUT_PHOTOS}
    assert [n for n, _ in a] == [n for n, _ in b]
    for (name, img), (_, img2) in zip(a, b):
        assert img.shape == (128, 128, 3) and img.dtype == np.float32
        np.testing.assert_array_equal(img, img2)
        assert name.split("_", 1)[1].rsplit("_y", 1)[0] in heldout_names
    pairs = H.calibration_pairs(count=2, size=128)
    assert pairs[0][1].shape == (128, 128, 3)


def test_heldout_photos_ship_with_scikit_image():
    files = H.heldout_photo_files()
    assert len(files) >= 12
    for name, path in files.items():
        assert path.is_file(), path
        img = H.load_heldout_photo(name)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.float32


def test_training_list_never_names_heldout_photos():
    heldout = {p.name.lower() for p in H.HELDOUT_PHOTOS}
    heldout |= {Path(p.filename).stem.lower() for p in H.HELDOUT_PHOTOS}
    listed = [p for paths in P.TRAINING_PHOTOS.values() for p in paths]
    assert len(listed) == len(set(listed)) >= 40
    for path in listed:
        assert Path(path).stem.lower() not in heldout, path
        assert "skimage" not in path


def test_installed_training_photos_are_disjoint_from_heldout():
    files = P.training_photo_files()
    if not files:
        pytest.skip("no training photos installed (run training/get_photos.sh); held-out tests still ran")
    heldout_hashes = {P.file_sha256(p) for p in H.heldout_photo_files().values()}
    heldout_names = {p.stem.lower() for p in H.heldout_photo_files().values()}
    hashes = [P.file_sha256(f) for f in files]
    assert not heldout_hashes & set(hashes)
    assert not heldout_names & {f.stem.lower() for f in files}
    assert len(set(hashes)) == len(hashes)
    listed = [p for paths in P.TRAINING_PHOTOS.values() for p in paths]
    if all(any((r / p.lstrip("/")).is_file() for r in P.photo_roots()) for p in listed):
        assert len(files) >= 40


def test_listing_filters_small_duplicate_and_heldout_files(tmp_path):
    listed = sorted(p for paths in P.TRAINING_PHOTOS.values() for p in paths if p.endswith(".jpg"))
    big = (np.random.default_rng(0).random((400, 500, 3)) * 255).astype(np.uint8)

    def put(rel: str, image: np.ndarray | None = None, copy_of: Path | None = None) -> None:
        target = tmp_path / rel.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if copy_of is not None:
            shutil.copyfile(copy_of, target)
        else:
            ok, buf = cv2.imencode(Path(rel).suffix, image)
            assert ok
            target.write_bytes(buf.tobytes())

    put(listed[0], big)
    put(listed[1], big)  # byte-identical duplicate
    put(listed[2], big[:100, :100])  # too small
    put(listed[3], copy_of=H.heldout_photo_files()["astronaut"])  # held-out content under another name
    put(listed[4], np.ascontiguousarray(big[::-1]))
    found = P.training_photo_files(roots=[tmp_path])
    assert found == [tmp_path / listed[0].lstrip("/"), tmp_path / listed[4].lstrip("/")]


def test_load_photo_downscales_and_returns_rgb(tmp_path):
    bgr = np.zeros((900, 1500, 3), np.uint8)
    bgr[..., 2] = 250  # red in OpenCV's BGR order
    path = tmp_path / "red.jpg"
    cv2.imwrite(str(path), bgr)
    img = P.load_photo(path, max_side=600)
    assert img.dtype == np.uint8 and max(img.shape[:2]) == 600 and img.shape[2] == 3
    assert img[..., 0].mean() > 200 and img[..., 2].mean() < 30
    rgb = H.from_bgr_uint8(bgr)
    np.testing.assert_array_equal(H.to_bgr_uint8(rgb), bgr)


def test_load_photo_refuses_a_truncated_jpeg(tmp_path):
    # cv2.imread filled a cut-short JPEG's missing rows with grey and training went on with it
    ok, encoded = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (600, 800, 3), np.uint8))
    path = tmp_path / "cut.jpg"
    path.write_bytes(encoded.tobytes()[:len(encoded) * 9 // 10])
    with pytest.raises(OSError, match="cut.jpg.*truncated"):
        P.load_photo(path, max_side=400)


def test_training_batches_shapes_determinism_and_blur():
    photos = synthetic_photos()
    b1, s1 = P.make_training_batch(photos, 64, 4, np.random.default_rng(0))
    b2, s2 = P.make_training_batch(photos, 64, 4, np.random.default_rng(0))
    b3, _ = P.make_training_batch(photos, 64, 4, np.random.default_rng(1))
    assert b1.shape == s1.shape == (4, 64, 64, 3) and b1.dtype == s1.dtype == np.float32
    assert 0 <= b1.min() and b1.max() <= 1 and 0 <= s1.min() and s1.max() <= 1
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(b1, b3)
    for blurred, sharp in zip(b1, s1):
        assert np.abs(blurred - sharp).mean() > 0.005
        assert hf_energy(blurred) < hf_energy(sharp)


def test_training_pairs_stream_is_seeded_and_curriculum_applies():
    photos = synthetic_photos(2, seed=1)
    s1, s2 = P.training_pairs(photos, 32, 2, rng=5), P.training_pairs(photos, 32, 2, rng=5)
    first, second = next(s1), next(s1)
    np.testing.assert_array_equal(first[0], next(s2)[0])
    assert not np.array_equal(first[1], second[1])
    gentle = BlurConfig(noise_prob=0.0, jpeg_prob=0.0).with_max_extent(1.0)
    blurred, sharp = next(P.training_pairs(photos, 32, 2, rng=5, blur_config=gentle))
    assert np.abs(blurred - sharp).mean() < np.abs(first[0] - first[1]).mean()


def test_area_sampling_weights_follow_pixel_count_and_photo_sampling_keeps_the_old_stream():
    small, large = np.full((40, 40, 3), 100, np.uint8), np.full((40, 160, 3), 200, np.uint8)
    assert P.sampling_weights([small, large], "photo") is None
    weights = P.sampling_weights([small, large], "area")
    np.testing.assert_allclose(weights, [0.2, 0.8])
    with pytest.raises(ValueError, match="unknown sampling"):
        P.sampling_weights([small], "package")
    photos = synthetic_photos()
    uniform = P.make_training_batch(photos, 32, 4, np.random.default_rng(3))
    explicit_none = P.make_training_batch(photos, 32, 4, np.random.default_rng(3), weights=None)
    np.testing.assert_array_equal(uniform[1], explicit_none[1])
    # Every crop comes from the one photo with all the weight; the other photos' colours never appear.
    flat = [np.full((96, 96, 3), v, np.uint8) for v in (30, 130, 230)]
    _, sharp = P.make_training_batch(flat, 32, 6, np.random.default_rng(3), min_texture=0.0,
                                     weights=np.array([0.0, 1.0, 0.0]))
    np.testing.assert_allclose(sharp, 130 / 255, atol=1e-6)
    with pytest.raises(ValueError, match="3 sampling weights for 2 photos"):
        P.make_training_batch(flat[:2], 32, 1, 0, weights=np.ones(3) / 3)


def test_empty_photo_list_is_an_error():
    with pytest.raises(ValueError, match="get_photos"):
        P.make_training_batch([], 32, 1, 0)


def test_install_script_installs_exactly_the_listed_packages():
    script = (Path(P.__file__).parent / "get_photos.sh").read_text()
    block = script.split("PACKAGES=(", 1)[1].split(")", 1)[0]
    assert tuple(block.split()) == P.training_packages()


def test_every_package_has_a_licence_and_the_set_is_large():
    assert set(P.PHOTO_LICENCES) == set(P.TRAINING_PHOTOS)
    assert all(P.PHOTO_LICENCES.values())
    assert sum(len(v) for v in P.TRAINING_PHOTOS.values()) >= 300


def test_extracted_png_is_found_as_its_jpg_twin(tmp_path):
    listed = sorted(p for paths in P.TRAINING_PHOTOS.values() for p in paths if p.endswith(".png"))
    image = (np.random.default_rng(3).random((400, 500, 3)) * 255).astype(np.uint8)
    twin = tmp_path / Path(listed[0].lstrip("/")).with_suffix(".jpg")
    twin.parent.mkdir(parents=True)
    assert cv2.imwrite(str(twin), image)
    assert P.training_photo_files(roots=[tmp_path]) == [twin]


@pytest.mark.parametrize("suffix", [".jp2", ".j2k"])
def test_listed_jpeg2000_photo_is_found_and_decoded_as_rgb(tmp_path, suffix):
    from PIL import Image

    listed = [p for paths in P.TRAINING_PHOTOS.values() for p in paths if p.endswith(suffix)]
    assert listed  # python3-glymur's photos are JPEG 2000
    rgb = np.zeros((360, 480, 3), np.uint8)
    rgb[..., 0] = 240  # red
    target = tmp_path / listed[0].lstrip("/")
    target.parent.mkdir(parents=True)
    Image.fromarray(rgb).save(target, "JPEG2000", irreversible=False)
    assert P.training_photo_files(roots=[tmp_path]) == [target]
    img = P.load_photo(target)
    assert img.shape == (360, 480, 3) and img[..., 0].mean() > 200 and img[..., 2].mean() < 30


def test_augment_is_seeded_and_leaves_geometry_and_blur_streams_alone():
    photo = synthetic_photos(1, seed=4)[0]
    config = BlurConfig(noise_prob=0.0, jpeg_prob=0.0)
    plain = P.sample_training_pair(photo, 48, 7, config)
    # A no-op augmentation with the same scale range reproduces the plain pair exactly: the photometric
    # draws come from a stream of their own, so kernels, noise and crop positions are unchanged.
    noop = P.Augment(exposure_stops=0.0, white_balance=0.0, scale_range=(0.5, 1.0))
    same = P.sample_training_pair(photo, 48, 7, config, augment=noop)
    np.testing.assert_allclose(same[0], plain[0], atol=2e-6)
    np.testing.assert_allclose(same[1], plain[1], atol=2e-6)
    jitter = P.Augment(exposure_stops=1.0, white_balance=0.3, scale_range=(0.5, 1.0))
    a = P.sample_training_pair(photo, 48, 7, config, augment=jitter)
    b = P.sample_training_pair(photo, 48, 7, config, augment=jitter)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert np.abs(a[1] - plain[1]).mean() > 0.01  # the sharp target itself changed ...
    ratio = lambda img: img.reshape(-1, 3).mean(0) / img.mean()  # noqa: E731
    assert np.abs(ratio(a[1]) - ratio(plain[1])).max() > 0.01  # ... in colour balance too
    # ... and the blur is synthesised from the augmented target: same brightness and colour, less detail
    np.testing.assert_allclose(a[0].reshape(-1, 3).mean(0), a[1].reshape(-1, 3).mean(0), atol=0.03)
    assert hf_energy(a[0]) < hf_energy(a[1])
    batch = P.make_training_batch([photo], 32, 3, np.random.default_rng(1), augment=P.DEFAULT_AUGMENT)
    again = P.make_training_batch([photo], 32, 3, np.random.default_rng(1), augment=P.DEFAULT_AUGMENT)
    np.testing.assert_array_equal(batch[1], again[1])
    assert 0 <= batch[1].min() and batch[1].max() <= 1


def test_photometric_jitter_keeps_range_and_mean_gain_is_exposure():
    rng = np.random.default_rng(0)
    img = rng.uniform(0.05, 0.6, (16, 16, 3)).astype(np.float32)
    out = P.Augment(exposure_stops=1.0, white_balance=0.0).photometric(img, np.random.default_rng(2))
    assert out.shape == img.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    from calibration.blur import srgb_to_linear

    gain = srgb_to_linear(out) / srgb_to_linear(img)
    np.testing.assert_allclose(gain, gain.flat[0], rtol=1e-3)  # one exposure gain for every pixel and channel
    assert abs(np.log2(gain.flat[0])) <= 1.0 and abs(gain.flat[0] - 1) > 1e-3


def test_photo_source_tells_extracted_from_installed_and_hashes_the_bytes(tmp_path, monkeypatch):
    extracted = tmp_path / "x" / "usr/share/a.jpg"
    extracted.parent.mkdir(parents=True)
    extracted.write_bytes(b"one")
    installed = tmp_path / "elsewhere.jpg"
    installed.write_bytes(b"two")
    monkeypatch.setattr(P, "photo_roots", lambda: [tmp_path / "x", Path("/")])
    first = P.photo_source([extracted, installed])
    assert (first["photos"], first["installed"], first["extracted"]) == (2, 1, 1)
    assert P.photo_source([installed, extracted])["sha256"] == first["sha256"]  # order does not matter
    extracted.write_bytes(b"re-encoded")
    assert P.photo_source([extracted, installed])["sha256"] != first["sha256"]


@pytest.mark.parametrize("argv, why", [(["--crop", "1"], "at least 2"), (["--crop", "3"], "must be even"),
                                       (["--crop", "100000"], "use a smaller --batch or --crop"),
                                       (["--batch", "1000000", "--crop", "64"], "use a smaller --batch or --crop")])
def test_the_batch_timer_refuses_sizes_it_cannot_make(argv, why, capsys):
    """A 1-pixel crop ended in numpy's "Axes=(0, 1) out of range", a huge one in an ArrayMemoryError traceback."""
    from training.photos import main

    with pytest.raises(SystemExit) as stopped:
        main(["--batches", "1", *argv])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and why in err and "Traceback" not in err
