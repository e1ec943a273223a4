"""JSON payloads of ``/eval/episode`` and ``/sim/truth`` (std_msgs/String), defined once.

DESIGN.md carries episode marks and ground truth as one JSON object per message so that a
bag holds everything offline evaluation needs without custom interfaces. The simulation,
the operator console and the monitor write them, the monitor and the bag tools read them;
all go through this module so the field names cannot drift. No rclpy here.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from enum import Enum


class PayloadError(ValueError):
    """A JSON payload is malformed; the message names the field and the expected form."""


class EpisodeEvent(str, Enum):
    START = 'start'
    END = 'end'


@dataclass(frozen=True)
class EpisodeMark:
    """One ``/eval/episode`` message: an episode begins or ends."""

    event: EpisodeEvent
    stamp: float  # seconds, clock of the publisher (sim time in simulation)
    success: bool | None = None  # only on END: operator mark or sim ground truth
    source: str = 'service'  # who marked it: service | sim | console | bag
    episode: int | None = None  # running index given by the publisher, if it keeps one
    note: str = ''  # free text (e.g. "cube in bowl", "operator: slipped")

    def __post_init__(self):
        if not isinstance(self.event, EpisodeEvent):
            object.__setattr__(self, 'event', EpisodeEvent(self.event))
        if self.event is EpisodeEvent.END and self.success is None:
            raise PayloadError('an episode end mark needs success: true or false')
        if self.event is EpisodeEvent.START and self.success is not None:
            raise PayloadError('an episode start mark carries no success flag')
        if not math.isfinite(self.stamp):
            raise PayloadError(f'stamp must be finite, got {self.stamp}')

    def to_json(self) -> str:
        data = asdict(self)
        data['event'] = self.event.value
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EpisodeMark:
        data = _object(text, 'episode mark')
        try:
            return cls(event=EpisodeEvent(data['event']), stamp=float(data['stamp']),
                       success=data.get('success'), source=str(data.get('source', 'service')),
                       episode=data.get('episode'), note=str(data.get('note', '')))
        except KeyError as err:
            raise PayloadError(f'episode mark {text[:200]!r} lacks field {err}; expected '
                               '{"event": "start"|"end", "stamp": seconds, "success": bool '
                               '(end only), "source": str}') from err
        except ValueError as err:
            raise PayloadError(f'episode mark {text[:200]!r}: {err}') from err


@dataclass(frozen=True)
class SimTruth:
    """One ``/sim/truth`` message: what the simulator knows about the cube."""

    stamp: float  # sim time, seconds
    cube_position: tuple[float, float, float]  # world frame, metres
    held: bool  # both jaws touch the cube and it is off the table
    lifted: bool  # cube bottom above the table by more than a few millimetres
    in_bowl: bool  # cube inside the bowl's rim radius and resting low in it
    dropped: bool = False  # true in the message where a held cube is let go outside the bowl
    episode: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        # a NaN cube makes the expert plan a NaN chunk; a NaN stamp hides later samples
        if not all(math.isfinite(v) for v in (self.stamp, *self.cube_position)):
            raise PayloadError(f'stamp and cube_position must be finite, got {self.stamp}, '
                               f'{list(self.cube_position)}')

    def to_json(self) -> str:
        data = asdict(self)
        data['cube_position'] = [float(v) for v in self.cube_position]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SimTruth:
        data = _object(text, 'sim truth')
        try:
            pos = tuple(float(v) for v in data['cube_position'])
            if len(pos) != 3:
                raise ValueError(f'cube_position has {len(pos)} values, expected 3')
            return cls(stamp=float(data['stamp']), cube_position=pos, held=bool(data['held']),
                       lifted=bool(data['lifted']), in_bowl=bool(data['in_bowl']),
                       dropped=bool(data.get('dropped', False)), episode=data.get('episode'),
                       extra=dict(data.get('extra', {})))
        except KeyError as err:
            raise PayloadError(f'sim truth {text[:200]!r} lacks field {err}') from err
        except (TypeError, ValueError) as err:
            raise PayloadError(f'sim truth {text[:200]!r}: {err}') from err


def _object(text: str, what: str) -> dict:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:  # also 10^5-deep nesting, 5000-digit numbers
        raise PayloadError(f'{what} is not usable JSON ({type(err).__name__}: '
                           f'{str(err)[:200]}): {text[:200]!r}') from err
    if not isinstance(data, dict):
        raise PayloadError(f'{what} must be a JSON object, got {type(data).__name__}')
    return data
