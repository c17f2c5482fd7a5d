"""`flare-demo` (`make demo`): the simulated robot and the policy node, closed loop over ROS 2.

Starts `sim_robot` and `policy_node` as separate processes in a private ROS domain, then for each seed:
resets the simulator to it, hands the policy that episode's goal on /flare/goal, prints every step (action,
top-3 probabilities, inference latency) and the outcome (success, SEL, steps), and finally writes a GIF of
the episodes (the camera frame each decision was taken on, with goal and action overlaid) to
runs/demo/episode.gif. Exit status: 0 when every episode produced an outcome and both nodes shut down
cleanly (the policy publishing `stop`), 1 otherwise (and with --require-success, when an episode failed),
2 for bad arguments (e.g. no bundle).

    flare-demo                                   # models/sim_tiny_flare_objectnav, objectnav, 3 test-split seeds it solves
    flare-demo --bundle models/sim_tiny_bc       # the BC policy it was fine-tuned from
    flare-demo --bundle DIR --task pickup --seeds 1500000000 1500000001 --require-success
"""
from __future__ import annotations

import argparse
import json
import queue
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from .rosproc import NodeProcess, ros_env, unique_domain_id

DEFAULT_BUNDLE = "models/sim_tiny_flare_objectnav"  # FLaRe-fine-tuned; --bundle models/sim_tiny_bc compares BC
DEFAULT_OUT = "runs/demo"


# Three ObjectNav test-split seeds the default bundle solves over this ROS path (among the 33 of the first 50 test
# seeds it solved there; README, "FLaRe fine-tuning"); --seeds runs others.
DEFAULT_SEEDS = [1_500_000_002, 1_500_000_003, 1_500_000_006]


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="flare-demo", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=DEFAULT_BUNDLE, help=f"policy bundle directory (default {DEFAULT_BUNDLE})")
    ap.add_argument("--task", default="objectnav", help="mini-CHORES task (objectnav, pickup, fetch, roomvisit)")
    ap.add_argument("--seeds", type=int, nargs="+", help=f"episode seeds (default {DEFAULT_SEEDS}: test-split seeds the default bundle solves)")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (GIF, logs; default {DEFAULT_OUT})")
    ap.add_argument("--gif", default="episode.gif", help="GIF file name inside --out ('' = no GIF)")
    ap.add_argument("--time-budget", type=float, default=75.0,
                    help="seconds for the episodes; later seeds are skipped once it is spent (default 75)")
    ap.add_argument("--episode-timeout", type=float, default=60.0, help="seconds before an episode counts as hung")
    ap.add_argument("--startup-timeout", type=float, default=60.0, help="seconds for the nodes to come up")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the policy node (default 1)")
    ap.add_argument("--sampled", action="store_true", help="sample actions instead of arg-max")
    ap.add_argument("--step-delay", type=float, default=0.0, help="simulated motion time per command (s)")
    ap.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (default: a free-looking one in 1..200)")
    ap.add_argument("--require-success", action="store_true", help="exit 1 if an episode fails")
    ap.add_argument("--quiet", action="store_true", help="print only episode outcomes")
    return ap.parse_args(argv)


