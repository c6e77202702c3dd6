"""The PPO migration planner: a hand-written PPO with action masking, and its policies."""
