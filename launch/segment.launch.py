"""Launch segment_node: ``ros2 launch relkd_ros segment.launch.py checkpoint:=student.pt``.

Arguments: checkpoint, params_file (default config/segment.yaml), the input/output topic
remaps, use_rviz (opens config/relkd.rviz) and dds_profile (the Fast DDS profile for large
clouds; empty: none).
"""

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare('relkd_ros')
    arguments = [
        DeclareLaunchArgument('checkpoint', description='student checkpoint (relkd-train)'),
        DeclareLaunchArgument(
            'params_file', default_value=PathJoinSubstitution([share, 'config', 'segment.yaml']),
            description='segment_node parameters YAML'),
        DeclareLaunchArgument('points', default_value='/points',
                              description='input sensor_msgs/PointCloud2 topic'),
        DeclareLaunchArgument('labeled_points', default_value='/relkd/labeled_points',
                              description='output labeled PointCloud2 topic'),
        DeclareLaunchArgument('legend', default_value='/relkd/legend',
                              description='output legend MarkerArray topic'),
        DeclareLaunchArgument('use_rviz', default_value='false', choices=['true', 'false'],
                              description='open RViz with config/relkd.rviz'),
        DeclareLaunchArgument(
            'dds_profile',
            default_value=PathJoinSubstitution([share, 'config', 'fastdds_large_messages.xml']),
            description='Fast DDS XML profile for the node (large shared-memory segments)'),
    ]
    segment = Node(
        package='relkd_ros', executable='segment_node', name='relkd_segment', output='screen',
        parameters=[LaunchConfiguration('params_file'),
                    {'checkpoint': LaunchConfiguration('checkpoint')}],
        remappings=[('points', LaunchConfiguration('points')),
                    ('labeled_points', LaunchConfiguration('labeled_points')),
                    ('legend', LaunchConfiguration('legend'))],
    )
    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', output='log',
        arguments=['-d', PathJoinSubstitution([share, 'config', 'relkd.rviz'])],
        condition=IfCondition(LaunchConfiguration('use_rviz')),
    )
    return LaunchDescription([
        *arguments,
        SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', LaunchConfiguration('dds_profile')),
        SetEnvironmentVariable('FASTRTPS_DEFAULT_PROFILES_FILE',
                               LaunchConfiguration('dds_profile')),
        segment,
        rviz,
    ])
