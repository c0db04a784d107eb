"""Specification of the batched augmentations in engine.data.augment."""
import pytest
import torch

from engine.data.augment import (RAND_AUGMENT_OPS, EvalTransform, SimCLRAugment, StrongAugment, WeakAugment,
                                 build_augment, color_jitter, cutout, gaussian_blur, rand_augment,
                                 random_crop_with_padding, random_grayscale, random_resized_crop_flip,
                                 random_stroke_width,
                                 to_float_nchw)

KINDS = ("eval", "weak", "simclr", "strong")


def random_images(n=16, size=28, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, channels), dtype=torch.uint8, generator=g)


def ramp_images(n=32, size=32, channels=3):
    """Gray images brightening left to right: mirrored, they darken left to right."""
    row = torch.linspace(0, 255, size).round().to(torch.uint8)
    return row.view(1, 1, size, 1).expand(n, size, size, channels).contiguous()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("in_size, out_size", [(28, 32), (40, 32), (32, 32)])
def test_every_pipeline_returns_finite_float_nchw_at_the_output_size(kind, channels, in_size, out_size):
    images = random_images(n=10, size=in_size, channels=channels)
    out = build_augment(kind, out_size, channels)(images)
    assert out.shape == (10, channels, out_size, out_size)
    assert out.dtype == torch.float32
    assert out.device == images.device
    assert torch.isfinite(out).all()


def test_outputs_are_normalised_with_the_given_mean_and_std():
    images = torch.full((4, 8, 8, 3), 255, dtype=torch.uint8)
    out = EvalTransform(8, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))(images)
    torch.testing.assert_close(out[:, :, 0, 0], torch.tensor([1.0, 3.0, 0.5]).expand(4, 3))


def test_build_augment_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_augment("mixup", 32, 3)


def test_build_augment_rejects_mean_of_the_wrong_length():
    with pytest.raises(ValueError, match="mean"):
        build_augment("eval", 32, 3, mean=(0.5, 0.5))


