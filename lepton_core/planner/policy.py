"""Policies for the PPO planner: a masked categorical distribution, CleanRL's MLP agent for flat
observations, and a size-independent agent for the migration simulator.

Every agent has the same three methods: ``obs_to_tensor`` (a batch of observations from the env,
numpy arrays or a dict of them, onto the agent's device), ``get_value`` and
``get_action_and_value``, in CleanRL's vocabulary. The actor and the critic are separate networks;
layers are initialised orthogonally (gain sqrt(2), 0.01 for the policy head, 1 for the value head).
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import torch
from torch import nn

DEARER_PRIOR = -8.0  # the start logit's initial weight on log(price / the cheapest price that fits the workload)
MASKED_LOGIT = -1e8  # the logit an invalid action gets: its probability is exactly 0 in float32
DEFAULT_HIDDEN = 64  # the width of ``MigrationAgent``'s layers unless told otherwise


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    if layer.bias is not None:
        nn.init.constant_(layer.bias, bias_const)
    return layer


def _sigmoid_tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x * 2).mul_(2).sub_(1)


class _SigmoidTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = _sigmoid_tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)  # grad * (1 - y^2), as torch.tanh's


@functools.cache
def cpu_tanh_via_sigmoid() -> bool:
    """Whether this CPU computes tanh faster as ``2 * sigmoid(2x) - 1`` than with ``torch.tanh``,
    measured once a process on a 2,048 x 64 tensor (an update minibatch's layer; under 10 ms).

    It depends on the processor: on an AMD EPYC torch's tanh took 331 us there against 95 us for
    the sigmoid form, on an Intel Xeon with AMX 52 against 155 us (medians, benchmarks/RESULTS.md).
    The sigmoid form is taken only when it is clearly faster (under 0.6 of tanh's time), so that
    noise does not flip the choice between runs on one machine; the input comes from a generator
    of its own, so the measurement leaves torch's global random state (and a seeded run) untouched."""
    x = torch.randn(2048, 64, generator=torch.Generator().manual_seed(0))

    def fastest(fn) -> float:
        fn(x)
        times = []
        for _ in range(7):
            began = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - began)
        return min(times)

    with torch.no_grad():
        return fastest(_sigmoid_tanh) < 0.6 * fastest(torch.tanh)


class Tanh(nn.Module):
    """tanh; on a CPU where torch's tanh is slow (``cpu_tanh_via_sigmoid``), as 2 * sigmoid(2x) - 1
    (within 3e-7 of ``torch.tanh``, with tanh's gradient). The choice is made once a process, so a
    rollout and an update compute the same log-probabilities (an update's first ratio is exactly 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not cpu_tanh_via_sigmoid():
            return torch.tanh(x)
        # (a rollout's step needs no gradient: the same three ops without the autograd function's overhead)
        return _SigmoidTanh.apply(x) if torch.is_grad_enabled() and x.requires_grad else _sigmoid_tanh(x)


class MaskedCategorical:
    """A categorical distribution over the last axis of ``logits`` where ``mask`` is False gets
    probability exactly 0: never sampled, and left out of the entropy. ``mask`` None is a plain
    categorical. ``logits`` (after masking, normalised: log-probabilities) and ``probs`` as in
    torch's ``Categorical``, with ``sample``, ``log_prob`` and ``entropy``.

    Not torch's ``Categorical``: with masked logits both of its hot paths are slow on the CPU. It
    normalises with ``logsumexp``, whose ``exp`` takes a slow path for values far below the row's
    maximum (every masked action: about 10 times slower on a rollout step of the planner), and it
    samples with ``multinomial``, which draws an exponential variate for every action. Here the
    logits are normalised by ``log_softmax``, and a sample is one uniform a row looked up in the
    cumulative probabilities (inverse transform sampling: exact, and an action of probability 0
    has no width in it to be found at)."""

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.mask = mask
        if mask is not None:
            logits = logits.masked_fill(~mask, MASKED_LOGIT)
        self.logits = torch.log_softmax(logits, dim=-1)
        # Unmasked, exp of the log-probabilities: one cheap pass instead of a second row-wise
        # kernel and its backward (2 actions x 2,048 rows: about 3 against 110 us here). Masked,
        # softmax: torch's exp takes a slow path where its result underflows, 20 times slower
        # than softmax on a planner's batch of mostly invalid actions.
        self.probs = self.logits.exp() if mask is None else torch.softmax(logits, dim=-1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            cdf = self.probs.cumsum(-1)
            total = cdf[..., -1:]
            u = torch.rand(total.shape, generator=generator, dtype=cdf.dtype, device=cdf.device) * total
            u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # below the total, even rounded
            return torch.searchsorted(cdf, u, right=True).squeeze(-1)  # the first action whose cdf passes u

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        return self.logits.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        p_log_p = self.probs * self.logits
        if self.mask is not None:
            p_log_p = torch.where(self.mask, p_log_p, torch.zeros_like(p_log_p))
        return -p_log_p.sum(-1)


class MlpAgent(nn.Module):
    """CleanRL's PPO agent for a flat Box observation and a Discrete action: an actor and a critic,
    each two 64-unit tanh layers and an output layer, initialised as CleanRL's (orthogonal; gain
    0.01 for the actor's output, 1 for the critic's).

    The two networks share no weight, but their hidden layers are evaluated side by side: each
    layer's two weight matrices are one (2, in, out) parameter and one ``baddbmm`` computes both.
    That is the same arithmetic as two ``Linear`` layers, in half the ops; a rollout step on 64
    observations is mostly op overhead on a CPU (the policy's forward took 213 against 334 us here,
    benchmarks/RESULTS.md). The log-probabilities of a 64-row rollout step and a 2,048-row update
    minibatch are bit-identical (tested), so an update's first ratio is exactly 1."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64) -> None:
        super().__init__()
        # made in CleanRL's order (the critic first), each as the Linear layer CleanRL has
        critic = [layer_init(nn.Linear(obs_dim, hidden)), layer_init(nn.Linear(hidden, hidden))]
        self.critic_out = layer_init(nn.Linear(hidden, 1), std=1.0)
        actor = [layer_init(nn.Linear(obs_dim, hidden)), layer_init(nn.Linear(hidden, hidden))]
        self.actor_out = layer_init(nn.Linear(hidden, n_actions), std=0.01)

        def pair(k: int, what: str) -> nn.Parameter:  # [actor, critic] layer k, as x @ W + b takes it
            if what == "weight":
                return nn.Parameter(torch.stack([actor[k].weight.detach().t(), critic[k].weight.detach().t()]).contiguous())
            return nn.Parameter(torch.stack([actor[k].bias.detach(), critic[k].bias.detach()])[:, None, :].contiguous())

        self.hidden1_weight, self.hidden1_bias = pair(0, "weight"), pair(0, "bias")  # (2, obs_dim, hidden), (2, 1, hidden)
        self.hidden2_weight, self.hidden2_bias = pair(1, "weight"), pair(1, "bias")  # (2, hidden, hidden), (2, 1, hidden)
        self.tanh = Tanh()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def obs_to_tensor(self, obs) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)

    def _hidden(self, x: torch.Tensor, nets: slice | None = None) -> torch.Tensor:
        """(N, obs_dim) -> (2, N, hidden): the actor's last hidden layer, then the critic's; with
        ``nets`` (``slice(0, 1)`` the actor, ``slice(1, 2)`` the critic), only those."""
        w1, b1, w2, b2 = self.hidden1_weight, self.hidden1_bias, self.hidden2_weight, self.hidden2_bias
        if nets is not None:
            w1, b1, w2, b2 = w1[nets], b1[nets], w2[nets], b2[nets]
        h = self.tanh(torch.baddbmm(b1, x.expand(len(w1), *x.shape), w1))
        return self.tanh(torch.baddbmm(b2, h, w2))

    def actor(self, x: torch.Tensor) -> torch.Tensor:
        """The actor's logits (without a mask)."""
        return self.actor_out(self._hidden(x, slice(0, 1)).squeeze(0))

    def critic(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic_out(self._hidden(x, slice(1, 2)).squeeze(0))

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        # unbind, not h[0] and h[1]: each index's backward would write a zero tensor of h's size and copy into it
        actor_h, critic_h = self._hidden(x).unbind(0)
        dist = MaskedCategorical(self.actor_out(actor_h), mask)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic_out(critic_h)


class _WorkloadEncoder(nn.Module):
    """One MLP applied to every workload row, with the globals added through their own weights
    (the same as one layer over the row and the globals side by side), masked-mean pooled.

    Works on the valid rows only, packed: a batch of scenarios of 4 to 64 workloads padded to 64
    is about half padding, and a padded row would cost as much as a real one. At the update's
    sizes (tens of thousands of rows, 64 wide) the layers are bound by memory traffic more than by
    their matrix products, so the first layer reads each row and its scenario's globals side by
    side (``_Rows.inputs``) in one product, and the ReLUs work in place."""

    def __init__(self, features: int, globals_: int, hidden: int) -> None:
        super().__init__()
        self.row_in = layer_init(nn.Linear(features, hidden))
        self.global_in = layer_init(nn.Linear(globals_, hidden, bias=False))
        self.row_out = layer_init(nn.Linear(hidden, hidden))

    def forward(self, obs: dict[str, torch.Tensor], rows: "_Rows") -> tuple[torch.Tensor, torch.Tensor]:
        """(per valid row embedding (R, hidden), pooled per scenario (B, hidden))."""
        weight = torch.cat([self.row_in.weight, self.global_in.weight], dim=1)  # (hidden, features + globals)
        x = torch.addmm(self.row_in.bias, rows.inputs, weight.t()).relu_()
        h = torch.addmm(self.row_out.bias, x, self.row_out.weight.t()).relu_()
        pooled = torch.zeros((rows.size, h.shape[1]), dtype=h.dtype, device=h.device).index_add_(0, rows.batch, h)
        return h, pooled / rows.count[:, None]


class _Rows:
    """The valid workload rows of a batch of observations, packed: their features, and the
    scenario and slot each came from.

    Rows are gathered and scattered along one flat index (``index_select``, ``index_copy``):
    torch's advanced indexing with two index tensors, and its backward, cost several times more."""

    def __init__(self, obs: dict[str, torch.Tensor]) -> None:
        valid = obs["workload_mask"] > 0
        self.size, self.slots = valid.shape
        self.batch, self.slot = valid.nonzero(as_tuple=True)
        self.flat = self.batch * self.slots + self.slot
        workloads = obs["workloads"]
        self.features = workloads.reshape(-1, workloads.shape[-1]).index_select(0, self.flat)
        # each row beside its scenario's globals: the encoders' first layer reads both in one product
        self.inputs = torch.cat([self.features, obs["globals"].index_select(0, self.batch)], dim=1)
        self.count = valid.sum(1).clamp(min=1).to(workloads.dtype)

    def unpack(self, values: torch.Tensor) -> torch.Tensor:
        """(R, K) per valid row -> (B, slots * K), zeros in padded slots (the action mask keeps them out)."""
        out = values.new_zeros((self.size * self.slots, values.shape[1])).index_copy(0, self.flat, values)
        return out.reshape(self.size, -1)


class MigrationAgent(nn.Module):
    """A size-independent policy for ``CloudMigrationEnv``'s joint action (wait, or start workload i
    on instance type k). A shared encoder embeds each workload row (with the globals); the actor
    scores each (workload, type) pair from the workload's embedding and the pooled context, with
    a term in how much dearer the type is than the cheapest that fits (prices are observed: they
    differ between scenarios, so which type is cheapest does too), and
    waiting from the pooled context alone; the critic reads its own pooled embedding. Padded slots
    are masked out of the pooling and, through the action mask, out of the choice, so one trained
    policy plans any scenario up to ``max_workloads``."""

    def __init__(self, max_workloads: int, n_types: int, features: int = 16, globals_: int = 8,
                 hidden: int = DEFAULT_HIDDEN) -> None:
        super().__init__()
        self.max_workloads, self.n_types = max_workloads, n_types
        self._spec = {"max_workloads": max_workloads, "n_types": n_types, "features": features, "globals_": globals_, "hidden": hidden}
        self.actor_encoder = _WorkloadEncoder(features, globals_, hidden)
        self.critic_encoder = _WorkloadEncoder(features, globals_, hidden)
        self.start_row = layer_init(nn.Linear(hidden, hidden))  # the start head's first layer over [row, pooled],
        self.start_context = layer_init(nn.Linear(hidden, hidden, bias=False))  # as two halves: pooled once per scenario
        # per (workload, type): a logit, plus two per-workload weights on how much dearer the type is
        # than the cheapest that fits (log of the price ratio, and in $/h), read from the observation's prices
        self.start_out = layer_init(nn.Linear(hidden, n_types + 2), std=0.01)
        with torch.no_grad():  # a prior, learned from there: a type a fifth dearer starts a quarter as likely
            self.start_out.bias[-2] = DEARER_PRIOR
        self.wait_head = nn.Sequential(layer_init(nn.Linear(hidden, hidden)), Tanh(), layer_init(nn.Linear(hidden, 1), std=0.01))
        self.value_head = nn.Sequential(layer_init(nn.Linear(hidden, hidden)), Tanh(), layer_init(nn.Linear(hidden, 1), std=1.0))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def spec(self) -> dict[str, int]:
        """The constructor's arguments, saved with a checkpoint so ``MigrationAgent(**spec)`` rebuilds it."""
        return dict(self._spec)

    def obs_to_tensor(self, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        device = self.device  # (once: it walks the parameters, and a planner's lookahead calls this thousands of times)
        return {k: torch.as_tensor(np.asarray(v), dtype=torch.float32, device=device) for k, v in obs.items()}

    def get_value(self, x: dict[str, torch.Tensor], rows: _Rows | None = None) -> torch.Tensor:
        return self.value_head(self.critic_encoder(x, rows or _Rows(x))[1])

    def logits(self, x: dict[str, torch.Tensor], rows: _Rows | None = None) -> torch.Tensor:
        rows = rows or _Rows(x)
        h, pooled = self.actor_encoder(x, rows)
        # the start head's first layer: the pooled half once per scenario, each row's added in its product
        context = nn.functional.linear(pooled, self.start_context.weight, self.start_row.bias).index_select(0, rows.batch)
        out = self.start_out(torch.addmm(context, h, self.start_row.weight.t()).relu_())
        price = x["instance_price"].index_select(0, rows.batch)  # (R, K) $/h/10 of each type in the row's scenario
        cheapest = rows.features[:, 7:8]  # $/h/10 of the cheapest type that fits the workload
        dearer = torch.log(price.clamp(min=1e-4) / cheapest.clamp(min=1e-4))  # 0 for the cheapest; bounded for a far dearer one
        start = out[:, :-2] + out[:, -2:-1] * dearer + out[:, -1:] * (price - cheapest)
        # (B, 1 + M*K): waiting, then workload-major, as the env numbers actions
        return torch.cat([self.wait_head(pooled), rows.unpack(start)], dim=-1)

    def get_action_and_value(self, x: dict[str, torch.Tensor], action: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        rows = _Rows(x)
        dist = MaskedCategorical(self.logits(x, rows), mask)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.get_value(x, rows)
