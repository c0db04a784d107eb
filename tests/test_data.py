"""Datasets: named sets, the user's folders and archives, decoding edge cases and the decode cache."""
from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data import DATASETS, ImageSet, describe_datasets, load_dataset, load_folder
from engine.data import decode as decode_module
from engine.data.registry import CIFAR100_COARSE_OF_FINE, CIFAR100_SUPERCLASSES
from engine.errors import ConfigError, DatasetError

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CIFAR10_JPEG = SHARED_DATASETS / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("DCE_CACHE_DIR", str(cache))
    return cache


def save(path: Path, image: Image.Image, **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **params)
    return path


def gray(size: tuple[int, int], value: int = 128) -> Image.Image:
    return Image.new("L", size, value)


def rgb(size: tuple[int, int], colour=(200, 30, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_mixed_class_folder(root: Path) -> Path:
    """cats/ and dogs/ with gray, RGBA, palette and CMYK images of several sizes, plus four unreadable files."""
    save(root / "cats" / "a_gray.png", gray((16, 16), 50))
    save(root / "cats" / "b_clear.png", Image.new("RGBA", (16, 16), (0, 0, 0, 0)))  # fully transparent
    save(root / "cats" / "nested" / "c_wide.png", rgb((40, 20)))  # other aspect: shorter side 20, centre crop
    save(root / "dogs" / "a_palette.gif", rgb((16, 16), (10, 200, 10)).quantize(4))
    save(root / "dogs" / "b_cmyk.jpg", Image.new("CMYK", (32, 32), (0, 255, 255, 0)))
    save(root / "dogs" / "c_big.png", rgb((64, 64), (10, 10, 200)))
    (root / "dogs" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    (root / "dogs" / "empty.jpg").write_bytes(b"")
    (root / "dogs" / "notes.txt").write_text("not an image")
    truncated = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8)))
    (root / "cats" / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    (root / "cats" / ".hidden.png").write_bytes(png_bytes(gray((16, 16))))
    return root


# ------------------------------------------------------------------------------------------- named datasets

def test_digits_loads_1797_gray_8x8_with_ten_classes():
    digits = load_dataset("digits")
    assert isinstance(digits, ImageSet)
    assert len(digits) == 1797 and digits.image_shape == (8, 8, 1)
    assert digits.class_names == [str(d) for d in range(10)] and digits.n_classes == 10
    assert digits.labels.dtype == np.int64 and digits.images.dtype.is_floating_point is False
    assert int(digits.images.max()) == 255 and int(digits.images.min()) == 0
    assert digits.source == "digits"


def test_digits_splits_are_the_whole_set():
    assert len(load_dataset("digits:train")) == len(load_dataset("digits:test")) == 1797


def test_image_size_resizes_a_named_dataset():
    assert load_dataset("digits", image_size=16).image_shape == (16, 16, 1)


def test_unknown_dataset_raises_and_lists_the_known_names():
    with pytest.raises(DatasetError, match="cifar10.*stl10"):
        load_dataset("imagenet-21k")


def test_unknown_split_raises():
    with pytest.raises(DatasetError, match="split"):
        load_dataset("digits:validation")


def test_mnist_without_files_and_no_download_says_to_pass_data_root(tmp_path):
    with pytest.raises(DatasetError, match="--data-root") as raised:
        load_dataset("mnist", data_root=str(tmp_path / "empty"), download=False)
    assert "--download" in str(raised.value)


def test_registry_describes_every_named_dataset_and_the_folder_form():
    names = [entry["name"] for entry in describe_datasets()]
    assert names == list(DATASETS)
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100-20", "stl10", "folder:PATH"} <= set(names)
    for entry in describe_datasets():
        assert entry["description"] and entry["source"] in ("bundled", "torchvision", "local")


def test_cifar100_superclass_table_puts_five_of_the_hundred_classes_in_each_of_twenty():
    assert len(CIFAR100_SUPERCLASSES) == 20 and len(CIFAR100_COARSE_OF_FINE) == 100
    assert np.bincount(list(CIFAR100_COARSE_OF_FINE.values())).tolist() == [5] * 20
    # torchvision's fine order is alphabetical; its first classes map as the published table says.
    first = [CIFAR100_COARSE_OF_FINE[name] for name in sorted(CIFAR100_COARSE_OF_FINE)[:5]]
    assert first == [4, 1, 14, 8, 0]


# ------------------------------------------------------------------------------------------ the user's folders

def test_flat_folder_loads_without_labels(tmp_path):
    for i in range(3):
        save(tmp_path / "photos" / f"{i}.png", rgb((12, 12), (i * 50, 0, 0)))
    photos = load_folder(tmp_path / "photos")
    assert len(photos) == 3 and photos.labels is None and photos.class_names == []
    assert photos.image_shape == (12, 12, 3) and not photos.has_labels
    assert photos.paths == ["0.png", "1.png", "2.png"]
    assert [int(photos.images[i, 0, 0, 0]) for i in range(3)] == [0, 50, 100]


def test_images_beside_sub_folders_make_one_unlabelled_set_and_none_is_dropped(tmp_path):
    save(tmp_path / "odd" / "a.png", rgb((12, 12), (10, 0, 0)))
    save(tmp_path / "odd" / "sub dir" / "b.png", rgb((12, 12), (20, 0, 0)))
    save(tmp_path / "odd" / "sub dir" / "deeper" / "c.jpg", rgb((12, 12), (30, 0, 0)))
    odd = load_folder(tmp_path / "odd")
    assert odd.labels is None and odd.class_names == [] and odd.skipped == []
    assert odd.paths == ["a.png", "sub dir/b.png", "sub dir/deeper/c.jpg"]


def test_a_readme_beside_class_folders_keeps_the_labels_and_is_skipped(tmp_path):
    save(tmp_path / "pets" / "cats" / "a.png", rgb((12, 12)))
    save(tmp_path / "pets" / "dogs" / "b.png", rgb((12, 12)))
    (tmp_path / "pets" / "README.txt").write_text("two classes")
    pets = load_folder(tmp_path / "pets")
    assert pets.class_names == ["cats", "dogs"] and pets.labels.tolist() == [0, 1]
    assert pets.skipped == [("README.txt", "not inside a class folder")]


def test_class_folder_skips_unreadable_files_and_resizes_a_mode_mix_to_the_common_size(tmp_path):
    pets = load_folder(make_mixed_class_folder(tmp_path / "pets"))

    assert pets.class_names == ["cats", "dogs"]
    # the median shorter side of the six readable images (16, 16, 16, 20, 32, 64); any colour image makes it RGB
    assert pets.image_shape == (18, 18, 3)
    assert pets.paths == ["cats/a_gray.png", "cats/b_clear.png", "cats/nested/c_wide.png",
                          "dogs/a_palette.gif", "dogs/b_cmyk.jpg", "dogs/c_big.png"]
    assert pets.labels.tolist() == [0, 0, 0, 1, 1, 1]
    skipped = dict(pets.skipped)
    assert set(skipped) == {"dogs/corrupt.png", "dogs/empty.jpg", "dogs/notes.txt", "cats/truncated.png"}
    assert "0 bytes" in skipped["dogs/empty.jpg"]
    assert "not an image" in skipped["dogs/notes.txt"]
    images = pets.images.numpy()
    assert (images[0] == 50).all()  # gray replicated into three channels
    assert (images[1] == 255).all()  # transparent pixels composited over white
    assert images[3, 8, 8].tolist() == [10, 200, 10]  # palette expanded
    assert images[4, 8, 8, 0] > 200 and images[4, 8, 8, 1:].max() < 60  # CMYK (0, 255, 255, 0) is red
    assert images[5, 8, 8].tolist() == [10, 10, 200]  # 64×64 shrunk to 16×16


@pytest.mark.parametrize("mode", ["1", "L", "LA", "I", "I;16", "F", "P", "PA", "RGB", "RGBA", "CMYK", "LAB",
                                  "YCbCr"])
def test_every_pillow_mode_decodes_to_gray_or_rgb(tmp_path, mode):
    if mode == "I;16":
        image = Image.fromarray(np.full((8, 8), 300, np.uint16))
    else:
        image = Image.new("RGBA", (8, 8), (200, 100, 50, 255)).convert("RGB" if mode != "PA" else "RGBA")
        image = image.convert(mode)
    save(tmp_path / "modes" / "image.tif", image, format="TIFF")
    loaded = load_folder(tmp_path / "modes")
    assert loaded.skipped == [] and loaded.image_shape[:2] == (8, 8)
    assert loaded.image_shape[2] == (1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3)


def test_gray_only_folder_gives_one_channel_unless_three_are_asked_for(tmp_path):
    save(tmp_path / "scans" / "a.png", gray((10, 10), 7))
    save(tmp_path / "scans" / "b.png", gray((10, 10), 9).convert("P"))  # a palette of grays is still gray
    assert load_folder(tmp_path / "scans").image_shape == (10, 10, 1)
    assert load_folder(tmp_path / "scans", channels=3).image_shape == (10, 10, 3)


def test_sixteen_bit_gray_is_scaled_to_eight_bits_not_clipped(tmp_path):
    values = np.array([[0, 32896, 65535, 65535]], dtype=np.uint16).repeat(4, axis=0)
    save(tmp_path / "depth" / "scan.png", Image.fromarray(values))
    scan = load_folder(tmp_path / "depth")
    assert scan.image_shape == (4, 4, 1)
    assert scan.images[0, 0, :, 0].tolist() == [0, 128, 255, 255]


def test_image_size_argument_resizes_and_centre_crops(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = 255  # a white centre square between black side bands that the crop removes
    save(tmp_path / "wide" / "w.png", Image.fromarray(wide))
    loaded = load_folder(tmp_path / "wide", image_size=8)
    assert loaded.image_shape == (8, 8, 3)
    assert int(loaded.images.min()) >= 250


def test_split_folder_loads_train_then_test_or_one_side(tmp_path):
    root = tmp_path / "split"
    for side, count in (("train", 3), ("test", 2)):
        for name in ("b_cls", "a_cls"):
            for i in range(count):
                save(root / side / name / f"{i}.png", gray((8, 8), 10 * i))
    both = load_folder(root)
    assert len(both) == 10 and both.class_names == ["a_cls", "b_cls"]
    assert both.paths[0] == "train/a_cls/0.png" and both.paths[-1] == "test/b_cls/1.png"
    test = load_folder(root, split="test")
    assert len(test) == 4 and test.labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(DatasetError, match="train/ and test/"):
        load_folder(tmp_path / "split" / "train", split="test")


def test_folder_spec_goes_through_load_dataset(tmp_path):
    save(tmp_path / "mine" / "x" / "1.png", gray((6, 6)))
    mine = load_dataset(f"folder:{tmp_path / 'mine'}", image_size=4)
    assert mine.source == f"folder:{tmp_path / 'mine'}" and mine.image_shape == (4, 4, 1)


def test_missing_path_raises(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_folder(tmp_path / "nowhere")


def test_a_path_with_a_nul_byte_is_refused_with_a_dataset_error(tmp_path):
    for path in (f"{tmp_path}/pets\0", "\0"):
        with pytest.raises(DatasetError, match="NUL"):
            load_folder(path)
        with pytest.raises(DatasetError, match="NUL"):
            load_dataset(f"folder:{path}")


def test_empty_folder_raises(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="no files"):
        load_folder(tmp_path / "empty")


def test_folder_of_only_unreadable_files_raises_and_counts_them(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"")
    (tmp_path / "bad" / "b.png").write_text("hello")
    with pytest.raises(DatasetError, match=r"2 file\(s\) skipped.*a\.jpg: empty file"):
        load_folder(tmp_path / "bad")


def test_decompression_bombs_are_skipped_not_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    save(tmp_path / "bombs" / "ok.png", gray((8, 8)))  # 64 pixels
    save(tmp_path / "bombs" / "warns.png", gray((12, 12)))  # over the limit: Pillow only warns
    save(tmp_path / "bombs" / "errors.png", gray((64, 64)))  # over twice the limit: Pillow raises
    loaded = load_folder(tmp_path / "bombs")
    assert loaded.paths == ["ok.png"]
    assert all("decompression bomb" in reason for _, reason in loaded.skipped) and len(loaded.skipped) == 2


# ------------------------------------------------------------------------------------------------- archives

def class_folder_members() -> dict[str, bytes]:
    return {
        "pets/cats/1.png": png_bytes(rgb((8, 8), (1, 2, 3))),
        "pets/cats/2.png": png_bytes(rgb((8, 8), (4, 5, 6))),
        "pets/dogs/1.png": png_bytes(gray((8, 8), 9)),
        "pets/dogs/broken.png": b"nope",
        "pets/.hidden/x.png": png_bytes(gray((8, 8))),
        "__MACOSX/pets/._1.png": b"resource fork",
        "../evil.png": png_bytes(gray((8, 8))),
    }


def assert_is_the_pet_archive(pets: ImageSet, *, also_skipped: tuple[str, ...] = ()) -> None:
    assert pets.class_names == ["cats", "dogs"]  # the pets/ wrapper folder is unwrapped
    assert pets.labels.tolist() == [0, 0, 1] and pets.image_shape == (8, 8, 3)
    assert pets.images[1, 0, 0].tolist() == [4, 5, 6]
    assert pets.paths == ["pets/cats/1.png", "pets/cats/2.png", "pets/dogs/1.png"]
    skipped = dict(pets.skipped)
    assert set(skipped) == {"../evil.png", "pets/dogs/broken.png", *also_skipped}
    assert "unsafe path" in skipped["../evil.png"]


def test_zip_of_a_class_folder_loads_in_memory_and_skips_escaping_members(tmp_path):
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in class_folder_members().items():
            zf.writestr(name, data)
    assert_is_the_pet_archive(load_folder(archive))
    assert not (tmp_path / "evil.png").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cache", "pets.zip"]


def test_tar_gz_of_a_class_folder_loads_in_memory_and_skips_escaping_members_and_links(tmp_path):
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in class_folder_members().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pets/dogs/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    pets = load_folder(archive)
    assert_is_the_pet_archive(pets, also_skipped=("pets/dogs/link.png",))
    assert dict(pets.skipped)["pets/dogs/link.png"] == "link in archive"


def test_corrupt_archive_raises(tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    with pytest.raises(DatasetError, match="cannot read the archive"):
        load_folder(tmp_path / "broken.zip")


def noise_png(seed: int) -> bytes:
    """A 16×16 PNG of random colours: about a kilobyte that no compressor can shrink."""
    return png_bytes(Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), np.uint8)))


def write_archive(archive: Path, members: dict[str, bytes]) -> Path:
    """A .zip, .tar or .tar.gz (chosen by the suffix) holding ``members``."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(archive, "w:gz" if archive.name.endswith(".gz") else "w") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return archive


def twenty_pngs() -> dict[str, bytes]:
    return {f"pets/{i:02d}.png": noise_png(i) for i in range(20)}


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".zip"])
def test_an_archive_cut_in_half_is_refused_and_nothing_is_cached(tmp_path, cache_dir, suffix):
    archive = write_archive(tmp_path / f"pets{suffix}", twenty_pngs())
    assert len(load_folder(archive)) == 20
    complete = archive.read_bytes()
    archive.write_bytes(complete[: len(complete) // 2])
    with pytest.raises(DatasetError, match="cannot read the archive .*check that the file is complete"):
        load_folder(archive)
    assert len(list((cache_dir / "folders").glob("*.npz"))) == 1  # only the complete archive's


def complete_length(archive: Path) -> int:
    """How much of an archive must be there for all of it to be readable: a tar's members and the first block of
    its end marker (the rest is padding), every byte of a compressed tar or a zip (the end holds the checksum or
    the table of contents)."""
    if archive.suffix != ".tar":
        return archive.stat().st_size
    with tarfile.open(archive) as tf:
        last = tf.getmembers()[-1]
    return last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE + tarfile.BLOCKSIZE


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".zip"])
def test_an_archive_cut_short_anywhere_is_refused(tmp_path, suffix):
    archive = write_archive(tmp_path / f"pets{suffix}", twenty_pngs())
    complete, needed = archive.read_bytes(), complete_length(archive)
    silently_shorter = []
    for cut in [*range(tarfile.BLOCKSIZE, needed, 128), needed - 1]:  # on tar block boundaries and between
        archive.write_bytes(complete[:cut])
        try:
            silently_shorter.append((cut, len(load_folder(archive))))
        except DatasetError as error:
            assert "cannot read the archive" in str(error)
    assert silently_shorter == []
    archive.write_bytes(complete[:needed])
    assert len(load_folder(archive)) == 20


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_an_archive_with_a_damaged_byte_is_refused(tmp_path, suffix):
    archive = write_archive(tmp_path / f"pets{suffix}", twenty_pngs())
    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    archive.write_bytes(bytes(damaged))
    with pytest.raises(DatasetError, match="cannot read the archive"):
        load_folder(archive)


# ---------------------------------------------------------------------------------------------------- cache

def test_second_load_comes_from_the_cache_without_decoding(tmp_path, cache_dir, monkeypatch):
    root = make_mixed_class_folder(tmp_path / "pets")
    first = load_folder(root)
    assert len(list((cache_dir / "folders").glob("*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache holds this folder")

    monkeypatch.setattr(decode_module, "_open", no_decoding)
    second = load_folder(root)
    assert np.array_equal(first.images.numpy(), second.images.numpy())
    assert np.array_equal(first.labels, second.labels)
    assert (first.class_names, first.paths, first.skipped) == (second.class_names, second.paths, second.skipped)


def test_cache_is_not_used_when_the_folder_or_the_options_change(tmp_path, cache_dir, monkeypatch):
    root = tmp_path / "photos"
    save(root / "a.png", gray((8, 8)))
    load_folder(root)
    calls = []
    real_open = decode_module._open
    monkeypatch.setattr(decode_module, "_open", lambda source: calls.append(source) or real_open(source))

    assert load_folder(root, image_size=4).image_shape == (4, 4, 1)
    assert calls, "a different image_size must decode again"
    calls.clear()
    save(root / "b.png", gray((8, 8)))
    assert len(load_folder(root)) == 2 and calls
    assert len(list((cache_dir / "folders").glob("*.npz"))) == 3


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_an_archive_over_a_lowered_limit_is_refused_even_when_a_cache_holds_it(tmp_path, monkeypatch, suffix):
    archive = write_archive(tmp_path / f"pets{suffix}", twenty_pngs())
    assert len(load_folder(archive)) == 20
    monkeypatch.setenv("DCE_MAX_ARCHIVE_FILES", "10")
    with pytest.raises(DatasetError, match=r"more than 10 files, the limit \(DCE_MAX_ARCHIVE_FILES\)"):
        load_folder(archive)
    monkeypatch.delenv("DCE_MAX_ARCHIVE_FILES")
    monkeypatch.setenv("DCE_MAX_ARCHIVE_BYTES", "5000")
    with pytest.raises(DatasetError, match=r"unpacks to more than 5,000 bytes, the limit"):
        load_folder(archive)


def test_a_bad_archive_limit_setting_is_reported_even_when_a_cache_holds_the_archive(tmp_path, monkeypatch):
    archive = write_archive(tmp_path / "pets.zip", twenty_pngs())
    load_folder(archive)
    monkeypatch.setenv("DCE_MAX_ARCHIVE_FILES", "lots")
    with pytest.raises(ConfigError, match="DCE_MAX_ARCHIVE_FILES='lots'"):
        load_folder(archive)


def test_an_image_over_a_lowered_pixel_limit_is_skipped_even_when_a_cache_holds_it(tmp_path, monkeypatch):
    save(tmp_path / "photos" / "small.png", gray((8, 8)))
    save(tmp_path / "photos" / "large.png", gray((12, 12)))
    assert len(load_folder(tmp_path / "photos", image_size=8)) == 2
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    lowered = load_folder(tmp_path / "photos", image_size=8)
    assert lowered.paths == ["small.png"] and "decompression bomb" in dict(lowered.skipped)["large.png"]


def test_damaged_cache_file_is_rebuilt(tmp_path, cache_dir):
    root = tmp_path / "photos"
    save(root / "a.png", gray((8, 8), 77))
    load_folder(root)
    (cache_file,) = (cache_dir / "folders").glob("*.npz")
    cache_file.write_bytes(b"garbage")
    assert int(load_folder(root).images[0, 0, 0, 0]) == 77


# ------------------------------------------------------------------------------------ the shared CIFAR-10 copy

@pytest.fixture(scope="session")
def cifar10_test_folder(tmp_path_factory) -> Path:
    if not CIFAR10_JPEG.is_file():
        pytest.skip(f"the shared CIFAR-10 JPEG copy is not at {CIFAR10_JPEG} (only on the project machines)")
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    with tarfile.open(CIFAR10_JPEG, "r|gz") as tf:
        for member in tf:
            if member.isfile() and member.name.startswith("test/"):
                target = root / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tf.extractfile(member).read())
    return root


def test_shared_cifar10_jpeg_test_split_loads_as_cifar10_test(cifar10_test_folder):
    cifar = load_dataset("cifar10:test", data_root=str(cifar10_test_folder))
    assert len(cifar) == 10_000 and cifar.image_shape == (32, 32, 3)
    assert cifar.class_names == sorted(cifar.class_names) == list(DATASETS["cifar10"].class_names)
    assert np.bincount(cifar.labels).tolist() == [1000] * 10
    assert cifar.skipped == [] and cifar.source == "cifar10:test"
    assert cifar.paths[0] == "test/airplane/0000.jpg"


# ------------------------------------------------------------------------- image size and the memory-mapped cache

def test_a_folder_of_mixed_sizes_loads_at_the_requested_size_with_centre_crops(tmp_path):
    root = tmp_path / "mixed"
    wide = np.zeros((60, 120, 3), np.uint8)
    wide[:, 30:90] = 255  # the centre square is white, the side bands the crop removes are black
    tall = np.zeros((90, 45, 3), np.uint8)
    tall[22:67] = 255
    save(root / "a_wide.png", Image.fromarray(wide))
    save(root / "b_tall.png", Image.fromarray(tall))
    save(root / "c_small.png", rgb((20, 20), (255, 255, 255)))
    save(root / "d_photo.jpg", rgb((300, 200), (250, 250, 250)))
    for size in (24, 50):
        loaded = load_folder(root, image_size=size)
        assert tuple(loaded.images.shape) == (4, size, size, 3)
        assert int(loaded.images[:2].min()) >= 250, "a side band of a non-square image was kept"


def test_a_folder_defaults_to_64_px_or_its_own_smaller_size(tmp_path):
    for i in range(3):
        save(tmp_path / "photos" / f"{i}.jpg", rgb((320, 240), (10 * i, 90, 160)))
        save(tmp_path / "icons" / f"{i}.png", rgb((40, 40), (10 * i, 90, 160)))
    assert decode_module.DEFAULT_FOLDER_IMAGE_SIZE == 64
    assert load_folder(tmp_path / "photos").image_shape == (64, 64, 3)
    assert load_folder(tmp_path / "icons").image_shape == (40, 40, 3)


def test_a_few_small_images_among_photos_do_not_shrink_the_default_size(tmp_path):
    for i in range(2):  # the most common size, but not the typical one
        save(tmp_path / "mixed" / f"icon{i}.png", rgb((16, 16)))
    for i, size in enumerate([(300, 200), (310, 210), (320, 220)]):
        save(tmp_path / "mixed" / f"photo{i}.jpg", rgb(size))
    assert load_folder(tmp_path / "mixed").image_shape == (64, 64, 3)  # the median shorter side is 200


@pytest.mark.parametrize("size", [0, -3, 1025, 100_000, 2.5, "64", True])
def test_an_image_size_out_of_range_is_refused(tmp_path, size):
    save(tmp_path / "photos" / "a.png", gray((8, 8)))
    with pytest.raises(ConfigError, match="image size must be a whole number of pixels from 1 to 1024"):
        load_folder(tmp_path / "photos", image_size=size)
    with pytest.raises(ConfigError, match="image size must be"):
        load_dataset("digits", image_size=size)


def test_the_cache_is_keyed_on_the_image_size(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    for i in range(5):
        save(root / f"{i}.jpg", rgb((200, 150), (40 * i, 90, 160)))
    decodes = []
    real_decode = decode_module._decode_image
    monkeypatch.setattr(decode_module, "_decode_image", lambda *a: decodes.append(a[1]) or real_decode(*a))
    assert load_folder(root, image_size=32).image_shape == (32, 32, 3)
    assert decodes == [32] * 5
    assert load_folder(root, image_size=32).image_shape == (32, 32, 3)
    assert decodes == [32] * 5, "the same size was decoded again"
    assert load_folder(root, image_size=48).image_shape == (48, 48, 3)
    assert decodes == [32] * 5 + [48] * 5


def test_cached_images_are_memory_mapped_from_a_npy_file(tmp_path, cache_dir):
    root = tmp_path / "photos"
    for i in range(3):
        save(root / f"{i}.png", rgb((16, 16), (40 * i, 90, 160)))
    first = load_folder(root)
    (images_file,) = (cache_dir / "folders").glob("*.npy")
    on_disk = np.load(images_file, mmap_mode="r")
    assert on_disk.dtype == np.uint8 and on_disk.shape == (3, 16, 16, 3)
    for loaded in (first, load_folder(root)):
        assert np.array_equal(loaded.images.numpy(), on_disk)
        mapped = [line for line in Path("/proc/self/maps").read_text().splitlines() if images_file.name in line]
        assert mapped, "the images were read into RAM instead of mapped"
    assert [p.name for p in (cache_dir / "folders").iterdir() if p.name.startswith(".")] == []  # no temporaries


def test_an_image_that_fails_only_when_decoded_is_squeezed_out_of_the_cached_array(tmp_path, cache_dir):
    root = tmp_path / "photos"
    for i in range(4):
        save(root / f"{i}.jpg", rgb((200, 200), (60 * i, 90, 160)))
    whole = (root / "1.jpg").read_bytes()
    (root / "1.jpg").write_bytes(whole[: len(whole) // 3])  # the header opens; the pixels do not
    loaded = load_folder(root, image_size=16)
    assert loaded.paths == ["0.jpg", "2.jpg", "3.jpg"] and [p for p, _ in loaded.skipped] == ["1.jpg"]
    assert int(loaded.images[2, 8, 8, 0]) > int(loaded.images[1, 8, 8, 0]) > int(loaded.images[0, 8, 8, 0])
    (images_file,) = (cache_dir / "folders").glob("*.npy")
    assert np.load(images_file, mmap_mode="r").shape == (3, 16, 16, 3)
    assert np.array_equal(load_folder(root, image_size=16).images.numpy(), loaded.images.numpy())


def test_a_damaged_or_missing_images_file_is_decoded_again(tmp_path, cache_dir):
    root = tmp_path / "photos"
    save(root / "a.png", gray((8, 8), 77))
    load_folder(root)
    (images_file,) = (cache_dir / "folders").glob("*.npy")
    images_file.write_bytes(images_file.read_bytes()[:-10])
    assert int(load_folder(root).images[0, 0, 0, 0]) == 77
    images_file.unlink()
    assert int(load_folder(root).images[0, 0, 0, 0]) == 77


def test_an_unwritable_cache_warns_and_loads_into_ram(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    save(root / "a.png", gray((8, 8), 77))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DCE_CACHE_DIR", str(blocked))
    with pytest.warns(UserWarning, match="could not cache decoded images"):
        assert int(load_folder(root).images[0, 0, 0, 0]) == 77


def test_decoding_a_folder_takes_at_most_one_and_a_half_decoded_arrays_of_ram(tmp_path):
    """2,000 JPEGs of 256 px at 64 px (24.6 MB decoded), measured in a fresh process: the peak resident memory
    the load adds may not exceed 1.5× the decoded array; before the memory-mapped cache it held every image."""
    from engine.bench import folder_load_memory, make_jpeg_folder

    folder = make_jpeg_folder(tmp_path / "jpegs", 2000, 256)
    measured = folder_load_memory(folder, 64, tmp_path / "fresh-cache")
    assert measured["images"] == 2000 and measured["shape"] == [64, 64, 3]
    assert measured["ratio"] <= 1.5, measured


def test_a_named_dataset_keeps_its_own_size_and_is_resized_once_per_size(cache_dir, monkeypatch):
    from engine.data import registry

    assert load_dataset("digits").image_shape == (8, 8, 1)
    resizes = []
    real_resize = registry._resize_into
    monkeypatch.setattr(registry, "_resize_into", lambda images, out: resizes.append(out.shape) or
                        real_resize(images, out))
    first = load_dataset("digits", image_size=16)
    again = load_dataset("digits", image_size=16)
    assert resizes == [(1797, 16, 16, 1)], "the same size was resized again"
    assert np.array_equal(first.images.numpy(), again.images.numpy()) and first.image_shape == (16, 16, 1)
    assert load_dataset("digits", image_size=12).image_shape == (12, 12, 1) and len(resizes) == 2
    assert len(list((cache_dir / "resized").glob("digits-*.npy"))) == 2


def test_a_full_disk_while_reserving_the_cache_warns_loads_into_ram_and_leaves_no_temporary(tmp_path, cache_dir,
                                                                                              monkeypatch):
    import errno
    import os

    root = tmp_path / "photos"
    for i in range(3):
        save(root / f"{i}.png", gray((8, 8), 70 + i))

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.warns(UserWarning, match="could not cache decoded images .*is full"):
        loaded = load_folder(root)
    assert loaded.images[:, 0, 0, 0].tolist() == [70, 71, 72]
    assert list((cache_dir / "folders").iterdir()) == []


def test_the_class_folders_of_a_folder_are_read_from_its_top_two_levels(tmp_path):
    """What the Train page offers as K: the layout's classes, named without walking the tree or opening an image."""
    from engine.data.folder import folder_class_names

    def touch(*parts):
        tmp_path.joinpath(*parts[:-1]).mkdir(parents=True, exist_ok=True)
        tmp_path.joinpath(*parts).write_bytes(b"")
    touch("pets", "cats", "deep", "a.png")
    touch("pets", "dogs", "b.png")
    touch("pets", "README.txt")  # not an image: the sub-folders stay class folders
    touch("pets", ".cache", "c.png")  # hidden: not a class
    assert folder_class_names(tmp_path / "pets") == ["cats", "dogs"]
    touch("split", "train", "cats", "a.png")
    touch("split", "test", "owls", "b.png")
    assert folder_class_names(tmp_path / "split") == ["cats", "owls"]
    touch("mixed", "loose.jpg")
    touch("mixed", "cats", "a.png")
    assert folder_class_names(tmp_path / "mixed") is None  # images beside sub-folders: one unlabelled set
    touch("flat", "a.png")
    assert folder_class_names(tmp_path / "flat") is None
    assert folder_class_names(tmp_path / "missing") is None
    assert folder_class_names(tmp_path / "pets", data_roots=[tmp_path / "split"]) is None  # outside the roots
    # a zip's from its directory, below the one folder it wraps everything in
    with zipfile.ZipFile(tmp_path / "pets.zip", "w") as zf:
        for name in ("pets/cats/a.png", "pets/dogs/deep/b.png", "pets/owls/c.png", "pets/.DS_Store"):
            zf.writestr(name, b"")
    assert folder_class_names(tmp_path / "pets.zip") == ["cats", "dogs", "owls"]
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    assert folder_class_names(tmp_path / "broken.zip") is None
