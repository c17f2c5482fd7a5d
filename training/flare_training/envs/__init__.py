"""mini-CHORES: CHORES-like task families on MiniGrid/BabyAI layouts (the embedded CPU simulator).

Actions (`flare_policy.embodiments.SIM_ACTIONS`, index = action id)::

    0 move_ahead  -> minigrid forward        4 dropoff  -> drop
    1 rotate_left -> left                    5 toggle   -> toggle (doors only; boxes do not open)
    2 rotate_right-> right                   6 end      -> ends the episode, success is judged here
    3 pickup      -> pickup                  7 sub_done -> no motion; roomvisit: marks the current room

BabyAI's automatic success is replaced by the explicit `end`. Embodiments: `sim` (all 8 actions, 7x7-cell
camera) and `sim_locobot` (navigation tasks only; toggle/sub_done are masked by the policy and no-ops in the env;
all doors start open because `toggle` is unavailable; the camera sees 5x5 cells, rendered at the same tile size
and resized (nearest) to the same 56x56 image, i.e. a narrower field of view; and it pans independently of the
base: the reinterpreted `pickup` = look_left and `dropoff` = look_right turn it a quarter turn, within +-90
degrees of the base heading, starting centred at every reset).

Observation (dict): "rgb" uint8 (7*tile, 7*tile, 3) = 56x56x3 egocentric partial view (the "navigation camera",
same pixels as `RGBImgPartialObsWrapper(tile_size=8)`), "in_hand" 0/1, "goal" natural-language str, "step" int
(0 at reset). Reward (FLaRe): +10 on a successful `end`, else 0. `dense_reward=True` (baselines only) adds
0.1 per cell of BFS progress towards the goal cells (cells next to a target object / target room / nearest
unmarked room), +1/-1 for picking up/dropping a target (pickup, fetch), +1 for a `sub_done` that marks a new room
and -0.1 for one that marks nothing (roomvisit). `terminated` on `end`; `truncated` at max_steps.
info: "success" (True only on a successful `end`), "task"; roomvisit adds "rooms_total", "rooms_marked",
"pct_rooms" (rooms whose interior the trajectory entered / rooms, like FLaRe %Rooms).

Families (success judged at `end`):

=====================  =========  ==========================================================================
task                   max_steps  layout / success
=====================  =========  ==========================================================================
objectnav              150        3x3 rooms (3x3 interiors, 13x13 grid), closed doors, 8 objects;
                                  "<go to|locate|find|search for|navigate to> a/the <color> <type>";
                                  success iff a matching object is in the cell in front of the agent
pickup                 64         one room (5x5 interior), 5 objects, target 2-3 cells away and in view;
                                  "<pick up|take|grab|grasp|clutch|hold> a/the <color> <type>"; held at end
fetch                  150        objectnav's house; "<go-to verb> ... and <pickup verb> that <type>"; held
roomvisit              250        2x2, 2x3, 3x2 or 3x3 rooms (per seed), 4 objects; "visit all N rooms in
                                  the house. indicate when you have seen a new room and when you are done";
                                  `sub_done` inside an unmarked room marks it; success iff all marked
objectnav_localref     64         held-out. one room, 6 objects; "... the <color> <type> in front of you |
                                  behind you | on your left | on your right" relative to the START pose
objectnav_affordance   150        held-out. objectnav's house; the type named by use ("something that opens
                                  doors" = key, "a container" = box, "something you can roll" = ball ...)
roomnav                150        held-out. objectnav's house; "go to the room with the <color> <type>"
                                  (unique landmark, not in the start room); success iff inside that room
=====================  =========  ==========================================================================

Max steps follow CHORES (600 for ObjectNav/Fetch/RoomNav and the ObjectNav variants, 1000 for RoomVisit) scaled
to these small layouts: the house families get 150 (~5x the expert's mean length, >= 1.5x its longest episode
over 1000 seeds), roomvisit 5/3 of that = 250 like CHORES (expert mean 50, max 112), and the one-room families
(pickup, objectnav_localref) BabyAI's single-room budget of 64 (expert mean ~5, max 20).
Expert (`python -m flare_training.envs.bench --expert-seeds 200`), success / mean / max length:
  train seeds 0..199:  objectnav 100% 25.4/89, pickup 100% 4.6/12, fetch 100% 26.4/90, roomvisit 100% 50.9/98,
                       objectnav_localref 100% 6.1/14, objectnav_affordance 100% 14.0/88, roomnav 100% 18.3/60
  val, 1000 seeds:     objectnav 100% 28.2/98, pickup 100% 4.6/20, fetch 100% 29.2/99, roomvisit 100% 50.0/112
  sim_locobot (train 0..199): objectnav 100% 22.7/84, affordance 100% 11.9/67, roomnav 100% 15.7/52,
                       localref 100% 6.4/22

Throughput (`python -m flare_training.envs.bench`; one process, per CPU second, 56x56 rendering included):
~8.4k-12.7k env steps/s (resets 0.8-2.3 ms); expert demos (recorded) objectnav ~110/s, pickup ~530/s,
fetch ~108/s, roomvisit ~146/s. The egocentric frame is drawn by `envs.render.PovRenderer`, pixel-identical to
MiniGrid's `get_pov_render` and ~5x faster.

Seeds: `split_seeds(split, n, offset)`; train = [0, 1e9), val = [1e9, 1.5e9), test = [1.5e9, 2e9), disjoint.
`reset(seed=s)` is deterministic (layout, start pose and goal text).
SEL: `sel(success, length, expert_length)`; the expert length per seed comes from
`flare_training.expert.expert_length(task, seed)` or `make_env(..., with_expert_length=True)`.
"""
from .core import (  # noqa: F401
    DEMO_TASKS,
    EMBODIMENTS,
    HELDOUT_TASKS,
    SPLITS,
    SUCCESS_REWARD,
    TASKS,
    MiniChoresEnv,
    TaskSpec,
    make_env,
    seed_split,
    sel,
    split_seeds,
)

__all__ = ["TASKS", "DEMO_TASKS", "HELDOUT_TASKS", "EMBODIMENTS", "SPLITS", "SUCCESS_REWARD", "TaskSpec",
           "MiniChoresEnv", "make_env", "split_seeds", "seed_split", "sel"]
