"""A catalogue of bad calls across AttnSpec, build, DynamicConv2d, insert_attention and the CLI.

Each raises SpecError / ModelError / InputError (all ValueErrors) or TypeError (the CLI: one line
on stderr, exit status 2) with a message that names the problem and the fix, before anything is
changed: the caller's model is bit-identical afterwards.
"""

import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from dynattn import AttnSpec, DynamicConv2d, SpecError, build, get_spec
from dynattn.errors import InputError, ModelError
from graph_passes import insert_attention, list_sites

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


# (id, callable taking the model, exception type, fragments the message must contain)
CASES = [
    # ---- AttnSpec
    ("pool-unknown", lambda m: AttnSpec(pool=["avg", "mean"]), SpecError, ["pool='mean'", "allowed"]),
    ("pool-empty", lambda m: AttnSpec(pool=[]), SpecError, ["at least one pooling op"]),
    ("pool-not-a-list", lambda m: AttnSpec(pool=3), SpecError, ["must be a list or tuple", "e.g."]),
    ("target-typo", lambda m: AttnSpec(target="spacial"), SpecError, ["did you mean 'spatial'"]),
    ("gate-typo", lambda m: AttnSpec(gate="softmx"), SpecError, ["did you mean 'softmax'"]),
    ("reduction-nan", lambda m: AttnSpec(reduction=NAN), SpecError, ["reduction=nan", "must be finite"]),
    ("reduction-negative", lambda m: AttnSpec(reduction=-2), SpecError, ["reduction=-2.0", "must be > 0"]),
    ("reduction-string", lambda m: AttnSpec(reduction="16"), SpecError, ["must be a number", "got str"]),
    ("temperature-inf", lambda m: AttnSpec(temperature=INF), SpecError, ["temperature=inf", "finite"]),
    ("width-zero", lambda m: AttnSpec(width=0), SpecError, ["width=0", "must be >= 1"]),
    ("experts-bool", lambda m: AttnSpec(target="kernel", experts=True), SpecError, ["experts=True", "got bool"]),
    ("kernel-even", lambda m: AttnSpec(target="spatial", kernel_size=6), SpecError, ["must be odd", "use 5 or 7"]),
    ("field-without-effect", lambda m: AttnSpec(excite="conv1d", act="gelu"), SpecError,
     ["act='gelu'", "has no effect", "remove it"]),
    ("rotation-drops-batch", lambda m: AttnSpec(target="spatial", branches=["b c h w -> c h w b"]), SpecError,
     ["keep the batch axis first"]),
    ("name-not-identifier", lambda m: AttnSpec(name="2fast"), SpecError, ["must be a Python identifier"]),
    ("composite-with-gate", lambda m: AttnSpec(stages=[AttnSpec.se()], gate="tanh"), SpecError,
     ["no effect on a composite", "set it on the stage"]),
    ("preset-flavor", lambda m: AttnSpec.triplet(flavor="timm"), SpecError, ["flavor='timm'", "'official'"]),
    ("preset-unknown", lambda m: get_spec("sk"), SpecError, ["preset='sk'", "'se'", "'cbam'"]),
    # ---- build
    ("build-zero-channels", lambda m: build("se", channels=0), SpecError, ["channels=0", "must be > 0"]),
    ("build-float-channels", lambda m: build("se", channels=64.5), SpecError, ["channels=64.5", "int"]),
    ("build-no-channels", lambda m: build("cbam"), SpecError, ["channels=None", "build(spec, channels=64)"]),
    ("build-width-rounds-to-zero", lambda m: build(AttnSpec.cbam(), channels=12), SpecError,
     ["leaves 0 hidden units at channels=12", "rounding='nearest'"]),
    ("build-kernel-without-conv", lambda m: build("dyconv", channels=64), SpecError, ["conv=None", "nn.Conv2d"]),
    ("build-not-a-spec", lambda m: build(["se"], channels=8), SpecError, ["must be an AttnSpec or a preset name"]),
    ("build-bad-compile", lambda m: build("se", channels=64, compile="yes"), SpecError,
     ["compile='yes'", "bool or a dict"]),
    # ---- DynamicConv2d
    ("dynconv-groups", lambda m: DynamicConv2d(10, 8, 3, groups=3), SpecError, ["divisible by groups"]),
    ("dynconv-negative-channels", lambda m: DynamicConv2d(-1, 8, 3), SpecError, ["nn.Conv2d"]),
    ("dynconv-feature-spec", lambda m: DynamicConv2d(8, 8, 3, spec="cbam"), SpecError,
     ["needs a kernel-target spec", "AttnSpec.dyconv()"]),
    ("dynconv-strategy", lambda m: DynamicConv2d(8, 8, 3, strategy="fastest"), SpecError,
     ["strategy='fastest'", "'kernel'", "'output'"]),
    ("dynconv-from-not-a-conv", lambda m: DynamicConv2d.from_conv(nn.Linear(3, 3)), SpecError,
     ["plain nn.Conv2d"]),
    ("dynconv-temperature", lambda m: setattr(DynamicConv2d(8, 8, 3), "temperature", NAN), SpecError,
     ["temperature=nan"]),
    # ---- insert_attention / list_sites
    ("insert-not-a-module", lambda m: insert_attention({"resnet": m}, "se"), TypeError,
     ["must be a torch.nn.Module"]),
    ("insert-selector-matches-nothing", lambda m: insert_attention(m, "se", where="layer7.*"), ModelError,
     ["matches no site", "list_sites"]),
    ("insert-wrong-input-channels", lambda m: insert_attention(m, "se", example_inputs=torch.randn(2, 4, 64, 64)),
     ModelError, ["example_inputs", "shape propagation", "failed at node 'conv1'", "pass example_inputs"]),
    ("insert-example-inputs-type", lambda m: insert_attention(m, "se", example_inputs="224"), SpecError,
     ["example_inputs='str'", "tuple of tensors"]),
    ("insert-kernel-residual", lambda m: insert_attention(m, "dyconv", where="residual"), SpecError,
     ["replaces convs", "'conv'"]),
    ("insert-mixed-kinds", lambda m: insert_attention(m, ["se", "dyconv"]), SpecError,
     ["mixes kernel and feature targets", "convert the convs first"]),
    ("insert-bad-leaf", lambda m: insert_attention(m, "se", leaf_modules=[42]), SpecError,
     ["leaf_modules=42", "qualified module name"]),
    ("insert-bad-regex", lambda m: list_sites(m, "se", where="re:(layer"), SpecError,
     ["not a valid regular expression"]),
    ("insert-inplace-string", lambda m: insert_attention(m, "se", inplace="true"), SpecError,
     ["inplace='true'", "must be a bool"]),
    ("insert-bad-spec", lambda m: insert_attention(m, AttnSpec), SpecError, ["must be an AttnSpec"]),
    ("insert-bad-compile", lambda m: insert_attention(m, "se", compile=3), SpecError, ["compile=3"]),
    # ---- round 2: misspelt names, run-time inputs, models without maps, scripting
    ("field-typo", lambda m: AttnSpec(reducton=8), SpecError, ["AttnSpec='reducton'", "did you mean 'reduction'"]),
    ("replace-field-typo", lambda m: AttnSpec.se().replace(gatee="tanh"), SpecError,
     ["AttnSpec.replace='gatee'", "did you mean 'gate'"]),
    ("preset-argument-typo", lambda m: AttnSpec.se(reducton=4), SpecError,
     ["AttnSpec.se", "'reducton'", "did you mean 'reduction'"]),
    ("get-spec-argument-typo", lambda m: get_spec("cbam", kernal_size=5), SpecError,
     ["'kernal_size'", "did you mean 'kernel_size'"]),
    ("se-fed-other-channels", lambda m: build(AttnSpec.se(), channels=64)(torch.randn(2, 32, 8, 8)), InputError,
     ["input=(2, 32, 8, 8)", "built for 64 channels but got 32"]),
    ("eca-fed-other-channels", lambda m: build(AttnSpec.eca(), channels=64)(torch.randn(2, 32, 8, 8)), InputError,
     ["ECA was built for 64 channels but got 32"]),
    ("cbam-fed-3d", lambda m: build(AttnSpec.cbam(), channels=64)(torch.randn(2, 64, 8)), InputError,
     ["4-D (B, C, H, W)", "got a 3-D tensor"]),
    ("dynconv-fed-other-channels", lambda m: DynamicConv2d(8, 8, 3)(torch.randn(2, 4, 6, 6)), InputError,
     ["DynamicConv2d was built for 8 channels but got 4"]),
    ("insert-no-feature-maps", lambda m: insert_attention(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), "se"),
     ModelError, ["has no 4-D feature maps"]),
    ("insert-strict-narrow-site", lambda m: insert_attention(m, AttnSpec.se(reduction=128), strict=True),
     SpecError, ["site='layer1.0.bn2'", "has 64 channels", "exclude it"]),
    ("insert-strict-string", lambda m: insert_attention(m, "se", strict="no"), SpecError, ["strict='no'"]),
    ("script-a-module", lambda m: torch.jit.script(build(AttnSpec.se(), channels=64)), TypeError,
     ["torch.jit.script", "torch.jit.trace", "torch.export.export"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_call_is_refused_clearly(case, model):
    _, call, exc_type, fragments = case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(exc_type) as info:
        call(model)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # nothing was changed


CLI_CASES = [
    (["show", "cbma"], ["preset='cbma'", "did you mean 'cbam'"]),
    (["show", "AttnSpec(pool=['avg', 'median'])"], ["pool='median'", "allowed"]),
    (["show", "__import__('os').system('true')"], ["is not AttnSpec or a preset"]),
    (["show", "se", "--channels", "-3"], ["--channels=-3", "must be > 0"]),
    (["insert", "resnet5O", "--spec", "se"], ["no classification model 'resnet5O'", "did you mean"]),
    (["insert", "resnet18", "--spec", "se", "--where", "layer9"], ["matches no site", "dynattn sites resnet18"]),
    (["insert", "resnet18"], ["--spec", "required"]),
    (["frobnicate"], ["invalid choice", "--help"]),
]


@pytest.mark.parametrize("argv,fragments", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_user_mistakes_print_one_message_and_exit_2(argv, fragments, capsys):
    """One message, wrapped to 80 columns (its later lines indented), after any ``...`` progress lines."""
    from dynattn.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("... ")]
    assert lines[0].startswith("dynattn: error:") and all(line.startswith("  ") for line in lines[1:]), err
    assert max(map(len, lines)) <= 80 and "Traceback" not in err, err
    message = " ".join(line.strip() for line in lines)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_the_real_command_reports_a_mistake_in_one_message():
    out = subprocess.run([sys.executable, "-m", "dynattn", "show", "cbma"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2 and all(line.startswith("  ") for line in out.stderr.splitlines()[1:])
    assert out.stderr.startswith("dynattn: error: preset='cbma'")

