"""The ``train-planner`` flow: train the PPO migration planner on the simulator.

Deployed on the GPU pool when one exists (it picks CUDA by itself). The policy is checkpointed
after every iteration into the state folder's ``planner/``, so a retried or re-run flow goes on
from where it stopped (and one already finished returns at once); ``migrate`` then adds the
policy's plan to its comparison.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lepton_core.spec.params import PlannerTraining
from lepton_core.state import planner_dir
from flows._run import failure_summary
from tasks.artifacts import publish_chart
from tasks.policies import gpu_slot


@task(name="train-planner-policy")
def train_policy_task(options: PlannerTraining, out_dir: str) -> dict:
    from lepton_core.planner.planner import planner_config, train_planner

    cfg = planner_config(total_timesteps=options.total_timesteps, num_envs=options.num_envs, num_steps=options.num_steps,
                         learning_rate=options.learning_rate, seed=options.seed, device=options.device)
    with gpu_slot():
        trained = train_planner(out_dir, cfg, max_workloads=options.max_workloads, min_workloads=options.min_workloads,
                                resume=not options.fresh, hidden=options.hidden)
    went_on = ("trained afresh" if not trained.resumed_from else
               "already trained that far: nothing left to do" if trained.resumed_from == trained.global_step else
               f"went on from step {trained.resumed_from:,}, where the checkpoint of an earlier run stopped")
    get_run_logger().info("%s (%s)", went_on, out_dir)
    get_run_logger().info("planner trained to %d steps; last mean episode cost $%.2f; policy %s (the snapshot of step %d: "
                          "%.2f%% cheaper than the best heuristic on the validation systems)", trained.global_step,
                          trained.final_cost, trained.policy, trained.selected_step, 100 * trained.validation_saving)
    create_markdown_artifact(key="planner-training", description="PPO migration planner training", markdown=(
        f"# PPO migration planner\n\n- steps: {trained.global_step:,} ({went_on})\n- policy width: {options.hidden}\n- last mean episode cost: ${trained.final_cost:,.2f}\n"
        f"- policy: `{trained.policy}`, the snapshot of step {trained.selected_step:,}: "
        f"{trained.validation_saving:+.2%} against the best heuristic on the validation systems\n"
        f"- log: `{trained.log}`\n- learning curve: `{trained.curve}`\n"))
    publish_chart(trained.curve, "planner-learning-curve", "PPO migration planner: mean episode cost against env steps")
    return {"policy": str(trained.policy), "global_step": trained.global_step, "final_cost": trained.final_cost,
            "selected_step": trained.selected_step, "validation_saving": trained.validation_saving, "curve": str(trained.curve),
            "resumed_from": trained.resumed_from, "went_on": went_on}


@flow(name="train-planner", description="Train the PPO migration planner on the cloud-migration simulator.",
      on_failure=[failure_summary])
def train_planner_flow(training: PlannerTraining = PlannerTraining()) -> dict:
    """Train (or go on training) the planner policy; returns its path, steps and last episode cost.

    Args:
        training: the training settings.
    """
    return train_policy_task(training, str(planner_dir()))
