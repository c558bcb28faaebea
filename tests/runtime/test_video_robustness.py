"""Videos a camera, phone or robot records, damaged or odd, through runtime.video: each case failed, or came out
wrong, before the fix its test names (the comment on each assertion says how)."""

from __future__ import annotations

import errno
import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import runtime.video
from runtime.video import transcode_video
from tests.runtime.sample_videos import make_clip, textured

av = pytest.importorskip("av", reason="PyAV comes with the video extra")

F = 1 << 16  # 1.0 in a display matrix's 16.16 fixed point


def _frames(path: Path, fmt: str = "bgr24") -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format=fmt) for frame in container.decode(video=0)]


def _same(frame: np.ndarray) -> np.ndarray:
    return frame


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- what is not a video -------------------------------------------------------------------------------------------
def test_cover_art_and_photos_under_a_video_name_are_refused_in_one_line(tmp_path):
    from PIL import Image

    song = tmp_path / "song.mp3"  # an MP3 whose only picture is its cover (disposition "attached picture")
    with av.open(str(song), "w") as out:
        sound = out.add_stream("libmp3lame", rate=8000, layout="mono")
        cover = out.add_stream("png", rate=1)
        cover.width, cover.height, cover.pix_fmt = 24, 16, "rgb24"
        cover.disposition = av.stream.Disposition.attached_pic
        tone = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.int16), format="s16", layout="mono")
        tone.sample_rate = 8000
        out.mux(sound.encode(tone))
        out.mux(sound.encode(None))
        picture = av.VideoFrame.from_ndarray(textured(16, 24, 0), format="bgr24").reformat(format="rgb24")
        picture.pts = 0
        out.mux(cover.encode(picture))
        out.mux(cover.encode(None))
    photo = tmp_path / "holiday.mp4"  # a PNG saved under a video's name
    Image.fromarray(textured(16, 24, 0)).save(photo, format="PNG")
    # before: both were "deblurred" into a one-frame H.264 video
    with pytest.raises(OSError, match=r"song.mp3: has no video stream, only a still picture \(cover art\)"):
        transcode_video(song, tmp_path / "out.mp4", _same, progress=False)
    with pytest.raises(OSError, match="holiday.mp4: is a still PNG image, not a video"):
        transcode_video(photo, tmp_path / "out.mp4", _same, progress=False)
    assert _names(tmp_path) == ["holiday.mp4", "song.mp3"]


def test_empty_and_foreign_files_say_so_without_ffmpegs_error_numbers(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(OSError) as empty:
        transcode_video(tmp_path / "empty.mp4", tmp_path / "out.mp4", _same, progress=False)
    with pytest.raises(OSError) as text:
        transcode_video(tmp_path / "notes.mp4", tmp_path / "out.mp4", _same, progress=False)
    assert str(empty.value) == f"{tmp_path / 'empty.mp4'}: the file is empty (0 bytes), not a video"
    # before: "... ([Errno 1094995529] Invalid data found when processing input: '<the path again>')"
    assert str(text.value) == (f"{tmp_path / 'notes.mp4'}: not a video FFmpeg can open (Invalid data found when "
                               "processing input)")
    assert _names(tmp_path) == ["empty.mp4", "notes.mp4"]


def test_a_clip_named_by_its_recording_time_in_the_working_folder(tmp_path, tiny_weights, monkeypatch, capsys):
    from runtime.cli import main

    make_clip(tmp_path / "2024-05-01T10:30:00.mp4", frames=2, h=32, w=48)
    monkeypatch.chdir(tmp_path)  # "." lists it as "2024-05-01T10:30:00.mp4": FFmpeg took "2024-05-01T10" for a protocol
    assert main([".", "-o", "out", "--model", str(tiny_weights), "-q"]) == 0, capsys.readouterr().err
    assert len(_frames(tmp_path / "out" / "2024-05-01T10:30:00.mp4")) == 2  # before: "Protocol not found"


# -- damaged files -------------------------------------------------------------------------------------------------
def test_a_damaged_packet_is_skipped_not_fatal(tmp_path, caplog, capfd):
    full = tmp_path / "full.mp4"
    make_clip(full, frames=20, h=32, w=48)
    data = bytearray(full.read_bytes())
    middle = len(data) // 2  # inside the frames' data (the index is at the end)
    data[middle:middle + 400] = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    (tmp_path / "damaged.mp4").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="runtime.video"):
        frames = transcode_video(tmp_path / "damaged.mp4", tmp_path / "out.mp4", _same, progress=False)
    # before: OSError "could not read frame 10 (Invalid data found when processing input)", no output at all
    assert 10 < frames < 20 and len(_frames(tmp_path / "out.mp4")) == frames
    assert "damaged packet(s) skipped" in caplog.text
    assert capfd.readouterr().err == ""  # FFmpeg's own complaints stay off the terminal


