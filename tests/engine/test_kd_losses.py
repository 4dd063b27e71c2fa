"""KD loss registry: every loss on heterogeneous teacher/student pairs, formulas, PSSM masking."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sembridge_engine.distill import KD_LOSSES, PSSM_DEFAULTS, KDInputs, build_kd_loss, pssm_weights
from sembridge_engine.distill.losses import _log_mean_rbf
from sembridge_engine.models import Features, build_backbone

torch.set_num_threads(1)
CLASSES = 5
PAIRS = {  # teacher arch, MS bands, MS size, student arch, RGB size
    "resnet34->mobilenet_v2": ("resnet34", 13, 64, "mobilenet_v2", 48),
    "mobilenet_v2->shufflenet_v2_x0_5": ("mobilenet_v2", 13, 32, "shufflenet_v2_x0_5", 40),
}


@pytest.fixture(scope="module", params=list(PAIRS))
def pair(request):
    teacher_arch, bands, ms_size, student_arch, rgb_size = PAIRS[request.param]
    torch.manual_seed(0)
    teacher = build_backbone(teacher_arch, bands, CLASSES).eval()
    student = build_backbone(student_arch, 3, CLASSES)
    ms, rgb = torch.randn(4, bands, ms_size, ms_size), torch.randn(4, 3, rgb_size, rgb_size)
    return teacher, student, ms, rgb


def _first_conv(model):
    return next(module for module in model.modules() if isinstance(module, nn.Conv2d)).weight


def _features(logits: torch.Tensor, embedding: torch.Tensor | None = None) -> Features:
    embedding = torch.zeros(len(logits), 4) if embedding is None else embedding
    return Features(embedding[:, :, None, None], embedding[:, :, None, None], embedding, logits)


@pytest.mark.parametrize("name, pssm", [(name, False) for name in KD_LOSSES if name != "none"]
                         + [(name, True) for name, spec in KD_LOSSES.items() if spec.supports_pssm])
def test_each_loss_is_finite_and_trains_student_not_teacher(pair, name, pssm):
    teacher, student, ms, rgb = pair
    student.zero_grad(set_to_none=True)
    loss_fn = build_kd_loss(name, {}, student=student, teacher=teacher, pssm=pssm, pssm_params={"threshold": 0.0})
    teacher_features = teacher.forward_features(ms)  # with grad on purpose: the loss must detach it
    student_features = student.forward_features(rgb)
    wrong_labels = (student_features.logits.argmax(1) + 1) % CLASSES
    loss = loss_fn(KDInputs(student_features, teacher_features, wrong_labels, epoch=25, total_epochs=30))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grad = _first_conv(student).grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    for parameter in loss_fn.parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()


def test_none_is_zero(pair):
    teacher, student, ms, rgb = pair
    loss_fn = build_kd_loss("none", {}, student=student, teacher=teacher)
    inputs = KDInputs(student.forward_features(rgb), teacher.forward_features(ms), torch.zeros(4, dtype=torch.long), 0, 1)
    assert loss_fn(inputs).item() == 0.0


def _logit_inputs(seed=0, batch=6, epoch=30):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, CLASSES, generator=generator, requires_grad=True)
    teacher = 3 * torch.randn(batch, CLASSES, generator=generator)
    labels = torch.randint(CLASSES, (batch,), generator=generator)
    return KDInputs(_features(student), _features(teacher), labels, epoch, 40)


def test_vanilla_kd_is_hinton_formula():
    inputs = _logit_inputs()
    loss = build_kd_loss("kd", {"temperature": 3}, student=None, teacher=None)(inputs)
    expected = F.kl_div(F.log_softmax(inputs.student.logits / 3, 1), F.softmax(inputs.teacher.logits / 3, 1),
                        reduction="batchmean") * 9
    torch.testing.assert_close(loss, expected)


def test_logits_is_mse():
    inputs = _logit_inputs()
    loss = build_kd_loss("logits", {}, student=None, teacher=None)(inputs)
    torch.testing.assert_close(loss, ((inputs.student.logits - inputs.teacher.logits) ** 2).mean())


def test_dkd_decomposes_kd_and_warms_up():
    """Zhao et al.: KD = TCKD + (1 - p_t^T(target)) * NCKD per sample."""
    inputs = _logit_inputs()
    tau = 4.0
    tckd = build_kd_loss("dkd", {"alpha": 1.0, "beta": 0.0}, student=None, teacher=None)
    nckd = build_kd_loss("dkd", {"alpha": 0.0, "beta": 1.0}, student=None, teacher=None)
    s, t = inputs.student.logits, inputs.teacher.logits
    kd = F.kl_div(F.log_softmax(s / tau, 1), F.softmax(t / tau, 1), reduction="none").sum(1) * tau ** 2
    p_target = F.softmax(t / tau, 1).gather(1, inputs.labels[:, None]).squeeze(1)
    recombined = tckd.per_sample(s, t, inputs) + (1 - p_target) * nckd.per_sample(s, t, inputs)
    torch.testing.assert_close(recombined, kd)
    dkd = build_kd_loss("dkd", {}, student=None, teacher=None)
    assert KD_LOSSES["dkd"].defaults == {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 20}
    late, first = dkd(inputs), dkd(KDInputs(inputs.student, inputs.teacher, inputs.labels, 0, 40))
    torch.testing.assert_close(first * 20, late)


def test_lskd_is_invariant_to_logit_shift_and_scale():
    inputs = _logit_inputs()
    loss_fn = build_kd_loss("lskd", {}, student=None, teacher=None)
    moved = KDInputs(_features(2.5 * inputs.student.logits + 7), inputs.teacher, inputs.labels, 0, 1)
    torch.testing.assert_close(loss_fn(inputs), loss_fn(moved))
    assert KD_LOSSES["lskd"].defaults["temperature"] == 2.0


def test_ctkd_temperature_is_trained_adversarially_on_a_cosine_ramp():
    inputs = _logit_inputs()
    loss_fn = build_kd_loss("ctkd", {}, student=None, teacher=None)
    assert loss_fn.reversal_strength(0, 40) == 0.0
    assert loss_fn.reversal_strength(39, 40) == pytest.approx(1.0)
    assert 0.45 < loss_fn.reversal_strength(20, 40) < 0.55
    assert loss_fn.temperature().item() == pytest.approx(4.0, rel=1e-5)
    late = KDInputs(inputs.student, inputs.teacher, inputs.labels, 39, 40)
    loss_fn(late).backward()
    theta = loss_fn.temperature_logit.detach().clone().requires_grad_()
    tau = 1.0 + 20.0 * torch.sigmoid(theta)
    plain = (F.kl_div(F.log_softmax(late.student.logits / tau, 1), F.softmax(late.teacher.logits / tau, 1),
                      reduction="none").sum(1) * tau ** 2).mean()
    (true_grad,) = torch.autograd.grad(plain, theta)
    torch.testing.assert_close(loss_fn.temperature_logit.grad, -true_grad)


def test_rkd_is_scale_free_and_zero_for_identical_relations():
    generator = torch.Generator().manual_seed(1)
    teacher_embedding = torch.randn(6, 8, generator=generator)
    loss_fn = build_kd_loss("rkd", {}, student=None, teacher=None)
    logits = torch.zeros(6, CLASSES)

    def rkd(student_embedding):
        return loss_fn(KDInputs(_features(logits, student_embedding), _features(logits, teacher_embedding),
                                torch.zeros(6, dtype=torch.long), 0, 1))

    assert rkd(5 * teacher_embedding).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(6, 3, generator=generator)  # a different width works too
    torch.testing.assert_close(rkd(other), rkd(4 * other))
    assert rkd(other).item() > 0


def test_dskd_sem_matches_eq7_and_dcm_terms():
    student = build_backbone("shufflenet_v2_x0_5", 3, CLASSES)
    teacher = build_backbone("shufflenet_v2_x0_5", 13, CLASSES)
    loss_fn = build_kd_loss("dskd", {"normalise_by_dim": False, "lambda_offdiag": 0.1}, student=student, teacher=teacher)
    loss_fn.embedding_projector = nn.Identity()
    generator = torch.Generator().manual_seed(2)
    z_s, z_t = torch.randn(10, 4, generator=generator), torch.randn(10, 4, generator=generator)
    centred_s, centred_t = z_s - z_s.mean(0), z_t - z_t.mean(0)
    c = (centred_s / centred_s.norm(dim=0)).T @ (centred_t / centred_t.norm(dim=0))
    expected = ((1 - c.diagonal()) ** 2).sum() + 0.1 * (c ** 2).sum() - 0.1 * (c.diagonal() ** 2).sum()
    torch.testing.assert_close(loss_fn.semantic_enhancement(z_s, z_t), expected)
    whitened = torch.linalg.qr(centred_t)[0]  # orthonormal, centred columns: C = I
    assert loss_fn.semantic_enhancement(whitened, whitened).item() == pytest.approx(0.0, abs=1e-5)
    a, b = F.normalize(torch.randn(3, 4, generator=generator), dim=1), F.normalize(torch.randn(2, 4, generator=generator), dim=1)
    by_hand = math.log(sum(math.exp(-((a[i] - b[j]) ** 2).sum().item() / 0.5) for i in range(3) for j in range(2)) / 6)
    assert _log_mean_rbf(a, b, math.sqrt(0.5)).item() == pytest.approx(by_hand, rel=1e-5)


def test_pssm_masks_only_wrong_predictions_below_threshold():
    student = torch.tensor([[4.0, 0.0, 0.0],    # predicts 0, label 0: correct
                            [0.0, 4.0, 0.0],    # predicts 1, label 1: correct
                            [3.0, 1.0, 0.0],    # predicts 0, label 1: wrong, teacher similar
                            [0.0, 0.0, 9.0]])   # predicts 2, label 0: wrong, teacher opposite
    teacher = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [2.0, 2.0, 0.0], [9.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    p_s, p_t = F.softmax(student, 1), F.softmax(teacher, 1)
    agreement = 0.5 * (F.cosine_similarity(p_s, p_t, dim=1) + 1)
    assert agreement[2] > 0.6 > agreement[3]
    weights = pssm_weights(student, teacher, labels, threshold=0.6)
    torch.testing.assert_close(weights, torch.stack([torch.tensor(0.0), torch.tensor(0.0), agreement[2], torch.tensor(0.0)]))
    paper_form = pssm_weights(student, teacher, labels, threshold=0.6, keep_correct=True)
    torch.testing.assert_close(paper_form, torch.stack([torch.tensor(1.0), torch.tensor(1.0), agreement[2], torch.tensor(0.0)]))
    inputs = KDInputs(_features(student), _features(teacher), labels, 0, 1)
    masked = build_kd_loss("kd", {}, student=None, teacher=None, pssm=True)(inputs)
    per_sample = F.kl_div(F.log_softmax(student / 4, 1), F.softmax(teacher / 4, 1), reduction="none").sum(1) * 16
    torch.testing.assert_close(masked, agreement[2] * per_sample[2] / 4)
    assert PSSM_DEFAULTS["threshold"] == 0.6


def test_bad_configuration_names_the_key():
    with pytest.raises(ValueError, match="unknown KD loss 'fitnet'.*kd"):
        build_kd_loss("fitnet", {}, student=None, teacher=None)
    with pytest.raises(ValueError, match="'tau'.*allowed: temperature"):
        build_kd_loss("kd", {"tau": 2}, student=None, teacher=None)
    with pytest.raises(ValueError, match="'temperature'.*number"):
        build_kd_loss("kd", {"temperature": "hot"}, student=None, teacher=None)
    with pytest.raises(ValueError, match="'temperature' must be > 0"):
        build_kd_loss("kd", {"temperature": 0}, student=None, teacher=None)
    with pytest.raises(ValueError, match="PSSM cannot wrap KD loss 'rkd'"):
        build_kd_loss("rkd", {}, student=None, teacher=None, pssm=True)
    with pytest.raises(ValueError, match="'cutoff'.*threshold"):
        build_kd_loss("kd", {}, student=None, teacher=None, pssm=True, pssm_params={"cutoff": 0.5})
    inputs = KDInputs(_features(torch.zeros(2, 3)), _features(torch.zeros(2, 4)), torch.zeros(2, dtype=torch.long), 0, 1)
    with pytest.raises(ValueError, match="restrict the teacher's logits"):
        build_kd_loss("kd", {}, student=None, teacher=None)(inputs)
