from setuptools import find_packages, setup

package_name = 'eval_monitor'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{package_name}']),
        (f'share/{package_name}', ['package.xml']),
    ],
    # no torch, no LeRobot: evaluation runs on a machine without them
    install_requires=['setuptools', 'numpy', 'scipy', 'matplotlib', 'pyyaml', 'mcap',
                      'mcap-ros2-support', 'so101_driver'],
    extras_require={'test': ['pytest']},
    zip_safe=True,
    maintainer='SO-101 Pi0.5 suite maintainers',
    maintainer_email='maintainers@so101-pi05.dev',
    description='Evaluation monitor: grasps, drops, episodes and operator interventions, live '
                'and from rosbag2 MCAP recordings; reports and policy comparison.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'eval_monitor = eval_monitor.monitor_node:main',
            'so101_recorder = eval_monitor.recorder_node:main',
            'so101-eval = eval_monitor.offline:main',
            'so101-bag-reindex = eval_monitor.bag.reindex:main',
            'so101-latency = eval_monitor.latency:main',
            'so101-compare = eval_monitor.compare:main',
            'so101-console = eval_monitor.console:main',
            'so101_view = eval_monitor.view.view_node:main',
            'so101-view = eval_monitor.view.cli:main',
        ],
    },
)
