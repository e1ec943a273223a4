"""The whole loop, on the CPU, small: simulated expert episodes recorded -> ``so101 dataset`` ->
``so101 train`` (a tiny ACT, a few steps, LeRobot's lerobot-train) -> ``so101 up
hardware:=sim policy:=<that checkpoint>`` -> the monitor's report -> ``so101 compare`` against
the expert's run.

What is asserted is the chain: each command exits cleanly, the checkpoint lerobot-train wrote
is loaded by the policy node (it reaches ``running``), the simulated arm accepts the node's
trajectories (joint names, timing, limits; only the first-point jump limit is widened, see
below), the monitor writes its report and the comparison is written. Not asserted: that a
model trained for a few steps picks anything up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest  # noqa: E402
import yaml  # noqa: E402

for _module in ('datasets', 'pyarrow', 'av', 'accelerate'):
    pytest.importorskip(_module, reason=f'{_module} missing: the loop needs lerobot\'s dataset '
                        'extra and accelerate (requirements.txt)')

from tests.helpers import wait_for  # noqa: E402
from tests.pi05_policy.test_dataset import record_sim_bag  # noqa: E402
from tests.test_so101_command import stop  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: A tiny ACT: the recipe's LeRobot settings, shrunk to train two steps in seconds on a CPU.
TINY_ACT = ['steps=2', 'batch_size=2', 'num_workers=0', 'log_freq=1', 'save_freq=2',
            'policy.device=cpu', 'policy.pretrained_backbone_weights=null',
            'policy.dim_model=32', 'policy.n_heads=2', 'policy.dim_feedforward=64',
            'policy.n_encoder_layers=1', 'policy.n_decoder_layers=1',
            'policy.n_vae_encoder_layers=1', 'policy.latent_dim=8', 'policy.chunk_size=15',
            'policy.n_action_steps=15']
ACCEPTED = 5  # policy trajectories the sim must accept


def run(*args: str, timeout: float, cwd: Path) -> str:
    """Run one so101 command to the end; its output, or a failure showing it."""
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', WANDB_MODE='disabled',
               CUDA_VISIBLE_DEVICES='')
    done = subprocess.run([str(BIN / 'so101'), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f'so101 {args[0]} exit {done.returncode}:\n{output[-4000:]}'
    return output


class Probe:
    """Watches the bring-up from outside: the sim's and the policy's diagnostics."""

    def __init__(self, context):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from std_srvs.srv import Trigger

        from so101_driver import qos

        self.node = rclpy.create_node('loop_probe', context=context)
        self.lock = threading.Lock()
        self.values: dict[str, dict[str, str]] = {}
        self.policy_states: set[str] = set()  # every state policy/status has reported
        for topic in ('diagnostics', 'policy/status'):
            self.node.create_subscription(DiagnosticArray, topic, self._keep, qos.STREAM_SUB)
        self.reset = self.node.create_client(Trigger, 'sim/reset')
        self.save = self.node.create_client(Trigger, 'eval/save_report')

    def _keep(self, msg):
        with self.lock:
            for status in msg.status:
                node = status.name.split(':')[0]
                self.values[node] = {kv.key: kv.value for kv in status.values}
                if node == 'pi05_policy':
                    self.policy_states.add(self.values[node].get('state', ''))

    def get(self, node: str) -> dict[str, str]:
        with self.lock:
            return dict(self.values.get(node, {}))

    def call(self, client, timeout=20.0):
        from std_srvs.srv import Trigger

        assert client.wait_for_service(timeout_sec=timeout), f'{client.srv_name} not offered'
        future = client.call_async(Trigger.Request())
        wait_for(future.done, timeout, message=f'{client.srv_name} response')
        assert future.result().success, future.result().message
        return future.result()


@pytest.mark.slow
def test_expert_demonstrations_to_a_trained_checkpoint_in_the_sim_and_compared(
        tmp_path, spinner, ros_context):
    from pi05_policy.runtime import check_features, inspect_checkpoint

    # 1. the scripted expert's episodes, recorded as the sim node publishes them
    expert_bag = record_sim_bag(tmp_path / 'expert_bag').path
    run('eval', str(expert_bag), '-o', str(tmp_path / 'expert_run'), '--title', 'expert',
        timeout=120, cwd=tmp_path)

    # 2. bags -> LeRobot dataset with the policy node's units, cameras and fps (30; the
    # bag's cameras run at 10 Hz, so a frame's newest image may be 0.1 s old)
    dataset = tmp_path / 'dataset'
    out = run('dataset', str(expert_bag), '--root', str(dataset), '--policy-params',
              str(ROOT / 'config' / 'pi05_policy.yaml'), '--image-tolerance', '0.15',
              timeout=180, cwd=tmp_path)
    assert 'episodes' in out and (dataset / 'meta' / 'info.json').is_file(), out

    # 3. a tiny ACT from the act_so101 recipe, by lerobot-train
    sets = [a for s in TINY_ACT for a in ('--set', s)]
    out = run('train', '--recipe', 'act_so101', '--dataset', str(dataset), '--output',
              str(tmp_path / 'train'), *sets, timeout=300, cwd=tmp_path)
    assert 'running: lerobot-train --config_path=' in out and 'End of training' in out, \
        out[-3000:]
    checkpoint = tmp_path / 'train' / 'checkpoints' / 'last' / 'pretrained_model'
    info = inspect_checkpoint(checkpoint)
    check_features(info, {'front': 'front', 'handeye': 'handeye'})
    assert (info.policy_type, info.chunk_size) == ('act', 15), info

    # 4. that checkpoint drives the simulated cell through the bring-up
    config = tmp_path / 'config'
    shutil.copytree(ROOT / 'config', config)
    sim = yaml.safe_load((config / 'so101_sim.yaml').read_text())
    # a model trained two steps outputs about the dataset's mean pose, ~0.75 rad from the sim's
    # home in wrist_roll: the arm's jump limit (0.35 rad, a guard for real hardware) would
    # refuse every chunk. Widened here, so every other check of a trajectory still applies.
    sim['so101_sim']['ros__parameters'].update(camera_width=64, camera_height=64,
                                               max_jump=3.2)
    (config / 'so101_sim.yaml').write_text(yaml.safe_dump(sim))
    evaluation = yaml.safe_load((config / 'eval.yaml').read_text())
    policy_run = tmp_path / 'policy_run'
    evaluation['eval_monitor']['ros__parameters'].update(run_dir=str(policy_run),
                                                         title='act, 2 steps')
    (config / 'eval.yaml').write_text(yaml.safe_dump(evaluation))

    probe = Probe(ros_context)
    spinner.add(probe.node)
    proc = subprocess.Popen([str(BIN / 'so101'), 'up', 'hardware:=sim', f'policy:={checkpoint}',
                             f'config_dir:={config}'], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
    try:
        def accepted():
            if proc.poll() is not None:
                return 'exited'
            return int(probe.get('so101_sim').get('accepted_policy', 0)) >= ACCEPTED
        try:
            wait_for(accepted, 150, interval=0.2, message=f'{ACCEPTED} policy trajectories '
                     'accepted by the sim')
        except AssertionError as err:
            pytest.fail(f'{err}\nsim: {probe.get("so101_sim")}\npolicy: '
                        f'{probe.get("pi05_policy")}\n{stop(proc)[-4000:]}')
        assert proc.poll() is None, f'so101 up exited:\n{stop(proc)}'
        status = probe.get('pi05_policy')
        assert 'running' in probe.policy_states and status.get('policy_type') == 'act', \
            (probe.policy_states, status)
        for _ in range(2):  # two episodes end (sim ground truth) and are counted
            probe.call(probe.reset)
            time.sleep(1.0)
        probe.call(probe.save)
        sim_values = probe.get('so101_sim')
    finally:
        spinner.remove(probe.node)
        probe.node.destroy_node()
        out = stop(proc, timeout=30.0)
    assert proc.returncode == 0, f'so101 up did not stop cleanly:\n{out[-4000:]}'
    assert int(sim_values['accepted_policy']) >= ACCEPTED, sim_values

    # 5. the monitor's report of the policy's run, compared with the expert's
    summary = json.loads((policy_run / 'summary.json').read_text())
    assert summary['episodes'] >= 2, summary
    assert (policy_run / 'report.md').is_file()
    out = run('compare', str(tmp_path / 'expert_run'), str(policy_run), '-o',
              str(tmp_path / 'comparison'), '--names', 'expert', 'act-2-steps',
              timeout=120, cwd=tmp_path)
    comparison = json.loads((tmp_path / 'comparison' / 'comparison.json').read_text())
    assert comparison['runs'] == ['expert', 'act-2-steps'] and comparison['metrics'], comparison
    assert (tmp_path / 'comparison' / 'comparison.md').is_file(), out
