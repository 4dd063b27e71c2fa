"""Plug-in distillation losses L_kd (the `distill.loss` setting) and the PSSM sample mask.

Every loss takes `KDInputs` (student and teacher `Features`, labels, epoch) and returns a
scalar. Teacher tensors are detached here, so a caller may pass features computed with grad.
Losses that need learnable parts (projections, CTKD's temperature) own them as parameters:
the trainer must optimise `kd_loss.parameters()` together with the student.

Epoch convention: `KDInputs.epoch` is the 0-based index of the current epoch and
`total_epochs` the number of student epochs.

Length: the eight losses (a few dozen lines each) stay in one module beside the registry that
names them and checks their parameters, so they can be read and compared side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.backbones import Backbone, Features


@dataclass
class KDInputs:
    student: Features
    teacher: Features
    labels: Tensor        # (B,) int64 student (RGB) class indices
    epoch: int            # 0-based
    total_epochs: int


class KDSettingError(ValueError):
    """A KD loss / PSSM setting that cannot be used; ``key`` is relative to the [distill] section."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class KDLossSpec:
    """One registry entry: what the loss is, its parameters with defaults, and how to build it.

    ``factory(values, mask, student, teacher)`` gets the checked parameters, the checked PSSM
    parameters (None without PSSM) and the two backbones (for losses that size projections).
    """

    name: str
    description: str
    defaults: dict[str, float | int | bool]
    supports_pssm: bool
    factory: Callable[[dict, dict | None, Backbone | None, Backbone | None], "KDLoss"]
    needs_backbones: bool = False
    positive: tuple[str, ...] = ()      # parameters that must be above 0
    non_negative: tuple[str, ...] = ()  # parameters that must be 0 or more
    check: Callable[[dict], str | None] = lambda values: None  # a rule across parameters: message or None
    param_help: dict[str, str] = field(default_factory=dict)  # one line per parameter: what it does, when to change it


class KDLoss(nn.Module):
    """Base class: forward(inputs) -> scalar tensor."""

    def forward(self, inputs: KDInputs) -> Tensor:
        raise NotImplementedError


def kl_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: Tensor | float) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2 for every sample, shape (B,)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1) * temperature ** 2


def _check_logit_shapes(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
                         "differ: restrict the teacher's logits to the student's classes first")


def pssm_weights(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, threshold: float,
                 keep_correct: bool = False) -> Tensor:
    """Per-sample PSSM weights (B,), without gradient."""
    with torch.no_grad():
        p_s = F.softmax(student_logits, dim=1)
        p_t = F.softmax(teacher_logits, dim=1)
        agreement = 0.5 * (F.cosine_similarity(p_t, p_s, dim=1) + 1.0)
        mask = torch.where(agreement < threshold, torch.zeros_like(agreement), agreement)
        correct = student_logits.argmax(1) == labels
        return torch.where(correct, torch.full_like(mask, float(keep_correct)), mask)


class NoKD(KDLoss):
    def forward(self, inputs: KDInputs) -> Tensor:
        return torch.zeros((), device=inputs.student.logits.device, dtype=inputs.student.logits.dtype)


class PerSampleLogitKD(KDLoss):
    """A logit loss computed per sample, averaged over the batch, optionally PSSM-masked."""

    def __init__(self, pssm: Mapping[str, float | bool] | None = None):
        super().__init__()
        self.pssm = dict(pssm) if pssm is not None else None

    def per_sample(self, student_logits: Tensor, teacher_logits: Tensor, inputs: KDInputs) -> Tensor:
        raise NotImplementedError

    def schedule(self, inputs: KDInputs) -> float:
        return 1.0

    def forward(self, inputs: KDInputs) -> Tensor:
        student_logits = inputs.student.logits
        teacher_logits = inputs.teacher.logits.detach()
        _check_logit_shapes(student_logits, teacher_logits)
        losses = self.per_sample(student_logits, teacher_logits, inputs)
        if self.pssm is not None:
            weights = pssm_weights(student_logits, teacher_logits, inputs.labels,
                                   float(self.pssm["threshold"]), bool(self.pssm["keep_correct"]))
            losses = losses * weights
        return self.schedule(inputs) * losses.mean()