# ------------------------------------------------------------------------------------------- GIF
def _panel_frame(rgb: np.ndarray, lines: list[str], scale: int = 4, border=None):
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.asarray(rgb, np.uint8)).resize((rgb.shape[1] * scale, rgb.shape[0] * scale),
                                                            Image.NEAREST)
    W = max(img.width, 288)
    wrapped = []
    for ln in lines:
        wrapped += textwrap.wrap(ln, width=W // 6) or [""]
    H = img.height + 4 + 12 * len(wrapped)
    canvas = Image.new("RGB", (W, H), (20, 20, 20))
    canvas.paste(img, ((W - img.width) // 2, 0))
    draw = ImageDraw.Draw(canvas)
    if border is not None:
        draw.rectangle([0, 0, W - 1, img.height - 1], outline=border, width=3)
    for i, ln in enumerate(wrapped):
        draw.text((4, img.height + 2 + 12 * i), ln, fill=(235, 235, 235))
    return canvas


def save_gif(frames: list[tuple], path: Path) -> int:
    """frames: (rgb, lines, duration_ms, border). All panels are padded to one size."""
    from PIL import Image

    if not frames:
        return 0
    panels = [(_panel_frame(rgb, lines, border=border), d) for rgb, lines, d, border in frames]
    W = max(p.width for p, _ in panels)
    H = max(p.height for p, _ in panels)
    out = []
    for p, _ in panels:
        c = Image.new("RGB", (W, H), (20, 20, 20))
        c.paste(p, (0, 0))
        out.append(c.convert("P", palette=Image.ADAPTIVE, colors=128))
    path.parent.mkdir(parents=True, exist_ok=True)
    out[0].save(path, save_all=True, append_images=out[1:], duration=[d for _, d in panels], loop=0,
                optimize=False)
    return len(out)


# ------------------------------------------------------------------------------------------- ROS side
class DemoNode:
    """In-process observer/driver on its own rclpy context: goals, resets, cancel; records everything."""

    def __init__(self, domain_id: int):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        self.rclpy = rclpy
        self.ctx = Context()
        rclpy.init(context=self.ctx, domain_id=domain_id)
        self.node = Node("flare_demo", context=self.ctx)
        rel = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=100)
        latched = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        sensor = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=5)
        self.String = String
        self.events: queue.Queue = queue.Queue()
        self.frames: dict[float, np.ndarray] = {}  # stamp -> rgb (recent)
        self.frames_lock = threading.Lock()
        self.commands: list[dict] = []
        self.goal_pub = self.node.create_publisher(String, "/flare/goal", QoSProfile(
            reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1))
        self.reset_pub = self.node.create_publisher(String, "/sim/reset", rel)
        self.cancel = self.node.create_client(Trigger, "/policy_node/cancel")
        self.Trigger = Trigger
        self.node.create_subscription(String, "/flare/status", lambda m: self._ev("status", m), rel)
        self.node.create_subscription(String, "/flare/episode_outcome", lambda m: self._ev("outcome", m), rel)
        self.node.create_subscription(String, "/sim/episode", lambda m: self._ev("episode", m), latched)
        self.node.create_subscription(String, "/flare/command", self._on_command, rel)
        self.node.create_subscription(Image, "/camera/color/image_raw", self._on_image, sensor)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while self.ctx.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                break

    def _ev(self, kind, msg):
        try:
            self.events.put((kind, json.loads(msg.data)))
        except json.JSONDecodeError:
            pass

    def _on_command(self, msg):
        try:
            self.commands.append(json.loads(msg.data))
        except json.JSONDecodeError:
            pass

    def _on_image(self, msg):
        if msg.encoding != "rgb8":
            return
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
        with self.frames_lock:
            self.frames[stamp] = rgb
            if len(self.frames) > 64:
                for k in sorted(self.frames)[:-64]:
                    del self.frames[k]

    def frame_at(self, stamp: float | None):
        with self.frames_lock:
            if not self.frames:
                return None
            if stamp is None:
                return self.frames[max(self.frames)]
            older = [s for s in self.frames if s <= stamp + 1e-6]
            return self.frames[max(older)] if older else self.frames[min(self.frames)]

    def publish_goal(self, goal: str):
        self.goal_pub.publish(self.String(data=goal))

    def reset(self, seed: int, task: str):
        self.reset_pub.publish(self.String(data=json.dumps({"seed": seed, "task": task})))

    def cancel_episode(self, timeout=5.0) -> bool:
        if not self.cancel.wait_for_service(timeout_sec=timeout):
            return False
        fut = self.cancel.call_async(self.Trigger.Request())
        end = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < end:
            time.sleep(0.01)
        return fut.done()

    def next_event(self, timeout: float):
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self):
        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            if self.ctx.ok():
                self.rclpy.shutdown(context=self.ctx)
        self.thread.join(timeout=2.0)


