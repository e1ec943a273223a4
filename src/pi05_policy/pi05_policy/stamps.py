"""The stamps of a chunk's stages, and their live percentiles for ``policy/status`` (no rclpy).

Every published chunk gets the times of its stages on the node clock (sim time when
``use_sim_time``): the capture stamp of each camera image it was computed from (the image
header), the joint-state stamp (the chunk's ``t_obs``), inference start and end, the publish
and the time its first point is due. The policy node publishes them in ``policy/status``
right after each chunk, so a recorded bag holds camera-to-command latency per chunk; the
arm and the simulation report the rest (command to servo).

The intervals between stages, over the last ``HISTORY`` chunks, as p50/p95 in ms:

* ``image_to_publish``: oldest image of the chunk to its publish (camera-to-command);
* ``state_to_publish``: joint-state stamp to publish;
* ``inference``: inference start to end (conversion, processors, model, on the node clock);
* ``publish_to_first_point``: publish to the first point's due time (the lead the arm gets);
* ``image_to_first_point``: oldest image to the first point's due time (what the arm
  executes first was decided from a picture this old).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: Chunks the percentiles are taken over.
HISTORY = 200
INTERVALS = ('image_to_publish', 'state_to_publish', 'inference', 'publish_to_first_point',
             'image_to_first_point')


@dataclass(frozen=True)
class ChunkStamps:
    """Stage times of one published chunk, seconds on the node clock."""

    seq: int  # chunks published before this one
    images: Mapping[str, float]  # ROS camera name -> capture stamp (image header)
    state: float  # joint-state stamp (t_obs: action k is due at state + k / fps)
    inference_start: float
    inference_end: float
    publish: float
    first_point: float  # when the chunk's first point is due

    def intervals(self) -> dict[str, float]:
        oldest = min(self.images.values()) if self.images else self.state
        return {'image_to_publish': self.publish - oldest,
                'state_to_publish': self.publish - self.state,
                'inference': self.inference_end - self.inference_start,
                'publish_to_first_point': self.first_point - self.publish,
                'image_to_first_point': self.first_point - oldest}

    def values(self) -> dict[str, str]:
        """The stamps as ``policy/status`` values (``chunk_stamp_*``, seconds, 6 decimals)."""
        out = {'chunk_seq': str(self.seq)}
        for name, stamp in sorted(self.images.items()):
            out[f'chunk_stamp_image_{name}'] = f'{stamp:.6f}'
        for stage in ('state', 'inference_start', 'inference_end', 'publish', 'first_point'):
            out[f'chunk_stamp_{stage}'] = f'{getattr(self, stage):.6f}'
        return out


class StampHistory:
    """The last chunks' stamps; ``values()`` gives the status keys (no lock: caller's)."""

    def __init__(self, maxlen: int = HISTORY):
        self._chunks: deque[ChunkStamps] = deque(maxlen=maxlen)

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def last(self) -> ChunkStamps | None:
        return self._chunks[-1] if self._chunks else None

    def chunks(self) -> list[ChunkStamps]:
        """The history, oldest first (tests and benchmarks read it)."""
        return list(self._chunks)

    def add(self, stamps: ChunkStamps) -> None:
        self._chunks.append(stamps)

    def percentiles(self) -> dict[str, tuple[float, float]]:
        """Interval -> (p50, p95) in seconds over the history (empty without chunks)."""
        if not self._chunks:
            return {}
        rows = [c.intervals() for c in self._chunks]
        return {name: (float(np.percentile([r[name] for r in rows], 50)),
                       float(np.percentile([r[name] for r in rows], 95))) for name in INTERVALS}

    def values(self) -> dict[str, str]:
        """``<interval>_p50_ms``/``_p95_ms`` ('' before the first chunk) and the last stamps."""
        found = self.percentiles()
        out = {}
        for name in INTERVALS:
            p50, p95 = found.get(name, (None, None))
            out[f'{name}_p50_ms'] = '' if p50 is None else f'{p50 * 1e3:.2f}'
            out[f'{name}_p95_ms'] = '' if p95 is None else f'{p95 * 1e3:.2f}'
        if self._chunks:
            out.update(self._chunks[-1].values())
        return out