class VanillaKD(PerSampleLogitKD):
    def __init__(self, temperature: float, pssm=None):
        super().__init__(pssm)
        self.temperature = temperature

    def per_sample(self, student_logits, teacher_logits, inputs):
        return kl_per_sample(student_logits, teacher_logits, self.temperature)


class LogitMSE(KDLoss):
    def forward(self, inputs: KDInputs) -> Tensor:
        _check_logit_shapes(inputs.student.logits, inputs.teacher.logits)
        return F.mse_loss(inputs.student.logits, inputs.teacher.logits.detach())


def _pairwise_distances(embeddings: Tensor) -> Tensor:
    squared = embeddings.pow(2).sum(1)
    distances = (squared[:, None] + squared[None, :] - 2 * embeddings @ embeddings.T).clamp_min(1e-12).sqrt()
    return distances * (1 - torch.eye(len(embeddings), device=embeddings.device, dtype=embeddings.dtype))


def _angles(embeddings: Tensor) -> Tensor:
    differences = F.normalize(embeddings[None, :, :] - embeddings[:, None, :], dim=2)
    return torch.bmm(differences, differences.transpose(1, 2)).flatten()


class RelationalKD(KDLoss):
    """RKD-D + RKD-A on pooled embeddings; relations are width-free, so no projection is needed."""

    def __init__(self, distance_weight: float, angle_weight: float):
        super().__init__()
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight

    @staticmethod
    def _normalised_distances(embeddings: Tensor) -> Tensor:
        distances = _pairwise_distances(embeddings)
        return distances / distances[distances > 0].mean()

    def forward(self, inputs: KDInputs) -> Tensor:
        student = inputs.student.embedding.float()
        teacher = inputs.teacher.embedding.detach().float()
        if len(student) < 3:
            return student.sum() * 0.0
        with torch.autocast(student.device.type, enabled=False):  # distance differences cancel in fp16
            return self._relations(student, teacher)

    def _relations(self, student: Tensor, teacher: Tensor) -> Tensor:
        distance = F.smooth_l1_loss(self._normalised_distances(student), self._normalised_distances(teacher))
        angle = F.smooth_l1_loss(_angles(student), _angles(teacher))
        return self.distance_weight * distance + self.angle_weight * angle


def _target_and_rest(log_probs: Tensor, target_mask: Tensor) -> Tensor:
    """Binary log-distribution (log p_target, log(1 - p_target)), computed in log space."""
    log_target = (log_probs * target_mask).sum(1)
    log_rest = torch.logsumexp(log_probs.masked_fill(target_mask.bool(), float("-inf")), dim=1)
    return torch.stack([log_target, log_rest], dim=1)


class DecoupledKD(PerSampleLogitKD):
    def __init__(self, alpha: float, beta: float, temperature: float, warmup_epochs: int, pssm=None):
        super().__init__(pssm)
        self.alpha, self.beta, self.temperature, self.warmup_epochs = alpha, beta, temperature, int(warmup_epochs)

    def schedule(self, inputs: KDInputs) -> float:
        """DKD's min(epoch / warmup, 1) with DKD's 1-based epoch count."""
        return 1.0 if self.warmup_epochs == 0 else min((inputs.epoch + 1) / self.warmup_epochs, 1.0)

    def per_sample(self, student_logits, teacher_logits, inputs):
        tau = self.temperature
        target_mask = F.one_hot(inputs.labels, student_logits.shape[1]).to(student_logits.dtype)
        log_s = F.log_softmax(student_logits / tau, dim=1)
        log_t = F.log_softmax(teacher_logits / tau, dim=1)
        binary_s, binary_t = _target_and_rest(log_s, target_mask), _target_and_rest(log_t, target_mask)
        tckd = (binary_t.exp() * (binary_t - binary_s)).sum(1)
        gt_suppression = 1000.0 * target_mask
        log_s_rest = F.log_softmax(student_logits / tau - gt_suppression, dim=1)
        log_t_rest = F.log_softmax(teacher_logits / tau - gt_suppression, dim=1)
        nckd = (log_t_rest.exp() * (log_t_rest - log_s_rest)).sum(1)
        return (self.alpha * tckd + self.beta * nckd) * tau ** 2


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value: Tensor, strength: float) -> Tensor:
        ctx.strength = strength
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return -ctx.strength * grad, None


