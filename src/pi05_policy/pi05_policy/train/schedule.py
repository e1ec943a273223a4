"""The learning rate a resolved configuration will really run, beside the reference's table.

The numbers come from LeRobot's own objects: the scheduler ``cfg.scheduler.build`` makes for
``cfg.steps`` on the optimizer ``cfg.optimizer.build`` makes (one dummy parameter stands in
for the model), exactly as ``make_optimizer_and_scheduler`` does. Two readings per step:

* *at the step*: the rate after ``step`` updates (``lerobot-train`` steps the scheduler after
  every update);
* *logged*: what LeRobot's log line at that step prints, the mean of the rate over the
  ``log_freq`` updates since the previous line (its ``lr`` meter is an average), ``None``
  where no line is printed.

The reference's table was read from training logs, so it is held against both; where
neither rounds to it, the row says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Steps the dry run prints.
TABLE_STEPS = (200, 400, 600, 800, 1000, 1500, 2000, 3000)
#: The reference fine-tune's learning rate by step (two significant digits, from its logs).
REFERENCE_LR = {
    'pi05_so101': {200: 1.9e-5, 400: 2.4e-5, 600: 2.3e-5, 800: 2.2e-5, 1000: 1.8e-5,
                   3000: 2.5e-6},
}


@dataclass(frozen=True)
class Row:
    step: int
    at_step: float | None  # None: beyond the run's steps
    logged: float | None  # None: no log line at this step
    reference: float | None
    verdict: str  # '' without a reference value


def learning_rates(cfg: Any) -> list[float]:
    """The rate after each of the ``cfg.steps`` updates (index 0: after update 1)."""
    import torch

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = cfg.optimizer.build([param])
    base = optimizer.param_groups[0]['lr']
    scheduler = cfg.scheduler.build(optimizer, cfg.steps) if cfg.scheduler is not None else None
    if scheduler is None:
        return [base] * cfg.steps
    lambdas = getattr(scheduler, 'lr_lambdas', None)
    if lambdas and len(lambdas) == 1:  # LambdaLR (every LeRobot scheduler): no stepping needed
        return [base * lambdas[0](k) for k in range(1, cfg.steps + 1)]
    rates = []
    for _ in range(cfg.steps):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]['lr'])
    return rates


def _rounds_to(value: float | None, reference: float) -> bool:
    """``value`` written with the reference's two significant digits is the reference."""
    return value is not None and float(f'{value:.1e}') == float(f'{reference:.1e}')


def _verdict(at_step: float | None, logged: float | None, reference: float | None,
             log_freq: int, step: int) -> str:
    if reference is None:
        return ''
    if at_step is None:
        return 'beyond this run\'s steps'
    window = f'mean of steps {max(1, step - log_freq + 1)}-{step}'
    if _rounds_to(logged, reference) and _rounds_to(at_step, reference):
        return 'same'
    if _rounds_to(logged, reference):
        return f'same as the logged value ({window}); at the step it is {at_step:.2e}'
    if _rounds_to(at_step, reference):
        return 'same at the step' + (f'; the log line shows {logged:.2e}' if logged else '')
    closest = logged if logged is not None and abs(logged - reference) < abs(
        at_step - reference) else at_step
    return f'DIFFERS by {100 * (closest - reference) / reference:+.0f}%: neither the value ' \
           'at the step nor the logged mean rounds to it'


def schedule_table(cfg: Any, recipe: str, steps=TABLE_STEPS) -> list[Row]:
    rates = learning_rates(cfg)
    reference = REFERENCE_LR.get(recipe, {})
    log_freq = int(cfg.log_freq or 0)
    rows = []
    for step in steps:
        at = rates[step - 1] if step <= len(rates) else None
        logged = None
        if at is not None and log_freq > 0 and step % log_freq == 0:
            window = rates[step - log_freq:step]
            logged = sum(window) / len(window)
        ref = reference.get(step)
        rows.append(Row(step, at, logged, ref, _verdict(at, logged, ref, log_freq, step)))
    return rows


def schedule_explanation(cfg: Any) -> list[str]:
    """Why the schedule is what it is: the scheduler, and LeRobot's rescaling of a run
    shorter than its decay steps (``CosineDecayWithWarmupSchedulerConfig.build``)."""
    sched = cfg.scheduler
    base = cfg.optimizer.lr
    if sched is None:
        return [f'no scheduler in the policy\'s preset: the learning rate stays {base:.2e}']
    lines = [f'scheduler {sched.type}: {sched}']
    warmup, decay = getattr(sched, 'num_warmup_steps', None), getattr(sched, 'num_decay_steps',
                                                                      None)
    if sched.type == 'cosine_decay_with_warmup' and warmup is not None and decay:
        if cfg.steps < decay:
            scale = cfg.steps / decay
            lines.append(
                f'LeRobot rescales this schedule because steps ({cfg.steps}) < num_decay_steps '
                f'({decay}): factor {scale:.4g}, so the warmup really lasts '
                f'{int(warmup * scale)} steps (not {warmup}) and the cosine decay from '
                f'{sched.peak_lr:.2e} to {sched.decay_lr:.2e} spans the {cfg.steps} steps '
                f'(not {decay}).')
            lines.append(f'For a {warmup}-step warmup over this run, set '
                         f'policy.scheduler_decay_steps={cfg.steps} (the schedule is then '
                         'not rescaled).')
        else:
            lines.append(f'not rescaled (steps {cfg.steps} >= num_decay_steps {decay}): '
                         f'{warmup} warmup steps, decay over {decay} steps, then '
                         f'{sched.decay_lr:.2e}.')
    return lines


def format_table(rows: list[Row]) -> list[str]:
    def show(value):
        return f'{value:.2e}' if value is not None else '-'

    lines = [f'{"step":>6}  {"LeRobot at step":>15}  {"LeRobot logged":>14}  '
             f'{"reference":>9}  comparison']
    for r in rows:
        ref = f'{r.reference:.1e}' if r.reference is not None else '-'
        lines.append(f'{r.step:>6}  {show(r.at_step):>15}  {show(r.logged):>14}  {ref:>9}  '
                     f'{r.verdict}'.rstrip())
    return lines
