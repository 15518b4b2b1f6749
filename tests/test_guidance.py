"""Classifier-free guidance: label dropout in training, the guidance scale as an evaluation axis."""

from __future__ import annotations

import pytest
import torch

from fm_core.guidance import conditioned, drop_labels, guided, sampling_labels
from fm_core.models.mlp import MLP
from fm_core.models.spec import UNetSpec, mlp_parameter_count
from fm_core.models.unet import UNet
from fm_core.objectives import make_objective
from fm_core.paths import make_path
from orchestrator.config_errors import ConfigError
from orchestrator.validation import parse_sweep
from orchestrator.plan import plan_sweep
from orchestrator.training_loop import TrialParts

DIGITS = {"name": "cfg", "dataset": {"name": "digits"}, "model": {"kind": "unet", "model_channels": 8, "num_heads": 1},
          "train": {"steps": 20, "batch_size": 32, "label_dropout": 0.2},
          # dopri5 at 1e-3 for the reference solves and the likelihood protocol (not 1e-4 and the default 1e-5:
          # several times fewer NFE on a barely trained U-Net): still one reference solve per guidance scale and
          # one shared NLL per checkpoint, which is what is checked here.
          "eval": {"samples": 40, "likelihood_points": 8, "reference_tol": 1e-3, "likelihood": {"solver": "dopri5", "tol": 1e-3}},
          "grid": {"solver": ["euler"], "nfe": [4], "cfg_scale": [0.0, 1.0, 2.5]}}  # fmt: skip


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_conditional_networks_read_their_label_and_default_to_the_null_class():
    torch.manual_seed(0)
    for model in (MLP(dim=4, hidden=16, depth=2, num_classes=3), UNet(in_channels=1, image_size=8, model_channels=8, num_classes=3)):
        with torch.no_grad():  # ADM zero-initialises the U-Net's output: make every weight count
            for p in model.parameters():
                p.normal_(0.0, 0.2)
        x = torch.randn(6, *((4,) if isinstance(model, MLP) else (1, 8, 8)))
        y = torch.tensor([0, 1, 2, 0, 1, 2])
        null = torch.full_like(y, 3)
        assert not torch.allclose(model(x, 0.3, y), model(x, 0.3, null))
        torch.testing.assert_close(model(x, 0.3), model(x, 0.3, null))
    assert _count(MLP(dim=4, hidden=16, depth=2, num_classes=3)) == mlp_parameter_count(4, 16, 2, num_classes=3)
    unet = UNet(in_channels=1, image_size=8, model_channels=8, num_classes=3)
    assert _count(unet) == UNetSpec(in_channels=1, image_size=8, model_channels=8, num_classes=3).parameter_count()


def test_guidance_scale_one_is_the_conditional_field_zero_the_unconditional_and_others_extrapolate(float64):
    torch.manual_seed(1)
    model = MLP(dim=2, hidden=16, depth=2, num_classes=4).double()
    objective = make_objective("fm", make_path("cosine"))
    x, t = torch.randn(8, 2), torch.tensor(0.4)
    y = sampling_labels(8, 4)
    field = lambda net: objective.vector_field(net)(t, x)  # noqa: E731
    cond, uncond = field(conditioned(model, y)), field(conditioned(model, torch.full_like(y, 4)))
    torch.testing.assert_close(field(guided(model, y, 1.0, 4)), cond)
    torch.testing.assert_close(field(guided(model, y, 0.0, 4)), uncond)
    torch.testing.assert_close(field(guided(model, y, 2.5, 4)), uncond + 2.5 * (cond - uncond))
    assert sampling_labels(8, 4).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_label_dropout_drops_that_share_to_the_null_class():
    labels = torch.arange(20_000) % 10
    dropped = drop_labels(labels, 0.25, 10, torch.Generator().manual_seed(2))
    null = dropped == 10
    assert abs(float(null.double().mean()) - 0.25) < 0.01
    assert torch.equal(dropped[~null], labels[~null])
    assert torch.equal(drop_labels(labels, 0.0, 10), labels)


def test_guidance_scales_are_evaluated_from_one_training():
    config = parse_sweep(DIGITS, "cfg.yaml")
    plan = plan_sweep(config)
    assert len(plan.trainings) == 1 and [s.label for s in plan.settings] == ["euler_nfe4_cfg0", "euler_nfe4_cfg1", "euler_nfe4_cfg2.5"]
    runner = TrialParts.build(config.for_training(plan.trainings[0]), plan.trainings[0])
    assert runner.state.num_classes == 10 and runner.state.model.label_embed.num_embeddings == 11
    runner.trainer.train_until(20)
    rows, samples = runner.evaluator.evaluate(plan.settings)
    assert [r.cfg_scale for r in rows] == [0.0, 1.0, 2.5] and all(r.ok for r in rows), [r.error for r in rows]
    assert len({r.nll for r in rows}) == 1  # the likelihood is the unconditional model's, once per checkpoint
    assert len({r.ode_error for r in rows}) == 3  # each scale against its own reference solve
    assert not torch.allclose(samples["euler_nfe4_cfg0"], samples["euler_nfe4_cfg2.5"])
    # Scale 1 is the conditional field: the same samples as integrating v(x, t | y) directly.
    from fm_core.sampling import sample

    noise = torch.randn((40, 1, 8, 8), generator=torch.Generator().manual_seed(config.eval.seed)) * runner.state.path.prior_std
    field = runner.state.objective.vector_field(conditioned(runner.state.evaluated_model, sampling_labels(40, 10)))
    direct = sample(field, noise, plan.settings[1], (0.0, runner.state.path.t_max)).x
    torch.testing.assert_close(samples["euler_nfe4_cfg1"], direct)


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [({"dataset": {"name": "moons"}, "model": {"kind": "mlp"}}, "train.label_dropout", "dataset 'moons' has no class labels (digits, image_folder, cifar10, imagenet32, imagenet64 have)"),
     ({"train": {"steps": 20, "batch_size": 32}}, "grid.cfg_scale", "set train.label_dropout"),
     ({"train": {"steps": 20, "batch_size": 32, "label_dropout": 1.0}}, "train.label_dropout", "(0, 1)"),
     ({"grid": {"solver": ["euler"], "nfe": [4], "cfg_scale": [-1.0]}}, "grid.cfg_scale[0]", "[0, 100]")],
)  # fmt: skip
def test_guidance_without_labels_or_a_conditional_model_is_refused(change, key, fragment):
    with pytest.raises(ConfigError) as caught:
        parse_sweep({**DIGITS, **change}, "cfg.yaml")
    assert caught.value.key == key and fragment in str(caught.value), str(caught.value)