class CurriculumTemperatureKD(PerSampleLogitKD):
    """CTKD with a global temperature: the student minimises KD, the temperature maximises it."""

    def __init__(self, init_temperature: float, min_temperature: float, max_temperature: float,
                 lambda_max: float, lambda_epochs: int, pssm=None):
        super().__init__(pssm)
        self.min_temperature, self.max_temperature = min_temperature, max_temperature
        self.lambda_max, self.lambda_epochs = lambda_max, int(lambda_epochs)
        fraction = (init_temperature - min_temperature) / (max_temperature - min_temperature)
        self.temperature_logit = nn.Parameter(torch.tensor(math.log(fraction / (1 - fraction))))

    def reversal_strength(self, epoch: int, total_epochs: int) -> float:
        ramp = self.lambda_epochs if self.lambda_epochs > 0 else max(total_epochs - 1, 1)
        progress = min(max(epoch, 0) / ramp, 1.0)
        return self.lambda_max * 0.5 * (1 - math.cos(math.pi * progress))

    def temperature(self, strength: float = 0.0) -> Tensor:
        logit = _GradientReversal.apply(self.temperature_logit, strength)
        return self.min_temperature + (self.max_temperature - self.min_temperature) * torch.sigmoid(logit)

    def per_sample(self, student_logits, teacher_logits, inputs):
        tau = self.temperature(self.reversal_strength(inputs.epoch, inputs.total_epochs))
        return kl_per_sample(student_logits, teacher_logits, tau)


def _standardise(logits: Tensor) -> Tensor:
    return (logits - logits.mean(1, keepdim=True)) / (logits.std(1, keepdim=True) + 1e-7)


class LogitStandardisedKD(PerSampleLogitKD):
    def __init__(self, temperature: float, pssm=None):
        super().__init__(pssm)
        self.temperature = temperature

    def per_sample(self, student_logits, teacher_logits, inputs):
        return kl_per_sample(_standardise(student_logits), _standardise(teacher_logits), self.temperature)


def _log_mean_rbf(a: Tensor, b: Tensor, sigma: float) -> Tensor:
    """log( 1/(N M) sum_ij exp(-||a_i - b_j||^2 / sigma^2) ) for L2-normalised rows."""
    squared = (2 - 2 * a @ b.T).clamp_min(0)
    return torch.logsumexp((-squared / sigma ** 2).flatten(), 0) - math.log(squared.numel())


