"""The faster trainer: one-gather circular padding, one-gather augmentation, device-side bookkeeping, and batched
seeds (``fit_many``). Every speed-up is tested for equality with what it replaces."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lib import data
from lib.layers.blurpool import BlurPool, MaxBlurPool
from lib.layers.padding import CircularPadConv2d, circular_pad, use_fast_circular_padding_
from lib.models.vgg import VGG13
from lib.training import TrainConfig, fit, fit_many
from lib.unshuffle import PixelPermutation


# --- circular padding as one gather --------------------------------------------------------------------------------

@pytest.mark.parametrize("pad", [(1, 1, 1, 1), (0, 1, 0, 1), (2, 1, 0, 3), (3, 3, 3, 3), (0, 0, 2, 0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_circular_pad_equals_f_pad(pad, channels_last):
    x = torch.randn(2, 3, 5, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = circular_pad(x, pad)
    assert torch.equal(out, F.pad(x, pad, mode="circular"))
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last  # layout kept for the next conv


def test_circular_pad_wraps_more_than_once_and_checks_its_argument():
    x = torch.randn(1, 2, 2, 3)
    rows, cols = torch.arange(-5, 2 + 4) % 2, torch.arange(-7, 3 + 1) % 3
    assert torch.equal(circular_pad(x, (7, 1, 5, 4)), x[..., rows, :][..., cols])
    assert circular_pad(x, (0, 0, 0, 0)) is x
    with pytest.raises(ValueError, match="non-negative"):
        circular_pad(x, (1, -1, 0, 0))


def _conv_pair(in_channels, out_channels, kernel_size, **kwargs):
    reference = nn.Conv2d(in_channels, out_channels, kernel_size, padding_mode="circular", **kwargs)
    fast = CircularPadConv2d(in_channels, out_channels, kernel_size, **kwargs)
    fast.load_state_dict(reference.state_dict())
    return reference, fast


@pytest.mark.parametrize("kernel_size,kwargs", [
    (3, dict(padding=1)), (1, dict(padding=0)), (2, dict(padding="same")), (4, dict(padding="same")),
    (5, dict(padding=2, stride=2)), (3, dict(padding=2, dilation=2, bias=False)), (3, dict(padding=1, groups=2)),
    (3, dict(padding=(1, 2))),
])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_circular_conv_equals_nn_conv2d(kernel_size, kwargs, channels_last):
    torch.manual_seed(0)
    reference, fast = _conv_pair(4, 6, kernel_size, **kwargs)
    assert list(fast.state_dict()) == list(reference.state_dict())
    x = torch.randn(3, 4, 9, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    outputs, grads = [], []
    for conv in (reference, fast):
        xi = x.clone().requires_grad_()
        out = conv(xi)
        outputs.append(out)
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(),
                                         [xi, *conv.parameters()]))
    if channels_last:  # F.pad returns NCHW, so the reference convolution ran in the other layout
        torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    else:  # the same padded values go into the same convolution
        assert torch.equal(outputs[0], outputs[1])
    # NCHW: only the order of the ≤ 4 additions at wrapped pixels differs; channels_last: the convolution's too
    tolerance = dict(rtol=1e-4, atol=1e-5) if channels_last else dict(rtol=1e-5, atol=1e-6)
    for g_ref, g_fast in zip(*grads):
        torch.testing.assert_close(g_fast, g_ref, **tolerance)


def test_fast_circular_conv_gradcheck_float64():
    torch.manual_seed(0)
    conv = CircularPadConv2d(2, 3, 2, padding="same").double()  # even kernel: asymmetric padding
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    inputs = (x, conv.weight, conv.bias)
    fn = lambda x, w, b: F.conv2d(circular_pad(x, conv._reversed_padding_repeated_twice), w, b)
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)
    assert torch.autograd.gradcheck(lambda x: circular_pad(x, (2, 1, 3, 0)), (x,))
    # and the float64 gradients equal those of padding_mode="circular"
    reference = nn.Conv2d(2, 3, 2, padding="same", padding_mode="circular").double()
    reference.load_state_dict(conv.state_dict())
    g_ref = torch.autograd.grad(reference(x).square().sum(), [x, reference.weight])
    g_fast = torch.autograd.grad(conv(x).square().sum(), [x, conv.weight])
    for a, b in zip(g_ref, g_fast):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


class _CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the aten operations that allocate or compute (views and metadata queries excluded)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not (torch.Tag.view_copy in func.tags or func.is_view or func.__name__.startswith(("view", "expand",
                                                                                            "_unsafe_view"))):
            self.count += 1
        return out


def _ops(fn) -> int:
    with _CountOps() as counter:
        fn()
    return counter.count


def test_circular_padding_costs_one_gather_each_way():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    grad = torch.randn(2, 3, 10, 10)
    circular_pad(x, (1, 1, 1, 1))  # builds the cached index
    fast = _ops(lambda: circular_pad(x, (1, 1, 1, 1)).backward(grad))
    stock = _ops(lambda: F.pad(x, (1, 1, 1, 1), mode="circular").backward(grad))
    assert fast <= 3, fast  # gather; zeros + scatter_add
    assert stock >= fast + 10, (stock, fast)


def test_vgg_uses_fast_padding_with_unchanged_keys_and_outputs():
    torch.manual_seed(0)
    model = VGG13(width=2, pool="maxblur", filter=("binomial", 3))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 10 and all(type(m) is CircularPadConv2d for m in convs)
    stock = VGG13(width=2, pool="maxblur", filter=("binomial", 3))
    for m in stock.modules():
        if type(m) is CircularPadConv2d:
            m.__class__ = nn.Conv2d  # the stock padding_mode="circular" convolution
    assert list(stock.state_dict()) == list(model.state_dict())
    stock.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model(x), stock(x), rtol=1e-6, atol=1e-6)
    assert use_fast_circular_padding_(stock) == 10 and type(stock.blocks[0][0][0]) is CircularPadConv2d


def test_blurpool_circular_padding_equals_f_pad():
    x = torch.randn(2, 3, 8, 8)
    layer = BlurPool(("binomial", 5), stride=2, padding_mode="circular")
    expected = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="circular"), layer.kernel.expand(3, 1, -1, -1), stride=2,
                        groups=3)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-6)
    dense = MaxBlurPool(None, 2, 2, "circular").dense_pool(x)
    assert torch.equal(dense, F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="circular"), 2, stride=1))


def test_dense_max_pool_detour_is_bit_exact_with_ties():
    from lib.layers.blurpool import _max_pool_stride1
    x = torch.relu(torch.randn(4, 6, 9, 9)).round(decimals=1).requires_grad_()  # many equal values (zeros and not)
    grad = torch.randn(4, 6, 8, 8)
    out = _max_pool_stride1(x, 2)
    expected = F.max_pool2d(x, 2, stride=1)
    assert torch.equal(out, expected)
    assert torch.equal(torch.autograd.grad(out, x, grad)[0], torch.autograd.grad(expected, x, grad)[0])
    xs = torch.randn(3, 2, 4, 5, 5)  # under vmap it falls back to the plain call
    assert torch.equal(torch.func.vmap(lambda t: _max_pool_stride1(t, 2))(xs),
                       F.max_pool2d(xs.flatten(0, 1), 2, stride=1).view(3, 2, 4, 4, 4))


# --- augmentation: one gather, the same random stream ------------------------------------------------------------

def _old_gather(x, rows, cols):  # the implementation this replaces (advanced indexing), kept as the reference
    index_n = torch.arange(x.shape[0])[:, None, None]
    return x.permute(0, 2, 3, 1)[index_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def _old_augment(x, translate, mode, flip, generator):
    n, _, h, w = x.shape
    if translate:
        offsets = torch.randint(-translate, translate + 1, (2, n), generator=generator)
        if mode == "circular":
            rows = (torch.arange(h)[None, :] - offsets[0][:, None]) % h
            cols = (torch.arange(w)[None, :] - offsets[1][:, None]) % w
            x = _old_gather(x, rows, cols)
        else:
            padded = F.pad(x, (translate,) * 4, mode="constant" if mode == "zeros" else "reflect")
            rows = torch.arange(h)[None, :] + (translate - offsets[0])[:, None]
            cols = torch.arange(w)[None, :] + (translate - offsets[1])[:, None]
            x = _old_gather(padded, rows, cols)
    if flip:
        mirror = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    return x


@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
@pytest.mark.parametrize("translate,flip", [(0, True), (3, False), (3, True)])
def test_augment_equals_the_old_implementation_for_the_same_generator(mode, translate, flip):
    images = torch.randint(0, 256, (33, 3, 7, 9), dtype=torch.uint8)
    x = images.float() / 255
    augment = data.Augment(translate=translate, mode=mode, flip=flip)
    expected = _old_augment(x, translate, mode, flip, torch.Generator().manual_seed(4))
    assert torch.equal(augment(x, torch.Generator().manual_seed(4)), expected)
    # on the uint8 batch (what fit does): the same images
    assert torch.equal(augment(images, torch.Generator().manual_seed(4)).float() / 255, expected)
    # draw + apply is __call__, and the generator ends in the same state
    g_a, g_b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(augment.apply(x, augment.draw(len(x), g_a)), augment(x, g_b))
    assert torch.equal(torch.rand(3, generator=g_a), torch.rand(3, generator=g_b))


def test_translate_and_flip_functions_equal_the_old_ones():
    x = torch.rand(20, 2, 6, 6)
    assert torch.equal(data.random_translate(x, 2, mode="reflect", generator=torch.Generator().manual_seed(1)),
                       _old_augment(x, 2, "reflect", False, torch.Generator().manual_seed(1)))
    assert torch.equal(data.random_flip(x, torch.Generator().manual_seed(2)),
                       _old_augment(x, 0, "zeros", True, torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="max_shift < image size"):
        data.random_translate(x, 6, mode="reflect")


def test_batches_keep_the_cpu_stream():
    order = torch.randperm(50, generator=torch.Generator().manual_seed(7))
    got = torch.cat(list(data.batches(50, 16, shuffle=True, generator=torch.Generator().manual_seed(7))))
    assert torch.equal(got, order)


def test_pixel_permutation_reuses_its_index():
    perm = PixelPermutation(4, 5, seed=0)
    x = torch.rand(3, 2, 4, 5)
    assert torch.equal(perm.unshuffle(perm(x)), x)
    assert perm._index("order", x.device) is perm.order  # already there: no copy


# --- fit: determinism, device-side bookkeeping -------------------------------------------------------------------

def _images(n=96, size=16, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.rand(n, 3, size, size, generator=g) * 0.6
    for c in range(classes):  # a learnable cue: a brighter channel per class
        x[y == c, c] += 0.4
    return (x * 255).to(torch.uint8), y


def _without_times(result):
    return [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in result["history"]]


def test_two_fit_runs_with_one_seed_give_identical_histories_and_weights():
    train, test = _images(), _images(40, seed=1)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, augment=data.Augment(2, "circular", True))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = VGG13(num_classes=3, width=2, pool="maxblur", filter=("binomial", 3))
        runs.append((fit(model, train, test, config=config, seed=5, device="cpu", progress=False), model))
    (a, model_a), (b, model_b) = runs
    assert _without_times(a) == _without_times(b)
    assert set(a["history"][0]) == {"epoch", "lr", "train_loss", "epoch_time_s", "train_accuracy", "test_loss",
                                    "test_accuracy"}
    for p, q in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(p, q)


# --- fit_many: batched seeds equal sequential fit ----------------------------------------------------------------

def _plain_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         CircularPadConv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 3))


def _bn_net():
    return VGG13(num_classes=3, width=2, pool="maxblur", filter=("binomial", 3))


def _compare_with_sequential(make, config, seeds, test=True, freeze=None, rtol=1e-4):
    train = _images()
    held_out = _images(40, seed=1) if test else None
    sequential, batched = [], []
    for seed in seeds:
        torch.manual_seed(100 + seed)
        model = make()
        if freeze:
            freeze(model)
        sequential.append((fit(model, train, held_out, config=config, seed=seed, device="cpu", progress=False),
                           model))
        torch.manual_seed(100 + seed)
        model = make()
        if freeze:
            freeze(model)
        batched.append(model)
    results = fit_many(batched, train, held_out, config=config, seeds=seeds, device="cpu", progress=False)
    assert len(results) == len(seeds)
    for (expected, model_seq), got, model_many in zip(sequential, results, batched):
        assert set(got) == set(expected) and got["steps"] == expected["steps"]
        assert got["parameters"] == expected["parameters"]
        assert got["trainable_parameters"] == expected["trainable_parameters"]
        for h_exp, h_got in zip(expected["history"], got["history"]):
            assert set(h_exp) == set(h_got)
            for key in h_exp:
                if key != "epoch_time_s":
                    assert h_got[key] == pytest.approx(h_exp[key], rel=rtol, abs=1e-6), key
        for (name, p), q in zip(model_seq.state_dict().items(), model_many.state_dict().values()):
            torch.testing.assert_close(q, p, rtol=rtol, atol=rtol / 10, msg=name)
    return results


def test_fit_many_equals_sequential_fit_with_augmentation():
    config = TrainConfig(epochs=2, batch_size=40, lr=0.05, augment=data.Augment(2, "zeros", True))
    _compare_with_sequential(_plain_net, config, seeds=[0, 1, 2])


def test_fit_many_equals_sequential_fit_with_batchnorm_and_circular_padding():
    # BatchNorm running statistics are stacked buffers, updated per seed inside vmap. This narrow net amplifies
    # rounding fast (after 6 steps fit in NCHW and fit in channels_last differ by 3e-3 in test loss, as much as
    # fit_many does), so the comparison stops after 3 steps
    config = TrainConfig(epochs=1, batch_size=32, lr=0.05, augment=data.Augment(2, "circular", True))
    _compare_with_sequential(_bn_net, config, seeds=[3, 4])


def test_fit_many_equals_sequential_fit_adamw_clipping_and_frozen_layers():
    config = TrainConfig(epochs=2, batch_size=32, optimizer="adamw", lr=1e-2, grad_clip=0.05, schedule="cosine",
                         label_smoothing=0.1)
    freeze = lambda model: model[0].requires_grad_(False)
    _compare_with_sequential(_plain_net, config, seeds=[0, 7], test=False, freeze=freeze)


def test_fit_many_refuses_what_it_cannot_do():
    train = _images(32)
    with pytest.raises(ValueError, match="one seed per model"):
        fit_many([_plain_net()], train, config=TrainConfig(epochs=1), seeds=[0, 1], device="cpu", progress=False)
    model = _plain_net()
    with pytest.raises(ValueError, match="distinct"):
        fit_many([model, model], train, config=TrainConfig(epochs=1), seeds=[0, 1], device="cpu", progress=False)
    with pytest.raises(ValueError, match="compile"):
        fit_many([_plain_net()], train, config=TrainConfig(epochs=1, compile=True), seeds=[0], device="cpu",
                 progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception):  # different architectures cannot be stacked
            fit_many([_plain_net(), _bn_net()], train, config=TrainConfig(epochs=1), seeds=[0, 1], device="cpu",
                     progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_and_fit_many_have_no_per_step_host_sync_on_cuda():
    train = _images(8 * 32)

    def syncs(n_batches, many):
        images, labels = train[0][:n_batches * 32], train[1][:n_batches * 32]
        config = TrainConfig(epochs=1, batch_size=32, lr=0.05, augment=data.Augment(2, "circular", True),
                             grad_clip=1.0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                if many:
                    fit_many([_bn_net(), _bn_net()], (images, labels), config=config, seeds=[0, 1], device="cuda",
                             progress=False)
                else:
                    fit(_bn_net(), (images, labels), config=config, device="cuda", progress=False)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    for many in (False, True):
        assert syncs(3, many) == syncs(8, many)  # the syncs are per run (uploads, one read per epoch), not per step
