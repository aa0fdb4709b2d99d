"""The environment the launch file gives the node: the Fast DDS profile and OpenMP's waiting.

Which variable points Fast DDS at an XML profile depends on the ROS distro.

Fast DDS 2 (Humble, Iron, Jazzy) reads ``FASTRTPS_DEFAULT_PROFILES_FILE``; Fast DDS 3 (Kilted
and later) reads ``FASTDDS_DEFAULT_PROFILES_FILE`` and still honours the old name, so setting
both loads the profile twice and prints ``[XMLPARSER Error] ... There is other transport with
the same id``. One variable is set, the one the running distro reads.

``OMP_WAIT_POLICY=PASSIVE`` (unless already set): OpenMP threads that wait for work sleep
instead of spinning. On a CPU shared with other processes, spinning threads take the cores the
threads doing the work need: with 2 torch threads on 2 cores and one core kept busy, a 34k-point
scan took seconds with spinning and about 1.4 s with passive waiting (bench/bench_node.py
--background-load; the node's default of half the cores, 1 thread there, stayed under 0.7 s).
It must be set before the process loads OpenMP, hence in the launch file, not in the node.

Used by the launch file, the node and the tests; no ROS import.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ['DDS_PROFILE', 'NO_PROFILE', 'PROFILE_VARIABLES', 'node_environment',
           'profile_environment', 'profile_variable']

#: The Fast DDS profile shipped in ``config/`` (see the file for why).
DDS_PROFILE: Final = 'fastdds_large_messages.xml'

#: Both variable names, newest first.
PROFILE_VARIABLES: Final = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
#: Values of the launch argument ``dds_profile`` that mean "no profile" (the ros2 launch
#: command line refuses an empty ``name:=``, hence a word).
NO_PROFILE: Final = ('', 'none')
_FAST_DDS_2: Final = ('foxy', 'galactic', 'humble', 'iron', 'jazzy')


def profile_variable(distro: str | None = None) -> str:
    """The variable the Fast DDS of ``distro`` (default ``$ROS_DISTRO``) reads."""
    distro = os.environ.get('ROS_DISTRO', '') if distro is None else distro
    return PROFILE_VARIABLES[1] if distro.lower() in _FAST_DDS_2 else PROFILE_VARIABLES[0]


def profile_environment(profile: str, distro: str | None = None) -> dict[str, str]:
    """Environment for the node: ``{variable: profile}``, or for no profile (``''`` or
    ``none``) ``RELKD_NO_DDS_PROFILE=1``, which keeps the node from loading the shipped one."""
    if profile.strip().lower() in NO_PROFILE:
        return {'RELKD_NO_DDS_PROFILE': '1'}
    return {profile_variable(distro): profile}


def node_environment(profile: str, distro: str | None = None) -> dict[str, str]:
    """What the launch file adds to the node's environment: :func:`profile_environment` and
    ``OMP_WAIT_POLICY=PASSIVE`` unless this process has one (see the module doc)."""
    environment = profile_environment(profile, distro)
    if 'OMP_WAIT_POLICY' not in os.environ:
        environment['OMP_WAIT_POLICY'] = 'PASSIVE'
    return environment
