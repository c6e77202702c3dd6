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

MASKED_LOGIT = -1e8  # the logit an invalid action gets: its probability is exactly 0 in float32


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class MaskedCategorical(Categorical):
    """A categorical over logits where ``mask`` is False gets probability 0: never sampled, and
    left out of the entropy. ``mask`` None is a plain categorical."""

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.mask = mask
        if mask is not None:
            logits = torch.where(mask, logits, torch.full_like(logits, MASKED_LOGIT))
        super().__init__(logits=logits)

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
    """One MLP applied to every workload row (with the globals appended), masked-mean pooled."""

    def __init__(self, features: int, globals_: int, hidden: int) -> None:
        super().__init__()
        self.rows = nn.Sequential(layer_init(nn.Linear(features + globals_, hidden)), nn.Tanh(),
                                  layer_init(nn.Linear(hidden, hidden)), nn.Tanh())

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        rows, valid, glob = obs["workloads"], obs["workload_mask"], obs["globals"]
        x = torch.cat([rows, glob[:, None, :].expand(-1, rows.shape[1], -1)], dim=-1)
        h = self.rows(x) * valid[..., None]
        pooled = h.sum(1) / valid.sum(1, keepdim=True).clamp(min=1.0)
        return h, pooled


class MigrationAgent(nn.Module):
    """A size-independent policy for ``CloudMigrationEnv``'s joint action (wait, or start workload i
    on instance type k). A shared encoder embeds each workload row (with the globals); the actor
    scores each (workload, type) pair from the workload's embedding and the pooled context, and
    waiting from the pooled context alone; the critic reads its own pooled embedding. Padded slots
    are masked out of the pooling and, through the action mask, out of the choice, so one trained
    policy plans any scenario up to ``max_workloads``."""

    def __init__(self, max_workloads: int, n_types: int, features: int = 16, globals_: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.max_workloads, self.n_types = max_workloads, n_types
        self._spec = {"max_workloads": max_workloads, "n_types": n_types, "features": features, "globals_": globals_, "hidden": hidden}
        self.actor_encoder = _WorkloadEncoder(features, globals_, hidden)
        self.critic_encoder = _WorkloadEncoder(features, globals_, hidden)
        self.start_head = nn.Sequential(layer_init(nn.Linear(2 * hidden, hidden)), nn.Tanh(),
                                        layer_init(nn.Linear(hidden, n_types), std=0.01))
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

    def get_value(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.value_head(self.critic_encoder(x)[1])

    def logits(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        h, pooled = self.actor_encoder(x)
        context = torch.cat([h, pooled[:, None, :].expand_as(h)], dim=-1)
        start = self.start_head(context).reshape(h.shape[0], -1)  # (B, M*K): workload-major, as the env numbers actions
        return torch.cat([self.wait_head(pooled), start], dim=-1)

    def get_action_and_value(self, x: dict[str, torch.Tensor], action: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        dist = MaskedCategorical(self.logits(x), mask)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.get_value(x)