def test_a_recording_cut_short_is_written_as_far_as_it_goes_and_said_so(tmp_path, caplog):
    make_clip(tmp_path / "full.mkv", frames=40, audio="aac")  # Matroska: what recorders write so a cut file still plays
    (tmp_path / "cut.mkv").write_bytes((tmp_path / "full.mkv").read_bytes()[:(tmp_path / "full.mkv").stat().st_size
                                                                            // 2])
    make_clip(tmp_path / "late.mkv", frames=3, times=[10 ** 9, 10 ** 9 + 1, 10 ** 9 + 2])  # a clock's times, not from 0
    make_clip(tmp_path / "talk.mkv", frames=3, audio="aac", sound_seconds=3)  # the sound goes on after the picture
    with caplog.at_level(logging.WARNING, logger="runtime.video"):
        assert transcode_video(tmp_path / "full.mkv", tmp_path / "a.mp4", _same, progress=False) == 40
        assert transcode_video(tmp_path / "late.mkv", tmp_path / "b.mp4", _same, progress=False) == 3
        assert transcode_video(tmp_path / "talk.mkv", tmp_path / "t.mp4", _same, progress=False) == 3
        assert "cut short" not in caplog.text  # whole files are not reported
        frames = transcode_video(tmp_path / "cut.mkv", tmp_path / "c.mp4", _same, progress=False)
    assert 0 < frames < 40 and "cut.mkv: the video stops after" in caplog.text  # before: not a word
    assert "the file is cut short or damaged" in caplog.text


# -- pictures shown as recorded ------------------------------------------------------------------------------------
def _displayed(image: np.ndarray, matrix) -> np.ndarray:
    """``image`` as its display matrix maps it: (x, y) to (a x + c y, b x + d y) (FFmpeg's libavutil/display.h)."""
    a, b, c, d = (matrix[i] // F for i in (0, 1, 3, 4))
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    x, y = a * xs + c * ys, b * xs + d * ys
    x, y = x - x.min(), y - y.min()
    shown = np.zeros((y.max() + 1, x.max() + 1, 3), image.dtype)
    shown[y, x] = image
    return shown


@pytest.mark.parametrize("a, b, c, d", [(-1, 0, 0, 1), (1, 0, 0, -1), (0, 1, 1, 0), (0, -1, -1, 0),
                                        (0, 1, -1, 0)], ids=["mirrored", "flipped", "transposed", "anti-transposed",
                                                             "turned"])
def test_mirrored_display_matrices_are_applied_as_players_apply_them(tmp_path, a, b, c, d):
    matrix = [a * F, b * F, 0, c * F, d * F, 0, 0, 0, 1 << 30]
    make_clip(tmp_path / "clip.mp4", frames=1, matrix=matrix)
    stored = _frames(tmp_path / "clip.mp4")[0]
    seen = []
    transcode_video(tmp_path / "clip.mp4", tmp_path / "out.mp4", lambda f: seen.append(f) or f, progress=False)
    # before: only the matrix's rotation was read: mirrored came out upside down, flipped and transposed turned
    np.testing.assert_array_equal(seen[0], _displayed(stored, matrix))


def test_non_square_pixels_keep_their_shape(tmp_path):
    make_clip(tmp_path / "hdv.mp4", frames=2, aspect=Fraction(4, 3))  # HDV: 1440x1080 stored, shown 1920x1080
    make_clip(tmp_path / "turned.mp4", frames=2, aspect=Fraction(4, 3), matrix=[0, F, 0, -F, 0, 0, 0, 0, 1 << 30])
    transcode_video(tmp_path / "hdv.mp4", tmp_path / "a.mp4", _same, progress=False)
    transcode_video(tmp_path / "turned.mp4", tmp_path / "b.mp4", _same, progress=False)
    with av.open(str(tmp_path / "a.mp4")) as first, av.open(str(tmp_path / "b.mp4")) as second:
        # before: None (square), so players showed the picture squeezed to three quarters of its width
        assert first.streams.video[0].sample_aspect_ratio == Fraction(4, 3)
        assert second.streams.video[0].sample_aspect_ratio == Fraction(3, 4)  # turned upright with the picture


def test_rgb_clips_are_written_with_a_yuv_matrix_players_know(tmp_path):
    image = np.zeros((32, 48, 3), np.uint8)
    image[:, :24], image[:, 24:] = (40, 200, 60), (200, 30, 180)
    make_clip(tmp_path / "lossless.mov", frames=2, codec="png", pix_fmt="rgb24", images=[image, image])
    transcode_video(tmp_path / "lossless.mov", tmp_path / "out.mp4", _same, progress=False)
    with av.open(str(tmp_path / "out.mp4")) as container:
        # before: 0, the "RGB" matrix of the source, on YUV frames: players showed false colours
        assert container.streams.video[0].codec_context.colorspace == 1  # BT.709
    shown = _frames(tmp_path / "out.mp4")[0]
    halves = np.r_[0:20, 28:48]  # away from the edge between them, which 4:2:0 blurs
    assert np.abs(shown.astype(int) - image)[:, halves].max() <= 4


# -- sound -----------------------------------------------------------------------------------------------------------
def _sound(path: Path) -> tuple[str, int, list[bytes]]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        packets = [bytes(p) for p in container.demux(stream) if p.size]
        return stream.codec_context.codec.canonical_name, stream.rate, packets


def test_mp3_sound_is_copied_not_encoded_again(tmp_path):
    make_clip(tmp_path / "clip.mkv", audio="libmp3lame", rate=22050)
    transcode_video(tmp_path / "clip.mkv", tmp_path / "out.mp4", _same, progress=False)
    # before: "mp3float" (the MP3 decoder's name) was not in the list MP4 takes: re-encoded to AAC
    assert _sound(tmp_path / "out.mp4") == _sound(tmp_path / "clip.mkv")


def test_sound_at_a_rate_aac_cannot_store_is_resampled(tmp_path, caplog):
    make_clip(tmp_path / "recorder.mkv", audio="pcm_s16le", rate=192000)  # a field recorder's 192 kHz PCM
    # before: OSError "could not read frame 1 (Invalid argument: 'avcodec_open2("aac", {})' returned 22)"
    assert transcode_video(tmp_path / "recorder.mkv", tmp_path / "out.mp4", _same, progress=False) == 3
    codec, rate, packets = _sound(tmp_path / "out.mp4")
    assert (codec, rate) == ("aac", 96000) and packets
    assert "192000 Hz sound is written at 96000 Hz" in caplog.text


# -- what the transform returns, and the encoders' limits ----------------------------------------------------------
def test_frames_that_change_size_are_letterboxed_not_stretched(tmp_path, caplog):
    make_clip(tmp_path / "clip.mp4", frames=4, h=32, w=48)

    def wider_from_the_third(frame):  # a stream that changes resolution, through --side-by-side
        wider_from_the_third.calls += 1
        return frame if wider_from_the_third.calls < 3 else np.concatenate([frame, frame], axis=1)

    wider_from_the_third.calls = 0
    assert transcode_video(tmp_path / "clip.mp4", tmp_path / "out.mp4", wider_from_the_third, progress=False) == 4
    frames = _frames(tmp_path / "out.mp4")
    assert all(f.shape == (32, 48, 3) for f in frames)
    # half as high, centred: 8 black rows above and below (before: squeezed to 48 wide over the whole height)
    assert frames[3][:6].max() < 30 and frames[3][-6:].max() < 30 and frames[3][10:22].mean() > 60
    assert "frame 3 is 32x96, not 32x48 as the first" in caplog.text


def test_ten_bit_clips_smaller_than_x265_takes_are_padded(tmp_path, caplog):
    make_clip(tmp_path / "tiny.mkv", frames=2, h=6, w=6, codec="ffv1", pix_fmt="yuv420p10le")
    seen = []
    # before: OSError "could not read frame 1 (Invalid argument: 'avcodec_open2("libx265", ...)')"
    transcode_video(tmp_path / "tiny.mkv", tmp_path / "out.mp4", lambda f: seen.append(f.shape) or f, progress=False)
    assert seen == [(6, 6, 3)] * 2 and _frames(tmp_path / "out.mp4")[0].shape == (16, 16, 3)
    assert "6x6 frames are written as 16x16" in caplog.text


def test_frames_too_large_for_h264_are_named_as_such(tmp_path):
    make_clip(tmp_path / "clip.mp4", frames=1, h=16, w=16)
    with pytest.raises(OSError) as refused:
        transcode_video(tmp_path / "clip.mp4", tmp_path / "out.mp4", lambda f: np.tile(f, (1, 1025, 1)),
                        progress=False)
    # before: "could not read frame 1 (Generic error in an external library: 'avcodec_open2("libx264", ...)')"
    assert "16x16400 frames cannot be encoded as H.264" in str(refused.value)
    assert "at most 16384 pixels a side" in str(refused.value)
    assert _names(tmp_path) == ["clip.mp4"]


# -- failures leave nothing ------------------------------------------------------------------------------------------
class _FullDisk:
    """The temporary file, on a disk that fills after ``room`` bytes."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)


@pytest.mark.parametrize("where", ["frames", "index"])
def test_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(tmp_path, monkeypatch, where):
    make_clip(tmp_path / "clip.mp4", frames=6, h=32, w=48, audio="aac")
    transcode_video(tmp_path / "clip.mp4", tmp_path / "whole.mp4", _same, progress=False)
    size = (tmp_path / "whole.mp4").stat().st_size
    room = 2000 if where == "frames" else size - 50  # the MP4's index is written last, when the file is closed
    make = runtime.video.create_partial
    monkeypatch.setattr(runtime.video, "create_partial", lambda partial: _FullDisk(make(partial), room))
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip.mp4").write_bytes(b"the previous result")
    with pytest.raises(OSError) as full:
        transcode_video(tmp_path / "clip.mp4", out / "clip.mp4", _same, progress=False)
    # before: "[Errno 28] No space left on device" (no file named), or, at the index, PyAV's "Error in PyAV
    # callback: '4'" (not even an OSError)
    assert str(full.value).startswith(f"no space left on device writing {out / 'clip.mp4'}")
    assert full.value.errno == errno.ENOSPC
    assert _names(out) == ["clip.mp4"] and (out / "clip.mp4").read_bytes() == b"the previous result"


def test_ctrl_c_mid_video_leaves_the_previous_output(tmp_path):
    make_clip(tmp_path / "clip.mp4", frames=6, audio="aac")
    (tmp_path / "out.mp4").write_bytes(b"the previous result")

    def interrupted_at_the_fourth(frame):
        interrupted_at_the_fourth.calls += 1
        if interrupted_at_the_fourth.calls == 4:
            raise KeyboardInterrupt
        return frame

    interrupted_at_the_fourth.calls = 0
    with pytest.raises(KeyboardInterrupt):
        transcode_video(tmp_path / "clip.mp4", tmp_path / "out.mp4", interrupted_at_the_fourth, progress=False)
    assert _names(tmp_path) == ["clip.mp4", "out.mp4"] and (tmp_path / "out.mp4").read_bytes() == b"the previous result"


# -- transparency ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pix_fmt,warned", [("rgba", True), ("rgb24", False)])
def test_a_clip_with_transparency_says_its_alpha_is_not_kept(tmp_path, caplog, pix_fmt, warned):
    clip = tmp_path / "overlay.mov"  # motion graphics as PNG frames in QuickTime, with and without alpha
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("png", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
        for index in range(3):
            colour = textured(48, 64, index)[..., ::-1]
            picture = np.dstack([colour, np.full((48, 64), 128, np.uint8)]) if pix_fmt == "rgba" else colour
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format=pix_fmt)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with caplog.at_level(logging.WARNING):
        assert transcode_video(clip, tmp_path / "out.mp4", _same, progress=False) == 3
    assert ("transparency (alpha channel, rgba) is not kept" in caplog.text) == warned  # before: dropped silently
