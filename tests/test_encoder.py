"""Encoder: torchvision-compatible parameter names, pretrained loading, SE placement."""
import pytest
import torch

from fastmtl.models import Encoder
from fastmtl.layers import SqueezeExcitation


def torchvision_resnet34_state_dict():
    """A state_dict laid out exactly like torchvision.models.resnet34().state_dict(), written from
    torchvision's architecture (not from our encoder), with random values."""
    sd = {}

    def bn(prefix, c):
        sd.update({f"{prefix}.weight": torch.rand(c), f"{prefix}.bias": torch.randn(c),
                   f"{prefix}.running_mean": torch.randn(c), f"{prefix}.running_var": torch.rand(c) + 0.5,
                   f"{prefix}.num_batches_tracked": torch.tensor(7)})

    sd["conv1.weight"] = torch.randn(64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for li, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for b in range(blocks):
            p = f"layer{li}.{b}"
            sd[f"{p}.conv1.weight"] = torch.randn(planes, inplanes if b == 0 else planes, 3, 3)
            bn(f"{p}.bn1", planes)
            sd[f"{p}.conv2.weight"] = torch.randn(planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            if b == 0 and li > 1:
                sd[f"{p}.downsample.0.weight"] = torch.randn(planes, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes)
        inplanes = planes
    sd["fc.weight"] = torch.randn(1000, 512)
    sd["fc.bias"] = torch.randn(1000)
    return sd


@pytest.fixture
def checkpoint(tmp_path):
    sd = torchvision_resnet34_state_dict()
    path = tmp_path / "resnet34-torchvision.pth"
    torch.save(sd, path)
    return sd, path


def test_parameter_names_match_torchvision():
    expected = {k for k in torchvision_resnet34_state_dict() if not k.startswith("fc.")}
    assert set(Encoder("resnet34").state_dict()) == expected


@pytest.mark.parametrize("se", [False, True])
def test_pretrained_loads_from_file_url(checkpoint, tmp_path, monkeypatch, se):
    sd, path = checkpoint
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    enc = Encoder("resnet34", (False, False, True), se=se, pretrained=path.as_uri())
    got = enc.state_dict()
    for k in ("conv1.weight", "layer3.5.conv2.weight", "layer4.0.downsample.1.running_var"):
        torch.testing.assert_close(got[k], sd[k])
    if se:  # SE is not in torchvision: its parameters stay freshly initialised
        assert isinstance(enc.layer1[0].se, SqueezeExcitation)
        assert "layer1.0.se.fc1.weight" in got


def test_pretrained_loads_from_path(checkpoint):
    sd, path = checkpoint
    enc = Encoder("resnet34", pretrained=str(path))
    torch.testing.assert_close(enc.state_dict()["layer2.1.bn1.running_mean"], sd["layer2.1.bn1.running_mean"])


def test_pretrained_mismatch_names_the_keys(checkpoint, tmp_path):
    sd, _ = checkpoint
    del sd["layer1.0.conv1.weight"]
    sd["bogus.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"bad.pth does not match.*missing keys layer1.0.conv1.weight; unexpected keys bogus.weight"):
        Encoder("resnet34", pretrained=str(path))


def test_pretrained_wrong_architecture_is_one_line_naming_keys_and_shapes(checkpoint, tmp_path):
    _, path = checkpoint
    with pytest.raises(ValueError) as e:
        Encoder("resnet50", pretrained=str(path))
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "does not match encoder resnet50" in msg
    assert "layer1.0.conv1.weight (64, 64, 3, 3) in the file vs (64, 64, 1, 1) in the model" in msg
    assert "missing keys layer1.0.conv3.weight" in msg
    r50 = tmp_path / "r50.pth"
    torch.save(Encoder("resnet50").state_dict(), r50)
    with pytest.raises(ValueError, match=r"r50.pth does not match encoder resnet34: shape mismatch: layer1.0.conv1"):
        Encoder("resnet34", pretrained=str(r50))


@pytest.mark.parametrize("content", [b"\x00\x13garbage" * 100, b"just some text\n"])
def test_pretrained_not_a_checkpoint_is_one_line(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        Encoder("resnet18", pretrained=str(path))
    assert "\n" not in str(e.value) and str(e.value).startswith(f"--pretrained {path}: not a loadable")


def test_file_urls_with_the_same_base_name_load_their_own_weights(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setenv("TORCH_HOME", str(hub))
    weights = []
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        state = Encoder("resnet18").state_dict()
        torch.save(state, tmp_path / d / "r18.pth")
        weights.append(state["conv1.weight"])
    assert not torch.equal(weights[0], weights[1])
    for d, w in zip(("a", "b"), weights):
        enc = Encoder("resnet18", pretrained=(tmp_path / d / "r18.pth").as_uri())
        torch.testing.assert_close(enc.conv1.weight.detach(), w)
    assert not hub.exists(), "a local file must not be copied into the hub cache"


@pytest.mark.parametrize("url", ["https://download.pytorch.org/models/resnet18-f37072fd.pth", "s3://bucket/r18.pth"])
def test_pretrained_urls_are_refused_without_network(url, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("no download may start")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ValueError, match=r"--pretrained .*does not download weights.*local path"):
        Encoder("resnet18", pretrained=url)


def test_cli_bad_pretrained_is_one_line(tmp_path, capsys):
    from fastmtl.cli import main

    path = tmp_path / "notes.txt"
    path.write_text("hello")
    assert main(["profile", "--model", "joint", "--encoder", "resnet18", "--pretrained", str(path), "--size", "64x64"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err


def test_pretrained_missing_file():
    with pytest.raises(FileNotFoundError, match="--pretrained"):
        Encoder("resnet18", pretrained="/nonexistent/weights.pth")


def test_pretrained_refuses_pickled_code(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        Encoder("resnet18", pretrained=str(path))
    assert not marker.exists(), "loading must not run code from the file"


@pytest.mark.parametrize("name,block_attr", [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_se_sits_after_last_bn_before_residual(name, block_attr):
    enc = Encoder(name, se=True).eval()
    block = enc.layer2[1]
    assert block.se is not None
    # with the SE gate forced to 1 the block equals the plain block
    nn = torch.nn
    with torch.no_grad():
        nn.init.zeros_(block.se.fc2.weight)
        block.se.fc2.bias.fill_(50.0)
        getattr(block, block_attr).weight.normal_()
        x = torch.randn(1, block.conv1.in_channels, 8, 8)
        with_se = block(x)
        block.se = None
        without = block(x)
    torch.testing.assert_close(with_se, without)
