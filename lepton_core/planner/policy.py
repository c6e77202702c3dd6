"""Policies for the PPO planner: a masked categorical distribution, CleanRL's MLP agent for flat
observations, and a size-independent agent for the migration simulator.

Every agent has the same three methods: ``obs_to_tensor`` (a batch of observations from the env,
numpy arrays or a dict of them, onto the agent's device), ``get_value`` and
``get_action_and_value``, in CleanRL's vocabulary. The actor and the critic are separate networks;
layers are initialised orthogonally (gain sqrt(2), 0.01 for the policy head, 1 for the value head).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

DEARER_PRIOR = -8.0  # the start logit's initial weight on log(price / the cheapest price that fits the workload)
MASKED_LOGIT = -1e8  # the logit an invalid action gets: its probability is exactly 0 in float32
DEFAULT_HIDDEN = 64  # the width of ``MigrationAgent``'s layers unless told otherwise


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    if layer.bias is not None:
        nn.init.constant_(layer.bias, bias_const)
    return layer


class MaskedCategorical(Categorical):
    """A categorical over logits where ``mask`` is False gets probability 0: never sampled, and
    left out of the entropy. ``mask`` None is a plain categorical."""

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.mask = mask
        if mask is not None:
            logits = torch.where(mask, logits, torch.full_like(logits, MASKED_LOGIT))
        # no argument checks: the logits are the policy's, the actions its samples or the buffer's
        # (torch's checks are a few tensor ops a call, on every step of a rollout and an update)
        super().__init__(logits=logits, validate_args=False)

    def entropy(self) -> torch.Tensor:
        if self.mask is None:
            return super().entropy()
        p_log_p = self.probs * self.logits
        return -torch.where(self.mask, p_log_p, torch.zeros_like(p_log_p)).sum(-1)


class MlpAgent(nn.Module):
    """CleanRL's PPO agent for a flat Box observation and a Discrete action: two 64-unit tanh layers
    for the actor and for the critic."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64) -> None:
        super().__init__()
        self.critic = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, hidden)),
                                    nn.Tanh(), layer_init(nn.Linear(hidden, 1), std=1.0))
        self.actor = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, hidden)),
                                   nn.Tanh(), layer_init(nn.Linear(hidden, n_actions), std=0.01))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def obs_to_tensor(self, obs) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        dist = MaskedCategorical(self.actor(x), mask)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(x)


class _WorkloadEncoder(nn.Module):
    """One MLP applied to every workload row, with the globals added through their own weights
    (the same as one layer over the row and the globals side by side), masked-mean pooled.

    Works on the valid rows only, packed: a batch of scenarios of 4 to 64 workloads padded to 64
    is about half padding, and a padded row would cost as much as a real one."""

    def __init__(self, features: int, globals_: int, hidden: int) -> None:
        super().__init__()
        self.row_in = layer_init(nn.Linear(features, hidden))
        self.global_in = layer_init(nn.Linear(globals_, hidden, bias=False))
        self.row_out = layer_init(nn.Linear(hidden, hidden))

    def forward(self, obs: dict[str, torch.Tensor], rows: "_Rows") -> tuple[torch.Tensor, torch.Tensor]:
        """(per valid row embedding (R, hidden), pooled per scenario (B, hidden))."""
        x = torch.relu(self.row_in(rows.features) + self.global_in(obs["globals"])[rows.batch])
        h = torch.relu(self.row_out(x))
        pooled = torch.zeros((rows.size, h.shape[1]), dtype=h.dtype, device=h.device).index_add_(0, rows.batch, h)
        return h, pooled / rows.count[:, None]


class _Rows:
    """The valid workload rows of a batch of observations, packed: their features, and the
    scenario and slot each came from."""

    def __init__(self, obs: dict[str, torch.Tensor]) -> None:
        valid = obs["workload_mask"] > 0
        self.size, self.slots = valid.shape
        self.batch, self.slot = valid.nonzero(as_tuple=True)
        self.features = obs["workloads"][self.batch, self.slot]
        self.count = valid.sum(1).clamp(min=1).to(obs["workloads"].dtype)

    def unpack(self, values: torch.Tensor) -> torch.Tensor:
        """(R, K) per valid row -> (B, slots * K), zeros in padded slots (the action mask keeps them out)."""
        out = values.new_zeros((self.size, self.slots, values.shape[1]))
        out[self.batch, self.slot] = values
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
        self.wait_head = nn.Sequential(layer_init(nn.Linear(hidden, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, 1), std=0.01))
        self.value_head = nn.Sequential(layer_init(nn.Linear(hidden, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, 1), std=1.0))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def spec(self) -> dict[str, int]:
        """The constructor's arguments, saved with a checkpoint so ``MigrationAgent(**spec)`` rebuilds it."""
        return dict(self._spec)

    def obs_to_tensor(self, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(np.asarray(v), dtype=torch.float32, device=self.device) for k, v in obs.items()}

    def get_value(self, x: dict[str, torch.Tensor], rows: _Rows | None = None) -> torch.Tensor:
        return self.value_head(self.critic_encoder(x, rows or _Rows(x))[1])

    def logits(self, x: dict[str, torch.Tensor], rows: _Rows | None = None) -> torch.Tensor:
        rows = rows or _Rows(x)
        h, pooled = self.actor_encoder(x, rows)
        out = self.start_out(torch.relu(self.start_row(h) + self.start_context(pooled)[rows.batch]))
        price = x["instance_price"][rows.batch]  # (R, K) $/h/10 of each type in the row's scenario
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