def _fmt_step(ep_i: int, st: dict) -> str:
    top = "  ".join(f"{a} {p:.2f}" for a, p in st.get("top", []))
    return (f"ep {ep_i} step {st.get('decision_step', st.get('step', 0)):>3}  {st.get('action', ''):<13} "
            f"[{top}]  {st.get('latency_ms', float('nan')):5.1f} ms")


def run(args) -> int:
    from flare_training.envs import TASKS

    bundle = Path(args.bundle)
    if not (bundle / "policy.json").is_file():
        print(f"flare-demo: error: no policy bundle at {bundle} (policy.json missing). Train one, e.g. "
              f"`flare-train bc --config training/configs/bc_tiny.yaml`, or pass --bundle DIR.", file=sys.stderr)
        return 2
    if args.task not in TASKS:
        print(f"flare-demo: error: unknown task {args.task!r}; known: {sorted(TASKS)}", file=sys.stderr)
        return 2
    seeds = args.seeds or DEFAULT_SEEDS
    out = Path(args.out)
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    domain = args.domain_id if args.domain_id is not None else unique_domain_id()
    env = ros_env(domain)
    max_steps = TASKS[args.task].max_steps
    t_start = time.monotonic()
    print(f"flare-demo: ROS_DOMAIN_ID={domain}, bundle {bundle}, task {args.task}, seeds {seeds}; logs in {log_dir}")
    sim = NodeProcess.python_module("sim_robot", "flare_bringup.sim_robot", {
        "task": args.task, "seeds": seeds, "step_delay_s": args.step_delay}, env=env, log_dir=log_dir)
    pol = NodeProcess.python_module("policy_node", "flare_policy.node", {
        "bundle": str(bundle), "max_steps": max_steps, "threads": args.threads,
        "action_selection": "sample" if args.sampled else "greedy", "log_steps": False, "command_timeout_s": 10.0}, env=env, log_dir=log_dir)
    demo = DemoNode(domain)
    failures: list[str] = []
    results: list[dict] = []
    gif: list[tuple] = []
    try:
        # ---- startup
        deadline = time.monotonic() + args.startup_timeout
        while time.monotonic() < deadline:
            if not sim.alive() or not pol.alive():
                break
            if demo.goal_pub.get_subscription_count() > 0 and demo.reset_pub.get_subscription_count() > 0:
                break
            time.sleep(0.05)
        for p in (sim, pol):
            if not p.alive():
                failures.append(f"{p.name} exited with status {p.returncode} during startup")
                print(f"--- {p.name} log ---\n{p.output()[-3000:]}", file=sys.stderr)
        if not failures and demo.goal_pub.get_subscription_count() == 0:
            failures.append(f"policy_node did not come up within {args.startup_timeout} s")
        if not failures:
            print(f"nodes up after {time.monotonic() - t_start:.1f} s")
        # ---- episodes
        policy_busy = False
        for i, seed in enumerate(seeds if not failures else []):
            if time.monotonic() - t_start > args.time_budget and results:
                print(f"time budget of {args.time_budget:.0f} s spent; skipping seeds {seeds[i:]}")
                break
            if policy_busy and not demo.cancel_episode():
                failures.append("could not cancel the running policy episode")
                break
            while demo.next_event(0.0) is not None:  # drop stale events
                pass
            demo.reset(seed, args.task)
            info = None
            end = time.monotonic() + 20.0
            while time.monotonic() < end and info is None:
                ev = demo.next_event(0.2)
                if ev and ev[0] == "episode" and ev[1].get("seed") == seed:
                    info = ev[1]
            if info is None:
                failures.append(f"sim_robot did not load seed {seed}")
                break
            ep_i = i + 1
            print(f"\n=== episode {ep_i}: {info['task']} seed {seed}: \"{info['goal']}\" "
                  f"(expert: {info['expert_length']} steps, limit {info['max_steps']})")
            demo.publish_goal(info["goal"])
            policy_busy = True
            outcome, policy_outcome, last_status = None, None, None
            t_ep = time.monotonic()
            deadline = t_ep + args.episode_timeout
            while outcome is None and time.monotonic() < deadline:
                if not sim.alive() or not pol.alive():
                    failures.append("a node died during the episode")
                    break
                ev = demo.next_event(0.1)
                if ev is None:
                    if policy_outcome is not None and time.monotonic() - policy_outcome[1] > 2.0:
                        break  # the policy gave up (timeout etc.) and the sim has no outcome
                    continue
                kind, obj = ev
                if kind == "status" and obj.get("goal") == info["goal"]:
                    if obj.get("command_id") is not None and "top" in obj:
                        last_status = obj
                        if not args.quiet:
                            print(_fmt_step(ep_i, obj), flush=True)
                        stamps = obj.get("frame_stamps") or {}
                        rgb = demo.frame_at(min(stamps.values()) if stamps else None)
                        if rgb is not None:
                            top = ", ".join(f"{a} {p:.2f}" for a, p in obj["top"])
                            gif.append((rgb, [f"ep {ep_i}  seed {seed}  step {obj.get('decision_step')}",
                                              f"goal: {info['goal']}", f"-> {obj['action']}   ({top})"], 120, None))
                    if obj.get("state") == "finished" and obj.get("outcome"):
                        policy_busy = False
                        if policy_outcome is None:
                            policy_outcome = (obj["outcome"], time.monotonic())
                elif kind == "outcome" and obj.get("seed") == seed and obj.get("episode") == info["episode"]:
                    outcome = obj
            dt = time.monotonic() - t_ep
            if outcome is None:
                why = f"policy stopped: {policy_outcome[0]}" if policy_outcome else f"no outcome in {dt:.0f} s"
                failures.append(f"episode {ep_i} (seed {seed}): {why}")
                print(f"--- episode {ep_i}: NO OUTCOME ({why})")
                results.append({"seed": seed, "success": False, "sel": 0.0, "steps": None, "reason": why})
                continue
            results.append(outcome)
            sel = outcome.get("sel")
            print(f"--- episode {ep_i}: {'SUCCESS' if outcome['success'] else 'FAILURE'} ({outcome['reason']}) "
                  f"steps {outcome['steps']}, SEL {sel if sel is None else round(sel, 3)}, "
                  f"{dt:.1f} s wall, {1e3 * dt / max(outcome['steps'], 1):.0f} ms/step")
            rgb = demo.frame_at(None)
            if rgb is not None:
                gif.append((rgb, [f"ep {ep_i}  seed {seed}: {'SUCCESS' if outcome['success'] else 'FAILURE'}",
                                  f"goal: {info['goal']}",
                                  f"steps {outcome['steps']}  SEL {0.0 if sel is None else sel:.2f}"], 1500,
                            (40, 200, 40) if outcome["success"] else (220, 40, 40)))
    finally:
        n_before = len(demo.commands)
        rc_pol = pol.stop()
        time.sleep(0.3)
        rc_sim = sim.stop()
        stop_seen = any(c.get("action") == "stop" for c in demo.commands[n_before:])
        demo.close()
    for p, rc in ((pol, rc_pol), (sim, rc_sim)):
        if rc != 0 and not any(f.startswith(p.name) for f in failures):
            failures.append(f"{p.name} exited with status {rc} (log: {p.log_path})")
    if not stop_seen and not failures:
        failures.append("policy_node did not publish `stop` on shutdown")
    done = [r for r in results if r.get("steps") is not None]
    n_ok = sum(bool(r.get("success")) for r in results)
    sels = [r.get("sel") or 0.0 for r in results]
    print(f"\n=== {n_ok}/{len(results)} episodes succeeded, mean SEL {np.mean(sels) if sels else 0.0:.3f}, "
          f"mean steps {np.mean([r['steps'] for r in done]) if done else float('nan'):.1f}; "
          f"total {time.monotonic() - t_start:.1f} s")
    if args.gif and gif:
        n = save_gif(gif, out / args.gif)
        print(f"GIF: {out / args.gif} ({n} frames)")
    if args.require_success and n_ok < len(seeds):
        failures.append(f"only {n_ok}/{len(seeds)} episodes succeeded")
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
