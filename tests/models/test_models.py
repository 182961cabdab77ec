import pytest
import torch

import lowbit.models as models

# He et al. 2016 (CIFAR: option A) and torchvision's published counts for the ImageNet ResNets.
KNOWN_PARAMS = {
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet56": 853_018,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "vgg16": 14_724_042,
}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,expected", sorted(KNOWN_PARAMS.items()))
def test_parameter_counts(name, expected):
    assert n_params(models.get(name)) == expected


@pytest.mark.parametrize("name", ["digits_cnn", "resnet20", "resnet32", "vgg16"])
def test_output_shape_small_inputs(name):
    torch.manual_seed(0)
    model = models.get(name, num_classes=7).eval()
    x = torch.randn(3, *models.info(name).input_shape)
    assert model(x).shape == (3, 7)


def test_imagenet_resnet_shape_on_small_image():
    model = models.get("resnet18", num_classes=5, in_channels=1).eval()
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 5)


def test_same_seed_same_init():
    torch.manual_seed(3)
    a = models.get("resnet20")
    torch.manual_seed(3)
    b = models.get("resnet20")
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_option_a_shortcut_has_no_parameters_and_pads_channels():
    model = models.get("resnet20")
    block = model.layer2[0]
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    x = torch.randn(1, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (1, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_digits_cnn_has_three_convs_and_one_linear():
    model = models.get("digits_cnn")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [16, 32, 32] and len(linears) == 1


def test_unknown_model_lists_available():
    with pytest.raises(ValueError, match="available: .*resnet20"):
        models.get("resnet21")


def test_bad_depth_message():
    from lowbit.models.resnet_cifar import CifarResNet

    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21)