class DimensionalStructureKD(KDLoss):
    """DSKD = sem_weight * SEM + dcm_weight * DCM (see KD_LOSSES['dskd'] and the module notes below).

    SEM: the student embedding goes through a learned projector (Linear-ReLU-Linear) into the
    teacher's embedding width; the teacher side is its own (frozen) embedding, since a
    pretrained teacher has no projector of its own. Columns are centred over the batch
    (`center`) before the cosine normalisation of eq. 6: pooled ReLU features are
    non-negative, and without centring the off-diagonal correlations cannot reach 0.
    `normalise_by_dim` divides SEM by the width so it stays O(1) next to the task loss.
    DCM: intermediate maps are globally pooled and L2-normalised (Wang & Isola's setting,
    sigma^2 = 1/2, i.e. t = 2). The self term is the student's uniformity; the cross term
    compares a learned projection of the student's pooled intermediate features with the
    teacher's. The paper adds both log-mean-RBF terms yet says the cross term "shortens the
    distance" to the teacher: minimising a log-mean RBF pushes points apart, so with
    `cross_attract` the cross term is subtracted (attraction), giving the trade-off the paper
    describes; `cross_attract=false` is the literal sum.
    """

    def __init__(self, student: Backbone, teacher: Backbone, sem_weight: float, dcm_weight: float,
                 lambda_offdiag: float, sigma: float, normalise_by_dim: bool, center: bool, cross_attract: bool):
        super().__init__()
        self.sem_weight, self.dcm_weight, self.lambda_offdiag, self.sigma = sem_weight, dcm_weight, lambda_offdiag, sigma
        self.normalise_by_dim, self.center, self.cross_attract = normalise_by_dim, center, cross_attract
        self.embedding_projector = nn.Sequential(
            nn.Linear(student.embedding_dim, teacher.embedding_dim), nn.ReLU(inplace=True),
            nn.Linear(teacher.embedding_dim, teacher.embedding_dim))
        self.intermediate_projector = nn.Linear(student.intermediate_channels, teacher.intermediate_channels)

    def semantic_enhancement(self, student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
        z_s = self.embedding_projector(student_embedding)
        z_t = teacher_embedding
        if self.center:
            z_s = z_s - z_s.mean(0, keepdim=True)
            z_t = z_t - z_t.mean(0, keepdim=True)
        correlation = F.normalize(z_s, dim=0, eps=1e-8).T @ F.normalize(z_t, dim=0, eps=1e-8)
        diagonal = torch.diagonal(correlation)
        on_diagonal = (1 - diagonal).pow(2).sum()
        off_diagonal = correlation.pow(2).sum() - diagonal.pow(2).sum()
        loss = on_diagonal + self.lambda_offdiag * off_diagonal
        return loss / correlation.shape[0] if self.normalise_by_dim else loss

    def distribution_calibration(self, student_map: Tensor, teacher_map: Tensor) -> Tensor:
        pooled = torch.flatten(F.adaptive_avg_pool2d(student_map, 1), 1)
        student_self = F.normalize(pooled, dim=1)
        student_cross = F.normalize(self.intermediate_projector(pooled), dim=1)
        teacher = F.normalize(torch.flatten(F.adaptive_avg_pool2d(teacher_map, 1), 1), dim=1)
        self_term = _log_mean_rbf(student_self, student_self, self.sigma)
        cross_term = _log_mean_rbf(student_cross, teacher, self.sigma)
        return self_term - cross_term if self.cross_attract else self_term + cross_term

    def forward(self, inputs: KDInputs) -> Tensor:
        if len(inputs.student.embedding) < 2:
            return inputs.student.embedding.sum() * 0.0
        with torch.autocast(inputs.student.embedding.device.type, enabled=False):  # correlations in float32
            sem = self.semantic_enhancement(inputs.student.embedding.float(), inputs.teacher.embedding.detach().float())
            dcm = self.distribution_calibration(inputs.student.intermediate.float(),
                                                inputs.teacher.intermediate.detach().float())
        return self.sem_weight * sem + self.dcm_weight * dcm


def _check_value(what: str, key: str, default, value):
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise KDSettingError(key, f"{what} parameter {key.rpartition('.')[2]!r} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise KDSettingError(key, f"{what} parameter {key.rpartition('.')[2]!r} must be an integer, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise KDSettingError(key, f"{what} parameter {key.rpartition('.')[2]!r} must be a finite number, got {value!r}")
    return float(value)


def _checked_params(what: str, section: str, defaults: Mapping, given: Mapping) -> dict:
    merged = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            allowed = ", ".join(defaults) or "none (it takes no parameters)"
            raise KDSettingError(f"{section}.{key}", f"{key!r} is not a parameter of {what}; allowed: {allowed}")
        merged[key] = _check_value(what, f"{section}.{key}", defaults[key], value)
    return merged


def check_kd_settings(name: str, params: Mapping = {}, pssm: bool = False,
                      pssm_params: Mapping = {}) -> tuple[dict, dict | None]:
    """The loss's parameters and the PSSM parameters (None without PSSM) with defaults filled in.

    Raises KDSettingError naming the setting (``loss``, ``params.X``, ``pssm``, ``pssm_params.X``) and
    the allowed values: the one place these rules live (the config validation calls it too).
    """
    if name not in KD_LOSSES:
        raise KDSettingError("loss", f"unknown KD loss {name!r}; choose one of: {', '.join(KD_LOSSES)}")
    spec = KD_LOSSES[name]
    values = _checked_params(f"KD loss {name!r}", "params", spec.defaults, params)
    for key in spec.positive:
        if not values[key] > 0:
            raise KDSettingError(f"params.{key}", f"KD loss {name!r}: parameter {key!r} must be > 0, got {values[key]}")
    for key in spec.non_negative:
        if values[key] < 0:
            raise KDSettingError(f"params.{key}", f"KD loss {name!r}: parameter {key!r} must be >= 0, got {values[key]}")
    problem = spec.check(values)
    if problem:
        raise KDSettingError("params", f"KD loss {name!r}: {problem}")
    if pssm and not spec.supports_pssm:
        supported = ", ".join(item.name for item in KD_LOSSES.values() if item.supports_pssm)
        raise KDSettingError("pssm", f"PSSM cannot wrap KD loss {name!r}; it wraps: {supported}")
    mask = _checked_params("PSSM", "pssm_params", PSSM_DEFAULTS, pssm_params) if pssm else None
    return values, mask


def build_kd_loss(name: str, params: Mapping = {}, *, student: Backbone | None, teacher: Backbone | None, pssm: bool = False,
                  pssm_params: Mapping = {}) -> KDLoss:
    """Instantiate a registered KD loss; ValueError names the bad key and the allowed values."""
    values, mask = check_kd_settings(name, params, pssm, pssm_params)
    spec = KD_LOSSES[name]
    if spec.needs_backbones and (student is None or teacher is None):
        raise ValueError(f"KD loss {name!r} sizes its projectors from the student and teacher backbones; pass both")
    return spec.factory(values, mask, student, teacher)


def _ctkd_temperatures(values: dict) -> str | None:
    low, start, high = values["min_temperature"], values["init_temperature"], values["max_temperature"]
    if not 0 < low < start < high:
        return f"need 0 < min_temperature < init_temperature < max_temperature, got {low}, {start}, {high}"
    return None


PSSM_DEFAULTS: dict[str, float | int | bool] = {"threshold": 0.6, "keep_correct": False}
TEMPERATURE_HELP = ("Softens both predictions before they are compared; higher passes on more of the teacher's view "
                    "of the other classes.")
PSSM_DESCRIPTION = (
    "Perceptual Solution Space Mask ('Investigating the impact of data distribution shifts on cross-modal KD'): "
    "per-sample weight on a logit KD loss. Only samples whose student argmax is wrong contribute, with weight "
    "d = (cos(p_T, p_S) + 1) / 2 on the softmax probabilities, set to 0 when d < threshold (probability vectors "
    "give d in [0.5, 1]; the paper gives no value, 0.6 drops only clearly inconsistent pairs, cos < 0.2). "
    "keep_correct=true is the paper's eq. 7 reading (correctly predicted samples keep weight 1)."
)

KD_LOSSES: dict[str, KDLossSpec] = {spec.name: spec for spec in (
    KDLossSpec("none", "No distillation term: the student learns from labels (and SemBridge's OT terms) only.",
               {}, supports_pssm=False, factory=lambda values, mask, student, teacher: NoKD()),
    KDLossSpec("kd", "Vanilla KD (Hinton 2015): KL(softmax(t/T) || softmax(s/T)) * T^2.",
               {"temperature": 4.0}, supports_pssm=True,
               factory=lambda values, mask, student, teacher: VanillaKD(pssm=mask, **values), positive=("temperature",),
               param_help={"temperature": TEMPERATURE_HELP + " (Hinton: 4)"}),
    KDLossSpec("logits", "Logit regression (Ba & Caruana 2014): MSE between student and teacher logits.",
               {}, supports_pssm=False, factory=lambda values, mask, student, teacher: LogitMSE()),
    KDLossSpec("rkd", "Relational KD (Park 2019): distance (w 25) and angle (w 50) relations between pooled "
               "embeddings; teacher and student widths may differ.",
               {"distance_weight": 25.0, "angle_weight": 50.0}, supports_pssm=False,
               factory=lambda values, mask, student, teacher: RelationalKD(**values),
               param_help={"distance_weight": "Weight of matching the distances between the samples' embeddings.",
                           "angle_weight": "Weight of matching the angles within triples of samples' embeddings."}),
    KDLossSpec("dkd", "Decoupled KD (Zhao 2022): alpha*TCKD + beta*NCKD at temperature T, ramped in linearly "
               "over warmup_epochs.",
               {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 20}, supports_pssm=True,
               factory=lambda values, mask, student, teacher: DecoupledKD(pssm=mask, **values),
               positive=("temperature",), non_negative=("warmup_epochs",),
               param_help={"alpha": "Weight of the target-class part (TCKD).",
                           "beta": "Weight of the other-classes part (NCKD), the part DKD strengthens (paper: 8).",
                           "temperature": TEMPERATURE_HELP,
                           "warmup_epochs": "Epochs over which the loss is ramped in from zero; shorten it for short runs."}),
    KDLossSpec("ctkd", "Curriculum temperature KD (Li 2023): vanilla KD with one learnable temperature trained "
               "adversarially through a gradient-reversal layer whose strength follows a cosine ramp 0 -> lambda_max "
               "over lambda_epochs (0 = all epochs); T = min_temperature + (max_temperature - min_temperature) * "
               "sigmoid(theta), starting at init_temperature.",
               {"init_temperature": 4.0, "min_temperature": 1.0, "max_temperature": 21.0, "lambda_max": 1.0,
                "lambda_epochs": 0}, supports_pssm=True,
               factory=lambda values, mask, student, teacher: CurriculumTemperatureKD(pssm=mask, **values),
               check=_ctkd_temperatures,
               param_help={"init_temperature": "Temperature at the start; it is learned from there.",
                           "min_temperature": "Lowest temperature the learned one can reach.",
                           "max_temperature": "Highest temperature the learned one can reach.",
                           "lambda_max": "Strength of the adversarial push on the temperature once its ramp is done.",
                           "lambda_epochs": "Epochs of the cosine ramp of that strength (0 = all epochs)."}),
    KDLossSpec("lskd", "Logit-standardised KD (Sun 2024): vanilla KD on per-sample z-scored logits; temperature is "
               "the paper's base temperature (2), applied after standardisation.",
               {"temperature": 2.0}, supports_pssm=True,
               factory=lambda values, mask, student, teacher: LogitStandardisedKD(pssm=mask, **values),
               positive=("temperature",),
               param_help={"temperature": "Base temperature, applied after each sample's logits are standardised "
                                          "(paper: 2)."}),
    KDLossSpec("dskd", "Dimensional-structure KD (Si et al.): SEM = sum(1 - C_ii)^2 + lambda * sum_{i!=j} C_ij^2 on "
               "the cross-correlation of the projected student embedding and the teacher embedding, plus DCM = "
               "log-mean RBF uniformity of the student's intermediate features and a cross term pulling them "
               "towards the teacher's.",
               {"sem_weight": 1.0, "dcm_weight": 1.0, "lambda_offdiag": 0.005, "sigma": 0.7071,
                "normalise_by_dim": True, "center": True, "cross_attract": True}, supports_pssm=False,
               factory=lambda values, mask, student, teacher: DimensionalStructureKD(student, teacher, **values),
               needs_backbones=True, positive=("sigma",),
               param_help={"sem_weight": "Weight of SEM, which lines up the dimensions of student and teacher embeddings.",
                           "dcm_weight": "Weight of DCM, which spreads the student's features and draws them to the "
                                         "teacher's.",
                           "lambda_offdiag": "Weight of the correlations between different dimensions inside SEM.",
                           "sigma": "Width of the RBF kernel of DCM's uniformity term.",
                           "normalise_by_dim": "Divide SEM by the embedding width, so its size does not depend on the "
                                               "network.",
                           "center": "Centre the embeddings before correlating them.",
                           "cross_attract": "Include DCM's cross term that draws student features to the teacher's."}),
)}


