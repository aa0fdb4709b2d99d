"""Launch segment_node: ``ros2 launch relkd_ros segment.launch.py checkpoint:=student.pt``.

Arguments: checkpoint, params_file (default config/segment.yaml), the input/output topic
remaps, lifecycle (the managed variant, configured and activated at start unless
autostart:=false), use_rviz and fixed_frame (opens config/relkd.rviz in that frame: the frame of
your lidar clouds), and dds_profile (the Fast DDS profile for large clouds; none: no profile).
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

ARGUMENTS = {
    'checkpoint': (None, 'student checkpoint (relkd-train)'),
    'params_file': (('config', 'segment.yaml'), 'segment_node parameters YAML'),
    'points': ('/points', 'input sensor_msgs/PointCloud2 topic'),
    'labeled_points': ('/labeled_points', 'output labeled PointCloud2 topic'),
    'legend': ('/legend', 'output legend MarkerArray topic (latched)'),
    'lifecycle': ('false', 'run the managed (lifecycle) node segment_lifecycle_node'),
    'autostart': ('true', 'lifecycle only: configure and activate at start (false: leave it '
                  'to a lifecycle manager)'),
    'use_rviz': ('false', 'open RViz with config/relkd.rviz'),
    'fixed_frame': ('LIDAR_TOP', 'RViz fixed frame: the frame of the clouds (LIDAR_TOP in '
                    "nuScenes and relkd-synth's nuscenes rig, velo_link in KITTI and the kitti "
                    'rig, or your driver\'s)'),
    'dds_profile': (('config', 'fastdds_large_messages.xml'),
                    'Fast DDS XML profile for the node and RViz (large shared-memory segments); '
                    'none: no profile'),
}
CHOICES = {name: ['true', 'false'] for name in ('lifecycle', 'autostart', 'use_rviz')}


def _nodes(context, share):
    from relkd_ros.environment import node_environment

    def value(name):
        return LaunchConfiguration(name).perform(context)

    lifecycle = value('lifecycle') == 'true'
    common = dict(
        package='relkd_ros', name='relkd_segment', namespace='', output='screen',
        parameters=[value('params_file'), {'checkpoint': value('checkpoint')}],
        remappings=[('points', value('points')), ('labeled_points', value('labeled_points')),
                    ('legend', value('legend'))],
        additional_env=node_environment(value('dds_profile')))
    if lifecycle:
        segment = LifecycleNode(executable='segment_lifecycle_node',
                                arguments=['--autostart'] if value('autostart') == 'true' else [],
                                **common)
    else:
        segment = Node(executable='segment_node', **common)
    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', output='log',
        arguments=['-d', PathJoinSubstitution([share, 'config', 'relkd.rviz']).perform(context),
                   '-f', value('fixed_frame')],
        additional_env=common['additional_env'],
        condition=IfCondition(LaunchConfiguration('use_rviz')))
    return [segment, rviz]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare('relkd_ros')
    arguments = []
    for name, (default, description) in ARGUMENTS.items():
        extra = {}
        if isinstance(default, tuple):
            extra['default_value'] = PathJoinSubstitution([share, *default])
        elif default is not None:
            extra['default_value'] = default
        if name in CHOICES:
            extra['choices'] = CHOICES[name]
        arguments.append(DeclareLaunchArgument(name, description=description, **extra))
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes, args=[share])])
