from setuptools import find_packages, setup

package_name = 'pi05_policy'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{package_name}']),
        (f'share/{package_name}', ['package.xml']),
    ],
    install_requires=['setuptools', 'numpy', 'so101_driver', 'eval_monitor', 'lerobot'],
    extras_require={'test': ['pytest']},
    zip_safe=True,
    maintainer='SO-101 Pi0.5 suite maintainers',
    maintainer_email='maintainers@so101-pi05.dev',
    description='LeRobot Pi0.5 (and any LeRobot policy) as a ROS 2 node publishing '
                'joint-trajectory chunks.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'pi05_policy = pi05_policy.policy_node:main',
            'so101-dataset = pi05_policy.dataset.cli:main',
            'so101-train = pi05_policy.train.cli:main',
        ],
    },
)