def test_pipelines_reject_float_or_channels_first_input():
    with pytest.raises(ValueError, match="uint8"):
        WeakAugment(32)(torch.rand(4, 32, 32, 3))
    with pytest.raises(ValueError, match="uint8"):
        WeakAugment(32)(torch.zeros(4, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("in_size", [28, 32])
def test_simclr_with_all_randomness_off_equals_eval_transform(channels, in_size):
    images = random_images(n=8, size=in_size, channels=channels)
    still = SimCLRAugment(32, crop_scale=(1.0, 1.0), flip=False, jitter_p=0.0, grayscale_p=0.0, blur=False)
    torch.testing.assert_close(still(images), EvalTransform(32)(images), atol=1e-5, rtol=0)


def test_weak_with_no_padding_and_no_flip_equals_eval_transform():
    images = random_images(n=8, size=32)
    x = to_float_nchw(images)
    torch.testing.assert_close(random_crop_with_padding(x, 32, padding=0, flip_p=0.0), x, atol=1e-5, rtol=0)


def test_colour_ops_with_probability_zero_leave_the_image_unchanged():
    x = to_float_nchw(random_images(n=8))
    assert torch.equal(color_jitter(x, p=0.0), x)
    assert torch.equal(random_grayscale(x, p=0.0), x)
    assert torch.equal(gaussian_blur(x, p=0.0), x)
    assert torch.equal(cutout(x, p=0.0), x)
    assert torch.equal(random_stroke_width(x, p=0.0), x)


def test_a_random_stroke_width_thickens_some_strokes_by_a_pixel_and_thins_others():
    bar = torch.zeros(300, 1, 28, 28)
    bar[:, :, 4:24, 12:16] = 1.0  # a vertical stroke 4 px wide
    widths = random_stroke_width(bar, generator=torch.Generator().manual_seed(0))[:, 0, 14].sum(dim=1)
    assert set(widths.tolist()) == {2.0, 4.0, 6.0}  # eroded, kept, dilated: a pixel off each side
    assert 0.2 < (widths == 4.0).float().mean() < 0.45  # p = 2/3 changes about two in three


def test_resized_crop_with_flip_probability_one_mirrors_exactly():
    x = to_float_nchw(random_images(n=8, size=32))
    out = random_resized_crop_flip(x, 32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0)
    torch.testing.assert_close(out, x.flip(-1), atol=1e-5, rtol=0)


def test_padded_crop_with_flip_probability_one_mirrors_exactly():
    x = to_float_nchw(random_images(n=8, size=32))
    out = random_crop_with_padding(x, 32, padding=0, flip_p=1.0)
    torch.testing.assert_close(out, x.flip(-1), atol=1e-5, rtol=0)


def test_padded_crop_shifts_by_whole_pixels_within_the_padding():
    x = to_float_nchw(random_images(n=64, size=32))
    out = random_crop_with_padding(x, 32, padding=4, padding_mode="zeros", flip_p=0.0)
    inner = out[:, :, 4:-4, 4:-4]
    matched = torch.zeros(64, dtype=torch.bool)
    for dy in range(-4, 5):
        for dx in range(-4, 5):
            shifted = x[:, :, 4 + dy:28 + dy, 4 + dx:28 + dx]
            matched |= ((inner - shifted).abs().amax(dim=(1, 2, 3)) < 1e-5)
    assert matched.all()


@pytest.mark.parametrize("kind", ["weak", "simclr"])
def test_flip_false_never_mirrors(kind):
    out = build_augment(kind, 32, 3, flip=False)(ramp_images(n=256), generator=torch.Generator().manual_seed(1))
    left, right = out[..., :16].mean(dim=(1, 2, 3)), out[..., 16:].mean(dim=(1, 2, 3))
    assert (left <= right).all()


def test_flip_true_mirrors_about_half_the_samples():
    out = WeakAugment(32, flip=True)(ramp_images(n=400), generator=torch.Generator().manual_seed(1))
    mirrored = (out[..., :16].mean(dim=(1, 2, 3)) > out[..., 16:].mean(dim=(1, 2, 3))).float().mean()
    assert 0.4 < mirrored < 0.6


@pytest.mark.parametrize("kind", KINDS)
def test_same_generator_seed_gives_identical_outputs(kind):
    images = random_images(n=16, size=32)
    aug = build_augment(kind, 32, 3)
    first = aug(images, generator=torch.Generator().manual_seed(7))
    second = aug(images, generator=torch.Generator().manual_seed(7))
    other = aug(images, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert kind == "eval" or not torch.equal(first, other)


def test_cutout_zeroes_one_square_of_at_most_the_expected_area():
    ones = torch.ones(500, 3, 32, 32)
    out = cutout(ones, size_frac=0.5, generator=torch.Generator().manual_seed(0))
    zeroed = (out == 0).all(dim=1).sum(dim=(1, 2))
    assert ((out == 0) | (out == 1)).all()
    assert (zeroed <= 16 * 16).all() and (zeroed >= 8 * 8).all()  # clipped at most to a quarter at a corner
    # The centre is uniform over the 32 px side, so the clipped side is 14 px on average and the area 14² = 196.
    assert abs(zeroed.float().mean() - 196) < 8
    assert 0.2 < (zeroed == 16 * 16).float().mean() < 0.36  # (17/32)² of the centres leave the square whole
    rows = (out == 0).all(dim=1).any(dim=2).sum(dim=1)
    cols = (out == 0).all(dim=1).any(dim=1).sum(dim=1)
    assert torch.equal(rows * cols, zeroed)  # a rectangle, not scattered pixels


def test_strong_cutout_fills_with_the_dataset_mean():
    images = torch.full((64, 32, 32, 3), 255, dtype=torch.uint8)
    out = StrongAugment(32, flip=False, n_ops=0)(images, generator=torch.Generator().manual_seed(0))
    assert ((out == 0).all(dim=1).sum(dim=(1, 2)) > 0).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_crop_of_a_constant_image_stays_constant(channels):
    x = torch.full((32, channels, 28, 28), 0.3)
    x[:, 0] = 0.7
    for out in (random_resized_crop_flip(x, 32), random_crop_with_padding(x, 32, padding=4),
                gaussian_blur(x, p=1.0)):
        torch.testing.assert_close(out, torch.full_like(out, 0.3).index_fill_(1, torch.tensor([0]), 0.7))


def test_simclr_view_of_a_constant_image_is_constant_per_channel():
    images = torch.tensor([200, 90, 30], dtype=torch.uint8).view(1, 1, 1, 3).expand(64, 40, 40, 3)
    out = SimCLRAugment(32, blur=True)(images.contiguous())
    assert out.std(dim=(2, 3)).max() < 1e-5


def test_grayscale_makes_channels_equal_and_skips_single_channel():
    x = to_float_nchw(random_images(n=8))
    out = random_grayscale(x, p=1.0)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    gray = x[:, :1]
    assert torch.equal(random_grayscale(gray, p=1.0), gray)


def test_colour_jitter_keeps_values_in_range_and_changes_most_images():
    x = to_float_nchw(random_images(n=64))
    out = color_jitter(x, p=1.0, generator=torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1
    assert ((out - x).abs().amax(dim=(1, 2, 3)) > 1e-3).float().mean() > 0.9


def test_hue_rotation_keeps_gray_pixels_gray():
    x = torch.full((8, 3, 4, 4), 0.4)
    out = color_jitter(x, brightness=0, contrast=0, saturation=0, hue=0.5, p=1.0)
    torch.testing.assert_close(out, x)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("op", RAND_AUGMENT_OPS)
def test_rand_augment_runs_every_op(op, channels):
    x = torch.rand(16, channels, 32, 32, generator=torch.Generator().manual_seed(0))
    out = rand_augment(x, n_ops=1, magnitude=30, ops=(op,))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    if op == "identity":
        assert torch.equal(out, x)
    else:
        assert not torch.equal(out, x)


def test_rand_augment_rejects_unknown_ops_and_magnitudes():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="ops"):
        rand_augment(x, ops=("mixup",))
    with pytest.raises(ValueError, match="magnitude"):
        rand_augment(x, magnitude=31)


def test_equalize_spreads_a_low_contrast_image_over_the_full_range():
    x = torch.linspace(0.4, 0.6, 32).view(1, 1, 1, 32).expand(2, 3, 32, 32).contiguous()
    out = rand_augment(x, n_ops=1, ops=("equalize",))
    assert out.min() == 0 and out.max() == 1


def test_input_may_be_an_index_gathered_slice_of_the_resident_dataset():
    dataset = random_images(n=100, size=32)
    idx = torch.tensor([5, 3, 99, 3])
    out = WeakAugment(32)(dataset[idx])
    assert out.shape == (4, 3, 32, 32)


def test_simclr_batch_of_256_cifar_images_runs_on_cpu():
    out = SimCLRAugment(32)(random_images(n=256, size=32))
    assert out.shape == (256, 3, 32, 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", KINDS)
def test_pipelines_run_on_cuda_with_a_cpu_or_cuda_generator(kind):
    images = random_images(n=32, size=32).cuda()
    aug = build_augment(kind, 32, 3)
    out = aug(images, generator=torch.Generator().manual_seed(0))
    again = aug(images, generator=torch.Generator(device="cuda").manual_seed(0))
    assert out.device.type == "cuda" and again.device.type == "cuda"
    assert torch.isfinite(out).all() and torch.isfinite(again).all()
